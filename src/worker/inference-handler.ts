import { Cause, Clock, Deferred, Duration, Effect, Either, Exit, FiberMap, Option, ParseResult, Ref, Schema, Stream } from "effect"
import type { RequestId, WorkerId } from "../domain/ids.js"
import {
  CancelRequest,
  type InferenceReply,
  InferenceReply as InferenceReplySchema,
  InferenceRequest,
  type TokenMessage,
  TokenMessage as TokenMessageSchema
} from "../domain/inference.js"
import { Subjects } from "../domain/subjects.js"
import { type Incoming, NatsTransport } from "../nats/nats-transport.js"
import { countPromptTokens, type EngineError, type FinishPiece, InferenceEngine } from "./engines/inference-engine.js"
import { ModelScanner } from "./model-scanner.js"
import { type Outcome, WorkerStats } from "./worker-stats.js"

/**
 * `worker.{id}.inference` and `worker.{id}.cancel` (CONTRACT §4).
 *
 * A request is answered at once: a refusal (`invalid_request` for a body that fails the schema,
 * `busy` while draining or at `max_concurrent`, `model_not_found`, or `invalid_request` for a
 * request id already running here) or an ack. A body that fails the schema and has no reply subject
 * is logged and dropped. After an ack the request runs in its own fiber (a `FiberMap` keyed by
 * request id) and publishes to `response.{requestId}`: `token` messages with index 0, 1, 2, … then
 * exactly one `done` or one `error`. Error codes: the engine's (see `EngineError`), `timeout`
 * (`worker.request_timeout_ms`), `worker_shutdown` (still running when the drain timeout ran out),
 * `internal_error` (a defect). A cancel interrupts the fiber, which stops the engine; nothing more
 * is published for that request.
 */

export interface InferenceHandlerOptions {
  readonly workerId: WorkerId
  readonly maxConcurrent: number
  readonly requestTimeoutMs: number
  /** Messages buffered between NATS and the handler. */
  readonly bufferSize?: number
}

export interface InferenceHandler {
  /** Refuse new requests as `busy`, wait up to `timeoutMs` for the running ones, then stop them. */
  readonly drain: (timeoutMs: number) => Effect.Effect<void>
  /** Number of requests running now. */
  readonly running: Effect.Effect<number>
}

class RequestTimeout extends Schema.TaggedError<RequestTimeout>()("RequestTimeout", { timeoutMs: Schema.Number }) {}

const refusal = (reason: "busy" | "model_not_found" | "invalid_request", message: string): InferenceReply => ({
  accepted: false,
  reason,
  message
})

const describeParseError = (error: ParseResult.ParseError): string =>
  ParseResult.TreeFormatter.formatErrorSync(error).replace(/\s+/g, " ").slice(0, 500)

const decodeInferenceRequest = Schema.decodeUnknownEither(InferenceRequest)

/** The request, or why not; a deeply nested body that exhausts the stack is invalid too, not a crash. */
const decodeRequest = (data: unknown): Either.Either<InferenceRequest, string> => {
  try {
    return Either.mapLeft(decodeInferenceRequest(data), describeParseError)
  } catch (cause) {
    return Either.left(`the body cannot be checked (${cause instanceof Error ? cause.message : String(cause)})`)
  }
}

/**
 * Subscribes to the inference and cancel subjects (in the caller's scope) and serves them. The
 * subscriptions exist on the connection when this effect completes (flush before announcing).
 */
