import { describe, expect, it } from "@effect/vitest"
import { Chunk, Effect, Fiber, Metric, Option, Stream, TestClock } from "effect"
import { InFlight } from "../../src/controller/in-flight.js"
import * as Metrics from "../../src/controller/metrics.js"
import { ControllerLifecycle } from "../../src/controller/lifecycle.js"
import { Registry } from "../../src/controller/registry.js"
import { RequestStats } from "../../src/controller/request-stats.js"
import { Router } from "../../src/controller/router.js"
import type { RouteRequest } from "../../src/domain/route.js"
import { WorkerId } from "../../src/domain/ids.js"
import { Subjects } from "../../src/domain/subjects.js"
import { MODEL } from "./support/fixtures.js"
import {
  chatRequest,
  consume,
  type Consumer,
  controllerConfig,
  type FlatEvent,
  flatten,
  expectIdle,
  failureOf,
  isRunning,
  outcomes,
  route,
  routeTo,
  settle,
  streamingOn,
  successOf,
  withRouter
} from "./support/router-harness.js"
import { ScriptedNats } from "../support/scripted-nats.js"
import {
  doneMsg,
  errorMsg,
  type FakeWorker,
  registerGhost,
  Reply,
  startWorker,
  streams,
  tokenMsg
} from "./support/scripted-workers.js"

const collect = (r: RouteRequest = chatRequest()) =>
  Effect.flatMap(route(r), (s) =>
    Stream.runCollect(s).pipe(
      Effect.map((chunk) => Chunk.toReadonlyArray(chunk).flatMap(flatten)),
      Effect.exit
    )
  )

const doneOf = (events: ReadonlyArray<FlatEvent>) => {
  const last = events.at(-1)
  if (last?.type !== "done") throw new Error(`the stream did not end with done: ${JSON.stringify(events)}`)
  return last
}

/** Once the deliveries settled, `worker` has received exactly these cancels. */
const expectCancels = (worker: FakeWorker, requestIds: ReadonlyArray<string | undefined>) =>
  Effect.gen(function* () {
    yield* settle
    expect(yield* worker.cancels).toEqual(requestIds)
  })

/** Moves the clock `ms` on (the fibers settled on both sides) and checks the stream has not ended: just short of a deadline. */
const expectRunningAfter = (c: Consumer, ms: number) =>
  Effect.gen(function* () {
    yield* settle
    yield* TestClock.adjust(ms)
    yield* settle
    expect(yield* isRunning(c.fiber)).toBe(true)
  })

/** How many cancels the controller counted with this reason so far (a process-wide metric). */
const cancelMetric = (reason: "client" | "error") =>
  Metric.value(Metric.tagged(Metrics.cancelsTotal, "reason", reason)).pipe(Effect.map((s) => s.count))

const cancelsOn = (workerId: string) =>
  Effect.flatMap(ScriptedNats, (nats) => nats.publishedOn(Subjects.cancel(workerId)))

describe("Router.route: the happy path", () => {
  it.effect("relays the tokens in order and ends with done and its usage", () =>
    withRouter()(
      Effect.gen(function* () {
        const w1 = yield* startWorker({ id: "w1" }, { stream: streams("Hel", "lo", " world") })
        const exit = yield* collect(chatRequest({ temperature: 0.5, topP: 0.9, stop: ["\n"] }))
        const events = successOf(exit)
        expect(events.slice(0, 3)).toEqual([
          { type: "token", index: 0, token: "Hel" },
          { type: "token", index: 1, token: "lo" },
          { type: "token", index: 2, token: " world" }
        ])
        expect(doneOf(events)).toEqual({
          type: "done",
          finishReason: "stop",
          usage: { promptTokens: 5, completionTokens: 3 },
          latencyMs: 42,
          workerId: "w1"
        })
        expect(events).toHaveLength(4)

        const [wire] = yield* w1.received
        expect(wire).toMatchObject({
          model: MODEL,
          maxTokens: 16,
          stream: true,
          temperature: 0.5,
          topP: 0.9,
          stop: ["\n"],
          messages: [{ role: "user", content: "Hello?" }]
        })
        expect(wire?.requestId).toMatch(/^req-/)
        expect(wire).not.toHaveProperty("prompt")
        // The worker sent done: nothing to cancel.
        expect(yield* cancelsOn("w1")).toEqual([])
        expect(yield* outcomes).toEqual({ succeeded: 1, failed: 0, cancelled: 0 })
        expect((yield* (yield* RequestStats).snapshot).total).toBe(1)
        yield* expectIdle
      })
    )
  )
})

