import { describe, expect, it } from "@effect/vitest"
import { Effect, Fiber, Stream, TestClock } from "effect"
import { AdmissionQueue, type AdmissionRequest } from "../../src/controller/admission-queue.js"
import { InFlight } from "../../src/controller/in-flight.js"
import { Registry } from "../../src/controller/registry.js"
import type { RouteRequest } from "../../src/domain/route.js"
import { heartbeat, MODEL, registration } from "./support/fixtures.js"
import {
  consume,
  expectIdle,
  failureOf,
  isRunning,
  outcomes,
  queueConfig,
  route,
  routeTo,
  settle,
  successOf,
  withRouter
} from "./support/router-harness.js"
import { doneMsg, startWorker, tokenMsg } from "./support/scripted-workers.js"

const ask = (patch: Partial<AdmissionRequest> = {}): AdmissionRequest => ({ model: MODEL, ...patch })

/** Registers `id` with `maxConcurrent` slots and takes every one of them. */
const fullWorker = (id: string, maxConcurrent: number) =>
  Effect.gen(function* () {
    yield* (yield* Registry).register(registration({ id, maxConcurrent }))
    const inFlight = yield* InFlight
    for (let i = 0; i < maxConcurrent; i++) inFlight.reserve(id)
  })

const countOf = (id: string) => Effect.map(InFlight, (f) => f.own(id))

/** Gives back one slot of `id` through the queue, as a finished request does. */
const release = (id: string) => Effect.flatMap(AdmissionQueue, (q) => Effect.sync(() => q.release(id)))

/** Forks `admit`, lets it reach the queue, and returns its fiber. */
const admitInBackground = (request: AdmissionRequest) =>
  Effect.gen(function* () {
    const queue = yield* AdmissionQueue
    const fiber = yield* Effect.fork(queue.admit(request))
    yield* settle
    return fiber
  })

