import { describe, expect, it } from "@effect/vitest"
import { Deferred, Effect, Fiber, Layer, Option, Stream, TestClock } from "effect"
import { ClusterConfigService } from "../../src/config/cluster-config.js"
import { Registry } from "../../src/controller/registry.js"
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
      yield* registry.register(registration({ id: "w2" }))
      yield* registry.register(registration({ id: "w1" }))
      yield* registry.register(registration({ id: "w3" }))
      yield* registry.deregister(deregistration("w2"))
      yield* registry.markOffline("w3", "worker lost")
      expect((yield* registry.all).map((w) => w.workerId)).toEqual(["w1", "w2", "w3"])
      expect((yield* registry.online).map((w) => w.workerId)).toEqual(["w1"])
      expect((yield* registry.offline).map((w) => [w.workerId, w.statusReason])).toEqual([
        ["w2", "deregistered"],
        ["w3", "worker lost"]
      ])
      expect(yield* registry.counts).toEqual({ total: 3, online: 1, offline: 2 })
    }).pipe(Effect.provide(RegistryTest))
  )

  it.effect("sweep marks silent workers offline after offline_timeout_ms and prunes after prune_after_ms", () =>
    Effect.gen(function* () {
      const registry = yield* Registry
      yield* registry.register(registration({ id: "w1" }))
      yield* TestClock.adjust(15_000)
      yield* registry.sweep
      expect(Option.getOrThrow(yield* registry.get("w1")).status).toBe("online")
      yield* TestClock.adjust(200)
      yield* registry.sweep
      const w = Option.getOrThrow(yield* registry.get("w1"))
      expect(w.status).toBe("offline")
      expect(w.statusReason).toBe("no heartbeat for 15.2 s")
      yield* TestClock.adjust(60_000)
      yield* registry.sweep
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
      yield* registry.sweep
      yield* registry.sweep // nothing new
      yield* registry.heartbeat(heartbeat("w1"))
      yield* registry.deregister(deregistration("w1"))
      yield* TestClock.adjust(60_001)
      yield* registry.sweep
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

  it.effect("snapshot versions grow only when something changes", () =>
    Effect.gen(function* () {
      const registry = yield* Registry
      const v0 = (yield* registry.snapshot).version
      yield* registry.heartbeat(heartbeat("ghost"))
      yield* registry.sweep
      yield* registry.markOffline("ghost", "x")
      expect((yield* registry.snapshot).version).toBe(v0)
      yield* registry.register(registration({ id: "w1" }))
      const s1 = yield* registry.snapshot
      expect(s1.version).toBe(v0 + 1)
      expect(s1.workers.map((w) => w.workerId)).toEqual(["w1"])
      yield* registry.heartbeat(heartbeat("w1", 1))
      expect((yield* registry.snapshot).version).toBe(v0 + 2)
    }).pipe(Effect.provide(RegistryTest))
  )

  it.effect("awaitChange wakes on the next change, or at once if one already happened", () =>
    Effect.gen(function* () {
      const registry = yield* Registry
      const { version } = yield* registry.snapshot
      const waiter = yield* Effect.fork(registry.awaitChange(version))
      yield* Effect.yieldNow()
      expect(Option.isNone(yield* Fiber.poll(waiter))).toBe(true)
      yield* registry.heartbeat(heartbeat("ghost")) // not a change
      yield* Effect.yieldNow()
      expect(Option.isNone(yield* Fiber.poll(waiter))).toBe(true)
      yield* registry.register(registration({ id: "w1" }))
      const woke = yield* Fiber.join(waiter)
      expect(woke.version).toBe(version + 1)
      expect(woke.workers.map((w) => w.workerId)).toEqual(["w1"])
      // A change that already happened is not missed.
      const late = yield* registry.awaitChange(version)
      expect(late.version).toBe(version + 1)
    }).pipe(Effect.provide(RegistryTest))
  )

  it.effect("changes emits the current snapshot, then one per change", () =>
    Effect.gen(function* () {
      const registry = yield* Registry
      const subscribed = yield* Deferred.make<void>()
      const collector = yield* registry.changes.pipe(
        Stream.tap(() => Deferred.succeed(subscribed, undefined)),
        Stream.take(3),
        Stream.runCollect,
        Effect.fork
      )
      yield* Deferred.await(subscribed) // the first element comes with the subscription
      yield* registry.heartbeat(heartbeat("ghost")) // no change, no emission
      yield* registry.register(registration({ id: "w1" }))
      yield* registry.deregister(deregistration("w1"))
      const seen = Array.from(yield* Fiber.join(collector))
      expect(seen.map((s) => s.version)).toEqual([0, 1, 2])
      expect(seen.map((s) => s.workers.map((w) => w.status))).toEqual([[], ["online"], ["offline"]])
    }).pipe(Effect.provide(RegistryTest))
  )
})