describe("Router.route: the happy path, more", () => {
  it.effect("counts the request as active while it streams and holds one in-flight slot", () =>
    withRouter()(
      Effect.gen(function* () {
        const w1 = yield* startWorker({ id: "w1" })
        const [c, req] = yield* routeTo(w1)
        yield* w1.emit(tokenMsg(req.requestId, 0, "a"))
        expect(yield* c.next).toEqual({ type: "token", index: 0, token: "a" })
        expect(yield* (yield* RequestStats).snapshot).toEqual({ active: 1, total: 1, succeeded: 0, failed: 0, cancelled: 0 })
        expect((yield* InFlight).own("w1")).toBe(1)
        yield* w1.emit(doneMsg(req.requestId, 1, "length"))
        successOf(yield* c.exit)
        expect(doneOf(yield* c.events)).toMatchObject({ finishReason: "length", usage: { completionTokens: 1 } })
        expect(yield* (yield* RequestStats).snapshot).toEqual({ active: 0, total: 1, succeeded: 1, failed: 0, cancelled: 0 })
        yield* expectIdle
      })
    )
  )

  it.effect("complete joins the tokens of a prompt request and returns the final event", () =>
    withRouter()(
      Effect.gen(function* () {
        const w1 = yield* startWorker({ id: "w1" }, { stream: streams("Once", " upon", " a time") })
        const router = yield* Router
        const result = yield* router.complete({ model: MODEL, prompt: "Tell me", maxTokens: 8 })
        expect(result).toEqual({
          text: "Once upon a time",
          type: "done",
          finishReason: "stop",
          usage: { promptTokens: 5, completionTokens: 3 },
          latencyMs: 42,
          workerId: "w1"
        })
        const [wire] = yield* w1.received
        expect(wire).toMatchObject({ prompt: "Tell me", maxTokens: 8, stream: true })
        expect(wire).not.toHaveProperty("messages")
        yield* expectIdle
      })
    )
  )

  it.effect("ignores what a worker sends after its done", () =>
    withRouter()(
      Effect.gen(function* () {
        yield* startWorker(
          { id: "w1" },
          {
            stream: (r) => [tokenMsg(r.requestId, 0, "a"), doneMsg(r.requestId, 1), tokenMsg(r.requestId, 1, "late")]
          }
        )
        const events = successOf(yield* collect())
        expect(events.map((e) => e.type)).toEqual(["token", "done"])
        expect(yield* cancelsOn("w1")).toEqual([])
        yield* expectIdle
      })
    )
  )

  it.effect("only dispatches to workers carrying every requested tag", () =>
    withRouter()(
      Effect.gen(function* () {
        const plain = yield* startWorker({ id: "w1", priority: 10 }, { stream: streams("x") })
        yield* startWorker({ id: "w2", tags: ["gpu", "fast"] }, { stream: streams("y") })
        const events = successOf(yield* collect(chatRequest({ tags: ["gpu"] })))
        expect(doneOf(events).workerId).toBe("w2")
        expect(yield* plain.received).toEqual([])
        yield* expectIdle
      })
    )
  )
})