describe("AdmissionQueue.admit", () => {
  it.effect("with free capacity: reserves a slot on the chosen worker at once", () =>
    withRouter()(
      Effect.gen(function* () {
        const queue = yield* AdmissionQueue
        yield* (yield* Registry).register(registration({ id: "w1", maxConcurrent: 2 }))
        const worker = yield* queue.admit(ask())
        expect(worker.workerId).toBe("w1")
        expect(yield* countOf("w1")).toBe(1)
        queue.release("w1")
        expect(yield* countOf("w1")).toBe(0)
        expect(yield* queue.pending).toBe(0)
      })
    )
  )

  it.effect("fails at once with ModelNotFound / NoSkilledWorker when nobody could ever serve", () =>
    withRouter()(
      Effect.gen(function* () {
        const queue = yield* AdmissionQueue
        expect(failureOf(yield* Effect.exit(queue.admit(ask())))._tag).toBe("ModelNotFound")
        yield* (yield* Registry).register(registration({ id: "w1", models: ["m/Other-3B"] }))
        yield* (yield* Registry).register(registration({ id: "w2", models: [MODEL] }))
        yield* (yield* Registry).markOffline("w2", "gone")
        expect(failureOf(yield* Effect.exit(queue.admit(ask())))).toMatchObject({
          _tag: "NoSkilledWorker",
          model: MODEL,
          available: ["m/Other-3B"]
        })
        expect(yield* queue.pending).toBe(0)
      })
    )
  )

  it.effect("every worker at maxConcurrent: the request waits, and proceeds when a slot is released", () =>
    withRouter()(
      Effect.gen(function* () {
        const queue = yield* AdmissionQueue
        yield* fullWorker("w1", 2)
        const waiting = yield* admitInBackground(ask())
        expect(yield* isRunning(waiting)).toBe(true)
        expect(yield* queue.pending).toBe(1)
        expect(yield* countOf("w1")).toBe(2)
        yield* release("w1")
        const worker = yield* Fiber.join(waiting)
        expect(worker.workerId).toBe("w1")
        // The released slot went to the waiter.
        expect(yield* countOf("w1")).toBe(2)
        expect(yield* queue.pending).toBe(0)
      })
    )
  )

  it.effect("a waiting request is served by a worker that comes online", () =>
    withRouter()(
      Effect.gen(function* () {
        yield* fullWorker("w1", 1)
        const waiting = yield* admitInBackground(ask())
        expect(yield* isRunning(waiting)).toBe(true)
        yield* (yield* Registry).register(registration({ id: "w2" }))
        expect((yield* Fiber.join(waiting)).workerId).toBe("w2")
        expect(yield* countOf("w2")).toBe(1)
        expect(yield* countOf("w1")).toBe(1)
      })
    )
  )

  it.effect("a waiting request fails with NoWorkers when its only worker goes offline", () =>
    withRouter()(
      Effect.gen(function* () {
        const queue = yield* AdmissionQueue
        yield* fullWorker("w1", 1)
        const waiting = yield* admitInBackground(ask())
        yield* (yield* Registry).markOffline("w1", "no heartbeat for 15.2 s")
        expect(failureOf(yield* Fiber.await(waiting))._tag).toBe("NoWorkers")
        expect(yield* queue.pending).toBe(0)
      })
    )
  )

  it.effect("queue.max_pending reached: QueueFull at once, with retryAfterSeconds", () =>
    withRouter(queueConfig({ maxPending: 1, maxWaitMs: 4_500 }))(
      Effect.gen(function* () {
        const queue = yield* AdmissionQueue
        yield* fullWorker("w1", 1)
        const first = yield* admitInBackground(ask())
        expect(yield* queue.pending).toBe(1)
        // No waiting and no clock: the second one is refused right away.
        const error = failureOf(yield* Effect.exit(queue.admit(ask())))
        expect(error).toMatchObject({ _tag: "QueueFull", model: MODEL, pending: 1, retryAfterSeconds: 5 })
        expect(error.message).toContain(MODEL)
        expect(yield* queue.pending).toBe(1)
        expect(yield* isRunning(first)).toBe(true)
        yield* Fiber.interrupt(first)
        expect(yield* queue.pending).toBe(0)
      })
    )
  )

  it.effect("queue.max_pending 0: QueueFull as soon as every worker is busy", () =>
    withRouter(queueConfig({ maxPending: 0, maxWaitMs: 500 }))(
      Effect.gen(function* () {
        const queue = yield* AdmissionQueue
        yield* fullWorker("w1", 1)
        expect(failureOf(yield* Effect.exit(queue.admit(ask())))).toMatchObject({
          _tag: "QueueFull",
          pending: 0,
          retryAfterSeconds: 1
        })
      })
    )
  )

  it.effect("with requests already waiting, one nobody could serve still fails at once", () =>
    withRouter()(
      Effect.gen(function* () {
        const queue = yield* AdmissionQueue
        yield* fullWorker("w1", 1)
        const waiting = yield* admitInBackground(ask())
        const error = failureOf(yield* Effect.exit(queue.admit(ask({ model: "m/Nobody-1B" }))))
        expect(error).toMatchObject({ _tag: "ModelNotFound", model: "m/Nobody-1B" })
        expect(yield* queue.pending).toBe(1)
        yield* Fiber.interrupt(waiting)
      })
    )
  )

  it.effect("requests waiting for busy workers do not hold up a request an idle worker can take", () =>
    withRouter(queueConfig({ maxWaitMs: 10_000 }))(
      Effect.gen(function* () {
        const queue = yield* AdmissionQueue
        yield* fullWorker("w1", 1)
        yield* (yield* Registry).register(registration({ id: "w2", models: ["m/Other-3B"] }))
        const waiting = yield* admitInBackground(ask())
        const other = yield* admitInBackground(ask({ model: "m/Other-3B" }))
        // No slot was released and no worker changed: w2 was free all along.
        expect(yield* isRunning(other)).toBe(false)
        expect((yield* Fiber.join(other)).workerId).toBe("w2")
        expect(yield* countOf("w2")).toBe(1)
        expect(yield* isRunning(waiting)).toBe(true)
        expect(yield* queue.pending).toBe(1)
        yield* Fiber.interrupt(waiting)
      })
    )
  )

  it.effect("waiting past queue.max_wait_ms: QueueTimeout, and the request leaves the queue", () =>
    withRouter(queueConfig({ maxWaitMs: 10_000 }))(
      Effect.gen(function* () {
        const queue = yield* AdmissionQueue
        yield* fullWorker("w1", 1)
        const waiting = yield* admitInBackground(ask())
        yield* TestClock.adjust(9_999)
        expect(yield* isRunning(waiting)).toBe(true)
        yield* TestClock.adjust(1)
        const error = failureOf(yield* Fiber.await(waiting))
        expect(error).toMatchObject({ _tag: "QueueTimeout", model: MODEL, waitedMs: 10_000, retryAfterSeconds: 10 })
        expect(yield* queue.pending).toBe(0)
        expect(yield* countOf("w1")).toBe(1)
      })
    )
  )

  it.effect("higher priority leaves the queue first; equal priorities first come first served", () =>
    withRouter()(
      Effect.gen(function* () {
        yield* fullWorker("w1", 1)
        const low = yield* admitInBackground(ask({ priority: 0 }))
        const lowLater = yield* admitInBackground(ask())
        const high = yield* admitInBackground(ask({ priority: 5 }))
        expect(yield* (yield* AdmissionQueue).pending).toBe(3)

        yield* release("w1")
        yield* Fiber.join(high)
        yield* settle
        expect(yield* isRunning(low)).toBe(true)
        expect(yield* isRunning(lowLater)).toBe(true)

        yield* release("w1")
        yield* Fiber.join(low)
        yield* settle
        expect(yield* isRunning(lowLater)).toBe(true)

        yield* release("w1")
        yield* Fiber.join(lowLater)
        expect(yield* countOf("w1")).toBe(1)
      })
    )
  )

  it.effect("an interrupted waiter leaves the queue and does not take a slot", () =>
    withRouter()(
      Effect.gen(function* () {
        const queue = yield* AdmissionQueue
        yield* fullWorker("w1", 2)
        const gone = yield* admitInBackground(ask())
        const stays = yield* admitInBackground(ask())
        expect(yield* queue.pending).toBe(2)
        yield* Fiber.interrupt(gone)
        expect(yield* queue.pending).toBe(1)
        // The freed slot goes to the one still waiting, not to the interrupted one.
        yield* release("w1")
        yield* Fiber.join(stays)
        expect(yield* countOf("w1")).toBe(2)
        // And once everybody is gone every slot can be given back: nothing leaked.
        yield* release("w1")
        yield* release("w1")
        yield* settle
        expect(yield* countOf("w1")).toBe(0)
        expect(yield* queue.pending).toBe(0)
      })
    )
  )
})

