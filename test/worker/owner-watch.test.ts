import { describe, expect, it } from "@effect/vitest"
import { Effect, Schema, TestClock } from "effect"
import { Subjects } from "../../src/domain/subjects.js"
import { type TokenMessage } from "../../src/domain/inference.js"
import { ControllerProbeReply, WorkerHeartbeat } from "../../src/domain/worker.js"
import { syntheticEngineLayer } from "../../src/worker/engines/synthetic-engine.js"
import { judge, probePolicy, worstCaseStopMs } from "../../src/worker/owner-watch.js"
import { RequestOwners } from "../../src/worker/request-owners.js"
import { eventually } from "../support/eventually.js"
import { tmpDir } from "./support/model-fixtures.js"
import { type Harness, inferenceRequest, repliesTo, replyTo, send, startHarness, startRequest, tokenMessages, untilRunning } from "./support/worker-harness.js"

/** Issue 14: no work outlives its controller; the worker's own counts for several controllers. */

const slow = syntheticEngineLayer({ tokensPerSecond: 10, firstTokenMs: 0 })
const encoder = new TextEncoder()

const last = (messages: ReadonlyArray<TokenMessage>) => messages.at(-1)

/** A controller that answers its probes, as `ProbeResponderLive` does. */
const answering = (h: Harness, controllerId: string) =>
  Effect.acquireRelease(
    Effect.sync(() =>
      h.nats.listen(Subjects.controllerProbe(controllerId), (m) => {
        if (m.reply !== undefined) h.nats.send(m.reply, encoder.encode(JSON.stringify(Schema.encodeSync(ControllerProbeReply)({ controllerId }))))
      })
    ),
    (s) => Effect.sync(() => s.close())
  )

/** A controller whose process hangs: subscribed, never answering. */
const silent = (h: Harness, controllerId: string) =>
  Effect.acquireRelease(
    Effect.sync(() => h.nats.listen(Subjects.controllerProbe(controllerId), () => undefined)),
    (s) => Effect.sync(() => s.close())
  )

const probesOf = (h: Harness, controllerId: string) => Effect.map(h.bus.publishedOn(Subjects.controllerProbe(controllerId)), (p) => p.length)

describe("owner watch: the verdict (pure)", () => {
  it("no responders: gone at once; timeouts: gone at the second in a row; an answer clears the misses", () => {
    expect(judge(0, "no_responders", 2)).toEqual({ misses: 1, gone: "no responders" })
    expect(judge(0, "timeout", 2)).toEqual({ misses: 1, gone: undefined })
    expect(judge(1, "timeout", 2)).toEqual({ misses: 2, gone: "no answer to 2 probes in a row" })
    expect(judge(1, "answered", 2)).toEqual({ misses: 0, gone: undefined })
  })

  it("the policy: probes never overlap (timeout below the interval); a killed controller's work stops within 5 s by default", () => {
    const policy = probePolicy(1_000)
    expect(policy).toEqual({ intervalMs: 1_000, timeoutMs: 800, maxMisses: 2 })
    expect(worstCaseStopMs(policy)).toBeLessThan(5_000)
  })
})

describe("RequestOwners", () => {
  it("counts per controller, stops all of one controller's requests, reports the busiest", () => {
    const owners = new RequestOwners()
    const stopped: Array<string> = []
    const removeA1 = owners.add("ctl-a", "a1", () => stopped.push("a1"))
    owners.add("ctl-a", "a2", () => stopped.push("a2"))
    owners.add("ctl-b", "b1", () => stopped.push("b1"))
    expect([owners.count("ctl-a"), owners.count("ctl-b"), owners.count("ctl-c"), owners.count(undefined)]).toEqual([2, 1, 0, 0])
    expect(owners.byController()).toEqual({ "ctl-a": 2, "ctl-b": 1 })
    expect(owners.byController(1)).toEqual({ "ctl-a": 2 })
    removeA1()
    removeA1()
    expect(owners.count("ctl-a")).toBe(1)
    expect(owners.stopAll("ctl-a")).toBe(1)
    expect(stopped).toEqual(["a2"])
    expect(owners.stopAll("ctl-z")).toBe(0)
    expect([...owners.controllers()].sort()).toEqual(["ctl-a", "ctl-b"])
  })
})