describe("Router.route: no worker to ask", () => {
  it.effect("a model no worker has registered: ModelNotFound; a known one nobody online serves: NoSkilledWorker", () =>
    withRouter()(
      Effect.gen(function* () {
        const w1 = yield* startWorker({ id: "w1", models: ["m/Other-3B"] })
        const unknown = failureOf(yield* collect(chatRequest({ model: "m/Unknown-1B" })))
        expect(unknown).toMatchObject({ _tag: "ModelNotFound", model: "m/Unknown-1B" })
        expect(unknown.message).toContain("m/Unknown-1B")
        yield* registerGhost({ id: "gone", models: ["m/Rare-1B"] })
        yield* (yield* Registry).markOffline("gone", "no heartbeat for 15.2 s")
        const offline = failureOf(yield* collect(chatRequest({ model: "m/Rare-1B" })))
        expect(offline).toMatchObject({ _tag: "NoSkilledWorker", model: "m/Rare-1B", available: ["m/Other-3B"] })
        expect(yield* w1.received).toEqual([])
        expect(yield* outcomes).toEqual({ succeeded: 0, failed: 2, cancelled: 0 })
        yield* expectIdle
      })
    )
  )

  it.effect("fails with NoWorkers when no worker is online", () =>
    withRouter()(
      Effect.gen(function* () {
        expect(failureOf(yield* collect())).toMatchObject({ _tag: "ModelNotFound", model: MODEL })
        const w1 = yield* startWorker({ id: "w1" })
        yield* (yield* Registry).markOffline("w1", "no heartbeat for 15.2 s")
        expect(failureOf(yield* collect())._tag).toBe("NoWorkers")
        expect(yield* w1.received).toEqual([])
        expect(yield* outcomes).toEqual({ succeeded: 0, failed: 2, cancelled: 0 })
        yield* expectIdle
      })
    )
  )

  it.effect("an event loop lagging past overload.max_event_loop_lag_ms: Overloaded (429) at once, nothing dispatched", () =>
    withRouter(controllerConfig({}), 1_600)(
      Effect.gen(function* () {
        const w1 = yield* startWorker({ id: "w1" }, { stream: streams("a") })
        const error = failureOf(yield* collect())
        expect(error).toMatchObject({ _tag: "Overloaded", lagMs: 1_600, retryAfterSeconds: 2 })
        expect(error.message).toContain("1600 ms")
        expect(yield* w1.received).toEqual([])
        yield* expectIdle
      })
    )
  )

  it.effect("an event loop lagging below the bound sheds nothing", () =>
    withRouter(controllerConfig({}), 400)(
      Effect.gen(function* () {
        yield* startWorker({ id: "w1" }, { stream: streams("a") })
        expect(doneOf(successOf(yield* collect())).workerId).toBe("w1")
      })
    )
  )

  it.effect("fails with ShuttingDown, and counts nothing, unless the controller is ready", () =>
    withRouter()(
      Effect.gen(function* () {
        const w1 = yield* startWorker({ id: "w1" }, { stream: streams("x") })
        const lifecycle = yield* ControllerLifecycle
        yield* lifecycle.transition("draining")
        expect(failureOf(yield* collect())._tag).toBe("ShuttingDown")
        yield* lifecycle.transition("starting")
        expect(failureOf(yield* collect())._tag).toBe("ShuttingDown")
        expect(yield* w1.received).toEqual([])
        expect((yield* (yield* RequestStats).snapshot).total).toBe(0)
        yield* lifecycle.transition("ready")
        expect(doneOf(successOf(yield* collect())).workerId).toBe("w1")
        yield* expectIdle
      })
    )
  )
})

