import { Cause, Chunk, Clock, Data, Deferred, Effect, Exit, Metric, Option, Queue, Stream } from "effect"
import { randomUUID } from "node:crypto"
import { ClusterConfigService } from "../config/cluster-config.js"
import {
  type InferenceError,
  InferenceTimeout,
  InvalidRequest,
  type NoWorkers,
  ShuttingDown,
  type TimeoutPhase,
  WorkerFailed,
  WorkersUnavailable
} from "../domain/errors.js"
import { RequestId } from "../domain/ids.js"
import {
  CancelRequest,
  type ChatMessage,
  type FinishReason,
  InferenceReply,
  InferenceRequest,
  TokenMessage,
  type Usage
} from "../domain/inference.js"
import type { PromptChain } from "../domain/prompt-chain.js"
import { Subjects } from "../domain/subjects.js"
import type { WorkerInfo } from "../domain/worker.js"
import { type Incoming, NatsTransport } from "../nats/nats-transport.js"
import { AdmissionQueue } from "./admission-queue.js"
import { Balancer } from "./balancer.js"
import { ControllerLifecycle } from "./lifecycle.js"
import * as Metrics from "./metrics.js"
import { Registry } from "./registry.js"
import { type RequestOutcome, RequestStats } from "./request-stats.js"

/** What a front door (HTTP, WebSocket, RPC) asks the cluster to generate. */
export interface RouteRequest {
  readonly model: string
  readonly messages?: ReadonlyArray<ChatMessage>
  readonly prompt?: string
  readonly maxTokens: number
  readonly temperature?: number
  readonly topP?: number
  readonly stop?: ReadonlyArray<string>
  /** Only workers carrying every one of these tags. */
  readonly tags?: ReadonlyArray<string>
  /** Higher leaves the admission queue first. */
  readonly priority?: number
  /** Metrics label: which front door asked (`chat`, `completions`, `ws`, `rpc`). */
  readonly route?: string
}

export type RelayEvent =
  | { readonly type: "token"; readonly index: number; readonly token: string }
  | {
      readonly type: "done"
      readonly finishReason: FinishReason
      readonly usage: Usage
      readonly latencyMs: number
      readonly workerId: string
    }

/** Why a request moved to another worker: the `reason` label of `mlx_cluster_retries_total`. */
export type RetryKind = "no_responders" | "ack_timeout" | "invalid_ack" | "refused" | "worker_offline" | "worker_error"

/** Internal: this worker cannot take the request, and no token has been sent yet: try another. */
class RetryElsewhere extends Data.TaggedError("RetryElsewhere")<{
  readonly workerId: string
  readonly kind: RetryKind
  readonly reason: string
}> {}

/**
 * Offered into an attempt's subscription queue to wake its relay when its failure was set from
 * outside the worker's messages. Recognised by identity; it never reaches a consumer, so its `data`
 * is never read (hence `never`).
 */
const WAKE: Incoming<never> = { subject: "", data: undefined as never, replyTo: undefined }

interface TaggedError {
  readonly _tag: string
  readonly message: string
}
const isTaggedError = (u: unknown): u is TaggedError =>
  typeof u === "object" && u !== null && "_tag" in u && typeof u._tag === "string" && "message" in u

/** Worker error codes that say the request itself cannot succeed anywhere: no retry. */
const FINAL_WORKER_CODES: ReadonlySet<string> = new Set(["timeout", "cancelled", "invalid_request"])

type AttemptError = InferenceError | RetryElsewhere

const toWire = (requestId: RequestId, r: RouteRequest): InferenceRequest => ({
  requestId,
  model: r.model,
  maxTokens: r.maxTokens,
  stream: true,
  ...(r.messages === undefined ? {} : { messages: r.messages }),
  ...(r.prompt === undefined ? {} : { prompt: r.prompt }),
  ...(r.temperature === undefined ? {} : { temperature: r.temperature }),
  ...(r.topP === undefined ? {} : { topP: r.topP }),
  ...(r.stop === undefined ? {} : { stop: r.stop })
})

