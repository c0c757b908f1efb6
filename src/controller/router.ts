import { Cause, Effect, Exit, FiberSet, Metric, Option, Stream } from "effect"
import { randomUUID } from "node:crypto"
import { ClusterConfigService } from "../config/cluster-config.js"
import {
  type AttemptFailure,
  type InferenceError,
  InvalidRequest,
  type NoWorkers,
  Overloaded,
  ShuttingDown,
  SlowConsumer,
  toOpenAiError,
  WorkerFailed,
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
import { DeadlineSweep } from "./deadline-sweep.js"
import { ControllerLifecycle } from "./lifecycle.js"
import { LoadMonitor } from "./load-monitor.js"
import * as Metrics from "./metrics.js"
import { Registry } from "./registry.js"
import { Relay } from "./relay.js"
import type { AttemptOutcome, RetryKind } from "./relay-step.js"
import { RequestJournal, type RequestSummary } from "./request-journal.js"
import { type RequestOutcome, RequestStats } from "./request-stats.js"

export type { RetryKind } from "./relay-step.js"

/** What every attempt of one request shares. */
interface RequestContext {
  readonly request: RouteRequest
  readonly requestId: string
  readonly startedAt: number
  readonly sink: RelaySink
  /** Workers already tried: never chosen again for this request. */
  readonly tried: Set<string>
  /** Why each tried worker did not serve it, in order. */
  readonly failures: Array<AttemptFailure>
  readonly retryKinds: Array<RetryKind>
  /** The prompt's block chain for prefix affinity (issue 16), computed once; undefined: affinity off. */
  readonly prompt: PromptChain | undefined
  /** Tokens relayed to the consumer so far, over all attempts. */
  relayed: number
  firstTokenAt: number | undefined
  workerId: string | undefined
}

const toWire = (requestId: RequestId, r: RouteRequest): InferenceRequest => ({
  requestId,
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
 * Routes a request to a worker and relays its tokens (PRD §4), at the cost of one fiber and a fixed
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
      nats.request(Subjects.inference(worker.workerId), InferenceRequest, wire, InferenceReply, { timeoutMs: c.dispatchTimeoutMs }).pipe(
        Effect.map((reply): AttemptOutcome | undefined => {
          if (reply.accepted) return undefined
          if (reply.reason === "invalid_request") return { _tag: "Fail", error: new InvalidRequest({ message: reply.message }) }
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
          NatsReplyInvalid: (e) => Effect.succeed({ _tag: "Retry", kind: "invalid_ack", reason: `invalid ack: ${e.reason}` } as const)
        })
      )

    const watch = (relay: Relay, workerId: string) => {
      let relays = relaysByWorker.get(workerId)
      if (relays === undefined) {
        relays = new Set()
        relaysByWorker.set(workerId, relays)
      }
      relays.add(relay)
      return () => {
        relays.delete(relay)
        if (relays.size === 0) relaysByWorker.delete(workerId)
      }
    }

    /** One attempt on one worker, from taking a slot to the attempt's outcome. */
    const attempt = (ctx: RequestContext, attemptNo: number): Effect.Effect<AttemptOutcome, InferenceError> =>
      // The slot and the finalizer that gives it back are taken together: no interruption between them.
      Effect.uninterruptibleMask((restore) =>
        Effect.gen(function* () {
          const { request } = ctx
          const worker = yield* restore(
            admission.admit({
              model: request.model,
              exclude: ctx.tried,
              prompt: ctx.prompt,
              ...(request.tags === undefined ? {} : { tags: request.tags }),
              ...(request.priority === undefined ? {} : { priority: request.priority }),
              // issue 12: only workers whose engine honours what the request uses.
              ...(request.requires === undefined || request.requires.length === 0 ? {} : { requires: request.requires })
            })
          ).pipe(
            Effect.catchTag("NoWorkers", (e): Effect.Effect<never, NoWorkers | WorkersUnavailable> =>
              // Every skilled worker was tried: say what each of them answered.
              ctx.tried.size > 0 ? Effect.fail(new WorkersUnavailable({ model: request.model, attempts: ctx.failures })) : Effect.fail(e)
            )
          )
          const workerId = worker.workerId
          ctx.tried.add(workerId)
          ctx.workerId = workerId
          const attemptId = attemptNo === 0 ? ctx.requestId : `${ctx.requestId}-${attemptNo}`
          const relay = new Relay({
            workerId,
            attemptId,
            sink: ctx.sink,
            relayedBefore: ctx.relayed,
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
          const unwatch = watch(relay, workerId)
          const unsweep = deadlines.add(relay)
          const run = Effect.gen(function* () {
            const refused = yield* dispatch(worker, toWire(RequestId.make(attemptId), request))
            if (refused !== undefined) {
              // A timeout may still be acked late (then a cancel is owed); anything else runs nothing.
              if (!(refused._tag === "Retry" && refused.kind === "ack_timeout")) relay.markFinished()
              relay.end(refused)
            } else {
              relay.dispatched(now())
              // Accepted: this worker now holds the prompt in its prefix cache (issue 16).
              if (ctx.prompt !== undefined) yield* balancer.affinity.recordDispatch(workerId, ctx.prompt)
            }
            return yield* relay.await
          })
          return yield* restore(run).pipe(
            Effect.onExit((exit) => {
              subscription.close()
              unwatch()
              unsweep()
              admission.release(workerId)
              if (relay.finished) return Effect.void
              const interrupted = Exit.isFailure(exit) && Cause.isInterruptedOnly(exit.cause)
              const ok = Exit.isSuccess(exit) && exit.value._tag === "Done"
              return ok ? Effect.void : sendCancel(workerId, attemptId, interrupted ? "client" : "error")
            })
          )
        })
      )

    const attempts = (ctx: RequestContext): Effect.Effect<DoneEvent, InferenceError> =>
      Effect.gen(function* () {
        for (let attemptNo = 0; ; attemptNo++) {
          const outcome = yield* attempt(ctx, attemptNo)
          if (outcome._tag === "Done") return outcome.done
          if (outcome._tag === "Fail") return yield* Effect.fail(outcome.error)
          const workerId = ctx.workerId ?? "?"
          ctx.failures.push({ workerId, reason: outcome.reason })
          ctx.retryKinds.push(outcome.kind)
          yield* Effect.logInfo(`request ${ctx.requestId}: worker ${workerId} ${sanitizeForLog(outcome.reason, 300)}`).pipe(
            Effect.annotateLogs({ requestId: ctx.requestId, workerId })
          )
          if (attemptNo >= c.maxRetries) {
            return yield* Effect.fail(new WorkersUnavailable({ model: ctx.request.model, attempts: ctx.failures }))
          }
        }
      })

    /** Stats, metrics and the log line of a finished request: once per request. */
    const finish = (ctx: RequestContext, exit: Exit.Exit<DoneEvent, InferenceError>) =>
      Effect.gen(function* () {
        const ended = now()
        const failure = Exit.isFailure(exit) ? Cause.failureOption(exit.cause) : Option.none<InferenceError>()
        const outcome: RequestOutcome = Exit.isSuccess(exit) ? "succeeded" : Option.isSome(failure) ? "failed" : "cancelled"
        yield* stats.end(outcome)
        for (const kind of ctx.retryKinds) yield* Metric.increment(Metric.tagged(Metrics.retriesTotal, "reason", kind))
        const wire = Option.map(failure, toOpenAiError)
        const summary: RequestSummary = {
          requestId: ctx.requestId,
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
          startedAt: ctx.startedAt,
          client: ctx.request.client
        }
        yield* journal.record(summary)
      })

    /**
     * Generates `request`, delivering its events to `sink` as they arrive; succeeds with the final
     * `done` event. Fails with a typed `InferenceError`; interrupting it (the client went away)
     * cancels the worker's work.
     */
    const execute = (request: RouteRequest, sink: RelaySink): Effect.Effect<DoneEvent, InferenceError> =>
      Effect.gen(function* () {
        yield* lifecycle.ensureAccepting
        const lagMs = maxLagMs > 0 ? monitor.lagMs() : 0
        if (lagMs > maxLagMs && maxLagMs > 0) {
          return yield* new Overloaded({ lagMs, retryAfterSeconds: Math.max(1, Math.ceil(lagMs / 1000)) })
        }
        const ctx: RequestContext = {
          request,
          requestId: request.requestId ?? `req-${randomUUID()}`,
          startedAt: now(),
          sink,
          tried: new Set(),
          failures: [],
          retryKinds: [],
          prompt: balancer.affinity.chainOf(request),
          relayed: 0,
          firstTokenAt: undefined,
          workerId: undefined
        }
        yield* stats.begin
        return yield* attempts(ctx).pipe(Effect.onExit((exit) => finish(ctx, exit)))
      })

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
  })
}) {}

/** The error of a stream that ended without a result (kept total rather than asserted). */
export const emptyStream = () => new WorkerFailed({ workerId: "", code: "empty_stream", message: "the worker ended without a result" })
