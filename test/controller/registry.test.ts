import { describe, expect, it } from "@effect/vitest"
import { Effect, Layer, Option, TestClock } from "effect"
import { ClusterConfigService } from "../../src/config/cluster-config.js"
import { Registry, type RegistryChange } from "../../src/controller/registry.js"
import { WorkerId } from "../../src/domain/ids.js"
import { captureLogs } from "./support/log-capture.js"
import { heartbeat, metrics, registration } from "./support/fixtures.js"

const RegistryTest = Registry.Default.pipe(
  Layer.provide(
    ClusterConfigService.layerTest((c) => ({ ...c, discovery: { ...c.discovery, pruneAfterMs: 60_000 } }))
  )
)

const deregistration = (id: string) => ({ workerId: WorkerId.make(id), timestamp: 0 })

describe("Registry", () => {
  it.effect("register adds an online worker stamped with the Clock's time", () =>
    Effect.gen(function* () {
      yield* TestClock.setTime(5_000)
      const registry = yield* Registry
      yield* registry.register(registration({ id: "w1" }))
      const w = Option.getOrThrow(yield* registry.get("w1"))
      expect(w.status).toBe("online")
      expect(w.registeredAt).toBe(5_000)
      expect(w.lastHeartbeat).toBe(5_000)
      expect(yield* registry.get("nobody")).toEqual(Option.none())
    }).pipe(Effect.provide(RegistryTest))
  )

  it.effect("heartbeat answers updated or unknown and records metrics", () =>
    Effect.gen(function* () {
      const registry = yield* Registry
      yield* registry.register(registration({ id: "w1" }))
      yield* TestClock.adjust(4_000)
      expect(yield* registry.heartbeat(heartbeat("w1", 2))).toBe("updated")
      expect(yield* registry.heartbeat(heartbeat("ghost"))).toBe("unknown")
      const w = Option.getOrThrow(yield* registry.get("w1"))
      expect(w.metrics).toEqual(metrics(2))
      expect(w.lastHeartbeat).toBe(4_000)
      expect((yield* registry.all).map((x) => x.workerId)).toEqual(["w1"])
    }).pipe(Effect.provide(RegistryTest))
  )

  it.effect("all / online / offline / counts", () =>
    Effect.gen(function* () {
      const registry = yield* Registry
      expect(yield* registry.counts).toEqual({ total: 0, online: 0, offline: 0 })
      expect(yield* registry.size).toBe(0)
      yield* registry.register(registration({ id: "w2" }))
      yield* registry.register(registration({ id: "w1" }))
      yield* registry.register(registration({ id: "w3" }))
      yield* registry.deregister(deregistration("w2"))
      yield* registry.markOffline("w3", "worker lost")
      expect((yield* registry.all).map((w) => w.workerId)).toEqual(["w1", "w2", "w3"])
      expect((yield* registry.online).map((w) => w.workerId)).toEqual(["w1"])
      expect((yield* registry.all).filter((w) => w.status === "offline").map((w) => [w.workerId, w.statusReason])).toEqual([
        ["w2", "deregistered"],
        ["w3", "worker lost"]
      ])
      expect(yield* registry.counts).toEqual({ total: 3, online: 1, offline: 2 })
      expect(yield* registry.size).toBe(3)
    }).pipe(Effect.provide(RegistryTest))
  )

  it.effect("sweep marks silent workers offline after offline_timeout_ms and prunes after prune_after_ms", () =>
    Effect.gen(function* () {
      const registry = yield* Registry
      yield* registry.register(registration({ id: "w1" }))
      yield* TestClock.adjust(15_000)
      yield* registry.sweep()
      expect(Option.getOrThrow(yield* registry.get("w1")).status).toBe("online")
      yield* TestClock.adjust(200)
      yield* registry.sweep()
      const w = Option.getOrThrow(yield* registry.get("w1"))
      expect(w.status).toBe("offline")
      expect(w.statusReason).toBe("no heartbeat for 15.2 s")
      yield* TestClock.adjust(60_000)
      yield* registry.sweep()
      expect(yield* registry.get("w1")).toEqual(Option.none())
      expect(yield* registry.counts).toEqual({ total: 0, online: 0, offline: 0 })
    }).pipe(Effect.provide(RegistryTest))
  )

  it.effect("logs one line per status change, annotated with the workerId", () => {
    const logs = captureLogs()
    return Effect.gen(function* () {
      const registry = yield* Registry
      yield* registry.register(registration({ id: "w1" }))
      yield* registry.register(registration({ id: "w1" })) // no status change: no line at info level
      yield* registry.heartbeat(heartbeat("w1"))
      yield* TestClock.adjust(15_200)
      yield* registry.sweep()
      yield* registry.sweep() // nothing new
      yield* registry.heartbeat(heartbeat("w1"))
      yield* registry.deregister(deregistration("w1"))
      yield* TestClock.adjust(60_001)
      yield* registry.sweep()
      const lines = logs.lines.map((l) => [l.level, l.message, l.annotations["workerId"]])
      expect(lines).toEqual([
        ["INFO", "worker w1 online: registered", "w1"],
        ["WARN", "worker w1 offline: no heartbeat for 15.2 s", "w1"],
        ["INFO", "worker w1 online: heartbeat received", "w1"],
        ["WARN", "worker w1 offline: deregistered", "w1"],
        ["INFO", "worker w1 removed: pruned, no heartbeat for 60.0 s", "w1"]
      ])
    }).pipe(Effect.provide(RegistryTest), Effect.provide(logs.layer))
  })

  it.scoped("listeners hear each change once: its transitions, the workers touched and the new state", () =>
    Effect.gen(function* () {
      const registry = yield* Registry
      const heard: Array<RegistryChange> = []
      yield* registry.listen((change) => heard.push(change))
      yield* registry.heartbeat(heartbeat("ghost")) // unknown: nothing changes, nobody is told
      yield* registry.sweep()
      yield* registry.markOffline("ghost", "x")
      expect(heard).toEqual([])
      yield* registry.register(registration({ id: "w1" }))
      yield* registry.heartbeat(heartbeat("w1", 2))
      yield* registry.deregister(deregistration("w1"))
      expect(heard.map((c) => [c.touched, c.transitions.map((t) => `${t.from}→${t.to}`)])).toEqual([
        [["w1"], ["absent→online"]],
        [["w1"], []],
        [["w1"], ["online→offline"]]
      ])
      expect(heard[1]?.state).not.toBe(heard[0]?.state)
      expect(Option.getOrThrow(yield* registry.get("w1")).status).toBe("offline")
    }).pipe(Effect.provide(RegistryTest))
  )

  it.scoped("a listener stops hearing when its scope closes", () =>
    Effect.gen(function* () {
      const registry = yield* Registry
      let heard = 0
      yield* Effect.scoped(registry.listen(() => heard++))
      yield* registry.register(registration({ id: "w1" }))
      expect(heard).toBe(0)
    }).pipe(Effect.provide(RegistryTest))
  )

  it.effect("the sweep's lag allowance keeps a worker online while the controller itself was stalled", () =>
    Effect.gen(function* () {
      const registry = yield* Registry
      yield* registry.register(registration({ id: "w1" }))
      yield* TestClock.adjust(18_000)
      yield* registry.sweep(4_000) // the loop stalled 4 s: 18 s of silence is within 15 + 4
      expect(Option.getOrThrow(yield* registry.get("w1")).status).toBe("online")
      yield* registry.sweep(0)
      expect(Option.getOrThrow(yield* registry.get("w1")).status).toBe("offline")
    }).pipe(Effect.provide(RegistryTest))
  )
})
