import { describe, expect, it } from "@effect/vitest"
import { Effect, Metric, TestClock } from "effect"
import { AdmissionQueue } from "../../src/controller/admission-queue.js"
import { InFlight } from "../../src/controller/in-flight.js"
import * as Metrics from "../../src/controller/metrics.js"
import { Registry } from "../../src/controller/registry.js"
import { Router } from "../../src/controller/router.js"
import { WorkerId } from "../../src/domain/ids.js"
import type { WorkerHeartbeat } from "../../src/domain/worker.js"
import { metrics, MODEL, registration } from "./support/fixtures.js"
import {
  chatRequest,
  consume,
  controllerConfig,
  expectIdle,
  failureOf,
  isRunning,
  outcomes,
  queueConfig,
  route,
  routeTo,
  settle,
  successOf,
  TEST_CONTROLLER_ID,
  withRouter
} from "./support/router-harness.js"
import { doneMsg, Reply, startWorker, streams, tokenMsg } from "./support/scripted-workers.js"

/**
 * Issue 14, several controllers on one bus: the Router balances on the worker's own counts (acks,
 * refusals, heartbeats) and a `busy` refusal — another controller filled the worker first — sends
 * the request back to the admission queue instead of failing it.
 */

const counter = (metric: Metric.Metric.Counter<number>) => Metric.value(metric).pipe(Effect.map((s) => s.count))
const requeues = counter(Metrics.requeuesTotal)
const retries = (reason: string) => counter(Metric.tagged(Metrics.retriesTotal, "reason", reason))

/** A heartbeat of `id` with the per-controller counts of a worker of issue 14. */
const heartbeatOf = (id: string, active: number, activeByController: Record<string, number>, maxConcurrent?: number): WorkerHeartbeat => ({
  workerId: WorkerId.make(id),
  timestamp: 0,
  metrics: { ...metrics(active), activeByController, ...(maxConcurrent === undefined ? {} : { maxConcurrent }) }
})

const pending = Effect.flatMap(AdmissionQueue, (q) => q.pending)

