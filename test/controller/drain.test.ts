import { describe, expect, it } from "@effect/vitest"
import { Effect, Fiber, Option, Stream, TestClock } from "effect"
import { drain } from "../../src/controller/controller-live.js"
import { ControllerLifecycle } from "../../src/controller/lifecycle.js"
import { RequestStats } from "../../src/controller/request-stats.js"
import type { RouteRequest } from "../../src/domain/route.js"
import { MODEL } from "./support/fixtures.js"
import {
  controllerConfig,
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
import { doneMsg, startWorker, tokenMsg } from "./support/scripted-workers.js"

/** A legacy completion: what drain waits for does not depend on the kind of request. */
const completion: RouteRequest = { model: MODEL, prompt: "hi", maxTokens: 4 }

const state = Effect.flatMap(ControllerLifecycle, (l) => l.state)

/** Whether `forceStop` was called: `stopped` has completed. */
const forceStopped = Effect.gen(function* () {
  const lifecycle = yield* ControllerLifecycle
  const fiber = yield* Effect.fork(lifecycle.stopped)
  yield* settle
  const done = Option.isSome(yield* Fiber.poll(fiber))
  yield* Fiber.interrupt(fiber)
  return done
})

describe("drain", () => {
  it.effect("with nothing active: draining, then stopping at once, without forceStop", () =>
    withRouter()(
      Effect.gen(function* () {
        const lifecycle = yield* ControllerLifecycle
        const seen: Array<string> = []
        const watcher = yield* lifecycle.changes.pipe(
          Stream.runForEach((s) => Effect.sync(() => seen.push(s))),
          Effect.fork
        )
        yield* settle
        yield* drain
        yield* settle
        expect(seen).toEqual(["ready", "draining", "stopping"])
        expect(yield* forceStopped).toBe(false)
        yield* Fiber.interrupt(watcher)
      })
    )
  )

  it.effect("waits for an active stream to finish, refusing new requests meanwhile, then stops", () =>
    withRouter(controllerConfig({ drainTimeoutMs: 30_000 }))(
      Effect.gen(function* () {
        const w1 = yield* startWorker({ id: "w1" })
        const [running, req] = yield* streamingOn(w1, completion)

        const draining = yield* Effect.fork(drain)
        yield* settle
        expect(yield* state).toBe("draining")
        expect(failureOf(yield* Effect.exit(Stream.runDrain(yield* route(completion))))._tag).toBe("ShuttingDown")

        // Still one active request: drain keeps polling.
        yield* TestClock.adjust(1_000)
        expect(yield* isRunning(draining)).toBe(true)
        expect(yield* state).toBe("draining")

        yield* w1.emit(tokenMsg(req.requestId, 1, "b"), doneMsg(req.requestId, 2))
        successOf(yield* running.exit)
        expect((yield* (yield* RequestStats).snapshot).active).toBe(0)
        yield* TestClock.adjust(50)
        yield* Fiber.join(draining)
        expect(yield* state).toBe("stopping")
        expect(yield* forceStopped).toBe(false)
        expect(yield* outcomes).toEqual({ succeeded: 1, failed: 0, cancelled: 0 })
        expect(yield* w1.cancels).toEqual([])
        yield* expectIdle
      })
    )
  )

  it.effect("past drain_timeout_ms: forceStop ends what still runs with ShuttingDown, then stopping", () =>
    withRouter(controllerConfig({ drainTimeoutMs: 1_000, firstTokenTimeoutMs: 60_000, streamIdleTimeoutMs: 60_000 }))(
      Effect.gen(function* () {
        const w1 = yield* startWorker({ id: "w1" })
        const [running, req] = yield* streamingOn(w1, completion)

        const draining = yield* Effect.fork(drain)
        yield* settle
        yield* TestClock.adjust(999)
        expect(yield* isRunning(draining)).toBe(true)
        expect(yield* isRunning(running.fiber)).toBe(true)
        yield* TestClock.adjust(1)
        yield* Fiber.join(draining)
        expect(yield* state).toBe("stopping")
        expect(yield* forceStopped).toBe(true)
        expect(failureOf(yield* running.exit)._tag).toBe("ShuttingDown")
        yield* settle
        expect(yield* w1.cancels).toEqual([req.requestId])
        expect(yield* outcomes).toEqual({ succeeded: 0, failed: 1, cancelled: 0 })
        yield* expectIdle
      })
    )
  )

  it.effect("run from a scope finalizer (uninterruptible, as ControllerReadyLive does) it still times out", () =>
    withRouter(controllerConfig({ drainTimeoutMs: 1_000, firstTokenTimeoutMs: 60_000 }))(
      Effect.gen(function* () {
        const w1 = yield* startWorker({ id: "w1" })
        const [running, req] = yield* routeTo(w1, completion)
        const shutdown = yield* Effect.fork(Effect.scoped(Effect.addFinalizer(() => drain)))
        yield* settle
        yield* TestClock.adjust(999)
        expect(yield* isRunning(shutdown)).toBe(true)
        yield* TestClock.adjust(1)
        yield* Fiber.join(shutdown)
        expect(yield* state).toBe("stopping")
        expect(failureOf(yield* running.exit)._tag).toBe("ShuttingDown")
        yield* settle
        expect(yield* w1.cancels).toEqual([req.requestId])
        yield* expectIdle
      })
    )
  )
})