describe("AdmissionQueue: waiters per model", () => {
  it.effect("a slot on a worker goes to the first waiter it can serve, past older waiters of other models", () =>
    withRouter()(
      Effect.gen(function* () {
        const registry = yield* Registry
        yield* registry.register(registration({ id: "a", models: ["m/A"], maxConcurrent: 1 }))
        yield* registry.register(registration({ id: "b", models: ["m/B"], maxConcurrent: 1 }))
        const inFlight = yield* InFlight
        inFlight.reserve("a")
        inFlight.reserve("b")
        const forA = yield* admitInBackground(ask({ model: "m/A" }))
        const forB = yield* admitInBackground(ask({ model: "m/B" }))
        yield* release("b")
        expect((yield* Fiber.join(forB)).workerId).toBe("b")
        expect(yield* isRunning(forA)).toBe(true)
        yield* release("a")
        expect((yield* Fiber.join(forA)).workerId).toBe("a")
      })
    )
  )

  it.effect("a waiter whose tags or tried workers exclude the freed worker keeps waiting; the next one gets the slot", () =>
    withRouter()(
      Effect.gen(function* () {
        const registry = yield* Registry
        yield* registry.register(registration({ id: "plain", maxConcurrent: 1 }))
        yield* registry.register(registration({ id: "tagged", maxConcurrent: 1, tags: ["gpu"] }))
        const inFlight = yield* InFlight
        inFlight.reserve("plain")
        inFlight.reserve("tagged")
        const wantsGpu = yield* admitInBackground(ask({ tags: ["gpu"] }))
        const triedPlain = yield* admitInBackground(ask({ exclude: ["plain"] }))
        const anyone = yield* admitInBackground(ask())
        yield* release("plain")
        expect((yield* Fiber.join(anyone)).workerId).toBe("plain")
        expect(yield* isRunning(wantsGpu)).toBe(true)
        expect(yield* isRunning(triedPlain)).toBe(true)
        yield* release("tagged")
        expect((yield* Fiber.join(wantsGpu)).workerId).toBe("tagged")
        yield* release("tagged")
        expect((yield* Fiber.join(triedPlain)).workerId).toBe("tagged")
      })
    )
  )

  it.effect("a heartbeat that reports less load (another controller finished) hands the slot to a waiter", () =>
    withRouter()(
      Effect.gen(function* () {
        const registry = yield* Registry
        yield* registry.register(registration({ id: "w1", maxConcurrent: 2 }))
        yield* registry.heartbeat(heartbeat("w1", 2)) // two requests of someone else
        const waiting = yield* admitInBackground(ask())
        expect(yield* isRunning(waiting)).toBe(true)
        yield* registry.heartbeat(heartbeat("w1", 1))
        expect((yield* Fiber.join(waiting)).workerId).toBe("w1")
        expect(yield* countOf("w1")).toBe(1)
      })
    )
  )

  it.effect("a registry change that keeps the last heartbeat's metrics is no new report: a later ack's count stands", () =>
    withRouter()(
      Effect.gen(function* () {
        const registry = yield* Registry
        const queue = yield* AdmissionQueue
        yield* registry.register(registration({ id: "w1", maxConcurrent: 2 }))
        yield* registry.heartbeat(heartbeat("w1", 0))
        queue.reported("w1", { active: 2, ownAtWorker: 0 }) // an ack: two requests of someone else since
        const waiting = yield* admitInBackground(ask())
        expect(yield* isRunning(waiting)).toBe(true)
        // A re-registration keeps the old metrics (active 0): still full, the waiter keeps waiting.
        yield* registry.register(registration({ id: "w1", maxConcurrent: 2 }))
        yield* settle
        expect(yield* isRunning(waiting)).toBe(true)
        // A new heartbeat is a new report.
        yield* registry.heartbeat(heartbeat("w1", 1))
        expect((yield* Fiber.join(waiting)).workerId).toBe("w1")
      })
    )
  )

  it.effect("10,000 waiters: each release serves the head of its line and leaves the others untouched", () =>
    withRouter(queueConfig({ maxPending: 20_000 }))(
      Effect.gen(function* () {
        yield* fullWorker("w1", 1)
        const queue = yield* AdmissionQueue
        const fibers = yield* Effect.forEach(Array.from({ length: 10_000 }, (_, i) => i), () => Effect.fork(queue.admit(ask())))
        yield* settle
        expect(yield* (yield* AdmissionQueue).pending).toBe(10_000)
        for (let i = 0; i < 3; i++) {
          yield* release("w1")
          yield* Fiber.join(fibers[i] as Fiber.RuntimeFiber<unknown, unknown>)
        }
        expect(yield* (yield* AdmissionQueue).pending).toBe(9_997)
        expect(yield* isRunning(fibers[3] as Fiber.RuntimeFiber<unknown, unknown>)).toBe(true)
        yield* Fiber.interruptAll(fibers)
        expect(yield* (yield* AdmissionQueue).pending).toBe(0)
      })
    )
  )
})