/**
 * Routes a request to a worker and relays its tokens as a `Stream` (PRD §4).
 *
 * Per attempt: reserve a slot through the admission queue (balancer + queue), subscribe to
 * `response.{id}` *before* dispatching, dispatch with a NATS request and read the ack. No
 * responders marks the worker offline and tries another; a `busy`/`model_not_found` refusal, an
 * ack timeout, the worker going offline or reporting an error before its first token also try
 * another — at most `max_retries` others, never after a token was relayed. The relay enforces the first-token,
 * inactivity and whole-request timeouts with one watchdog fiber per stream (not a timer per
 * token), checks that token indexes have no gaps, and when the stream ends without the worker's
 * `done` (client gone, timeout, error) it publishes `worker.{id}.cancel`.
 */
export class Router extends Effect.Service<Router>()("controller/Router", {
  scoped: Effect.gen(function* () {
    const config = yield* ClusterConfigService
    const nats = yield* NatsTransport
    const registry = yield* Registry
    const queue = yield* AdmissionQueue
    const stats = yield* RequestStats
    const lifecycle = yield* ControllerLifecycle
    const balancer = yield* Balancer
    const c = config.controller

    /** Per worker id, the callbacks of attempts that must hear when that worker goes offline. */
    const watchers = new Map<string, Set<(reason: string) => Effect.Effect<void>>>()
    const watch = (workerId: string, onLost: (reason: string) => Effect.Effect<void>) =>
      Effect.acquireRelease(
        Effect.sync(() => {
          const set = watchers.get(workerId) ?? new Set()
          set.add(onLost)
          watchers.set(workerId, set)
        }),
        () =>
          Effect.sync(() => {
            const set = watchers.get(workerId)
            set?.delete(onLost)
            if (set?.size === 0) watchers.delete(workerId)
          })
      )
    yield* registry.changes.pipe(
      Stream.runForEach((snapshot) =>
        Effect.forEach(
          [...watchers.keys()],
          (workerId) => {
            const info = snapshot.workers.find((w) => w.workerId === workerId)
            if (info !== undefined && info.status === "online") return Effect.void
            const reason = info?.statusReason ?? "removed from the registry"
            return Effect.forEach([...(watchers.get(workerId) ?? [])], (onLost) => onLost(reason), { discard: true })
          },
          { discard: true }
        )
      ),
      Effect.forkScoped
    )

    const sendCancel = (workerId: string, requestId: RequestId, reason: string) =>
      nats
        .publish(Subjects.cancel(workerId), CancelRequest, { requestId })
        .pipe(Effect.zipRight(Metric.increment(Metric.tagged(Metrics.cancelsTotal, "reason", reason))))

    /** Dispatches to `worker` and reads its ack; anything but an ack ends in an error. */
    const dispatch = (worker: WorkerInfo, wire: InferenceRequest) =>
      nats
        .request(Subjects.inference(worker.workerId), InferenceRequest, wire, InferenceReply, {
          timeoutMs: c.dispatchTimeoutMs
        })
        .pipe(
          Effect.catchTags({
            NatsNoResponders: () =>
              registry
                .markOffline(worker.workerId, "no responders")
                .pipe(
                  Effect.zipRight(
                    Effect.fail(new RetryElsewhere({ workerId: worker.workerId, kind: "no_responders", reason: "no responders" }))
                  )
                ),
            NatsRequestTimeout: () =>
              Effect.fail(
                new RetryElsewhere({ workerId: worker.workerId, kind: "ack_timeout", reason: `no ack within ${c.dispatchTimeoutMs} ms` })
              ),
            NatsReplyInvalid: (e) =>
              Effect.fail(new RetryElsewhere({ workerId: worker.workerId, kind: "invalid_ack", reason: `invalid ack: ${e.reason}` }))
          }),
          Effect.flatMap((reply): Effect.Effect<void, InvalidRequest | RetryElsewhere> => {
            if (reply.accepted) return Effect.void
            if (reply.reason === "invalid_request") return Effect.fail(new InvalidRequest({ message: reply.message }))
            return Effect.fail(
              new RetryElsewhere({ workerId: worker.workerId, kind: "refused", reason: `${reply.reason}: ${reply.message}` })
            )
          })
        )

    interface Progress {
      /** Tokens relayed so far over all attempts: after the first, no retry. */
      relayed: number
      /** The worker's `done` was relayed. */
      done: boolean
    }

    /** The fail callbacks of the attempts running now: a forced stop ends them all. */
    const running = new Set<(error: AttemptError) => Effect.Effect<void>>()
    yield* lifecycle.stopped.pipe(
      Effect.zipRight(Effect.suspend(() => Effect.forEach([...running], (fail) => fail(new ShuttingDown({ forced: true }))))),
      Effect.forkScoped
    )

    /** What every attempt of one request shares. */
    interface RequestContext {
      readonly request: RouteRequest
      readonly requestId: string
      readonly startedAt: number
      /** Workers already tried: never chosen again for this request. */
      readonly tried: Set<string>
      readonly progress: Progress
      /** The prompt's block chain for prefix affinity, computed once (undefined: affinity off). */
      readonly prompt: PromptChain | undefined
    }

    const attempt = (ctx: RequestContext, attemptNo: number): Stream.Stream<RelayEvent, AttemptError> =>
      Stream.unwrapScoped(
        Effect.gen(function* () {
          const { request, requestId, startedAt, tried, progress, prompt } = ctx
          const admission = {
            model: request.model,
            exclude: tried,
            prompt,
            ...(request.tags === undefined ? {} : { tags: request.tags }),
            ...(request.priority === undefined ? {} : { priority: request.priority })
          }
          // The slot and the finalizer that gives it back are taken together: no interruption between them.
          const worker = yield* Effect.uninterruptibleMask((restore) =>
            restore(queue.admit(admission)).pipe(Effect.tap((w) => Effect.addFinalizer(() => queue.release(w.workerId))))
          ).pipe(
            Effect.catchTag("NoWorkers", (e): Effect.Effect<never, NoWorkers | WorkersUnavailable> =>
              tried.size > 0
                ? Effect.fail(new WorkersUnavailable({ model: request.model, attempts: tried.size, lastReason: "every skilled worker was tried" }))
                : Effect.fail(e)
            )
          )
          tried.add(worker.workerId)
          const workerId = worker.workerId
          const attemptId = RequestId.make(attemptNo === 0 ? requestId : `${requestId}-${attemptNo}`)

          // Completed by the first token: the watchdog then switches from the first-token deadline to the (earlier) idle one.
          const firstToken = yield* Deferred.make<void>()
          /** Set once: ends the stream with this error after the events before it. */
          let failure: AttemptError | undefined
          /** The worker sent `done` or `error`: it runs nothing more for us, so no cancel. */
          let finished = false
          /** `done` was relayed: the stream ends. */
          let ended = false
          let lastActivity = yield* Clock.currentTimeMillis
          const dispatchedAt = lastActivity
          let expected = 0

          // Subscribe before dispatching, so that no token can arrive before we listen. The relay reads
          // the subscription's own queue, into which WAKE is offered when a failure is set from outside
          // (watchdog, worker lost, forced stop): one take per batch of messages, no race per pull.
          const inbox = yield* nats.subscribeQueue(
            Subjects.response(attemptId),
            TokenMessage
          )
          const fail = (error: AttemptError) =>
            Effect.sync(() => {
              if (failure !== undefined || ended) return
              failure = error
              inbox.unsafeOffer(WAKE)
            })
          yield* Effect.addFinalizer((exit) => {
            if (finished) return Effect.void
            // Ended early without a failure (the consumer stopped pulling) or interrupted: the client's doing.
            const reason = Exit.isSuccess(exit) || Cause.isInterruptedOnly(exit.cause) ? "client" : "error"
            return sendCancel(workerId, attemptId, reason)
          })
          yield* watch(workerId, (reason) =>
            fail(
              progress.relayed === 0
                ? new RetryElsewhere({ workerId, kind: "worker_offline", reason: `went offline (${reason})` })
                : new WorkerFailed({ workerId, code: "worker_lost", message: `worker ${workerId} went offline: ${reason}` })
            )
          )
          yield* Effect.acquireRelease(
            Effect.sync(() => running.add(fail)),
            () => Effect.sync(() => running.delete(fail))
          )

          const dispatched = yield* Effect.exit(dispatch(worker, toWire(attemptId, request)))
          if (Exit.isFailure(dispatched)) {
            // A refusal or no responders: the worker runs nothing for us. A timeout may still ack late: cancel.
            finished = !Cause.failureOption(dispatched.cause).pipe(
              Option.exists((e) => e._tag === "RetryElsewhere" && e.kind === "ack_timeout")
            )
            return yield* Effect.failCause(dispatched.cause)
          }
          // Accepted: this worker now holds the prompt in its prefix cache (issue 16).
          if (prompt !== undefined) yield* balancer.affinity.recordDispatch(workerId, prompt)

          /** The earliest deadline that applies now, and which limit it is. */
          const deadline = (): { at: number; phase: TimeoutPhase; timeoutMs: number } => {
            const whole = { at: startedAt + c.requestTimeoutMs, phase: "request" as const, timeoutMs: c.requestTimeoutMs }
            const phase =
              expected === 0
                ? { at: dispatchedAt + c.firstTokenTimeoutMs, phase: "first_token" as const, timeoutMs: c.firstTokenTimeoutMs }
                : { at: lastActivity + c.streamIdleTimeoutMs, phase: "stream_idle" as const, timeoutMs: c.streamIdleTimeoutMs }
            return phase.at < whole.at ? phase : whole
          }
          // One watchdog per stream, not a timer per token: it sleeps until the next deadline and checks
          // again, since tokens that came meanwhile only move deadlines later. The one exception, the
          // switch from the first-token deadline to the idle one, wakes it through `firstToken`.
          yield* Effect.gen(function* () {
            while (failure === undefined && !ended) {
              const now = yield* Clock.currentTimeMillis
              const next = deadline()
              if (now >= next.at) {
                return yield* fail(new InferenceTimeout({ phase: next.phase, timeoutMs: next.timeoutMs, workerId }))
              }
              const sleep = Effect.sleep(next.at - now)
              yield* next.phase === "first_token" ? Effect.raceFirst(sleep, Deferred.await(firstToken)) : sleep
            }
          }).pipe(Effect.forkScoped)

          /** The events of one batch of messages; a failure among them ends the stream at the next pull. */
          const relay = (chunk: Chunk.Chunk<Incoming<TokenMessage>>) =>
            Effect.gen(function* () {
              const out: Array<RelayEvent> = []
              let tokens = 0
              for (const message of chunk) {
                if (message === WAKE) continue
                if (finished || failure !== undefined) break
                const data = message.data
                switch (data.type) {
                  case "token": {
                    if (data.index !== expected) {
                      // Not `finished`: the worker may still be generating, so the finalizer cancels it.
                      failure = new WorkerFailed({
                        workerId,
                        code: "token_gap",
                        message: `expected token ${expected} from worker ${workerId}, got ${data.index}`
                      })
                      break
                    }
                    expected++
                    tokens++
                    out.push({ type: "token", index: data.index, token: data.token })
                    break
                  }
                  case "done":
                    finished = true
                    ended = true
                    progress.done = true
                    out.push({ type: "done", finishReason: data.finishReason, usage: data.usage, latencyMs: data.latencyMs, workerId })
                    break
                  case "error":
                    finished = true
                    // Before any token, a worker's own failure (engine down, upstream unreachable) is
                    // that worker's problem: another one may serve the request.
                    failure =
                      progress.relayed === 0 && expected === 0 && !FINAL_WORKER_CODES.has(data.code)
                        ? new RetryElsewhere({ workerId, kind: "worker_error", reason: `failed (${data.code}: ${data.message})` })
                        : new WorkerFailed({ workerId, code: data.code, message: data.message })
                    break
                }
              }
              if (tokens > 0) {
                const now = yield* Clock.currentTimeMillis
                lastActivity = now
                if (expected === tokens) yield* Deferred.succeed(firstToken, undefined)
                if (progress.relayed === 0) {
                  yield* Metric.update(Metrics.timeToFirstTokenMs, now - dispatchedAt)
                }
                progress.relayed += tokens
                yield* Metric.incrementBy(Metrics.tokensRelayed, tokens)
              }
              return Chunk.unsafeFromArray(out)
            })

          /** One pull: what the inbox holds now, or the end (after `done`), or the failure. */
          const pull: Effect.Effect<Chunk.Chunk<RelayEvent>, Option.Option<AttemptError>> = Effect.suspend(() => {
            if (ended) return Effect.fail(Option.none())
            if (failure !== undefined) return Effect.fail(Option.some(failure))
            return Effect.flatMap(Queue.takeBetween(inbox, 1, 4096), relay)
          })
          return Stream.repeatEffectChunkOption(pull)
        })
      )

    const attempts = (ctx: RequestContext, attemptNo: number): Stream.Stream<RelayEvent, InferenceError> =>
      attempt(ctx, attemptNo).pipe(
        Stream.catchAll((error): Stream.Stream<RelayEvent, InferenceError> => {
          if (error._tag !== "RetryElsewhere") return Stream.fail(error)
          const { request, requestId } = ctx
          const log = Effect.logInfo(`request ${requestId}: worker ${error.workerId} ${error.reason}`).pipe(
            Effect.annotateLogs({ requestId, workerId: error.workerId })
          )
          if (attemptNo >= c.maxRetries) {
            return Stream.fromEffect(log).pipe(
              Stream.zipRight(
                Stream.fail(new WorkersUnavailable({ model: request.model, attempts: attemptNo + 1, lastReason: error.reason }))
              )
            )
          }
          const retry = Metric.increment(Metric.tagged(Metrics.retriesTotal, "reason", error.kind))
          return Stream.fromEffect(Effect.zipRight(log, retry)).pipe(
            Stream.drain,
            Stream.concat(attempts(ctx, attemptNo + 1))
          )
        })
      )

    /**
     * The tokens of `request` as they arrive, ending with one `done` event. Fails with a typed
     * `InferenceError`; interrupting the stream (the client went away) cancels the work.
     */
    const route = (request: RouteRequest): Stream.Stream<RelayEvent, InferenceError> =>
      Stream.unwrapScoped(
        Effect.gen(function* () {
          yield* lifecycle.ensureAccepting
          const requestId = `req-${randomUUID()}`
          const startedAt = yield* Clock.currentTimeMillis
          const progress: Progress = { relayed: 0, done: false }
          yield* stats.begin
          yield* Effect.addFinalizer((exit) =>
            Effect.gen(function* () {
              const outcome: RequestOutcome = progress.done
                ? "succeeded"
                : Exit.isFailure(exit) && !Cause.isInterruptedOnly(exit.cause)
                  ? "failed"
                  : "cancelled"
              yield* stats.end(outcome)
              const now = yield* Clock.currentTimeMillis
              const failure = Exit.isFailure(exit)
                ? Option.filter(Cause.failureOption(exit.cause), isTaggedError)
                : Option.none<TaggedError>()
              // A model no worker serves is the client's typo: keep it out of the label set.
              const unknownModel = Option.exists(failure, (e) => e._tag === "NoSkilledWorker" || e._tag === "InvalidRequest")
              yield* Metric.update(Metrics.requestDurationMs, now - startedAt)
              yield* Metric.incrementBy(
                Metrics.requestsTotal.pipe(
                  Metric.tagged("route", request.route ?? "internal"),
                  Metric.tagged("model", unknownModel ? "unknown" : request.model),
                  Metric.tagged("outcome", outcome)
                ),
                1
              )
              // One concise line per request: debug for successes, warning for failures.
              const line = `${request.route ?? "internal"} ${request.model} ${outcome} in ${now - startedAt} ms, ${progress.relayed} tokens${Option.match(failure, { onNone: () => "", onSome: (e) => `: ${e.message}` })}`
              yield* (outcome === "failed" ? Effect.logWarning(line) : Effect.logDebug(line)).pipe(
                Effect.annotateLogs({ requestId })
              )
            })
          )
          const prompt = balancer.affinity.chainOf(request)
          return attempts({ request, requestId, startedAt, tried: new Set(), progress, prompt }, 0)
        })
      )

    /** Convenience for non-streaming callers: every token joined, plus the final event. */
    const complete = (request: RouteRequest) =>
      route(request).pipe(
        Stream.runFold({ text: "", done: Option.none<Extract<RelayEvent, { type: "done" }>>() }, (acc, event) =>
          event.type === "token" ? { ...acc, text: acc.text + event.token } : { ...acc, done: Option.some(event) }
        ),
        Effect.flatMap(({ text, done }) =>
          Option.match(done, {
            // Unreachable while attempts end in `done` or an error; kept total rather than asserted.
            onNone: () =>
              Effect.fail(new WorkerFailed({ workerId: "", code: "empty_stream", message: "the worker ended without a result" })),
            onSome: (d) => Effect.succeed({ text, ...d })
          })
        )
      )

    return { route, complete } as const
  })
}) {}