describe("Router.route: retries before the first token", () => {
  it.effect("no responders: marks that worker offline and serves the request on another", () =>
    withRouter()(
      Effect.gen(function* () {
        yield* registerGhost({ id: "w1", priority: 10 })
        const w2 = yield* startWorker({ id: "w2" }, { stream: streams("ok") })
        const events = successOf(yield* collect())
        expect(doneOf(events).workerId).toBe("w2")
        const ghost = Option.getOrThrow(yield* (yield* Registry).get("w1"))
        expect(ghost.status).toBe("offline")
        expect(ghost.statusReason).toBe("no responders")
        const [wire] = yield* w2.received
        expect(wire?.requestId).toMatch(/^req-.+-1$/)
        expect(yield* cancelsOn("w1")).toEqual([])
        expect(yield* outcomes).toEqual({ succeeded: 1, failed: 0, cancelled: 0 })
        yield* expectIdle
      })
    )
  )

  for (const reason of ["busy", "model_not_found"] as const) {
    it.effect(`a ${reason} refusal: served by another worker, the refusing one stays online`, () =>
      withRouter()(
        Effect.gen(function* () {
          const w1 = yield* startWorker({ id: "w1", priority: 10 }, { reply: () => Reply.refuse(reason) })
          const w2 = yield* startWorker({ id: "w2" }, { stream: streams("ok") })
          const events = successOf(yield* collect())
          expect(doneOf(events).workerId).toBe("w2")
          const [first] = yield* w1.received
          const [second] = yield* w2.received
          expect(second?.requestId).toBe(`${first?.requestId}-1`)
          expect(Option.getOrThrow(yield* (yield* Registry).get("w1")).status).toBe("online")
          expect(yield* w1.cancels).toEqual([])
          yield* expectIdle
        })
      )
    )
  }

  it.effect("an ack that fails its schema: served by another worker", () =>
    withRouter()(
      Effect.gen(function* () {
        const w1 = yield* startWorker({ id: "w1", priority: 10 }, { reply: () => Reply.garbage })
        yield* startWorker({ id: "w2" }, { stream: streams("ok") })
        expect(doneOf(successOf(yield* collect())).workerId).toBe("w2")
        expect(yield* w1.received).toHaveLength(1)
        yield* expectIdle
      })
    )
  )

  it.effect("no ack within dispatch_timeout_ms: served by another worker, and the silent one gets a cancel", () =>
    withRouter(controllerConfig({ dispatchTimeoutMs: 2_000 }))(
      Effect.gen(function* () {
        const w1 = yield* startWorker({ id: "w1", priority: 10 }, { reply: () => Reply.silence })
        const w2 = yield* startWorker({ id: "w2" }, { stream: streams("ok") })
        const [c, first] = yield* routeTo(w1)
        yield* expectRunningAfter(c, 1_999)
        expect(yield* w2.received).toEqual([])
        yield* TestClock.adjust(1)
        successOf(yield* c.exit)
        expect(doneOf(yield* c.events).workerId).toBe("w2")
        yield* expectCancels(w1, [first.requestId])
        expect(yield* cancelsOn("w1")).toEqual([{ requestId: first.requestId }])
        expect(yield* w2.cancels).toEqual([])
        yield* expectIdle
      })
    )
  )

  it.effect("each retry has its own request id: base, base-1, base-2", () =>
    withRouter()(
      Effect.gen(function* () {
        const w1 = yield* startWorker({ id: "w1", priority: 30 }, { reply: () => Reply.refuse("busy") })
        const w2 = yield* startWorker({ id: "w2", priority: 20 }, { reply: () => Reply.refuse("busy") })
        const w3 = yield* startWorker({ id: "w3", priority: 10 }, { stream: streams("ok") })
        expect(doneOf(successOf(yield* collect())).workerId).toBe("w3")
        const [a] = yield* w1.received
        const [b] = yield* w2.received
        const [c] = yield* w3.received
        expect(b?.requestId).toBe(`${a?.requestId}-1`)
        expect(c?.requestId).toBe(`${a?.requestId}-2`)
        yield* expectIdle
      })
    )
  )

  // A busy refusal is no retry (issue 14: test/controller/router-requeue.test.ts); other refusals are.
  it.effect("max_retries exhausted: WorkersUnavailable with the attempts and the last reason", () =>
    withRouter(controllerConfig({ maxRetries: 1 }))(
      Effect.gen(function* () {
        const workers = yield* Effect.forEach(["w1", "w2", "w3"], (id) =>
          startWorker({ id }, { reply: () => Reply.refuse("model_not_found", "no such model here") })
        )
        const error = failureOf(yield* collect())
        expect(error._tag).toBe("WorkersUnavailable")
        expect(error).toMatchObject({
          model: MODEL,
          attempts: [{ reason: "model_not_found: no such model here" }, { reason: "model_not_found: no such model here" }]
        })
        expect(error.message).toContain("2 tried")
        const asked = yield* Effect.forEach(workers, (w) => Effect.map(w.received, (r) => r.length))
        expect(asked.reduce((a, b) => a + b, 0)).toBe(2)
        expect(yield* outcomes).toEqual({ succeeded: 0, failed: 1, cancelled: 0 })
        yield* expectIdle
      })
    )
  )

  it.effect("every skilled worker tried before max_retries: WorkersUnavailable", () =>
    withRouter(controllerConfig({ maxRetries: 5 }))(
      Effect.gen(function* () {
        const w1 = yield* startWorker({ id: "w1" }, { reply: () => Reply.garbage })
        const w2 = yield* startWorker({ id: "w2" }, { reply: () => Reply.refuse("model_not_found") })
        const error = failureOf(yield* collect())
        expect(error).toMatchObject({
          _tag: "WorkersUnavailable",
          attempts: [
            { workerId: "w1", reason: expect.stringContaining("invalid ack") },
            { workerId: "w2", reason: "model_not_found: refused: model_not_found" }
          ]
        })
        expect(yield* w1.received).toHaveLength(1)
        expect(yield* w2.received).toHaveLength(1)
        yield* expectIdle
      })
    )
  )

  it.effect("an invalid_request refusal: InvalidRequest at once, no retry", () =>
    withRouter()(
      Effect.gen(function* () {
        yield* startWorker(
          { id: "w1", priority: 10 },
          { reply: () => Reply.refuse("invalid_request", "maxTokens exceeds the context") }
        )
        const w2 = yield* startWorker({ id: "w2" }, { stream: streams("ok") })
        const error = failureOf(yield* collect())
        expect(error).toMatchObject({ _tag: "InvalidRequest", message: "maxTokens exceeds the context" })
        expect(yield* w2.received).toEqual([])
        expect(yield* cancelsOn("w1")).toEqual([])
        expect(yield* outcomes).toEqual({ succeeded: 0, failed: 1, cancelled: 0 })
        yield* expectIdle
      })
    )
  )

  it.effect("the worker going offline before its first token: retried on another worker", () =>
    withRouter()(
      Effect.gen(function* () {
        const w1 = yield* startWorker({ id: "w1", priority: 10 })
        const w2 = yield* startWorker({ id: "w2" }, { stream: streams("ok") })
        const [c, first] = yield* routeTo(w1)
        yield* settle
        expect(yield* w2.received).toEqual([])
        yield* (yield* Registry).markOffline("w1", "no heartbeat for 15.2 s")
        successOf(yield* c.exit)
        expect(yield* c.events).toEqual([
          { type: "token", index: 0, token: "ok" },
          expect.objectContaining({ type: "done", workerId: "w2" })
        ])
        expect((yield* w2.received)[0]?.requestId).toBe(`${first.requestId}-1`)
        yield* expectCancels(w1, [first.requestId])
        expect(yield* outcomes).toEqual({ succeeded: 1, failed: 0, cancelled: 0 })
        yield* expectIdle
      })
    )
  )
})