describe("AdmissionQueue through the Router", () => {
  /** A legacy completion, with `priority` when given. */
  const completion = (priority?: number): RouteRequest => ({ model: MODEL, prompt: "hi", maxTokens: 4, ...(priority === undefined ? {} : { priority }) })

  it.effect("a request beyond every worker's maxConcurrent is dispatched when the running one ends", () =>
    withRouter()(
      Effect.gen(function* () {
        const w1 = yield* startWorker({ id: "w1", maxConcurrent: 1 })
        const [a, reqA] = yield* routeTo(w1, completion())
        const b = yield* consume(yield* route(completion()))
        yield* settle
        expect(yield* (yield* AdmissionQueue).pending).toBe(1)
        expect(yield* w1.received).toHaveLength(1)
        yield* w1.emit(tokenMsg(reqA.requestId, 0, "a"), doneMsg(reqA.requestId, 1))
        successOf(yield* a.exit)
        const reqB = yield* w1.nextRequest
        yield* w1.emit(tokenMsg(reqB.requestId, 0, "b"), doneMsg(reqB.requestId, 1))
        successOf(yield* b.exit)
        expect((yield* b.events)[0]).toEqual({ type: "token", index: 0, token: "b" })
        expect(yield* outcomes).toEqual({ succeeded: 2, failed: 0, cancelled: 0 })
        yield* expectIdle
      })
    )
  )

  it.effect("QueueFull and QueueTimeout reach the caller and count as failed", () =>
    withRouter(queueConfig({ maxPending: 1, maxWaitMs: 1_000 }))(
      Effect.gen(function* () {
        const w1 = yield* startWorker({ id: "w1", maxConcurrent: 1 })
        const [running, req] = yield* routeTo(w1, completion())
        const queued = yield* consume(yield* route(completion()))
        yield* settle
        const full = yield* Effect.exit(Stream.runDrain(yield* route(completion())))
        expect(failureOf(full)).toMatchObject({ _tag: "QueueFull", retryAfterSeconds: 1 })
        yield* TestClock.adjust(1_000)
        expect(failureOf(yield* queued.exit)).toMatchObject({ _tag: "QueueTimeout", waitedMs: 1_000 })
        expect(yield* w1.received).toHaveLength(1)
        yield* w1.emit(doneMsg(req.requestId, 0))
        successOf(yield* running.exit)
        expect(yield* outcomes).toEqual({ succeeded: 1, failed: 2, cancelled: 0 })
        yield* expectIdle
      })
    )
  )

  it.effect("the higher-priority request is dispatched first; an interrupted queued request sends no cancel", () =>
    withRouter()(
      Effect.gen(function* () {
        const w1 = yield* startWorker({ id: "w1", maxConcurrent: 1 })
        const [running, req] = yield* routeTo(w1, completion())
        const low = yield* consume(yield* route(completion(1)))
        yield* settle
        const gone = yield* consume(yield* route(completion(3)))
        yield* settle
        const high = yield* consume(yield* route(completion(2)))
        yield* settle
        expect(yield* (yield* AdmissionQueue).pending).toBe(3)
        yield* Fiber.interrupt(gone.fiber)
        expect(yield* (yield* AdmissionQueue).pending).toBe(2)

        yield* w1.emit(doneMsg(req.requestId, 0))
        successOf(yield* running.exit)
        const second = yield* w1.nextRequest
        yield* w1.emit(tokenMsg(second.requestId, 0, "high"), doneMsg(second.requestId, 1))
        successOf(yield* high.exit)
        expect(yield* isRunning(low.fiber)).toBe(true)
        const third = yield* w1.nextRequest
        yield* w1.emit(tokenMsg(third.requestId, 0, "low"), doneMsg(third.requestId, 1))
        successOf(yield* low.exit)
        expect(yield* w1.cancels).toEqual([])
        expect(yield* outcomes).toEqual({ succeeded: 3, failed: 0, cancelled: 1 })
        yield* expectIdle
      })
    )
  )
})
