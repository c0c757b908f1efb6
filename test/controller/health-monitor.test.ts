import { describe, expect, it } from "@effect/vitest"
import { Effect, Layer, Option, TestClock } from "effect"
import { ClusterConfigService } from "../../src/config/cluster-config.js"
import { HealthMonitorLive } from "../../src/controller/health-monitor.js"
import { LoadMonitor } from "../../src/controller/load-monitor.js"
import { Registry } from "../../src/controller/registry.js"
import { WorkerId } from "../../src/domain/ids.js"
import { heartbeat, registration } from "./support/fixtures.js"

/** Defaults of docs/contract.md §2.7 (heartbeat 5 s, offline after 15 s, sweep every 5 s), prune after 60 s. */
const ConfigTest = ClusterConfigService.layerTest((c) => ({
  ...c,
  discovery: { ...c.discovery, pruneAfterMs: 60_000 }
}))
const RegistryTest = Registry.Default.pipe(Layer.provide(ConfigTest))
/** The monitor and the registry it sweeps; the test reaches the same Registry. */
const MonitorTest = HealthMonitorLive.pipe(
  Layer.provideMerge(RegistryTest),
  Layer.provide(ConfigTest),
  Layer.provide(LoadMonitor.layerTest())
)

const status = (id: string) =>
  Effect.flatMap(Registry, (r) => r.get(id)).pipe(Effect.map(Option.map((w) => w.status)), Effect.map(Option.getOrUndefined))

/** Moves the TestClock to `ms` after the start (t = 0): every sweep due by then has run. */
const at = (ms: number) =>
  Effect.gen(function* () {
    const now = yield* TestClock.currentTimeMillis
    yield* TestClock.adjust(ms - now)
  })

describe("HealthMonitor (TestClock)", () => {
  it.scoped("a worker registered at t=0 is online at 15 s and offline after the first sweep past 15 s", () =>
    Effect.gen(function* () {
      const registry = yield* Registry
      yield* registry.register(registration({ id: "w1" }))
      yield* at(15_000) // sweeps at 5, 10, 15 s: silent for exactly 15 s is not "more than" 15 s
      expect(yield* status("w1")).toBe("online")
      yield* at(19_999)
      expect(yield* status("w1")).toBe("online")
      yield* at(20_000) // the sweep at 20 s
      expect(yield* status("w1")).toBe("offline")
      expect(Option.getOrThrow(yield* registry.get("w1")).statusReason).toBe("no heartbeat for 20.0 s")
    }).pipe(Effect.provide(MonitorTest))
  )

  it.scoped("the first sweep runs one interval after start, then one per interval", () => {
    // Offline after 1 s of silence, but sweeps only every 5 s: the sweeps' times become visible.
    const config = ClusterConfigService.layerTest((c) => ({
      ...c,
      discovery: { ...c.discovery, offlineTimeoutMs: 1_000, healthCheckIntervalMs: 5_000 }
    }))
    const layer = HealthMonitorLive.pipe(
      Layer.provideMerge(Registry.Default.pipe(Layer.provide(config))),
      Layer.provide(config),
      Layer.provide(LoadMonitor.layerTest())
    )
    return Effect.gen(function* () {
      const registry = yield* Registry
      yield* registry.register(registration({ id: "w1" }))
      yield* at(4_999)
      expect(yield* status("w1")).toBe("online")
      yield* at(5_000)
      expect(yield* status("w1")).toBe("offline")
      yield* registry.heartbeat(heartbeat("w1"))
      yield* at(9_999)
      expect(yield* status("w1")).toBe("online")
      yield* at(10_000)
      expect(yield* status("w1")).toBe("offline")
    }).pipe(Effect.provide(layer))
  })

  it.scoped("a heartbeat at 14 s keeps the worker online at 20 s; silence then takes it offline", () =>
    Effect.gen(function* () {
      const registry = yield* Registry
      yield* registry.register(registration({ id: "w1" }))
      yield* at(14_000)
      expect(yield* registry.heartbeat(heartbeat("w1", 1))).toBe("updated")
      yield* at(20_000)
      expect(yield* status("w1")).toBe("online")
      yield* at(29_999) // sweeps at 25 s (11 s silent)
      expect(yield* status("w1")).toBe("online")
      yield* at(30_000) // 16 s silent
      expect(yield* status("w1")).toBe("offline")
      expect(Option.getOrThrow(yield* registry.get("w1")).statusReason).toBe("no heartbeat for 16.0 s")
    }).pipe(Effect.provide(MonitorTest))
  )

  it.scoped("a late heartbeat after going offline brings the worker back online", () =>
    Effect.gen(function* () {
      const registry = yield* Registry
      yield* registry.register(registration({ id: "w1" }))
      yield* at(20_000)
      expect(yield* status("w1")).toBe("offline")
      yield* at(22_000)
      expect(yield* registry.heartbeat(heartbeat("w1"))).toBe("updated")
      expect(yield* status("w1")).toBe("online")
      yield* at(35_000) // 13 s after the heartbeat: still online
      expect(yield* status("w1")).toBe("online")
      const w = Option.getOrThrow(yield* registry.get("w1"))
      expect(w.statusReason).toBeUndefined()
      expect(w.lastHeartbeat).toBe(22_000)
    }).pipe(Effect.provide(MonitorTest))
  )

  it.scoped("offline workers are pruned after prune_after_ms, online ones never", () =>
    Effect.gen(function* () {
      const registry = yield* Registry
      yield* registry.register(registration({ id: "gone" }))
      yield* registry.register(registration({ id: "alive" }))
      yield* registry.deregister({ workerId: WorkerId.make("gone"), timestamp: 0 })
      for (let t = 5_000; t <= 60_000; t += 5_000) {
        yield* at(t)
        yield* registry.heartbeat(heartbeat("alive"))
      }
      // 60 s after its last heartbeat: not yet *more* than prune_after_ms.
      expect(yield* status("gone")).toBe("offline")
      yield* at(65_000)
      expect(yield* status("gone")).toBeUndefined()
      expect(yield* status("alive")).toBe("online")
      expect(yield* registry.counts).toEqual({ total: 1, online: 1, offline: 0 })
    }).pipe(Effect.provide(MonitorTest))
  )

  it.scoped("time the controller's own event loop was stalled does not count as a worker's silence", () => {
    const stalled = HealthMonitorLive.pipe(
      Layer.provideMerge(RegistryTest),
      Layer.provide(ConfigTest),
      Layer.provide(LoadMonitor.layerTest({ window: 6_000 }))
    )
    return Effect.gen(function* () {
      const registry = yield* Registry
      yield* registry.register(registration({ id: "w1" }))
      yield* at(20_000) // silent 20 s: more than 15, but within 15 + 6 of stall
      expect(yield* status("w1")).toBe("online")
      yield* at(25_000) // 25 > 21
      expect(yield* status("w1")).toBe("offline")
    }).pipe(Effect.provide(stalled))
  })

  it.effect("stops sweeping when its scope closes", () =>
    Effect.gen(function* () {
      const registry = yield* Registry
      yield* registry.register(registration({ id: "w1" }))
      // The monitor runs only inside this inner scope.
      yield* at(5_000).pipe(Effect.provide(HealthMonitorLive), Effect.scoped)
      yield* at(60_000)
      expect(yield* status("w1")).toBe("online")
    }).pipe(Effect.provide(RegistryTest), Effect.provide(ConfigTest), Effect.provide(LoadMonitor.layerTest()))
  )
})
