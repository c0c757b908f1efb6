import { Cause, Effect, Exit, FiberSet, identity, Metric, Option, Stream } from "effect"
import { randomUUID } from "node:crypto"
import { ClusterConfigService } from "../config/cluster-config.js"
import {
  type AttemptFailure,
  BodyTooLarge,
  type InferenceError,
  InvalidRequest,
  type NoWorkers,
  Overloaded,
  ShuttingDown,
  SlowConsumer,
  toOpenAiError,
  WorkersUnavailable
} from "../domain/errors.js"
import { RequestId } from "../domain/ids.js"
import { sanitizeForLog } from "../domain/log-text.js"
import { InferenceReply, InferenceRequest } from "../domain/inference.js"
import type { PromptChain } from "../domain/prompt-chain.js"
import type { DoneEvent, RelayEvent, RelaySink, RouteRequest } from "../domain/route.js"
import { Subjects } from "../domain/subjects.js"
import type { WorkerInfo } from "../domain/worker.js"
import { NatsTransport } from "../nats/nats-transport.js"
import { AdmissionQueue } from "./admission-queue.js"
import { Balancer } from "./balancer.js"
import { ControllerIdentity } from "./controller-identity.js"
import { DeadlineSweep } from "./deadline-sweep.js"
import { InFlight } from "./in-flight.js"
import { ControllerLifecycle } from "./lifecycle.js"
import { LoadMonitor } from "./load-monitor.js"
import * as Metrics from "./metrics.js"
import { completedDone, continuedRequest, continuesKind, type Migrate, remainingTokens, StreamAnswer } from "./migration.js"
import { Registry } from "./registry.js"
import { Relay } from "./relay.js"
import type { AttemptOutcome, RetryKind } from "./relay-step.js"
import { RequestJournal, type RequestSummary } from "./request-journal.js"
import { type RequestOutcome, RequestStats } from "./request-stats.js"
import { fromAck, fromBusy } from "./worker-load.js"
import { WorkerProbes } from "./worker-probes.js"

export type { RetryKind } from "./relay-step.js"

/** How one attempt ends: as the relay says, or moving on to another worker (issue 13). */
type AttemptResult = AttemptOutcome | Migrate

/** What follows an attempt, given its outcome: the request's end, or the next attempt. */
type Then = (outcome: AttemptResult) => Effect.Effect<DoneEvent, InferenceError>

/** The `restore` of an `Effect.uninterruptibleMask`. */
type Restore = <A, E, R>(effect: Effect.Effect<A, E, R>) => Effect.Effect<A, E, R>

/** What every attempt of one request shares. */
interface RequestContext {
  readonly request: RouteRequest
  readonly requestId: string
  readonly startedAt: number
  readonly sink: RelaySink
  /** Workers already tried: never chosen again for this request (an array: most requests try one). */
  readonly tried: Array<string>
  /** Why each tried worker did not serve it, in order. */
  readonly failures: Array<AttemptFailure>
  readonly retryKinds: Array<RetryKind>
  /** The prompt's block chain for prefix affinity (issue 16), computed once; undefined: affinity off. */
  readonly prompt: PromptChain | undefined
  /** Tokens relayed to the consumer so far, over all attempts. */
  relayed: number
  /** What the client got so far, kept for migrations (issue 13); undefined with `migration_limit: 0`. */
  readonly answer: StreamAnswer | undefined
  /** Set once a worker was lost mid-stream: how the stream ends if no other worker can continue it. */
  lost: InferenceError | undefined
  firstTokenAt: number | undefined
  workerId: string | undefined
  /** Times a `busy` worker sent it back to the admission queue (issue 14): not retries. */
  requeues: number
}

/**
 * The request as the worker gets it. Built as one literal: an object spread followed by more
 * properties (`{ ...toWire(…), controllerId }`) makes V8 11 create a new hidden class in old space
 * for every object (measured: 4–7× slower than one literal, and garbage for the next mark-compact).
 */
