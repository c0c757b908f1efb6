import { describe, expect, inject, it } from "@effect/vitest"
import { Context, Effect, Layer, Option, Stream, TestClock } from "effect"
import { ClusterConfigService } from "../../src/config/cluster-config.js"
import type { ClusterConfig } from "../../src/config/schema.js"
import { ControllerIdentity, makeControllerId } from "../../src/controller/controller-identity.js"
import { Registry } from "../../src/controller/registry.js"
import { announce, announceDue, RegistrySyncLive } from "../../src/controller/registry-sync.js"
import { WorkerId } from "../../src/domain/ids.js"
import { Subjects } from "../../src/domain/subjects.js"
import {
  ControllerAnnounce,
  WorkerDeregistration,
  WorkerHeartbeat,
  type WorkerInfo,
  WorkerRegistration
} from "../../src/domain/worker.js"
import { NatsTransport } from "../../src/nats/nats-transport.js"
import { layer as natsLayer } from "../../src/nats/nats-transport-live.js"
import { eventually } from "../support/eventually.js"
import { ScriptedNats } from "../support/scripted-nats.js"
import { heartbeat, registration } from "./support/fixtures.js"
import { captureLogs } from "./support/log-capture.js"

const logs = captureLogs()

const ConfigTest = ClusterConfigService.layerTest()
const RegistryTest = Registry.Default.pipe(Layer.provideMerge(ConfigTest))

/** The sync layer over the in-memory bus; the test reaches the same bus, Registry and identity. */
const syncWith = (patch: (c: ClusterConfig) => ClusterConfig) =>
  RegistrySyncLive.pipe(
    Layer.provideMerge(
      Layer.mergeAll(
        Registry.Default.pipe(Layer.provideMerge(ClusterConfigService.layerTest(patch))),
        ScriptedNats.layer,
        ControllerIdentity.layerTest("ctl-test"),
        logs.layer
      )
    )
  )
const SyncTest = syncWith((c) => c)

/** Waits (on the wall clock, not the Effect one) until the registry holds a worker matching `predicate`. */
const awaitWorker = (id: string, predicate: (w: WorkerInfo) => boolean = () => true) =>
  eventually(
    Effect.flatMap(Registry, (registry) => registry.get(id)).pipe(
      Effect.flatMap((found) => (Option.isSome(found) && predicate(found.value) ? Effect.succeed(found.value) : Effect.fail("not yet")))
    )
  )

const announcesSoFar = Effect.flatMap(ScriptedNats, (bus) => bus.publishedOn(Subjects.announce))

const sendRaw = (subject: string, text: string) => Effect.flatMap(NatsTransport, (n) => Effect.sync(() => n.send(subject, new TextEncoder().encode(text))))

const publish = {
  register: (id: string) =>
    Effect.flatMap(NatsTransport, (n) => n.publish(Subjects.register, WorkerRegistration, registration({ id }))),
  heartbeat: (id: string, active = 0) =>
    Effect.flatMap(NatsTransport, (n) => n.publish(Subjects.heartbeat, WorkerHeartbeat, heartbeat(id, active))),
  deregister: (id: string) =>
    Effect.flatMap(NatsTransport, (n) =>
      n.publish(Subjects.deregister, WorkerDeregistration, { workerId: WorkerId.make(id), timestamp: 0 })
    )
}

