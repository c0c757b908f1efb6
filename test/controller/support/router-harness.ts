import { expect } from "@effect/vitest"
import { Cause, Effect, Exit, Fiber, identity, Layer, Option, Queue, type Scope, Stream, TestClock } from "effect"
import { ClusterConfigService } from "../../../src/config/cluster-config.js"
import type { ClusterConfig } from "../../../src/config/schema.js"
import { AdmissionQueue } from "../../../src/controller/admission-queue.js"
import { Balancer } from "../../../src/controller/balancer.js"
import { ControllerIdentity } from "../../../src/controller/controller-identity.js"
import { DeadlineSweep } from "../../../src/controller/deadline-sweep.js"
import { InFlight } from "../../../src/controller/in-flight.js"
import { ControllerLifecycle } from "../../../src/controller/lifecycle.js"
import { LoadMonitor } from "../../../src/controller/load-monitor.js"
import { Registry } from "../../../src/controller/registry.js"
import { RequestJournal } from "../../../src/controller/request-journal.js"
import { RequestStats } from "../../../src/controller/request-stats.js"
import { Router } from "../../../src/controller/router.js"
import { WorkerProbes } from "../../../src/controller/worker-probes.js"
import type { InferenceError } from "../../../src/domain/errors.js"
import type { ToolCallDelta } from "../../../src/domain/inference.js"
import type { DoneEvent, RelayEvent, RouteRequest } from "../../../src/domain/route.js"
import { ScriptedNats } from "../../support/scripted-nats.js"
import { MODEL } from "./fixtures.js"
import { type FakeWorker, tokenMsg } from "./scripted-workers.js"

type ControllerConfig = ClusterConfig["controller"]

/** The defaults with some `controller` fields changed. */
export const controllerConfig =
  (patch: Partial<ControllerConfig>) =>
  (c: ClusterConfig): ClusterConfig => ({ ...c, controller: { ...c.controller, ...patch } })

/** The defaults with `controller.queue` changed. */
export const queueConfig =
  (patch: Partial<ControllerConfig["queue"]>) =>
  (c: ClusterConfig): ClusterConfig => ({ ...c, controller: { ...c.controller, queue: { ...c.controller.queue, ...patch } } })

/** The controller id of the router harness (`InferenceRequest.controllerId`, `activeByController`). */
export const TEST_CONTROLLER_ID = "ctl-test"

/**
 * What the harness replaces: the bus (the scripted double), the load monitor (a fixed lag), the
 * controller id (fixed) and the config (the defaults changed by `patch`).
 */
const fakes = (patch: (c: ClusterConfig) => ClusterConfig, eventLoopLagMs: number) =>
  Layer.mergeAll(
    ScriptedNats.layer,
    LoadMonitor.layerTest({ now: eventLoopLagMs }),
    ControllerIdentity.layerTest(TEST_CONTROLLER_ID),
    ClusterConfigService.layerTest(patch)
  )

/**
 * The Router and the services it declares, over the fakes. The two services that need a fake
 * (Router: the load monitor and the id; AdmissionQueue: the id) come without their declared
 * dependencies; every other one is its `Default`. One build per test.
 */
export const routerTestLayer = (patch: (c: ClusterConfig) => ClusterConfig = identity, eventLoopLagMs = 0) =>
  Router.DefaultWithoutDependencies.pipe(
    Layer.provideMerge(AdmissionQueue.DefaultWithoutDependencies),
    Layer.provideMerge(
      Layer.mergeAll(
        Balancer.Default,
        ControllerLifecycle.Default,
        DeadlineSweep.Default,
        InFlight.Default,
        Registry.Default,
        RequestJournal.Default,
        RequestStats.Default,
        WorkerProbes.Default
      )
    ),
    Layer.provideMerge(fakes(patch, eventLoopLagMs))
  )

export type RouterTestServices = Layer.Layer.Success<ReturnType<typeof routerTestLayer>>

/**
 * Runs `body` in its own scope (closed before the layer) with a fresh router layer, the controller
 * lifecycle set to `ready` first; `eventLoopLagMs` is what the load monitor reports.
 */
export const withRouter =
  (patch: (c: ClusterConfig) => ClusterConfig = identity, eventLoopLagMs = 0) =>
  <A, E>(body: Effect.Effect<A, E, RouterTestServices | Scope.Scope>): Effect.Effect<A, E> =>
    Effect.gen(function* () {
      const lifecycle = yield* ControllerLifecycle
      yield* lifecycle.transition("ready")
      return yield* body
    }).pipe(Effect.scoped, Effect.provide(routerTestLayer(patch, eventLoopLagMs)))

/** Lets forked fibers (consumer, fake workers, the router's watchers) run until they wait. */
export const settle: Effect.Effect<void> = Effect.gen(function* () {
  for (let i = 0; i < 20; i++) yield* Effect.yieldNow()
  yield* TestClock.adjust(0)
  for (let i = 0; i < 20; i++) yield* Effect.yieldNow()
})