const toWire = (requestId: RequestId, r: RouteRequest, controllerId: string): InferenceRequest => ({
  requestId,
  controllerId,
  model: r.model,
  stream: true,
  ...(r.maxTokens === undefined ? {} : { maxTokens: r.maxTokens }),
  ...(r.messages === undefined ? {} : { messages: r.messages }),
  ...(r.prompt === undefined ? {} : { prompt: r.prompt }),
  ...(r.temperature === undefined ? {} : { temperature: r.temperature }),
  ...(r.topP === undefined ? {} : { topP: r.topP }),
  ...(r.stop === undefined ? {} : { stop: r.stop }),
  // issue 12: the client's other fields, verbatim, and the route it called.
  ...(r.params === undefined ? {} : { params: r.params }),
  ...(r.endpoint === undefined ? {} : { endpoint: r.endpoint })
})

const textEncoder = new TextEncoder()

/**
 * Routes a request to a worker and relays its tokens (docs/contract.md §5.4), at the cost of one fiber and a fixed
 * handful of Effect operations per request — none per token (issue 10).
 *
 * Per attempt: a slot from the admission queue (balancer + queue), a subscription to
 * `response.{id}` made *before* dispatching, the dispatch as a NATS request, its ack. From then on
 * the worker's messages go from the NATS callback through the pure relay step (`relay-step.ts`) to
 * the consumer's `RelaySink` synchronously; the request's fiber only waits for the outcome. No
 * responders marks the worker offline and tries another; a refusal, an ack timeout, the worker
 * going offline or reporting an error before its first token also try another — at most
 * `max_retries` others, never after a token was relayed. One `DeadlineSweep` enforces every
 * stream's first-token, inactivity and whole-request limits; token indexes are checked for gaps;
 * when an attempt ends without the worker's `done` (client gone, timeout, error) the worker gets
 * `worker.{id}.cancel`. Each finished request is recorded once in the `RequestJournal`.
 *
 * Lost and hung workers (issue 13): `WorkerProbes` watches every acked stream and takes a worker
 * whose silent streams it cannot explain offline within about a second; a stream whose worker is
 * lost after tokens were relayed continues on another worker (`migration.ts`), at most
 * `migration_limit` times.
 */