describe("RegistrySync (scripted NATS double)", () => {
  it.effect("registrations, heartbeats and deregistrations reach the Registry", () =>
    Effect.gen(function* () {
      yield* TestClock.setTime(1_000)
      yield* publish.register("w1")
      const w = yield* awaitWorker("w1")
      expect(w.status).toBe("online")
      expect(w.registeredAt).toBe(1_000)

      yield* TestClock.adjust(4_000)
      yield* publish.heartbeat("w1", 3)
      const beat = yield* awaitWorker("w1", (x) => x.metrics?.requests.active === 3)
      expect(beat.lastHeartbeat).toBe(5_000)

      yield* publish.deregister("w1")
      const gone = yield* awaitWorker("w1", (x) => x.status === "offline")
      expect(gone.statusReason).toBe("deregistered")
      expect(yield* announcesSoFar).toEqual([])
    }).pipe(Effect.provide(SyncTest))
  )

  it.effect("drops messages that fail their schema and keeps consuming", () =>
    Effect.gen(function* () {
      yield* sendRaw(Subjects.register, "{ not json")
      yield* sendRaw(Subjects.register, JSON.stringify({ workerId: "bad id with spaces" }))
      yield* sendRaw(Subjects.heartbeat, JSON.stringify({ workerId: "w1" }))
      yield* sendRaw(Subjects.deregister, "[]")
      yield* publish.register("w2")
      expect((yield* awaitWorker("w2")).status).toBe("online")
      expect((yield* Effect.flatMap(Registry, (r) => r.all)).map((w) => w.workerId)).toEqual(["w2"])
    }).pipe(Effect.provide(SyncTest))
  )

  it.effect("a heartbeat from an unknown worker adds nothing and publishes controller.announce", () =>
    Effect.gen(function* () {
      yield* TestClock.setTime(42_000)
      yield* publish.register("known")
      yield* awaitWorker("known")
      yield* publish.heartbeat("ghost")
      yield* publish.heartbeat("known", 1) // same subject, so processed after the ghost's
      yield* awaitWorker("known", (w) => w.metrics?.requests.active === 1)
      expect(yield* announcesSoFar).toEqual([{ controllerId: "ctl-test", timestamp: 42_000 }])
      expect(Option.isNone(yield* Effect.flatMap(Registry, (r) => r.get("ghost")))).toBe(true)
    }).pipe(Effect.provide(SyncTest))
  )

  it.effect("a flood of unknown heartbeats announces at most once per second", () =>
    Effect.gen(function* () {
      yield* publish.register("known")
      yield* awaitWorker("known")
      /** Sends `n` unknown heartbeats, then waits until all of them were handled. */
      let marker = 0
      const flood = (n: number) =>
        Effect.gen(function* () {
          for (let i = 0; i < n; i++) yield* publish.heartbeat(`ghost-${i}`)
          marker += 1
          const m = marker
          yield* publish.heartbeat("known", m)
          yield* awaitWorker("known", (w) => w.metrics?.requests.active === m)
        })
      yield* flood(50)
      expect(yield* announcesSoFar).toHaveLength(1)
      yield* TestClock.adjust(999)
      yield* flood(10)
      expect(yield* announcesSoFar).toHaveLength(1)
      yield* TestClock.adjust(1)
      yield* flood(10)
      expect(yield* announcesSoFar).toHaveLength(2)
      yield* TestClock.adjust(5_000)
      yield* flood(1)
      const all = yield* announcesSoFar
      expect(all).toHaveLength(3)
      expect(all.map((a) => (a as { timestamp: number }).timestamp)).toEqual([0, 1_000, 6_000])
    }).pipe(Effect.provide(SyncTest))
  )

  it.effect("announce publishes { controllerId, timestamp } on controller.announce", () =>
    Effect.gen(function* () {
      yield* TestClock.setTime(7_000)
      yield* announce
      expect(yield* announcesSoFar).toEqual([{ controllerId: "ctl-test", timestamp: 7_000 }])
    }).pipe(Effect.provide(Layer.merge(ScriptedNats.layer, ControllerIdentity.layerTest("ctl-test"))))
  )
})

describe("RegistrySync applies the registration policy", () => {
  const warnings = () => logs.lines.filter((l) => l.level === "WARN").map((l) => l.message)

  it.effect("with controller.allowed_workers, other ids are ignored (and warned about once a minute)", () =>
    Effect.gen(function* () {
      const before = warnings().length
      for (let i = 0; i < 5; i++) yield* publish.register("intruder")
      yield* publish.heartbeat("intruder")
      yield* publish.deregister("w1")
      yield* publish.register("w1")
      yield* awaitWorker("w1")
      expect((yield* Effect.flatMap(Registry, (r) => r.all)).map((w) => w.workerId)).toEqual(["w1"])
      // The intruder's heartbeat caused no announce: it is not a worker we wait for.
      expect(yield* announcesSoFar).toEqual([])
      const lines = warnings().slice(before)
      expect(lines.filter((l) => l.includes('"intruder"'))).toEqual([
        'ignoring worker.register: worker "intruder" is not in controller.allowed_workers'
      ])
      yield* TestClock.adjust(60_000)
      yield* publish.register("intruder")
      yield* publish.heartbeat("w1", 4)
      yield* awaitWorker("w1", (w) => w.metrics?.requests.active === 4)
      expect(warnings().slice(before).filter((l) => l.includes('"intruder"'))).toHaveLength(2)
    }).pipe(Effect.provide(syncWith((c) => ({ ...c, controller: { ...c.controller, allowedWorkers: ["w1"] } }))))
  )

  it.effect("discovery.max_workers refuses new ids, not the known ones", () =>
    Effect.gen(function* () {
      yield* publish.register("w1")
      yield* publish.register("w2")
      yield* publish.register("w3")
      yield* publish.register("w1")
      yield* publish.heartbeat("w2", 1)
      yield* awaitWorker("w2", (w) => w.metrics?.requests.active === 1)
      expect((yield* Effect.flatMap(Registry, (r) => r.all)).map((w) => w.workerId)).toEqual(["w1", "w2"])
      expect(warnings().some((l) => l.includes('new worker "w3" refused: the registry holds 2 workers'))).toBe(true)
    }).pipe(Effect.provide(syncWith((c) => ({ ...c, discovery: { ...c.discovery, maxWorkers: 2 } }))))
  )

  it.effect("self-reported priority and hardware are bounded, the operator's overrides win", () =>
    Effect.gen(function* () {
      const nats = yield* NatsTransport
      const huge = registration({ id: "rogue", priority: 1e300, gpuMemoryGB: 1e9 })
      yield* nats.publish(Subjects.register, WorkerRegistration, huge)
      yield* nats.publish(Subjects.register, WorkerRegistration, registration({ id: "studio", priority: 5 }))
      const rogue = yield* awaitWorker("rogue")
      expect(rogue.priority).toBe(1000)
      expect(rogue.hardware.gpuMemoryGB).toBe(64)
      const studio = yield* awaitWorker("studio")
      expect(studio.priority).toBe(-3)
      expect(studio.hardware.gpuMemoryGB).toBe(96)
      expect(studio.capabilities.maxConcurrent).toBe(2)
    }).pipe(
      Effect.provide(
        syncWith((c) => ({
          ...c,
          controller: {
            ...c.controller,
            workerOverrides: { studio: { priority: -3, maxConcurrent: 2, hardware: { gpuMemoryGB: 96 } } }
          }
        }))
      )
    )
  )
})