describe("owner watch (TestClock, in-memory transport)", () => {
  it.scoped("a controller with no responders: its requests stop at the first probe (1 s) with error controller_gone; other requests run on", () =>
    Effect.gen(function* () {
      const h = yield* startHarness({ modelDir: yield* tmpDir(), engine: slow, heartbeatIntervalMs: 60_000 })
      yield* answering(h, "ctl-live")
      const orphan = inferenceRequest({ maxTokens: 100, controllerId: "ctl-gone" })
      const owned = inferenceRequest({ maxTokens: 100, controllerId: "ctl-live" })
      yield* send(h, orphan, replyTo(orphan))
      yield* send(h, owned, replyTo(owned))
      yield* eventually(Effect.map(repliesTo(h, replyTo(owned)), (r) => expect(r).toHaveLength(1)))
      yield* TestClock.adjust(999)
      expect(yield* h.worker.running).toBe(2)
      yield* TestClock.adjust(1)
      const messages = yield* eventually(
        Effect.map(tokenMessages(h, orphan.requestId), (m) => {
          expect(last(m)?.type).toBe("error")
          return m
        })
      )
      expect(last(messages)).toMatchObject({ type: "error", code: "controller_gone" })
      expect(yield* h.worker.running).toBe(1)
      expect(yield* h.worker.stats).toMatchObject({ cancelled: 1, failed: 0, active: 1 })
      expect(h.logs.some((l) => l.includes("controller ctl-gone is gone (no responders): stopping its 1 request(s)"))).toBe(true)
      // The live controller is asked once a second, its request runs on; the gone one owns nothing any more.
      yield* TestClock.adjust(3_000)
      yield* eventually(Effect.map(probesOf(h, "ctl-live"), (n) => expect(n).toBe(4)))
      expect(h.logs.filter((l) => l.includes("is gone"))).toHaveLength(1)
      expect(yield* h.worker.running).toBe(1)
    })
  )

  it.scoped("one probe per controller, however many of its requests run", () =>
    Effect.gen(function* () {
      const h = yield* startHarness({ modelDir: yield* tmpDir(), engine: slow, heartbeatIntervalMs: 60_000 })
      yield* answering(h, "ctl-live")
      const requests = [1, 2].map(() => inferenceRequest({ maxTokens: 100, controllerId: "ctl-live" }))
      for (const r of requests) yield* send(h, r, replyTo(r))
      yield* untilRunning(h, 2)
      for (let s = 1; s <= 3; s++) {
        yield* TestClock.adjust(1_000)
        yield* eventually(Effect.map(probesOf(h, "ctl-live"), (n) => expect(n).toBe(s)))
      }
      expect(yield* h.worker.running).toBe(2)
    })
  )

  it.scoped("a controller that stops answering (subscribed, silent): its requests stop after two unanswered probes, not after one", () =>
    Effect.gen(function* () {
      const h = yield* startHarness({ modelDir: yield* tmpDir(), engine: slow, heartbeatIntervalMs: 60_000 })
      yield* silent(h, "ctl-hung")
      const request = inferenceRequest({ maxTokens: 100, controllerId: "ctl-hung" })
      yield* startRequest(h, request)
      // Probes at 1 s and 2 s, each unanswered after 0.8 s: the second miss is at 2.8 s.
      yield* TestClock.adjust(1_000)
      yield* eventually(Effect.map(probesOf(h, "ctl-hung"), (n) => expect(n).toBe(1)))
      yield* TestClock.adjust(1_000)
      yield* eventually(Effect.map(probesOf(h, "ctl-hung"), (n) => expect(n).toBe(2)))
      yield* TestClock.adjust(799)
      expect(yield* h.worker.running).toBe(1)
      yield* TestClock.adjust(1)
      yield* untilRunning(h, 0)
      expect(last(yield* tokenMessages(h, request.requestId))).toMatchObject({ type: "error", code: "controller_gone" })
      expect(h.logs.some((l) => l.includes("controller ctl-hung is gone (no answer to 2 probes in a row)"))).toBe(true)
    })
  )

  it.scoped("while the worker's own connection is down no verdict is taken; after the reconnect one interval of grace, then the probe", () =>
    Effect.gen(function* () {
      const h = yield* startHarness({ modelDir: yield* tmpDir(), engine: slow, heartbeatIntervalMs: 60_000 })
      const request = inferenceRequest({ maxTokens: 100, controllerId: "ctl-gone" })
      yield* startRequest(h, request)
      yield* h.bus.setConnected(false)
      yield* TestClock.adjust(3_000)
      yield* TestClock.adjust(0)
      expect(yield* h.worker.running).toBe(1)
      yield* h.bus.setConnected(true)
      // The first tick after the reconnect only resumes: the controllers resubscribe meanwhile.
      yield* TestClock.adjust(1_000)
      yield* TestClock.adjust(0)
      expect(yield* h.worker.running).toBe(1)
      yield* TestClock.adjust(1_000)
      yield* untilRunning(h, 0)
      expect(last(yield* tokenMessages(h, request.requestId))).toMatchObject({ type: "error", code: "controller_gone" })
    })
  )

  it.scoped("a request without controllerId (an older controller) is never probed", () =>
    Effect.gen(function* () {
      const h = yield* startHarness({ modelDir: yield* tmpDir(), engine: slow, heartbeatIntervalMs: 60_000 })
      const request = inferenceRequest({ maxTokens: 100 })
      yield* startRequest(h, request)
      yield* TestClock.adjust(5_000)
      expect((yield* h.bus.published).filter((m) => m.subject.startsWith("controller."))).toEqual([])
      expect(yield* h.worker.running).toBe(1)
    })
  )
})