describe("Router.route: timeouts", () => {
  it.effect("no first token within first_token_timeout_ms: InferenceTimeout first_token, and a cancel", () =>
    withRouter(controllerConfig({ firstTokenTimeoutMs: 5_000 }))(
      Effect.gen(function* () {
        const w1 = yield* startWorker({ id: "w1" })
        const [c, req] = yield* routeTo(w1)
        yield* expectRunningAfter(c, 4_999)
        const errorBefore = yield* cancelMetric("error")
        yield* TestClock.adjust(1)
        const error = failureOf(yield* c.exit)
        expect(error).toMatchObject({ _tag: "InferenceTimeout", phase: "first_token", timeoutMs: 5_000, workerId: "w1" })
        expect((yield* cancelMetric("error")) - errorBefore).toBe(1)
        yield* expectCancels(w1, [req.requestId])
        expect(yield* c.events).toEqual([])
        expect(yield* outcomes).toEqual({ succeeded: 0, failed: 1, cancelled: 0 })
        yield* expectIdle
      })
    )
  )

  it.effect("silence after some tokens past stream_idle_timeout_ms: InferenceTimeout stream_idle, and a cancel", () =>
    withRouter(controllerConfig({ firstTokenTimeoutMs: 10_000, streamIdleTimeoutMs: 3_000 }))(
      Effect.gen(function* () {
        const w1 = yield* startWorker({ id: "w1" })
        const [c, req] = yield* routeTo(w1)
        yield* w1.emit(tokenMsg(req.requestId, 0, "a"), tokenMsg(req.requestId, 1, "b"))
        yield* c.next
        yield* c.next
        yield* TestClock.adjust(2_000)
        // A token resets the inactivity deadline: now 2 000 + 3 000.
        yield* w1.emit(tokenMsg(req.requestId, 2, "c"))
        yield* c.next
        yield* expectRunningAfter(c, 2_999)
        // The deadline sweep notices it at its next tick (3 000 / 20 = 150 ms apart).
        yield* TestClock.adjust(150)
        const error = failureOf(yield* c.exit)
        expect(error).toMatchObject({ _tag: "InferenceTimeout", phase: "stream_idle", timeoutMs: 3_000, workerId: "w1" })
        expect((yield* c.events).map((e) => e.type === "token" && e.token)).toEqual(["a", "b", "c"])
        yield* expectCancels(w1, [req.requestId])
        expect(yield* outcomes).toEqual({ succeeded: 0, failed: 1, cancelled: 0 })
        yield* expectIdle
      })
    )
  )

  it.effect("a stream still going at request_timeout_ms: InferenceTimeout request, and a cancel", () =>
    withRouter(controllerConfig({ requestTimeoutMs: 5_000, firstTokenTimeoutMs: 3_000, streamIdleTimeoutMs: 3_000 }))(
      Effect.gen(function* () {
        const w1 = yield* startWorker({ id: "w1" })
        const [c, req] = yield* routeTo(w1)
        // A token every 2 s keeps both the first-token and the inactivity limits (3 s) away.
        for (let i = 0; i < 3; i++) {
          if (i > 0) yield* TestClock.adjust(2_000)
          yield* w1.emit(tokenMsg(req.requestId, i, `t${i}`))
          yield* c.next
          yield* settle
        }
        yield* expectRunningAfter(c, 999)
        // The deadline sweep notices it at its next tick (3 000 / 20 = 150 ms apart).
        yield* TestClock.adjust(150)
        const error = failureOf(yield* c.exit)
        expect(error).toMatchObject({ _tag: "InferenceTimeout", phase: "request", timeoutMs: 5_000, workerId: "w1" })
        yield* expectCancels(w1, [req.requestId])
        yield* expectIdle
      })
    )
  )
})

