import { describe, expect, it } from "@effect/vitest"
import { Effect, Fiber, Metric, TestClock } from "effect"
import * as Metrics from "../../src/controller/metrics.js"
import { Registry } from "../../src/controller/registry.js"
import { Router } from "../../src/controller/router.js"
import type { InferenceRequest } from "../../src/domain/inference.js"
import type { RouteRequest } from "../../src/domain/route.js"
import { Subjects } from "../../src/domain/subjects.js"
import { NatsTransport } from "../../src/nats/nats-transport.js"
import { MODEL } from "./support/fixtures.js"
import {
  chatRequest,
  controllerConfig,
  expectIdle,
  failureOf,
  outcomes,
  routeTo,
  settle,
  successOf,
  withRouter
} from "./support/router-harness.js"
import { doneMsg, type FakeWorker, Reply, startWorker, tokenMsg } from "./support/scripted-workers.js"

const BOTH = ["chat", "completions"] as const

/** The chat request of these tests: a fixed id ("req", then "req-1"… per move) and 10 tokens at most. */
const request = (patch: Partial<RouteRequest> = {}): RouteRequest => chatRequest({ requestId: "req", maxTokens: 10, ...patch })

/** A legacy completion (`/v1/completions`): the kind of request a `completions` continuation serves. */
const promptRequest = (prompt: string): RouteRequest => ({ requestId: "req", model: MODEL, prompt, maxTokens: 10, endpoint: "completions" })

const migrationsCounted = (reason: string) =>
  Metric.value(Metric.tagged(Metrics.migrationsTotal, "reason", reason)).pipe(Effect.map((s) => s.count))

/** A probe subscription that never answers: the worker's process is stopped. */
const hungProbes = (id: string) =>
  Effect.flatMap(NatsTransport, (nats) =>
    Effect.acquireRelease(
      Effect.sync(() => nats.listen(Subjects.probe(id), () => {})),
      (s) => Effect.sync(() => s.close())
    )
  )

const tokens = (requestId: string, from: number, ...texts: ReadonlyArray<string>) => texts.map((t, i) => tokenMsg(requestId, from + i, t))

/** `worker` streams `texts` (from token 0) for `request`, then goes offline for `reason`: a worker lost mid-stream. */
const streamThenLose = (worker: FakeWorker, request: InferenceRequest, reason: string, ...texts: ReadonlyArray<string>) =>
  Effect.gen(function* () {
    yield* worker.emit(...tokens(request.requestId, 0, ...texts))
    yield* settle
    yield* (yield* Registry).markOffline(worker.id, reason)
  })