describe("the worker's own counts for several controllers (TestClock, in-memory transport)", () => {
  it.scoped("acks and busy refusals carry active and the asking controller's share; heartbeats carry activeByController, maxConcurrent, peakActive", () =>
    Effect.gen(function* () {
      const h = yield* startHarness({ modelDir: yield* tmpDir(), engine: slow, heartbeatIntervalMs: 1_000 })
      yield* answering(h, "ctl-a")
      yield* answering(h, "ctl-b")
      const a1 = inferenceRequest({ maxTokens: 100, controllerId: "ctl-a" })
      const b1 = inferenceRequest({ maxTokens: 100, controllerId: "ctl-b" })
      const a2 = inferenceRequest({ maxTokens: 100, controllerId: "ctl-a" })
      yield* send(h, a1, replyTo(a1))
      yield* eventually(Effect.map(repliesTo(h, replyTo(a1)), (r) => expect(r).toEqual([{ accepted: true, workerId: h.workerId, active: 1, activeForController: 1 }])))
      yield* send(h, b1, replyTo(b1))
      yield* eventually(Effect.map(repliesTo(h, replyTo(b1)), (r) => expect(r).toEqual([{ accepted: true, workerId: h.workerId, active: 2, activeForController: 1 }])))
      // max_concurrent is 2 in the harness.
      yield* send(h, a2, replyTo(a2))
      yield* eventually(
        Effect.map(repliesTo(h, replyTo(a2)), (r) =>
          expect(r).toEqual([{ accepted: false, reason: "busy", message: expect.any(String), active: 2, activeForController: 1 }])
        )
      )
      yield* TestClock.adjust(1_000)
      const beat = yield* eventually(
        Effect.map(h.bus.sentOn(Subjects.heartbeat, WorkerHeartbeat), (beats) => {
          expect(beats.length).toBeGreaterThan(0)
          return beats.at(-1)
        })
      )
      expect(beat?.metrics).toMatchObject({
        requests: { active: 2 },
        activeByController: { "ctl-a": 1, "ctl-b": 1 },
        maxConcurrent: 2,
        peakActive: 2
      })
    })
  )

  it.scoped("a slot that frees after a busy refusal is announced at once by an early heartbeat", () =>
    Effect.gen(function* () {
      const h = yield* startHarness({
        modelDir: yield* tmpDir(),
        engine: syntheticEngineLayer({ tokensPerSecond: 10, firstTokenMs: 0 }),
        heartbeatIntervalMs: 60_000
      })
      const heartbeats = Effect.map(h.bus.sentOn(Subjects.heartbeat, WorkerHeartbeat), (b) => b.length)
      const short = inferenceRequest({ maxTokens: 3, controllerId: "ctl-a" })
      const long = inferenceRequest({ maxTokens: 100, controllerId: "ctl-a" })
      const refused = inferenceRequest({ maxTokens: 3, controllerId: "ctl-b" })
      yield* answering(h, "ctl-a")
      yield* send(h, short, replyTo(short))
      yield* send(h, long, replyTo(long))
      yield* untilRunning(h, 2)
      const before = yield* heartbeats
      yield* send(h, refused, replyTo(refused))
      yield* eventually(Effect.map(repliesTo(h, replyTo(refused)), (r) => expect(r).toMatchObject([{ accepted: false, reason: "busy" }])))
      // `short` ends after 3 tokens at 10/s: the freed slot is announced then, not 60 s later.
      yield* TestClock.adjust(400)
      yield* eventually(Effect.map(tokenMessages(h, short.requestId), (m) => expect(last(m)?.type).toBe("done")))
      yield* eventually(Effect.map(heartbeats, (n) => expect(n).toBe(before + 1)))
      const beat = (yield* h.bus.sentOn(Subjects.heartbeat, WorkerHeartbeat)).at(-1)
      expect(beat?.metrics).toMatchObject({ requests: { active: 1 }, activeByController: { "ctl-a": 1 } })
    })
  )
})