/** A chat request for the fake workers' model (one user message, 16 tokens at most), with `patch` laid over it. */
export const chatRequest = (patch: Partial<RouteRequest> = {}): RouteRequest => ({
  model: MODEL,
  messages: [{ role: "user", content: "Hello?" }],
  maxTokens: 16,
  ...patch
})

/** The Router's stream for `r`: nothing is dispatched until it is run. */
export const route = (r: RouteRequest = chatRequest()) => Effect.map(Router, (router) => router.route(r))

/** Whether `fiber` is still running: a stream (or drain) that has neither ended nor failed yet. */
export const isRunning = <A, E>(fiber: Fiber.Fiber<A, E>) => Effect.map(Fiber.poll(fiber), Option.isNone)

/** A relayed event with each token (or tool-call delta) on its own, as the tests reason about them. */
export type FlatEvent =
  | { readonly type: "token"; readonly index: number; readonly token: string }
  | { readonly type: "toolCall"; readonly index: number; readonly delta: ToolCallDelta }
  | DoneEvent

/** The events of one relayed batch, one per token. */
export const flatten = (event: RelayEvent): ReadonlyArray<FlatEvent> =>
  event.type === "tokens"
    ? event.tokens.map((token, i) => ({ type: "token", index: event.index + i, token }))
    : event.type === "toolCalls"
      ? event.deltas.map((delta, i) => ({ type: "toolCall", index: event.index + i, delta }))
      : [event]

/** A forked consumer of a relay stream that records what it received, one event per token. */
export interface Consumer {
  readonly fiber: Fiber.RuntimeFiber<void, InferenceError>
  /** Waits for the next event the consumer received. */
  readonly next: Effect.Effect<FlatEvent>
  readonly events: Effect.Effect<ReadonlyArray<FlatEvent>>
  /** Every batch as it arrived (one per bus message). */
  readonly batches: Effect.Effect<ReadonlyArray<RelayEvent>>
  /** Waits for the stream to end; its exit. */
  readonly exit: Effect.Effect<Exit.Exit<void, InferenceError>>
}

export const consume = (stream: Stream.Stream<RelayEvent, InferenceError>): Effect.Effect<Consumer> =>
  Effect.gen(function* () {
    const queue = yield* Queue.unbounded<FlatEvent>()
    const events: Array<FlatEvent> = []
    const batches: Array<RelayEvent> = []
    const fiber = yield* stream.pipe(
      Stream.runForEach((e) =>
        Effect.sync(() => {
          batches.push(e)
          events.push(...flatten(e))
        }).pipe(Effect.zipRight(Queue.offerAll(queue, flatten(e))))
      ),
      Effect.fork
    )
    return {
      fiber,
      next: Queue.take(queue),
      events: Effect.sync(() => [...events]),
      batches: Effect.sync(() => [...batches]),
      exit: Fiber.await(fiber)
    }
  })

/**
 * Routes `r` to a background consumer and waits for `worker` to receive it: the consumer and the
 * request as the worker got it. Most streaming tests start here, then script the worker.
 */
export const routeTo = (worker: FakeWorker, r?: RouteRequest) =>
  Effect.gen(function* () {
    const consumer = yield* consume(yield* route(r))
    const request = yield* worker.nextRequest
    return [consumer, request] as const
  })

/**
 * `routeTo`, then the worker streams token 0 ("a") and the consumer receives it: a request that is
 * past its first token, which is where the mid-stream failures (and drains) start from.
 */
export const streamingOn = (worker: FakeWorker, r?: RouteRequest) =>
  Effect.gen(function* () {
    const [consumer, request] = yield* routeTo(worker, r)
    yield* worker.emit(tokenMsg(request.requestId, 0, "a"))
    yield* consumer.next
    return [consumer, request] as const
  })

/** The value of a successful exit (the test fails otherwise). */
export const successOf = <A, E>(exit: Exit.Exit<A, E>): A => {
  if (Exit.isFailure(exit)) throw new Error(`expected a success, got ${Cause.pretty(exit.cause)}`)
  return exit.value
}

/** The typed failure of an exit (the test fails if the exit is a success or a defect). */
export const failureOf = <A, E>(exit: Exit.Exit<A, E>): E => {
  if (Exit.isSuccess(exit)) throw new Error(`expected a failure, got a success: ${JSON.stringify(exit.value)}`)
  return Option.getOrThrowWith(Cause.failureOption(exit.cause), () => new Error(`expected a typed failure, got ${Cause.pretty(exit.cause)}`))
}

/** Nothing reserved, nothing active, nobody queued: whatever happened, no slot leaked. */
export const expectIdle = Effect.gen(function* () {
  yield* settle
  const inFlight = yield* InFlight
  const stats = yield* RequestStats
  const queue = yield* AdmissionQueue
  expect(inFlight.total()).toBe(0)
  expect((yield* stats.snapshot).active).toBe(0)
  expect(yield* queue.pending).toBe(0)
})

/** The request counts, without `active`/`total` noise: the outcomes so far. */
export const outcomes = Effect.map(RequestStats, (s) => s.snapshot).pipe(
  Effect.flatten,
  Effect.map(({ cancelled, failed, succeeded }) => ({ succeeded, failed, cancelled }))
)