describe("announce rate limit (pure)", () => {
  it("the first is due, then one per interval", () => {
    expect(announceDue(undefined, 0)).toEqual([true, 0])
    expect(announceDue(0, 999)).toEqual([false, 0])
    expect(announceDue(0, 1_000)).toEqual([true, 1_000])
    expect(announceDue(0, 50, 50)).toEqual([true, 50])
  })
})

describe("ControllerIdentity", () => {
  it.effect("is host name, pid and a random suffix, fresh per process start", () =>
    Effect.gen(function* () {
      const { controllerId } = yield* ControllerIdentity
      expect(controllerId).toContain(`-${process.pid}-`)
      expect(controllerId).toMatch(/-[0-9a-f]{6}$/)
      expect(makeControllerId()).not.toBe(makeControllerId())
    }).pipe(Effect.provide(ControllerIdentity.Default))
  )
})

describe("RegistrySync (real nats-server)", () => {
  const url = inject("natsUrl")
  const suffix = Math.random().toString(36).slice(2, 8)
  const controllerId = `ctl-it-${suffix}`
  const ControllerSide = RegistrySyncLive.pipe(
    Layer.provideMerge(Layer.mergeAll(RegistryTest, ControllerIdentity.layerTest(controllerId))),
    Layer.provide(natsLayer({ url, name: "registry-sync test controller" }))
  )

  it.scopedLive("a worker's register, heartbeat and deregister over NATS; an unknown heartbeat gets an announce", () =>
    Effect.gen(function* () {
      // The worker's own connection.
      const worker = Context.get(
        yield* Layer.build(natsLayer({ url, name: "registry-sync test worker" })),
        NatsTransport
      )
      const announces = yield* worker.subscribe(Subjects.announce, ControllerAnnounce)
      yield* worker.flush
      const id = `it-${suffix}`

      yield* worker.publish(Subjects.register, WorkerRegistration, registration({ id }))
      expect((yield* awaitWorker(id)).status).toBe("online")

      yield* worker.publish(Subjects.heartbeat, WorkerHeartbeat, heartbeat(id, 2))
      yield* awaitWorker(id, (w) => w.metrics?.requests.active === 2)

      yield* worker.publish(Subjects.heartbeat, WorkerHeartbeat, heartbeat(`ghost-${suffix}`))
      const ours = yield* announces.pipe(
        Stream.filter((m) => m.data.controllerId === controllerId),
        Stream.runHead,
        Effect.map(Option.getOrThrow)
      )
      expect(ours.data.timestamp).toBeGreaterThan(0)

      yield* worker.publish(Subjects.deregister, WorkerDeregistration, { workerId: WorkerId.make(id), timestamp: 0 })
      expect((yield* awaitWorker(id, (w) => w.status === "offline")).statusReason).toBe("deregistered")
    }).pipe(Effect.provide(ControllerSide), Effect.timeout("10 seconds"))
  )
})