describe("Router: a stream whose worker is lost mid-stream continues on another worker (issue 13)", () => {
  it.effect("the next worker gets the same request with the text so far, max_tokens reduced; the client sees one stream", () =>
    withRouter()(
      Effect.gen(function* () {
        const before = yield* migrationsCounted("no_responders")
        const a = yield* startWorker({ id: "a", priority: 10, continuation: BOTH })
        const b = yield* startWorker({ id: "b", continuation: BOTH })
        const [c, first] = yield* routeTo(a, request())
        expect(first.continuation).toBeUndefined()
        yield* streamThenLose(a, first, "no responders", "One", " two", " three")
        const next = yield* b.nextRequest
        expect(next).toMatchObject({
          requestId: "req-1",
          model: MODEL,
          messages: [{ role: "user", content: "Hello?" }],
          maxTokens: 7,
          continuation: { text: "One two three", completionTokens: 3 }
        })
        // the new worker numbers its tokens from 0; the client sees them go on from 3
        yield* b.emit(...tokens(next.requestId, 0, " four", " five"), doneMsg(next.requestId, 2, "stop", 5))
        yield* c.exit
        const events = yield* c.events
        expect(events.filter((e) => e.type === "token")).toEqual(
          ["One", " two", " three", " four", " five"].map((token, index) => ({ type: "token", index, token }))
        )
        expect(events.at(-1)).toEqual({
          type: "done",
          finishReason: "stop",
          usage: { promptTokens: 5, completionTokens: 5 },
          latencyMs: 42,
          workerId: "b",
          migrations: 1
        })
        // the lost worker's attempt is cancelled, so that it stops if it was only hung
        yield* settle
        expect(yield* a.cancels).toEqual(["req"])
        expect(yield* b.cancels).toEqual([])
        expect(yield* outcomes).toEqual({ succeeded: 1, failed: 0, cancelled: 0 })
        expect((yield* migrationsCounted("no_responders")) - before).toBe(1)
        yield* expectIdle
      })
    )
  )

  it.effect("complete(): the whole text and the final event count every token", () =>
    withRouter()(
      Effect.gen(function* () {
        const a = yield* startWorker({ id: "a", priority: 10, continuation: BOTH })
        const b = yield* startWorker({ id: "b", continuation: BOTH })
        const router = yield* Router
        const fiber = yield* Effect.fork(router.complete(promptRequest("p")))
        const first = yield* a.nextRequest
        yield* streamThenLose(a, first, "unresponsive", "x", "y")
        const next = yield* b.nextRequest
        expect(next.continuation).toEqual({ text: "xy", completionTokens: 2 })
        yield* b.emit(...tokens(next.requestId, 0, "z"), doneMsg(next.requestId, 1, "length", 1))
        const result = successOf(yield* Fiber.await(fiber))
        expect(result).toMatchObject({ text: "xyz", usage: { promptTokens: 1, completionTokens: 3 }, migrations: 1, finishReason: "length" })
      })
    )
  )

  it.effect("found by a probe: a dead worker (no responders) is offline min_silence_ms after its last token, and the stream goes on", () =>
    withRouter()(
      Effect.gen(function* () {
        // `a` says it answers probes, but nothing of it listens for them any more: it is gone.
        const a = yield* startWorker({ id: "a", priority: 10, continuation: BOTH, probes: true })
        const b = yield* startWorker({ id: "b", continuation: BOTH })
        const [c, first] = yield* routeTo(a, request())
        yield* a.emit(...tokens(first.requestId, 0, "a", "b"))
        yield* settle
        yield* TestClock.adjust("400 millis")
        expect(yield* b.received).toEqual([])
        yield* TestClock.adjust("100 millis")
        const next = yield* b.nextRequest
        expect(next.continuation).toEqual({ text: "ab", completionTokens: 2 })
        const registry = yield* Registry
        expect((yield* registry.all).find((w) => w.workerId === "a")).toMatchObject({ status: "offline", statusReason: "no responders" })
        yield* b.emit(doneMsg(next.requestId, 0, "stop", 5))
        yield* c.exit
        expect(yield* c.events).toMatchObject([{ index: 0 }, { index: 1 }, { type: "done", usage: { completionTokens: 2 }, migrations: 1 }])
        yield* settle
        expect(yield* a.cancels).toEqual(["req"])
        yield* expectIdle
      })
    )
  )

  it.effect("found by probes: a hung worker (two probes unanswered) is offline \"unresponsive\" and the stream goes on", () =>
    withRouter()(
      Effect.gen(function* () {
        const a = yield* startWorker({ id: "a", priority: 10, continuation: BOTH, probes: true })
        yield* hungProbes("a")
        const b = yield* startWorker({ id: "b", continuation: BOTH })
        const [c, first] = yield* routeTo(a, request())
        yield* a.emit(...tokens(first.requestId, 0, "a"))
        yield* settle
        // probe at 500 ms, unanswered at 1500; probe at 1600, unanswered at 2600
        yield* TestClock.adjust("2599 millis")
        expect(yield* b.received).toEqual([])
        yield* TestClock.adjust("1 millis")
        const next = yield* b.nextRequest
        expect(next.continuation).toEqual({ text: "a", completionTokens: 1 })
        expect((yield* (yield* Registry).all).find((w) => w.workerId === "a")).toMatchObject({ status: "offline", statusReason: "unresponsive" })
        yield* b.emit(...tokens(next.requestId, 0, "b"), doneMsg(next.requestId, 1))
        yield* c.exit
        expect((yield* c.events).map((e) => (e.type === "token" ? e.index : e.type))).toEqual([0, 1, "done"])
        yield* settle
        expect(yield* a.cancels).toEqual(["req"])
      })
    )
  )

  it.effect("migration_limit: 0: the stream ends with worker_lost, as before, and no other worker is asked", () =>
    withRouter(controllerConfig({ migrationLimit: 0 }))(
      Effect.gen(function* () {
        const a = yield* startWorker({ id: "a", priority: 10, continuation: BOTH })
        const b = yield* startWorker({ id: "b", continuation: BOTH })
        const [c, first] = yield* routeTo(a, request())
        yield* streamThenLose(a, first, "no responders", "a")
        const error = failureOf(yield* c.exit)
        expect(error).toMatchObject({ _tag: "WorkerFailed", workerId: "a", code: "worker_lost" })
        expect(error.message).toBe("worker a went offline: no responders")
        expect(yield* b.received).toEqual([])
        expect(yield* outcomes).toEqual({ succeeded: 0, failed: 1, cancelled: 0 })
        yield* expectIdle
      })
    )
  )

  it.effect("a worker that cannot continue is not chosen; with none left the stream ends with worker_lost", () =>
    withRouter()(
      Effect.gen(function* () {
        const a = yield* startWorker({ id: "a", priority: 10, continuation: BOTH })
        const plain = yield* startWorker({ id: "plain" })
        const promptOnly = yield* startWorker({ id: "prompt-only", continuation: ["completions"] })
        const [c, first] = yield* routeTo(a, request())
        yield* streamThenLose(a, first, "no heartbeat for 15.2 s", "a")
        const error = failureOf(yield* c.exit)
        expect(error).toMatchObject({ _tag: "WorkerFailed", workerId: "a", code: "worker_lost" })
        expect(error.message).toContain("no heartbeat for 15.2 s")
        // a chat request needs "chat": neither the worker without the capability nor the prompt-only one
        expect(yield* plain.received).toEqual([])
        expect(yield* promptOnly.received).toEqual([])
        yield* expectIdle
      })
    )
  )

  it.effect("a legacy completion continues on a worker that continues completions", () =>
    withRouter()(
      Effect.gen(function* () {
        const a = yield* startWorker({ id: "a", priority: 10, continuation: BOTH })
        const chatOnly = yield* startWorker({ id: "chat-only", continuation: ["chat"] })
        const promptOnly = yield* startWorker({ id: "prompt-only", continuation: ["completions"] })
        const [c, first] = yield* routeTo(a, promptRequest("Once"))
        yield* streamThenLose(a, first, "no responders", " upon")
        const next = yield* promptOnly.nextRequest
        expect(next).toMatchObject({ prompt: "Once", continuation: { text: " upon", completionTokens: 1 }, maxTokens: 9 })
        yield* promptOnly.emit(doneMsg(next.requestId, 0))
        yield* c.exit
        expect(yield* chatOnly.received).toEqual([])
      })
    )
  )

  it.effect("at most migration_limit moves: lost again past it, the stream ends with the last worker's worker_lost", () =>
    withRouter(controllerConfig({ migrationLimit: 1 }))(
      Effect.gen(function* () {
        const a = yield* startWorker({ id: "a", priority: 10, continuation: BOTH })
        const b = yield* startWorker({ id: "b", priority: 5, continuation: BOTH })
        const spare = yield* startWorker({ id: "spare", continuation: BOTH })
        const [c, first] = yield* routeTo(a, request())
        yield* streamThenLose(a, first, "no responders", "a")
        const second = yield* b.nextRequest
        yield* streamThenLose(b, second, "unresponsive", "b")
        const error = failureOf(yield* c.exit)
        expect(error).toMatchObject({ _tag: "WorkerFailed", workerId: "b", code: "worker_lost" })
        expect(error.message).toContain("unresponsive")
        expect(yield* spare.received).toEqual([])
        expect((yield* c.events).filter((e) => e.type === "token").map((e) => (e.type === "token" ? e.index : -1))).toEqual([0, 1])
        yield* settle
        expect(yield* a.cancels).toEqual(["req"])
        expect(yield* b.cancels).toEqual(["req-1"])
        yield* expectIdle
      })
    )
  )

  it.effect("two moves in a row: indexes, usage and migrations add up over three workers", () =>
    withRouter()(
      Effect.gen(function* () {
        const a = yield* startWorker({ id: "a", priority: 10, continuation: BOTH })
        const b = yield* startWorker({ id: "b", priority: 5, continuation: BOTH })
        const d = yield* startWorker({ id: "d", continuation: BOTH })
        const [c, r0] = yield* routeTo(a, request())
        yield* streamThenLose(a, r0, "no responders", "1", "2")
        const r1 = yield* b.nextRequest
        yield* streamThenLose(b, r1, "no responders", "3")
        const r2 = yield* d.nextRequest
        expect(r2).toMatchObject({ requestId: "req-2", maxTokens: 7, continuation: { text: "123", completionTokens: 3 } })
        yield* d.emit(...tokens(r2.requestId, 0, "4"), doneMsg(r2.requestId, 1, "stop", 5))
        yield* c.exit
        const events = yield* c.events
        expect(events.map((e) => (e.type === "token" ? `${e.index}:${e.token}` : e.type))).toEqual(["0:1", "1:2", "2:3", "3:4", "done"])
        expect(events.at(-1)).toMatchObject({ usage: { promptTokens: 5, completionTokens: 4 }, migrations: 2, workerId: "d" })
      })
    )
  )

  it.effect("a busy refusal during a move: the next capable worker takes it (retries count anew after a move)", () =>
    withRouter(controllerConfig({ maxRetries: 1 }))(
      Effect.gen(function* () {
        const a = yield* startWorker({ id: "a", priority: 10, continuation: BOTH }, { reply: (_r, n) => (n === 0 ? Reply.ack : Reply.refuse("busy")) })
        const busy = yield* startWorker({ id: "busy", priority: 5, continuation: BOTH }, { reply: () => Reply.refuse("busy") })
        const ok = yield* startWorker({ id: "ok", continuation: BOTH })
        const [c, first] = yield* routeTo(a, request())
        yield* streamThenLose(a, first, "no responders", "a")
        const refused = yield* busy.nextRequest
        expect(refused.continuation).toEqual({ text: "a", completionTokens: 1 })
        const next = yield* ok.nextRequest
        expect(next.requestId).toBe("req-2")
        expect(next.continuation).toEqual({ text: "a", completionTokens: 1 })
        yield* ok.emit(doneMsg(next.requestId, 0))
        successOf(yield* c.exit)
        expect((yield* c.events).at(-1)).toMatchObject({ type: "done", workerId: "ok", migrations: 1 })
      })
    )
  )

  it.effect("lost after every max_tokens token but before its done: the answer is complete, nobody else is asked", () =>
    withRouter()(
      Effect.gen(function* () {
        const a = yield* startWorker({ id: "a", priority: 10, continuation: BOTH })
        const b = yield* startWorker({ id: "b", continuation: BOTH })
        const [c, first] = yield* routeTo(a, request({ maxTokens: 3, messages: [{ role: "user", content: "four words of prompt" }] }))
        yield* streamThenLose(a, first, "no responders", "a", "b", "c")
        yield* c.exit
        expect((yield* c.events).at(-1)).toEqual({
          type: "done",
          finishReason: "length",
          usage: { promptTokens: 4, completionTokens: 3 },
          latencyMs: 0,
          workerId: "a"
        })
        expect(yield* b.received).toEqual([])
        expect(yield* outcomes).toEqual({ succeeded: 1, failed: 0, cancelled: 0 })
      })
    )
  )

  it.effect("lost before its first token: retried as before (no continuation, no migration counted)", () =>
    withRouter()(
      Effect.gen(function* () {
        const a = yield* startWorker({ id: "a", priority: 10, continuation: BOTH })
        const b = yield* startWorker({ id: "b", continuation: BOTH })
        const [c] = yield* routeTo(a, request())
        yield* (yield* Registry).markOffline("a", "no responders")
        const next = yield* b.nextRequest
        expect(next.continuation).toBeUndefined()
        expect(next.maxTokens).toBe(10)
        yield* b.emit(...tokens(next.requestId, 0, "x"), doneMsg(next.requestId, 1))
        yield* c.exit
        const done = (yield* c.events).at(-1)
        expect(done).toMatchObject({ type: "done", usage: { completionTokens: 1 } })
        expect(done !== undefined && "migrations" in done).toBe(false)
      })
    )
  )
})