describe("Router and several controllers (issue 14)", () => {
  it.effect("every dispatch names this controller (InferenceRequest.controllerId)", () =>
    withRouter()(
      Effect.gen(function* () {
        const w1 = yield* startWorker({ id: "w1" }, { stream: streams("ok") })
        const router = yield* Router
        yield* router.complete(chatRequest())
        const [wire] = yield* w1.received
        expect(wire?.controllerId).toBe(TEST_CONTROLLER_ID)
      })
    )
  )

  it.effect("a busy refusal sends the request back to the queue: no retry used, no 503; a heartbeat with a free slot serves it on the same worker", () =>
    withRouter(controllerConfig({ maxRetries: 0 }))(
      Effect.gen(function* () {
        const requeuesBefore = yield* requeues
        const busyBefore = yield* retries("busy")
        const w1 = yield* startWorker(
          { id: "w1", maxConcurrent: 1 },
          // Another controller holds the one slot at first.
          { reply: (_, n) => (n === 0 ? Reply.refuse("busy", "full", { active: 1, activeForController: 0 }) : Reply.ack), stream: (r, n) => (n === 0 ? [] : streams("ok")(r)) }
        )
        const [c, first] = yield* routeTo(w1)
        yield* settle
        // Waiting, not failed: max_retries 0 would have made any retry a 503.
        expect(yield* isRunning(c.fiber)).toBe(true)
        expect(yield* pending).toBe(1)
        expect((yield* InFlight).load("w1")).toBe(1)
        expect(yield* w1.received).toHaveLength(1)
        // The other controller's request ends: the worker's heartbeat says so.
        yield* (yield* Registry).heartbeat(heartbeatOf("w1", 0, {}))
        successOf(yield* c.exit)
        expect(yield* c.events).toEqual([
          { type: "token", index: 0, token: "ok" },
          expect.objectContaining({ type: "done", workerId: "w1" })
        ])
        const [, second] = yield* w1.received
        expect(second?.requestId).toBe(`${first.requestId}-1`)
        expect((yield* requeues) - requeuesBefore).toBe(1)
        expect((yield* retries("busy")) - busyBefore).toBe(0)
        expect(yield* outcomes).toEqual({ succeeded: 1, failed: 0, cancelled: 0 })
        yield* expectIdle
      })
    )
  )

  it.effect("a worker that keeps refusing busy is asked once, not in a loop, and the request gets queue_timeout at max_wait_ms from its first admission", () =>
    withRouter(queueConfig({ maxWaitMs: 5_000 }))(
      Effect.gen(function* () {
        const w1 = yield* startWorker({ id: "w1", maxConcurrent: 1 }, { reply: () => Reply.refuse("busy", "full") })
        // Our own request holds the one slot: the new one waits in the queue from t = 0.
        const inFlight = yield* InFlight
        inFlight.reserve("w1")
        const c = yield* consume(yield* route())
        yield* settle
        yield* TestClock.adjust(3_000)
        // The slot frees at t = 3 s; the worker refuses (someone else took it): back to the queue.
        ;(yield* AdmissionQueue).release("w1")
        yield* settle
        expect(yield* w1.received).toHaveLength(1)
        yield* TestClock.adjust(1_900)
        expect(yield* isRunning(c.fiber)).toBe(true)
        // An old-style refusal (no counts) still marks the worker full: no second dispatch.
        expect(yield* w1.received).toHaveLength(1)
        yield* TestClock.adjust(200)
        const error = failureOf(yield* c.exit)
        expect(error).toMatchObject({ _tag: "QueueTimeout", model: MODEL })
        expect(error._tag === "QueueTimeout" ? error.waitedMs : 0).toBeGreaterThanOrEqual(5_000)
        expect(error._tag === "QueueTimeout" ? error.waitedMs : Infinity).toBeLessThan(5_300)
        expect(yield* w1.cancels).toEqual([])
        yield* expectIdle
      })
    )
  )

  it.effect("a busy refusal that counts a request of ours we gave up on (its cancel not there yet) still marks the worker full: no bouncing", () =>
    withRouter(queueConfig({ maxWaitMs: 2_000 }))(
      Effect.gen(function* () {
        // The worker still runs one of ours that this controller already cancelled and released.
        const w1 = yield* startWorker({ id: "w1", maxConcurrent: 1 }, { reply: () => Reply.refuse("busy", "full", { active: 1, activeForController: 1 }) })
        const c = yield* consume(yield* route())
        yield* settle
        yield* TestClock.adjust(1_000)
        expect(yield* w1.received).toHaveLength(1)
        expect(yield* isRunning(c.fiber)).toBe(true)
        yield* TestClock.adjust(1_100)
        expect(failureOf(yield* c.exit)._tag).toBe("QueueTimeout")
        expect(yield* w1.received).toHaveLength(1)
        yield* expectIdle
      })
    )
  )

  it.effect("a requeued request keeps its place: a request that arrived after it does not overtake it", () =>
    withRouter()(
      Effect.gen(function* () {
        const w1 = yield* startWorker(
          { id: "w1", maxConcurrent: 1 },
          { reply: (_, n) => (n === 0 ? Reply.refuse("busy", "full", { active: 1, activeForController: 0 }) : Reply.ack) }
        )
        // Our own request holds the one slot: `early` (t = 0), then `late` (t = 100 ms) wait for it.
        ;(yield* InFlight).reserve("w1")
        const early = yield* consume(yield* route(chatRequest({ maxTokens: 1 })))
        yield* settle
        yield* TestClock.adjust(100)
        const late = yield* consume(yield* route(chatRequest({ maxTokens: 2 })))
        yield* settle
        // The slot goes to `early`, which the worker refuses (another controller got there first).
        ;(yield* AdmissionQueue).release("w1")
        const firstTry = yield* w1.nextRequest
        expect(firstTry.maxTokens).toBe(1)
        yield* settle
        expect(yield* pending).toBe(2)
        yield* (yield* Registry).heartbeat(heartbeatOf("w1", 0, {}))
        const served = yield* w1.nextRequest
        expect(served.maxTokens).toBe(1)
        expect(served.requestId).toBe(`${firstTry.requestId}-1`)
        expect(yield* pending).toBe(1)
        yield* w1.emit(doneMsg(served.requestId, 0))
        successOf(yield* early.exit)
        const next = yield* w1.nextRequest
        expect(next.maxTokens).toBe(2)
        yield* w1.emit(tokenMsg(next.requestId, 0, "x"), doneMsg(next.requestId, 1))
        successOf(yield* late.exit)
        yield* expectIdle
      })
    )
  )

  it.effect("an ack's counts: another controller's requests on the worker fill it, so the next request goes elsewhere", () =>
    withRouter()(
      Effect.gen(function* () {
        const w1 = yield* startWorker({ id: "w1", maxConcurrent: 2, priority: 10 }, { reply: () => Reply.ackWith({ active: 2, activeForController: 1 }) })
        const w2 = yield* startWorker({ id: "w2", maxConcurrent: 2 })
        const [a, onW1] = yield* routeTo(w1)
        yield* settle
        const inFlight = yield* InFlight
        expect([inFlight.own("w1"), inFlight.load("w1")]).toEqual([1, 2])
        const [b, onW2] = yield* routeTo(w2)
        yield* w1.emit(doneMsg(onW1.requestId, 0))
        yield* w2.emit(doneMsg(onW2.requestId, 0))
        successOf(yield* a.exit)
        successOf(yield* b.exit)
        expect(yield* w1.received).toHaveLength(1)
      })
    )
  )
})