describe("Router.route: failures after dispatch", () => {
  it.effect("a token gap (0, then 2): WorkerFailed token_gap, and a cancel to the worker", () =>
    withRouter()(
      Effect.gen(function* () {
        const w1 = yield* startWorker({ id: "w1" })
        const [c, req] = yield* streamingOn(w1)
        yield* w1.emit(tokenMsg(req.requestId, 2, "c"))
        const error = failureOf(yield* c.exit)
        expect(error).toMatchObject({ _tag: "WorkerFailed", workerId: "w1", code: "token_gap" })
        expect(error.message).toContain("expected token 1")
        expect(yield* c.events).toEqual([{ type: "token", index: 0, token: "a" }])
        yield* expectCancels(w1, [req.requestId])
        expect(yield* outcomes).toEqual({ succeeded: 0, failed: 1, cancelled: 0 })
        yield* expectIdle
      })
    )
  )

  it.effect("a worker error message: WorkerFailed with its code and message, no retry and no cancel", () =>
    withRouter()(
      Effect.gen(function* () {
        const w1 = yield* startWorker({ id: "w1", priority: 10 })
        const w2 = yield* startWorker({ id: "w2" }, { stream: streams("ok") })
        const [c, req] = yield* streamingOn(w1)
        yield* w1.emit(errorMsg(req.requestId, "engine_crashed", "the engine ran out of memory"))
        const error = failureOf(yield* c.exit)
        expect(error).toEqual(
          expect.objectContaining({
            _tag: "WorkerFailed",
            workerId: "w1",
            code: "engine_crashed",
            message: "the engine ran out of memory"
          })
        )
        expect(yield* w2.received).toEqual([])
        yield* settle
        expect(yield* w1.cancels).toEqual([])
        expect(yield* outcomes).toEqual({ succeeded: 0, failed: 1, cancelled: 0 })
        yield* expectIdle
      })
    )
  )

  it.effect("a worker error before any token moves the request to another worker", () =>
    withRouter()(
      Effect.gen(function* () {
        const w1 = yield* startWorker({ id: "w1", priority: 10 })
        yield* startWorker({ id: "w2" }, { stream: streams("ok") })
        const [c, req] = yield* routeTo(w1)
        yield* w1.emit(errorMsg(req.requestId, "upstream_unreachable", "mlx_lm.server is not answering"))
        const exit = yield* c.exit
        expect(exit._tag).toBe("Success")
        expect((yield* c.events).map((e) => (e.type === "token" ? e.token : e.type === "done" ? e.workerId : "toolCall"))).toEqual(["ok", "w2"])
        expect(yield* outcomes).toEqual({ succeeded: 1, failed: 0, cancelled: 0 })
        yield* expectIdle
      })
    )
  )

  it.effect("a worker timeout before any token is final: no retry", () =>
    withRouter()(
      Effect.gen(function* () {
        const w1 = yield* startWorker({ id: "w1", priority: 10 })
        const w2 = yield* startWorker({ id: "w2" }, { stream: streams("ok") })
        const [c, req] = yield* routeTo(w1)
        yield* w1.emit(errorMsg(req.requestId, "timeout", "the request took longer than 300000 ms"))
        expect(failureOf(yield* c.exit)).toMatchObject({ _tag: "WorkerFailed", code: "timeout" })
        expect(yield* w2.received).toEqual([])
        yield* expectIdle
      })
    )
  )

  it.effect("tokens that arrive together with an error are relayed before the error", () =>
    withRouter()(
      Effect.gen(function* () {
        yield* startWorker(
          { id: "w1" },
          {
            stream: (r) => [
              tokenMsg(r.requestId, 0, "a"),
              tokenMsg(r.requestId, 1, "b"),
              errorMsg(r.requestId, "engine_error", "boom")
            ]
          }
        )
        const c = yield* consume(yield* route())
        expect(failureOf(yield* c.exit)).toMatchObject({ _tag: "WorkerFailed", code: "engine_error" })
        expect((yield* c.events).map((e) => e.type === "token" && e.token)).toEqual(["a", "b"])
        yield* expectIdle
      })
    )
  )

  it.effect("the worker going offline after a token: WorkerFailed worker_lost naming the reason", () =>
    withRouter()(
      Effect.gen(function* () {
        const w1 = yield* startWorker({ id: "w1", priority: 10 })
        const w2 = yield* startWorker({ id: "w2" }, { stream: streams("ok") })
        const [c, req] = yield* streamingOn(w1)
        yield* (yield* Registry).markOffline("w1", "no heartbeat for 15.2 s")
        const error = failureOf(yield* c.exit)
        expect(error).toMatchObject({ _tag: "WorkerFailed", workerId: "w1", code: "worker_lost" })
        expect(error.message).toContain("no heartbeat for 15.2 s")
        expect(yield* w2.received).toEqual([])
        yield* expectCancels(w1, [req.requestId])
        expect(yield* outcomes).toEqual({ succeeded: 0, failed: 1, cancelled: 0 })
        yield* expectIdle
      })
    )
  )

  it.effect("a worker deregistering mid-stream: worker_lost, deregistered", () =>
    withRouter()(
      Effect.gen(function* () {
        const w1 = yield* startWorker({ id: "w1" })
        const [c] = yield* streamingOn(w1)
        yield* (yield* Registry).deregister({ workerId: WorkerId.make("w1"), timestamp: 0 })
        const error = failureOf(yield* c.exit)
        expect(error).toMatchObject({ _tag: "WorkerFailed", code: "worker_lost" })
        expect(error.message).toContain("deregistered")
        yield* expectIdle
      })
    )
  )
})

