import { describe, expect, it } from "@effect/vitest"
import { Effect, Layer, Option, type Scope, TestClock } from "effect"
import { ClusterConfigService } from "../../src/config/cluster-config.js"
import type { ClusterConfig, WorkerProbeConfig } from "../../src/config/schema.js"
import { defaultClusterConfig } from "../../src/config/schema.js"
import { Registry } from "../../src/controller/registry.js"
import {
  afterProbe,
  allowedSilenceMs,
  initialProbeState,
  type ProbedStream,
  probeDueAt,
  type ProbeState,
  probeTickMs,
  shouldProbe,
  WorkerProbes
} from "../../src/controller/worker-probes.js"
import { WorkerId } from "../../src/domain/ids.js"
import { Subjects } from "../../src/domain/subjects.js"
import { NatsTransport } from "../../src/nats/nats-transport.js"
import { makeProbeResponder } from "../../src/worker/probe-responder.js"
import { ScriptedNats } from "../support/scripted-nats.js"
import { registration, type WorkerSpec } from "./support/fixtures.js"

const settings: WorkerProbeConfig = defaultClusterConfig().controller.workerProbe

/** A stream as the probes see it, moved by the test. */
const stream = (lastHeardAt: number | undefined, messageGapMs?: number): { lastHeardAt: number | undefined; messageGapMs: number | undefined } => ({
  lastHeardAt,
  messageGapMs
})

describe("worker probes: the schedule (pure, explicit times)", () => {
  it("the defaults: 500 ms of silence, 4 × the stream's gap, 1 s per probe, hung after 2 misses; a tick of 100 ms", () => {
    expect(settings).toEqual({ enabled: true, minSilenceMs: 500, gapFactor: 4, timeoutMs: 1_000, maxMisses: 2 })
    expect(probeTickMs(settings)).toBe(100)
    expect(probeTickMs({ ...settings, minSilenceMs: 20 })).toBe(10)
    expect(probeTickMs({ ...settings, minSilenceMs: 250 })).toBe(50)
  })

  it("a stream may be silent for max(min_silence_ms, gap_factor × its own gap); min_silence_ms before its second message", () => {
    expect(allowedSilenceMs(undefined, settings)).toBe(500)
    expect(allowedSilenceMs(50, settings)).toBe(500)
    expect(allowedSilenceMs(125, settings)).toBe(500)
    expect(allowedSilenceMs(300, settings)).toBe(1_200)
    expect(allowedSilenceMs(300, { ...settings, gapFactor: 2 })).toBe(600)
  })

  it("due when the first stream's silence passes its allowance; streams not acked yet do not count", () => {
    const streams: ReadonlyArray<ProbedStream> = [stream(1_000, 50), stream(1_200, 400), stream(undefined)]
    // 1000 + 500 and 1200 + 1600: the first one decides
    expect(probeDueAt(streams, initialProbeState, settings)).toBe(1_500)
    expect(probeDueAt([stream(1_200, 400)], initialProbeState, settings)).toBe(2_800)
    expect(probeDueAt([stream(undefined)], initialProbeState, settings)).toBeUndefined()
    expect(probeDueAt([], initialProbeState, settings)).toBeUndefined()
  })

  it("a probe's answer is news from every stream: the next probe waits another allowance", () => {
    const answered: ProbeState = { inFlight: false, answeredAt: 2_000, misses: 0 }
    expect(probeDueAt([stream(1_000)], answered, settings)).toBe(2_500)
    // a message after the answer counts from the message
    expect(probeDueAt([stream(2_300)], answered, settings)).toBe(2_800)
    // a long first token is probed for every min_silence_ms
    expect(probeDueAt([stream(0)], { ...answered, answeredAt: 9_500 }, settings)).toBe(10_000)
  })

  it("one probe at a time: never while one is on its way, never before it is due", () => {
    expect(shouldProbe(initialProbeState, 1_500, 1_499)).toBe(false)
    expect(shouldProbe(initialProbeState, 1_500, 1_500)).toBe(true)
    expect(shouldProbe({ ...initialProbeState, inFlight: true }, 1_500, 9_000)).toBe(false)
    expect(shouldProbe(initialProbeState, undefined, 9_000)).toBe(false)
  })

  it("the hung rule: max_misses unanswered probes in a row; an answer or a message since the probe resets the count", () => {
    const sent: ProbeState = { inFlight: true, answeredAt: undefined, misses: 0 }
    const first = afterProbe(sent, "timeout", { now: 1_500, heardSinceSent: false }, settings)
    expect(first).toEqual({ state: { inFlight: false, answeredAt: undefined, misses: 1 }, verdict: "missed" })
    const second = afterProbe({ ...first.state, inFlight: true }, "timeout", { now: 2_600, heardSinceSent: false }, settings)
    expect(second).toEqual({ state: { inFlight: false, answeredAt: undefined, misses: 2 }, verdict: "hung" })
    // an answer in between: alive, the count starts over
    const answered = afterProbe({ ...first.state, inFlight: true }, "answered", { now: 1_700, heardSinceSent: false }, settings)
    expect(answered).toEqual({ state: { inFlight: false, answeredAt: 1_700, misses: 0 }, verdict: "alive" })
    // a token arrived while the probe was out: the worker lives, its answer was only slow
    const heard = afterProbe({ ...first.state, inFlight: true }, "timeout", { now: 2_600, heardSinceSent: true }, settings)
    expect(heard).toEqual({ state: { inFlight: false, answeredAt: undefined, misses: 0 }, verdict: "alive" })
    // three misses allowed
    expect(afterProbe({ ...first.state, inFlight: true }, "timeout", { now: 2_600, heardSinceSent: false }, { ...settings, maxMisses: 3 }).verdict).toBe(
      "missed"
    )
  })

  it("no responders: gone at once, whatever came before", () => {
    expect(afterProbe({ inFlight: true, answeredAt: 100, misses: 0 }, "no_responders", { now: 600, heardSinceSent: true }, settings).verdict).toBe("gone")
    expect(afterProbe({ inFlight: true, answeredAt: undefined, misses: 1 }, "no_responders", { now: 600, heardSinceSent: false }, settings)).toEqual({
      state: { inFlight: false, answeredAt: undefined, misses: 1 },
      verdict: "gone"
    })
  })
})