export const makeInferenceHandler = (options: InferenceHandlerOptions) =>
  Effect.gen(function* () {
    const nats = yield* NatsTransport
    const engine = yield* InferenceEngine
    const scanner = yield* ModelScanner
    const stats = yield* WorkerStats
    const { workerId } = options
    const fibers = yield* FiberMap.make<RequestId, void, never>()
    const draining = yield* Ref.make(false)
    /** Requests stopped by a cancel (their fibers publish nothing more). */
    const cancelled = new Set<string>()

    const publish = (message: TokenMessage) => nats.publish(Subjects.response(message.requestId), TokenMessageSchema, message)

    const serve = (request: InferenceRequest, modelPath: string, receivedAt: number, gate: Deferred.Deferred<void>) => {
      let index = 0
      let finish: FinishPiece | undefined
      const work = Effect.gen(function* () {
        yield* Deferred.await(gate)
        // By chunk: the tokens an engine yields together are published in one step, counted once.
        yield* engine.generate(request, modelPath).pipe(
          Stream.runForEachChunk((pieces) => {
            const messages: Array<TokenMessage> = []
            for (const piece of pieces) {
              if (piece._tag === "Finish") finish = piece
              else messages.push({ type: "token", requestId: request.requestId, index: index++, token: piece.text })
            }
            return messages.length === 0
              ? Effect.void
              : Effect.zipRight(Effect.forEach(messages, publish, { discard: true }), stats.addTokens(messages.length))
          })
        )
      }).pipe(
        Effect.timeoutFail({
          duration: Duration.millis(options.requestTimeoutMs),
          onTimeout: () => new RequestTimeout({ timeoutMs: options.requestTimeoutMs })
        })
      )

      const finalize = (exit: Exit.Exit<void, EngineError | RequestTimeout>) =>
        Effect.gen(function* () {
          const now = yield* Clock.currentTimeMillis
          const error = (code: string, message: string): TokenMessage => ({
            type: "error",
            requestId: request.requestId,
            code,
            message
          })
          let outcome: Outcome
          let message: TokenMessage | undefined
          if (Exit.isSuccess(exit)) {
            outcome = "succeeded"
            message = {
              type: "done",
              requestId: request.requestId,
              finishReason: finish?.finishReason ?? "stop",
              usage: finish?.usage ?? { promptTokens: countPromptTokens(request), completionTokens: index },
              latencyMs: Math.max(0, now - receivedAt)
            }
          } else if (cancelled.delete(request.requestId)) {
            outcome = "cancelled"
            yield* Effect.logDebug("request cancelled")
          } else {
            outcome = "failed"
            const failure = Cause.failureOption(exit.cause)
            if (Option.isSome(failure)) {
              message =
                failure.value._tag === "RequestTimeout"
                  ? error("timeout", `request exceeded worker.request_timeout_ms (${failure.value.timeoutMs} ms)`)
                  : error(failure.value.code, failure.value.message)
            } else if (Cause.isInterruptedOnly(exit.cause)) {
              message = error("worker_shutdown", `worker ${workerId} stopped before the request finished`)
            } else {
              yield* Effect.logError("request failed with a defect", exit.cause)
              message = error("internal_error", Cause.pretty(exit.cause).split("\n")[0] ?? "internal error")
            }
            yield* Effect.logWarning(`request failed: ${message.type === "error" ? message.code : ""}`)
          }
          if (message !== undefined) yield* publish(message)
          yield* stats.release(outcome)
        }).pipe(Effect.annotateLogs({ requestId: request.requestId }))

      return Effect.interruptible(work).pipe(Effect.onExit(finalize), Effect.ignore)
    }

    const handle = (incoming: Incoming<unknown>) =>
      Effect.gen(function* () {
        const reply = (message: InferenceReply) =>
          incoming.replyTo !== undefined ? nats.respond(incoming.replyTo, InferenceReplySchema, message) : Effect.void
        const decoded = decodeRequest(incoming.data)
        if (Either.isLeft(decoded)) {
          const reason = decoded.left
          yield* Effect.logWarning(
            `invalid inference request on ${incoming.subject}${incoming.replyTo === undefined ? " (no reply subject: dropped)" : ""}: ${reason}`
          )
          return yield* reply(refusal("invalid_request", `invalid inference request: ${reason}`))
        }
        const request = decoded.right
        const receivedAt = yield* Clock.currentTimeMillis
        if (yield* Ref.get(draining)) {
          return yield* reply(refusal("busy", `worker ${workerId} is shutting down`))
        }
        const path = yield* scanner.pathOf(request.model)
        if (Option.isNone(path)) {
          const served = (yield* scanner.current).availableModels
          return yield* reply(
            refusal(
              "model_not_found",
              `worker ${workerId} does not serve model "${request.model}" (serves: ${served.join(", ") || "none"})`
            )
          )
        }
        if (yield* FiberMap.has(fibers, request.requestId)) {
          return yield* reply(refusal("invalid_request", `request ${request.requestId} is already running on ${workerId}`))
        }
        if (!(yield* stats.tryAcquire(options.maxConcurrent))) {
          return yield* reply(
            refusal("busy", `worker ${workerId} is running its maximum of ${options.maxConcurrent} requests`)
          )
        }
        const gate = yield* Deferred.make<void>()
        // Forked uninterruptible (the work itself is interruptible) so that its finalizer runs even
        // when a cancel lands before the fiber started; registered in the FiberMap for cancels.
        yield* Effect.uninterruptible(
          Effect.forkDaemon(serve(request, path.value, receivedAt, gate)).pipe(
            Effect.tap((fiber) => FiberMap.set(fibers, request.requestId, fiber))
          )
        )
        yield* reply({ accepted: true, workerId })
        yield* Deferred.succeed(gate, undefined)
      }).pipe(
        Effect.catchAllCause((cause) => Effect.logError(`inference request on ${incoming.subject} failed`, cause))
      )

    const cancel = (requestId: RequestId) =>
      Effect.gen(function* () {
        if (!(yield* FiberMap.has(fibers, requestId))) {
          return yield* Effect.logDebug(`cancel for ${requestId}, which is not running here`)
        }
        cancelled.add(requestId)
        yield* FiberMap.remove(fibers, requestId)
        cancelled.delete(requestId)
        yield* Effect.logDebug(`request ${requestId} cancelled`)
      })

    const requests = yield* nats.subscribe(Subjects.inference(workerId), Schema.Unknown, {
      bufferSize: options.bufferSize ?? 4096
    })
    const cancels = yield* nats.subscribe(Subjects.cancel(workerId), CancelRequest, { bufferSize: options.bufferSize ?? 4096 })
    yield* Stream.runForEach(requests, handle).pipe(Effect.forkScoped)
    yield* Stream.runForEach(cancels, (incoming) =>
      cancel(incoming.data.requestId).pipe(Effect.catchAllCause((cause) => Effect.logError("cancel failed", cause)))
    ).pipe(Effect.forkScoped)

    const drain = (timeoutMs: number) =>
      Effect.gen(function* () {
        yield* Ref.set(draining, true)
        const inFlight = yield* FiberMap.size(fibers)
        if (inFlight === 0) return
        yield* Effect.logInfo(`draining ${inFlight} running request(s), up to ${timeoutMs} ms`)
        // Interruptible: drain runs in a finalizer, where a timeout could not stop the wait otherwise.
        const finished = yield* Effect.interruptible(FiberMap.awaitEmpty(fibers)).pipe(
          Effect.timeoutOption(Duration.millis(timeoutMs))
        )
        if (Option.isNone(finished)) {
          const left = yield* FiberMap.size(fibers)
          yield* Effect.logWarning(`drain timeout: stopping ${left} request(s)`)
          yield* FiberMap.clear(fibers)
        }
      })

    const handler: InferenceHandler = { drain, running: FiberMap.size(fibers) }
    return handler
  })