describe("Router.route: the consumer goes away", () => {
  it.effect("Stream.take(2) ends the stream early: a cancel for that request, counted as cancelled", () =>
    withRouter()(
      Effect.gen(function* () {
        const w1 = yield* startWorker(
          { id: "w1" },
          { stream: (r) => ["a", "b", "c", "d"].map((t, i) => tokenMsg(r.requestId, i, t)) }
        )
        const clientBefore = yield* cancelMetric("client")
        const events = yield* route().pipe(
          Effect.flatMap((s) => Stream.runCollect(Stream.take(s, 2))),
          Effect.map((chunk) => Chunk.toReadonlyArray(chunk).flatMap(flatten))
        )
        expect(events.map((e) => e.type === "token" && e.token)).toEqual(["a", "b"])
        const [req] = yield* w1.received
        yield* expectCancels(w1, [req?.requestId])
        expect(yield* cancelsOn("w1")).toEqual([{ requestId: req?.requestId }])
        expect(yield* outcomes).toEqual({ succeeded: 0, failed: 0, cancelled: 1 })
        expect((yield* cancelMetric("client")) - clientBefore).toBe(1)
        yield* expectIdle
      })
    )
  )

  it.effect("interrupting the consumer fiber: a cancel for the right request, counted as cancelled", () =>
    withRouter()(
      Effect.gen(function* () {
        const w1 = yield* startWorker({ id: "w1", priority: 10 })
        const w2 = yield* startWorker({ id: "w2" })
        // One request on each worker, so that the cancel must name the interrupted one.
        const [keep, keptReq] = yield* routeTo(w1)
        const [gone, goneReq] = yield* routeTo(w2)
        const clientBefore = yield* cancelMetric("client")
        yield* w2.emit(tokenMsg(goneReq.requestId, 0, "a"))
        yield* gone.next
        yield* Fiber.interrupt(gone.fiber)
        expect((yield* cancelMetric("client")) - clientBefore).toBe(1)
        yield* expectCancels(w2, [goneReq.requestId])
        expect(yield* cancelsOn("w2")).toEqual([{ requestId: goneReq.requestId }])
        expect(yield* outcomes).toEqual({ succeeded: 0, failed: 0, cancelled: 1 })
        // The other request is untouched.
        yield* w1.emit(tokenMsg(keptReq.requestId, 0, "x"), doneMsg(keptReq.requestId, 1))
        successOf(yield* keep.exit)
        expect(yield* w1.cancels).toEqual([])
        expect(yield* outcomes).toEqual({ succeeded: 1, failed: 0, cancelled: 1 })
        yield* expectIdle
      })
    )
  )

  it.effect("interrupting the consumer before the ack: a cancel all the same", () =>
    withRouter()(
      Effect.gen(function* () {
        const w1 = yield* startWorker({ id: "w1" }, { reply: () => Reply.silence })
        const [c, req] = yield* routeTo(w1)
        yield* Fiber.interrupt(c.fiber)
        yield* expectCancels(w1, [req.requestId])
        expect(yield* outcomes).toEqual({ succeeded: 0, failed: 0, cancelled: 1 })
        yield* expectIdle
      })
    )
  )
})

describe("Router.route: shutdown", () => {
  it.effect("forceStop ends every running stream with ShuttingDown and cancels their work", () =>
    withRouter()(
      Effect.gen(function* () {
        const w1 = yield* startWorker({ id: "w1", priority: 10 })
        const w2 = yield* startWorker({ id: "w2" })
        const [a, reqA] = yield* routeTo(w1)
        const [b, reqB] = yield* routeTo(w2)
        yield* w1.emit(tokenMsg(reqA.requestId, 0, "a"))
        yield* a.next
        yield* settle
        expect(yield* isRunning(a.fiber)).toBe(true)
        yield* (yield* ControllerLifecycle).forceStop
        expect(failureOf(yield* a.exit)._tag).toBe("ShuttingDown")
        expect(failureOf(yield* b.exit)._tag).toBe("ShuttingDown")
        yield* expectCancels(w1, [reqA.requestId])
        yield* expectCancels(w2, [reqB.requestId])
        expect(yield* outcomes).toEqual({ succeeded: 0, failed: 2, cancelled: 0 })
        yield* expectIdle
      })
    )
  )
})