// ---------------------------------------------------------------------------------------------
// The service on the TestClock, over the scripted NATS double.

type Patch = (probe: WorkerProbeConfig) => WorkerProbeConfig

const probesLayer = (patch: Patch = (p) => p) =>
  WorkerProbes.Default.pipe(
    Layer.provideMerge(Registry.Default),
    Layer.provideMerge(ScriptedNats.layer),
    Layer.provideMerge(
      ClusterConfigService.layerTest(
        (c): ClusterConfig => ({ ...c, controller: { ...c.controller, workerProbe: patch(c.controller.workerProbe) } })
      )
    )
  )

type Services = Layer.Layer.Success<ReturnType<typeof probesLayer>>

const withProbes =
  (patch?: Patch) =>
  <A, E>(body: Effect.Effect<A, E, Services | Scope.Scope>): Effect.Effect<A, E> =>
    body.pipe(Effect.scoped, Effect.provide(probesLayer(patch)))

/** Registers `spec` (probes: true unless said otherwise) and returns its registry entry. */
const register = (spec: WorkerSpec) =>
  Effect.gen(function* () {
    const registry = yield* Registry
    yield* registry.register(registration({ probes: true, ...spec }))
    return Option.getOrThrow(yield* registry.get(spec.id))
  })

const statusOf = (id: string) =>
  Effect.flatMap(Registry, (r) => r.get(id)).pipe(Effect.map((w) => Option.map(w, (x) => [x.status, x.statusReason ?? ""] as const)))

const probesSent = (id: string) =>
  Effect.flatMap(ScriptedNats, (bus) => bus.publishedOn(Subjects.probe(id))).pipe(Effect.map((sent) => sent.length))

/** A worker that answers its probes as the real worker does. */
const answering = (id: string) => makeProbeResponder({ workerId: WorkerId.make(id), active: () => 3 })