export class Router extends Effect.Service<Router>()("controller/Router", {
  scoped: Effect.gen(function* () {
    const config = yield* ClusterConfigService
    const nats = yield* NatsTransport
    const registry = yield* Registry
    const admission = yield* AdmissionQueue
    const stats = yield* RequestStats
    const lifecycle = yield* ControllerLifecycle
    const journal = yield* RequestJournal
    const deadlines = yield* DeadlineSweep
    const monitor = yield* LoadMonitor
    const balancer = yield* Balancer
    const inFlight = yield* InFlight
    const { controllerId } = yield* ControllerIdentity
    const probes = yield* WorkerProbes
    const runLog = yield* FiberSet.makeRuntime<never>()
    const c = config.controller
    const maxLagMs = c.overload.maxEventLoopLagMs
    const now = deadlines.now

    /** The relays running now, per worker id: told at once when their worker goes offline. */
    const relaysByWorker = new Map<string, Set<Relay>>()
    yield* registry.listen((change) => {
      for (const t of change.transitions) {
        if (t.to !== "offline" && t.to !== "absent") continue
        // Its prompt cache is gone with it (issue 16).
        balancer.affinity.forget(t.workerId)
        const relays = relaysByWorker.get(t.workerId)
        if (relays !== undefined) for (const relay of [...relays]) relay.lost(t.reason)
      }
    })
    // A forced stop (drain timeout) ends every stream still running.
    yield* lifecycle.stopped.pipe(
      Effect.zipRight(
        Effect.sync(() => {
          for (const relays of relaysByWorker.values()) {
            for (const relay of [...relays]) relay.end({ _tag: "Fail", error: new ShuttingDown({ forced: true }) })
          }
        })
      ),
      Effect.forkScoped
    )

    let lastInvalidLog = 0
    const onInvalid = (subject: string, reason: string) => {
      const at = Date.now()
      if (at - lastInvalidLog < 1_000) return
      lastInvalidLog = at
      runLog(Effect.logWarning(`dropped a message on ${subject}: ${reason}`))
    }

    const sendCancel = (workerId: string, attemptId: string, reason: "client" | "error") => {
      nats.send(Subjects.cancel(workerId), textEncoder.encode(JSON.stringify({ requestId: attemptId })))
      return Metric.increment(Metric.tagged(Metrics.cancelsTotal, "reason", reason))
    }

    /** Dispatches to `worker` and reads its ack: `undefined` when accepted, else how the attempt ends. */
    const dispatch = (worker: WorkerInfo, wire: InferenceRequest): Effect.Effect<AttemptOutcome | undefined> =>
      nats.request(Subjects.inference(worker.workerId), InferenceRequest, wire, InferenceReply, { timeoutMs: c.dispatchTimeoutMs, plain: true }).pipe(
        Effect.map((reply): AttemptOutcome | undefined => {
          // Issue 14: what the worker says of its load corrects this controller's view of it.
          if (reply.accepted) {
            const report = fromAck(reply)
            if (report !== undefined) admission.reported(worker.workerId, report)
            return undefined
          }
          if (reply.reason === "invalid_request") return { _tag: "Fail", error: new InvalidRequest({ message: reply.message }) }
          if (reply.reason === "busy") {
            admission.reported(worker.workerId, fromBusy(reply, worker.capabilities.maxConcurrent, inFlight.own(worker.workerId)))
            return { _tag: "Retry", kind: "busy", reason: `busy: ${reply.message}` }
          }
          return { _tag: "Retry", kind: "refused", reason: `${reply.reason}: ${reply.message}` }
        }),
        Effect.catchTags({
          NatsNoResponders: () =>
            Effect.as(registry.markOffline(worker.workerId, "no responders"), {
              _tag: "Retry",
              kind: "no_responders",
              reason: "no responders"
            } as const),
          NatsRequestTimeout: () =>
            Effect.succeed({ _tag: "Retry", kind: "ack_timeout", reason: `no ack within ${c.dispatchTimeoutMs} ms` } as const),
          NatsReplyInvalid: (e) => Effect.succeed({ _tag: "Retry", kind: "invalid_ack", reason: `invalid ack: ${e.reason}` } as const),
          // Too big for the bus anywhere: the client's request, not a worker's problem.
          NatsPayloadTooLarge: (e) =>
            Effect.succeed({
              _tag: "Fail",
              error: new BodyTooLarge({ limitBytes: e.maxPayload, reason: `the bus carries at most ${e.maxPayload} bytes per message (nats max_payload); this request takes ${e.bytes}` })
            } as const)
        })
      )

    const watch = (relay: Relay, worker: WorkerInfo) => {
      const workerId = worker.workerId
      let relays = relaysByWorker.get(workerId)
      if (relays === undefined) {
        relays = new Set()
        relaysByWorker.set(workerId, relays)
      }
      relays.add(relay)
      // Probed while silent (issue 13).
      const unprobe = probes.watch(worker, relay)
      return () => {
        relays.delete(relay)
        if (relays.size === 0) relaysByWorker.delete(workerId)
        unprobe()
      }
    }

    /**
     * The dispatch and the wait of one attempt, once its slot, relay and subscription exist.
     *
     * The attempt (`runAttempt`, `attempt`) and the loop over attempts (`attemptFrom`) are plain
     * continuations, not generators: their frames stay on the fiber's stack for the stream's whole
     * life, and a generator frame holds its generator object, its register file and Effect's
     * adapter objects, about 0.4 KB each (`npm run bench -- --scenario held`). Where a generator
     * is used on the request path (`migrate`, `finish`), it is created once, here, and called per
     * request (never `Effect.gen(function* () {…})` inside a per-request function): V8 gives each
     * new generator function its own initial map, allocated in old space and pointing at the
     * closure, so a generator closure per request kept that request's whole state (its HTTP
     * objects, relay, fiber) alive through two scavenges, and V8 then pretenured the sites that
     * allocate it (see process/heap-flags.ts): 24 KB promoted to the old space per streamed
     * request, 1 KB now.
     */
    const runAttempt = (ctx: RequestContext, worker: WorkerInfo, relay: Relay): Effect.Effect<AttemptResult> =>
      Effect.flatMap(
        Effect.suspend(() => {
          const wire = toWire(RequestId.make(relay.options.attemptId), ctx.request, controllerId)
          const answer = ctx.answer
          return dispatch(worker, ctx.lost === undefined || answer === undefined ? wire : continuedRequest(wire, answer.text(), relay.options.relayedBefore))
        }),
        (refused) => {
          if (refused !== undefined) {
            // A timeout may still be acked late (then a cancel is owed); anything else runs nothing.
            if (!(refused._tag === "Retry" && refused.kind === "ack_timeout")) relay.markFinished()
            relay.end(refused)
            return awaitOutcome(ctx, relay)
          }
          relay.dispatched(now())
          // Accepted: this worker now holds the prompt in its prefix cache (issue 16).
          if (ctx.prompt === undefined) return awaitOutcome(ctx, relay)
          return Effect.zipRight(balancer.affinity.recordDispatch(worker.workerId, ctx.prompt), awaitOutcome(ctx, relay))
        }
      )

    /** The attempt's outcome, as the stream's kept answer (issue 13) reads it. */
    const awaitOutcome = (ctx: RequestContext, relay: Relay): Effect.Effect<AttemptResult> => {
      const answer = ctx.answer
      if (answer === undefined) return relay.awaitWith(identity)
      return relay.awaitWith((outcome): AttemptResult => {
        if (outcome._tag === "Done") {
          const done = answer.doneAfter(outcome.done, relay.options.relayedBefore)
          return done === outcome.done ? outcome : { _tag: "Done", done }
        }
        // Lost after the client got tokens: the stream may go on elsewhere (issue 13).
        const lostReason = relay.lostReason
        if (outcome._tag === "Fail" && lostReason !== undefined && ctx.relayed > 0) {
          return { _tag: "Migrate", reason: lostReason, error: outcome.error }
        }
        return outcome
      })
    }

    /**
     * One attempt on one worker, from taking a slot to the attempt's outcome. It runs where the
     * request cannot be interrupted (`run`'s mask): only the wait for a slot and the attempt's
     * run are `restore`d, so that a slot, once taken, is always given back and the attempt's
     * subscription and watchers always removed. Suspended: what it asks the queue for is read
     * when it runs (a requeue or a migration changes it).
     */
    const attempt = (ctx: RequestContext, attemptNo: number, restore: Restore, then: Then): Effect.Effect<DoneEvent, InferenceError> =>
      Effect.flatMap(
        Effect.suspend(() => {
          const { request } = ctx
          return restore(
            admission.admit({
              model: request.model,
              exclude: ctx.tried,
              prompt: ctx.prompt,
              ...(request.tags === undefined ? {} : { tags: request.tags }),
              ...(request.priority === undefined ? {} : { priority: request.priority }),
              // Issue 14: a request sent back by a busy worker waits at most max_wait_ms since it first asked.
              ...(ctx.requeues === 0 ? {} : { waitingSince: ctx.startedAt }),
              // A migration: only workers that can continue the stream (issue 13).
              ...(ctx.lost === undefined || ctx.answer === undefined ? {} : { eligible: continuesKind(ctx.answer.kind) }),
              // issue 12: only workers whose engine honours what the request uses.
              ...(request.requires === undefined || request.requires.length === 0 ? {} : { requires: request.requires })
            })
          ).pipe(
            // A migration that finds no worker ends as the lost worker's stream would have.
            Effect.mapError((e): InferenceError => ctx.lost ?? e),
            Effect.catchTag("NoWorkers", (e): Effect.Effect<never, NoWorkers | WorkersUnavailable> =>
              // Every skilled worker was tried: say what each of them answered.
              ctx.tried.length > 0 ? Effect.fail(new WorkersUnavailable({ model: request.model, attempts: ctx.failures })) : Effect.fail(e)
            )
          )
        }),
        (worker) => attemptOn(ctx, attemptNo, restore, worker, then)
      )

    /**
     * The attempt once `worker`'s slot is taken: its relay, subscription and watchers, the run, then
     * their removal, and `then` with the outcome.
     */
    const attemptOn = (ctx: RequestContext, attemptNo: number, restore: Restore, worker: WorkerInfo, then: Then): Effect.Effect<DoneEvent, InferenceError> => {
      const workerId = worker.workerId
      if (!ctx.tried.includes(workerId)) ctx.tried.push(workerId)
      ctx.workerId = workerId
      const attemptId = attemptNo === 0 ? ctx.requestId : `${ctx.requestId}-${attemptNo}`
      const relayedBefore = ctx.relayed
      const answer = ctx.answer
      const relay = new Relay({
        workerId,
        attemptId,
        sink: answer === undefined ? ctx.sink : answer.sinkFor(ctx.sink, relayedBefore),
        relayedBefore,
        startedAt: ctx.startedAt,
        limits: c,
        now,
        onTokens: (count, at) => {
          if (ctx.relayed === 0) ctx.firstTokenAt = at
          ctx.relayed += count
        },
        slowConsumer: () => new SlowConsumer({ limitBytes: c.api.maxBufferedBytes }),
        onInvalid
      })
      // Subscribe before dispatching, so that no token can arrive before we listen.
      const subscription = nats.listen(Subjects.response(attemptId), relay.onMessage)
      const unwatch = watch(relay, worker)
      const unsweep = deadlines.add(relay)
      const after = (exit: Exit.Exit<AttemptResult>): Effect.Effect<DoneEvent, InferenceError> => {
        subscription.close()
        unwatch()
        unsweep()
        admission.release(workerId)
        const next = Exit.isSuccess(exit) ? Effect.suspend(() => then(exit.value)) : Effect.failCause(exit.cause)
        if (relay.finished) return next
        const interrupted = Exit.isFailure(exit) && Cause.isInterruptedOnly(exit.cause)
        const ok = Exit.isSuccess(exit) && exit.value._tag === "Done"
        return ok ? next : Effect.zipRight(sendCancel(workerId, attemptId, interrupted ? "client" : "error"), next)
      }
      // One `matchCauseEffect`, not `onExit` (already uninterruptible here: no second mask) nor
      // `Effect.exit` and a `flatMap`, and what follows the attempt (`then`) is called from it
      // rather than from a frame of the caller's: one frame on the fiber's stack for the stream's
      // whole life where there were four.
      return Effect.matchCauseEffect(restore(runAttempt(ctx, worker, relay)), {
        onFailure: (cause) => after(Exit.failCause(cause)),
        onSuccess: (outcome) => after(Exit.succeed(outcome))
      })
    }

    /**
     * A stream whose worker was lost mid-stream: `undefined` when it goes on on another worker, else
     * how the request ends (the lost worker's error, or — all `max_tokens` were sent — its `done`).
     */
    const migrate: (ctx: RequestContext, outcome: Migrate) => Effect.Effect<DoneEvent | undefined, InferenceError> = Effect.fn("Router.migrate")(
      function* (ctx: RequestContext, outcome: Migrate) {
        const answer = ctx.answer
        const workerId = ctx.workerId ?? "?"
        ctx.lost = outcome.error
        if (answer === undefined || answer.migrations >= c.migrationLimit) return yield* Effect.fail(outcome.error)
        if (remainingTokens(ctx.request.maxTokens, ctx.relayed) === 0) {
          const done = completedDone(ctx.request, ctx.relayed, workerId, answer.migrations)
          ctx.sink.push(done)
          return done
        }
        answer.migrations++
        yield* Metric.increment(Metric.tagged(Metrics.migrationsTotal, "reason", Metrics.lostReasonLabel(outcome.reason)))
        yield* Effect.logWarning(
          `request ${ctx.requestId}: worker ${workerId} lost after ${ctx.relayed} tokens (${sanitizeForLog(outcome.reason, 300)}): ` +
            `continuing on another worker (migration ${answer.migrations} of at most ${c.migrationLimit})`
        ).pipe(Effect.annotateLogs({ requestId: ctx.requestId, workerId }))
        return undefined
      }
    )

    /**
     * Attempt `attemptNo` and what follows it, until the request ends: `retries` counts the
     * retries since the start or since the last migration.
     */
    const attemptFrom = (ctx: RequestContext, restore: Restore, attemptNo: number, retries: number): Effect.Effect<DoneEvent, InferenceError> =>
      attempt(ctx, attemptNo, restore, (outcome): Effect.Effect<DoneEvent, InferenceError> => {
        if (outcome._tag === "Done") return Effect.succeed(outcome.done)
        if (outcome._tag === "Fail") return Effect.fail(outcome.error)
        const next = (retriesNow: number) => attemptFrom(ctx, restore, attemptNo + 1, retriesNow)
        if (outcome._tag === "Migrate") {
          return Effect.flatMap(migrate(ctx, outcome), (done) => (done === undefined ? next(0) : Effect.succeed(done)))
        }
        const workerId = ctx.workerId ?? "?"
        if (outcome.kind === "busy") return Effect.zipRight(requeue(ctx, workerId, outcome.reason), next(retries))
        ctx.failures.push({ workerId, reason: outcome.reason })
        ctx.retryKinds.push(outcome.kind)
        return Effect.zipRight(
          Effect.logInfo(`request ${ctx.requestId}: worker ${workerId} ${sanitizeForLog(outcome.reason, 300)}`).pipe(
            Effect.annotateLogs({ requestId: ctx.requestId, workerId })
          ),
          retries + 1 > c.maxRetries ? Effect.fail(ctx.lost ?? new WorkersUnavailable({ model: ctx.request.model, attempts: ctx.failures })) : next(retries + 1)
        )
      })

    /**
     * Issue 14: a worker refused the request as `busy` — another controller filled it first, which
     * this one could not know. That is no failure of the worker: the request goes back to this
     * controller's admission queue, keeping its place and its `queue.max_wait_ms` from when it first
     * asked, consuming no retry, and the worker stays eligible; the refusal's counts (recorded by
     * `dispatch`) make the queue wait until a slot there or elsewhere is actually free.
     */
    const requeue = (ctx: RequestContext, workerId: string, reason: string) =>
      Effect.suspend(() => {
        const at = ctx.tried.indexOf(workerId)
        if (at >= 0) ctx.tried.splice(at, 1)
        ctx.requeues++
        return Metric.increment(Metrics.requeuesTotal).pipe(
          Effect.zipRight(
            Effect.logDebug(`request ${ctx.requestId}: worker ${workerId} ${sanitizeForLog(reason, 300)}; back to the queue`).pipe(
              Effect.annotateLogs({ requestId: ctx.requestId, workerId })
            )
          )
        )
      })

    /** Stats, metrics and the log line of a finished request: once per request. */
    const finish = Effect.fnUntraced(function* (ctx: RequestContext, exit: Exit.Exit<DoneEvent, InferenceError>) {
      const ended = now()
      const failure = Exit.isFailure(exit) ? Cause.failureOption(exit.cause) : Option.none<InferenceError>()
      const outcome: RequestOutcome = Exit.isSuccess(exit) ? "succeeded" : Option.isSome(failure) ? "failed" : "cancelled"
      yield* stats.end(outcome)
      for (const kind of ctx.retryKinds) yield* Metric.increment(Metric.tagged(Metrics.retriesTotal, "reason", kind))
      const wire = Option.map(failure, toOpenAiError)
      const summary: RequestSummary = {
        requestId: ctx.requestId,
        // Every front door's request is a POST, but a WebSocket's, which has no method of its own.
        method: ctx.request.route === "ws" ? "WS" : "POST",
        route: ctx.request.route ?? "internal",
        model: ctx.request.model,
        // A model nobody serves, or a request that never got that far, is the client's: no metrics label.
        modelKnown: !Option.exists(failure, (e) => e._tag === "ModelNotFound" || e._tag === "InvalidRequest"),
        workerId: ctx.workerId,
        outcome,
        status:
          outcome === "cancelled" ? 499 : ctx.relayed > 0 ? 200 : Option.match(wire, { onNone: () => 200, onSome: (w) => w.status }),
        errorCode: Option.match(wire, { onNone: () => (outcome === "cancelled" ? "cancelled" : undefined), onSome: (w) => w.body.error.code ?? undefined }),
        errorMessage: Option.getOrUndefined(Option.map(failure, (e) => e.message)),
        tokens: ctx.relayed,
        ttftMs: ctx.firstTokenAt === undefined ? undefined : ctx.firstTokenAt - ctx.startedAt,
        durationMs: ended - ctx.startedAt,
        retries: ctx.retryKinds.length,
        ...(ctx.answer !== undefined && ctx.answer.migrations > 0 ? { migrations: ctx.answer.migrations } : {}),
        startedAt: ctx.startedAt,
        client: ctx.request.client
      }
      yield* journal.record(summary)
    })

    /** The request from its first attempt to its record: `finish` runs however it ends. */
    const run = (ctx: RequestContext): Effect.Effect<DoneEvent, InferenceError> =>
      Effect.uninterruptibleMask((restore) =>
        Effect.zipRight(
          stats.begin,
          Effect.matchCauseEffect(attemptFrom(ctx, restore, 0, 0), {
            onFailure: (cause) => Effect.zipRight(finish(ctx, Exit.failCause(cause)), Effect.failCause(cause)),
            onSuccess: (done) => Effect.as(finish(ctx, Exit.succeed(done)), done)
          })
        )
      )

    /**
     * Generates `request`, delivering its events to `sink` as they arrive; succeeds with the final
     * `done` event. Fails with a typed `InferenceError`; interrupting it (the client went away)
     * cancels the worker's work. No span per request (`Effect.fn` also captured a stack trace per
     * call): no tracer reads them, and the span and its FiberRef update showed in the profile.
     *
     * The whole request runs in one `uninterruptibleMask`, with only its waits `restore`d (`attempt`):
     * each `onExit` or mask costs the fiber two or three frames for the stream's whole life, and a
     * stream in flight held 15 of them; it holds 4 (`npm run bench -- --scenario held`). Nor is
     * this a generator: its frame would stay on the stack until the request ends.
     */
    const execute = (request: RouteRequest, sink: RelaySink): Effect.Effect<DoneEvent, InferenceError> =>
      Effect.zipRight(
        lifecycle.ensureAccepting,
        Effect.suspend(() => {
          const lagMs = maxLagMs > 0 ? monitor.sustainedLagMs() : 0
          if (lagMs > maxLagMs && maxLagMs > 0) {
            return Effect.fail(new Overloaded({ lagMs, retryAfterSeconds: Math.max(1, Math.ceil(lagMs / 1000)) }))
          }
          return run({
            request,
            requestId: request.requestId ?? `req-${randomUUID()}`,
            startedAt: now(),
            sink,
            tried: [],
            failures: [],
            retryKinds: [],
            prompt: balancer.affinity.chainOf(request),
            relayed: 0,
            answer: c.migrationLimit > 0 ? StreamAnswer.of(request) : undefined,
            lost: undefined,
            firstTokenAt: undefined,
            workerId: undefined,
            requeues: 0
          })
        })
      )

    /** The same as a `Stream`, a chunk per bus message: for consumers built on streams (RPC). */
    const route = (request: RouteRequest): Stream.Stream<RelayEvent, InferenceError> =>
      Stream.asyncPush<RelayEvent, InferenceError>(
        (emit) =>
          execute(request, {
            push: (event) => {
              emit.single(event)
              return true
            }
          }).pipe(
            Effect.matchCause({ onSuccess: () => emit.end(), onFailure: (cause) => emit.halt(cause) }),
            Effect.forkScoped
          ),
        { bufferSize: "unbounded" }
      )

    /** For non-streaming callers: every token joined, plus the final event. */
    const complete = (request: RouteRequest): Effect.Effect<DoneEvent & { readonly text: string }, InferenceError> => {
      const parts: Array<string> = []
      return execute(request, {
        push: (event) => {
          if (event.type === "tokens") for (const token of event.tokens) parts.push(token)
          return true
        }
      }).pipe(Effect.map((done) => ({ ...done, text: parts.join("") })))
    }

    return { execute, route, complete } as const
  }),
  dependencies: [AdmissionQueue.Default, Balancer.Default, ControllerIdentity.Default, ControllerLifecycle.Default, DeadlineSweep.Default, InFlight.Default, LoadMonitor.Default, Registry.Default, RequestJournal.Default, RequestStats.Default, WorkerProbes.Default]
}) {}