describe("AdmissionQueue: the worker's own counts (issue 14)", () => {
  it.effect("a heartbeat's activeByController is exact: this controller's share is not counted twice, other controllers' shares are", () =>
    withRouter()(
      Effect.gen(function* () {
        const registry = yield* Registry
        const inFlight = yield* InFlight
        const w1 = yield* startWorker({ id: "w1", maxConcurrent: 4 })
        const [c, req] = yield* routeTo(w1)
        yield* settle
        expect(inFlight.load("w1")).toBe(1)
        yield* registry.heartbeat(heartbeatOf("w1", 3, { [TEST_CONTROLLER_ID]: 1, "ctl-other": 2 }))
        expect(inFlight.load("w1")).toBe(3)
        // The worker has not seen our request yet (in flight on the bus): still only the others' 2 on top.
        yield* registry.heartbeat(heartbeatOf("w1", 2, { "ctl-other": 2 }))
        expect(inFlight.load("w1")).toBe(3)
        yield* registry.heartbeat(heartbeatOf("w1", 1, { [TEST_CONTROLLER_ID]: 1 }))
        expect(inFlight.load("w1")).toBe(1)
        // A worker whose own max_concurrent is lower than the registration says: the difference counts as load.
        yield* registry.heartbeat(heartbeatOf("w1", 1, { [TEST_CONTROLLER_ID]: 1 }, 2))
        expect(inFlight.load("w1")).toBe(3)
        // A newer report (an ack: 2 of the others' too) is not undone by a registration that keeps the last metrics.
        yield* registry.heartbeat(heartbeatOf("w1", 1, { [TEST_CONTROLLER_ID]: 1 }))
        inFlight.reported("w1", 3, 1)
        yield* registry.register(registration({ id: "w1", maxConcurrent: 4 }))
        expect(inFlight.load("w1")).toBe(3)
        yield* w1.emit(tokenMsg(req.requestId, 0, "a"), doneMsg(req.requestId, 1))
        successOf(yield* c.exit)
      })
    )
  )
})