/** A worker whose probe subscription exists but never answers: a hung process. */
const hung = (id: string) =>
  Effect.flatMap(NatsTransport, (nats) =>
    Effect.acquireRelease(
      Effect.sync(() => nats.listen(Subjects.probe(id), () => {})),
      (s) => Effect.sync(() => s.close())
    )
  )

/** Adjusts the TestClock to `ms` after the start (the layer starts at 0). */
const at = (ms: number) => TestClock.setTime(ms).pipe(Effect.zipRight(TestClock.adjust(0)))

describe("WorkerProbes on the TestClock", () => {
  it.effect("a silent stream: its worker is probed min_silence_ms after the last news, not before; answered, again an allowance later", () =>
    withProbes()(
      Effect.gen(function* () {
        const probes = yield* WorkerProbes
        const worker = yield* register({ id: "w1" })
        yield* answering("w1")
        probes.watch(worker, stream(0))
        yield* at(499)
        expect(yield* probesSent("w1")).toBe(0)
        yield* at(500)
        expect(yield* probesSent("w1")).toBe(1)
        // answered at 500: due again at 1000
        yield* at(999)
        expect(yield* probesSent("w1")).toBe(1)
        yield* at(1_000)
        expect(yield* probesSent("w1")).toBe(2)
        expect(yield* statusOf("w1")).toEqual(Option.some(["online", ""]))
        const replies = yield* Effect.flatMap(ScriptedNats, (bus) => bus.published)
        expect(replies.filter((m) => m.subject.startsWith("_INBOX.")).map((m) => JSON.parse(m.payload) as unknown)).toEqual([
          { workerId: "w1", active: 3 },
          { workerId: "w1", active: 3 }
        ])
      })
    )
  )

  it.effect("a stream that keeps its rhythm is never probed; one whose mean gap is 300 ms only after 1200 ms of silence", () =>
    withProbes()(
      Effect.gen(function* () {
        const probes = yield* WorkerProbes
        const worker = yield* register({ id: "w1" })
        yield* answering("w1")
        const flowing = stream(0, 50)
        probes.watch(worker, flowing)
        for (let t = 50; t <= 3_000; t += 50) {
          flowing.lastHeardAt = t
          yield* at(t)
        }
        expect(yield* probesSent("w1")).toBe(0)
        const slow = stream(3_000, 300)
        probes.watch(worker, slow)
        flowing.lastHeardAt = undefined // ended
        yield* at(4_199)
        expect(yield* probesSent("w1")).toBe(0)
        yield* at(4_200)
        expect(yield* probesSent("w1")).toBe(1)
      })
    )
  )

  it.effect("no responders: the worker goes offline at once with reason \"no responders\"", () =>
    withProbes()(
      Effect.gen(function* () {
        const probes = yield* WorkerProbes
        const worker = yield* register({ id: "gone" })
        probes.watch(worker, stream(0))
        yield* at(400)
        expect(yield* statusOf("gone")).toEqual(Option.some(["online", ""]))
        yield* at(500)
        expect(yield* statusOf("gone")).toEqual(Option.some(["offline", "no responders"]))
      })
    )
  )

  it.effect("hung: two probes in a row unanswered within timeout_ms → offline \"unresponsive\" at 500 + 1000 + 100 + 1000 ms", () =>
    withProbes()(
      Effect.gen(function* () {
        const probes = yield* WorkerProbes
        const worker = yield* register({ id: "stuck" })
        yield* hung("stuck")
        probes.watch(worker, stream(0, 50))
        yield* at(500)
        expect(yield* probesSent("stuck")).toBe(1)
        // one at a time: nothing more while the first is out
        yield* at(1_499)
        expect(yield* probesSent("stuck")).toBe(1)
        // the first times out at 1500; the next tick (1600) sends the second at once
        yield* at(1_600)
        expect(yield* probesSent("stuck")).toBe(2)
        expect(yield* statusOf("stuck")).toEqual(Option.some(["online", ""]))
        yield* at(2_599)
        expect(yield* statusOf("stuck")).toEqual(Option.some(["online", ""]))
        yield* at(2_600)
        expect(yield* statusOf("stuck")).toEqual(Option.some(["offline", "unresponsive"]))
      })
    )
  )

  it.effect("many silent streams on one worker: one probe at a time, never one per stream", () =>
    withProbes()(
      Effect.gen(function* () {
        const probes = yield* WorkerProbes
        const worker = yield* register({ id: "w1" })
        yield* hung("w1")
        for (let i = 0; i < 50; i++) probes.watch(worker, stream(i))
        yield* at(1_400)
        expect(yield* probesSent("w1")).toBe(1)
        expect(probes.size()).toBe(1)
      })
    )
  )

  it.effect("a message while a probe is out: the timeout is no miss, the worker stays online", () =>
    withProbes()(
      Effect.gen(function* () {
        const probes = yield* WorkerProbes
        const worker = yield* register({ id: "slowpoke" })
        yield* hung("slowpoke")
        const s = stream(0)
        probes.watch(worker, s)
        yield* at(500) // probe 1
        s.lastHeardAt = 700 // a token came while it was out
        yield* at(1_600) // probe 1 timed out at 1500 (no miss: heard at 700); probe 2 sent at 1600
        yield* at(2_600) // probe 2 timed out: miss 1
        expect(yield* statusOf("slowpoke")).toEqual(Option.some(["online", ""]))
        yield* at(3_700) // probe 3 (2700) timed out: miss 2 → hung
        expect(yield* statusOf("slowpoke")).toEqual(Option.some(["offline", "unresponsive"]))
      })
    )
  )

  it.effect("a slow first token on a worker that answers: probed every min_silence_ms for 10 s, never declared hung", () =>
    withProbes()(
      Effect.gen(function* () {
        const probes = yield* WorkerProbes
        const worker = yield* register({ id: "busy" })
        yield* answering("busy")
        for (let i = 0; i < 8; i++) probes.watch(worker, stream(0))
        yield* at(10_000)
        expect(yield* probesSent("busy")).toBe(20)
        expect(yield* statusOf("busy")).toEqual(Option.some(["online", ""]))
      })
    )
  )

  it.effect("unwatched streams are forgotten; a worker that registered without capabilities.probes is never probed", () =>
    withProbes()(
      Effect.gen(function* () {
        const probes = yield* WorkerProbes
        const old = yield* register({ id: "old", probes: false })
        const fresh = yield* register({ id: "fresh" })
        probes.watch(old, stream(0))
        const unwatch = probes.watch(fresh, stream(0))
        expect(probes.size()).toBe(1)
        unwatch()
        expect(probes.size()).toBe(0)
        yield* at(5_000)
        expect(yield* probesSent("old")).toBe(0)
        expect(yield* probesSent("fresh")).toBe(0)
        expect(yield* statusOf("old")).toEqual(Option.some(["online", ""]))
      })
    )
  )

  it.effect("worker_probe.enabled: false probes nobody", () =>
    withProbes((p) => ({ ...p, enabled: false }))(
      Effect.gen(function* () {
        const probes = yield* WorkerProbes
        const worker = yield* register({ id: "gone" })
        probes.watch(worker, stream(0))
        yield* at(5_000)
        expect(yield* probesSent("gone")).toBe(0)
        expect(yield* statusOf("gone")).toEqual(Option.some(["online", ""]))
      })
    )
  )

  it.effect("a worker that comes back online starts with a clean slate", () =>
    withProbes()(
      Effect.gen(function* () {
        const probes = yield* WorkerProbes
        const registry = yield* Registry
        const worker = yield* register({ id: "w1" })
        yield* hung("w1")
        const s = stream(0)
        probes.watch(worker, s)
        yield* at(1_500) // probe 1 out at 500, missed at 1500
        yield* at(1_600) // probe 2 out
        yield* at(2_600) // missed again: hung
        expect(yield* statusOf("w1")).toEqual(Option.some(["offline", "unresponsive"]))
        // it registers again (it woke up); a new stream on it is judged afresh
        yield* registry.register(registration({ id: "w1", probes: true }))
        s.lastHeardAt = 2_600
        yield* at(3_100) // probe 3
        yield* at(4_100) // missed once: still online
        expect(yield* statusOf("w1")).toEqual(Option.some(["online", ""]))
      })
    )
  )
})
