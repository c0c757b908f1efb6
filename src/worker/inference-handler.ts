import { Cause, Effect, Either, Exit, Fiber, FiberId, Option, Runtime, Schedule } from "effect"
import type { RequestId, WorkerId } from "../domain/ids.js"
import { CancelRequest, InferenceReply, InferenceRequest, type TokenError, TokenMessage } from "../domain/inference.js"
import { Subjects } from "../domain/subjects.js"
import { decoderFor, plainEncoderFor } from "../nats/codec.js"
import { NatsTransport, type RawMessage } from "../nats/nats-transport.js"
import { type EmitTokens, type EmitToolCalls, type EngineError, type Finish, InferenceEngine } from "./engines/inference-engine.js"
import { ModelScanner } from "./model-scanner.js"
import { RequestOwners } from "./request-owners.js"
import { type Outcome, WorkerStats } from "./worker-stats.js"

/**
 * `worker.{id}.inference` and `worker.{id}.cancel` (docs/contract.md §4.4, §4.5).
 *
 * A request is answered at once: a refusal (`invalid_request` for a body that is not JSON or fails
 * the schema, `busy` while draining or at `max_concurrent`, `model_not_found`, or
 * `invalid_request` for a request id already running here) or an ack. Every request with a reply
 * subject gets one of them, whatever its body. After an ack the request runs in one fiber and
 * publishes to `response.{requestId}`: `tokens` messages — every token the engine produced and
 * not yet sent, in one message, never held back, with their logprobs when asked for — and
 * `tool_calls` messages (tool-call deltas; each takes an index as a token does), then exactly one
 * `done` (with the engine's `systemFingerprint`) or one `error` (with `status`, `errorType` and
 * `param` when the engine's upstream refused the request itself). Error
 * codes: the engine's (see `EngineError`), `timeout` (`worker.request_timeout_ms`),
 * `worker_shutdown` (still running when the drain timeout ran out), `internal_error` (a defect).
 * A cancel interrupts the fiber, which stops the engine; nothing more is published for that request.
 *
 * Several controllers (issue 14): a request's `controllerId` is recorded in `owners` while it
 * holds a slot; acks and `busy` refusals carry the worker's `active` count and the asking
 * controller's share of it; `owners.stopAll` (the owner watch, when that controller is gone) stops
 * a controller's requests with an `error` `controller_gone`.
 *
 * Cost (issue 10): the bus callbacks decode and answer in plain code; a request is one fiber; a
 * batch of tokens is one `send` from the engine's emit callback, with no Effect per token or batch.
 */

export interface InferenceHandlerOptions {
  readonly workerId: WorkerId
  readonly maxConcurrent: number
  readonly requestTimeoutMs: number
  /** Where running requests are recorded by owning controller (a fresh one when not given). */
  readonly owners?: RequestOwners
  /**
   * Called when a slot frees after the worker refused someone as `busy` (at most once per refusal
   * burst): the worker then tells every controller at once with an early heartbeat (issue 14), so
   * that a controller whose request went back to its queue does not wait for the next regular one.
   */
  readonly capacityFreed?: () => void
}

export interface InferenceHandler {
  /** Refuse new requests as `busy`, wait up to `timeoutMs` for the running ones, then stop them. */
  readonly drain: (timeoutMs: number) => Effect.Effect<void>
  /** Number of requests running now. */
  readonly running: Effect.Effect<number>
  /** The running requests by owning controller (issue 14). */
  readonly owners: RequestOwners
}

/** Why a running request was stopped from outside; `orphaned`: its controller is gone (issue 14). */
type StopReason = "cancel" | "timeout" | "shutdown" | "orphaned"

interface Running {
  readonly startedAt: number
  fiber: Fiber.RuntimeFiber<void> | undefined
  stop: StopReason | undefined
  /** Forgets the request in `owners` (issue 14); set while it holds a slot for a known controller. */
  untrack: (() => void) | undefined
}

/** The fields of an `error` message that carry an upstream's refusal of the request (issue 12). */
const upstreamRefusal = (e: EngineError): Partial<Pick<TokenError, "status" | "errorType" | "param">> =>
  e.status === undefined || e.status < 400 || e.status > 499
    ? {}
    : { status: e.status, ...(e.errorType === undefined ? {} : { errorType: e.errorType }), ...(e.param === undefined ? {} : { param: e.param }) }

/** How a request ended (`finalize`): for the stats, the controller and the log. */
interface Ending {
  readonly outcome: Outcome
  /** `done` or `error`; none after a cancel. */
  readonly message: TokenMessage | undefined
  /** A defect's cause: logged whole. */
  readonly defect?: Cause.Cause<unknown>
}

/** Refusals name at most this many served models. */
const LISTED_MODELS = 20

const decodeRequest = decoderFor(InferenceRequest)
const decodeCancel = decoderFor(CancelRequest)
// The ack and the token messages go out on every request: built field by field below, sent
// without a Schema pass (the controller decodes tokens with the hand codec of token-wire.ts).
const encodeReply = plainEncoderFor(InferenceReply)
const encodeTokenMessage = plainEncoderFor(TokenMessage)

/**
 * Subscribes to the inference and cancel subjects (in the caller's scope) and serves them. The
 * subscriptions exist on the connection when this effect completes (flush before announcing).
 */
export const makeInferenceHandler = (options: InferenceHandlerOptions) =>
  // eslint-disable-next-line no-restricted-syntax -- once per worker
  Effect.gen(function* () {
    const nats = yield* NatsTransport
    const engine = yield* InferenceEngine
    const scanner = yield* ModelScanner
    const stats = yield* WorkerStats
    const clock = yield* Effect.clock
    const runtime = yield* Effect.runtime<never>()
    const runFork = Runtime.runFork(runtime)
    const { workerId } = options
    const owners = options.owners ?? new RequestOwners()
    const running = new Map<string, Running>()
    let draining = false

    let lastInvalidLog = 0
    let invalidSince = 0
    /** One line per second at most, however many invalid requests arrive. */
    const logInvalid = (subject: string, reason: string, replied: boolean) => {
      invalidSince++
      const at = Date.now()
      if (at - lastInvalidLog < 1_000) return
      const more = invalidSince > 1 ? ` (${invalidSince - 1} more in the last second)` : ""
      lastInvalidLog = at
      invalidSince = 0
      runFork(Effect.logWarning(`invalid inference request on ${subject}${replied ? "" : " (no reply subject: dropped)"}: ${reason}${more}`))
    }

    const reply = (to: string | undefined, answer: InferenceReply) => {
      if (to === undefined) return
      nats.send(to, encodeReply(answer))
    }
    const refuse = (to: string | undefined, reason: "busy" | "model_not_found" | "invalid_request", message: string) =>
      reply(to, { accepted: false, reason, message })
    /** This worker's count, and the asking controller's share of it, for acks and busy refusals (issue 14). */
    const loadFor = (controllerId: string | undefined) => ({
      active: stats.activeNow(),
      ...(controllerId === undefined ? {} : { activeForController: owners.count(controllerId) })
    })
    /** A busy refusal since the last slot freed: the next one to free is announced (`capacityFreed`). */
    let refusedBusy = false
    const refuseBusy = (to: string | undefined, request: InferenceRequest, message: string) => {
      refusedBusy = !draining
      reply(to, { accepted: false, reason: "busy", message, ...loadFor(request.controllerId) })
    }
    const publish = (message: TokenMessage) => nats.send(Subjects.response(message.requestId), encodeTokenMessage(message))

    const stop = (entry: Running, reason: StopReason) => {
      if (entry.stop !== undefined) return
      entry.stop = reason
      entry.fiber?.unsafeInterruptAsFork(FiberId.none)
    }

    /** The `error` message that ends `request`. */
    const errorMessage = (request: InferenceRequest, code: string, message: string): TokenMessage => ({ type: "error", requestId: request.requestId, code, message })

    /**
     * How the request ended: its outcome for the stats, the message that says so (none after a
     * cancel), and the log line a failure deserves. Plain code: it runs once per request.
     */
    const ending = (request: InferenceRequest, entry: Running, exit: Exit.Exit<Finish, EngineError>): Ending => {
      if (Exit.isSuccess(exit)) {
        const fingerprint = exit.value.systemFingerprint
        const message: TokenMessage = {
          type: "done",
          requestId: request.requestId,
          finishReason: exit.value.finishReason,
          usage: exit.value.usage,
          latencyMs: Math.max(0, clock.unsafeCurrentTimeMillis() - entry.startedAt),
          ...(fingerprint === undefined ? {} : { systemFingerprint: fingerprint })
        }
        return { outcome: "succeeded", message }
      }
      if (entry.stop === "cancel") return { outcome: "cancelled", message: undefined }
      if (entry.stop === "orphaned") {
        const message = errorMessage(request, "controller_gone", `worker ${workerId} stopped the request: its controller ${request.controllerId ?? "?"} is gone`)
        return { outcome: "cancelled", message }
      }
      if (entry.stop === "timeout") {
        return { outcome: "failed", message: errorMessage(request, "timeout", `request exceeded worker.request_timeout_ms (${options.requestTimeoutMs} ms)`) }
      }
      const failure = Cause.failureOption(exit.cause)
      if (Option.isSome(failure)) {
        return { outcome: "failed", message: { ...errorMessage(request, failure.value.code, failure.value.message), ...upstreamRefusal(failure.value) } }
      }
      if (Cause.isInterruptedOnly(exit.cause)) {
        return { outcome: "failed", message: errorMessage(request, "worker_shutdown", `worker ${workerId} stopped before the request finished`) }
      }
      const message = errorMessage(request, "internal_error", Cause.pretty(exit.cause).split("\n")[0] ?? "internal error")
      return { outcome: "failed", message, defect: exit.cause }
    }

    /**
     * Releases the slot, then says how it ended: a controller that reads `done` may dispatch the
     * next request at once. No generator and no log annotation on the way of a request that
     * succeeded: `annotateLogs` copies the fiber's FiberRefs, which showed in the worker's profile.
     */
    const finalize = (request: InferenceRequest, entry: Running, sent: () => number, exit: Exit.Exit<Finish, EngineError>): Effect.Effect<void> => {
      const end = ending(request, entry, exit)
      const settle = Effect.zipRight(
        stats.release(end.outcome),
        Effect.sync(() => {
          entry.untrack?.()
          if (refusedBusy) {
            refusedBusy = false
            options.capacityFreed?.()
          }
          if (end.message !== undefined) publish(end.message)
        })
      )
      const message = end.message
      const log =
        end.defect !== undefined
          ? Effect.logError("request failed with a defect", end.defect)
          : end.outcome === "cancelled"
            ? Effect.logDebug(`request cancelled after ${sent()} tokens`)
            : message?.type === "error" && entry.stop !== "orphaned"
              ? Effect.logWarning(`request failed: ${message.code}: ${message.message}`)
              : undefined
      return log === undefined ? settle : Effect.zipRight(settle, Effect.annotateLogs(log, { requestId: request.requestId }))
    }

    /** The generation of an accepted request, then its end. */
    const generate = (request: InferenceRequest, replyTo: string | undefined, entry: Running, path: string): Effect.Effect<void> => {
      if (request.controllerId !== undefined) {
        entry.untrack = owners.add(request.controllerId, request.requestId, () => stop(entry, "orphaned"))
      }
      reply(replyTo, { accepted: true, workerId, ...loadFor(request.controllerId) })
      let index = 0
      const subject = Subjects.response(request.requestId)
      const emit: EmitTokens = (tokens, logprobs) => {
        if (tokens.length === 0) return
        const batch: TokenMessage =
          logprobs === undefined || logprobs.length === 0
            ? { type: "tokens", requestId: request.requestId, index, tokens }
            : { type: "tokens", requestId: request.requestId, index, tokens, logprobs }
        nats.send(subject, encodeTokenMessage(batch))
        index += tokens.length
        stats.countTokens(tokens.length)
      }
      // Tool-call deltas take one index each, as tokens do (issue 12).
      const emitToolCalls: EmitToolCalls = (deltas) => {
        if (deltas.length === 0) return
        nats.send(subject, encodeTokenMessage({ type: "tool_calls", requestId: request.requestId, index, deltas }))
        index += deltas.length
        stats.countTokens(deltas.length)
      }
      return Effect.ignore(Effect.onExit(engine.generate(request, path, emit, emitToolCalls), (exit) => finalize(request, entry, () => index, exit)))
    }

    /**
     * The request's fiber: the checks that need services, the ack, then the generation. No span per
     * request: no tracer reads them, and a span with its stack trace showed in the worker's profile.
     * Continuations, not a generator: see the note on `runAttempt` in controller/router.ts.
     */
    const serve = (request: InferenceRequest, replyTo: string | undefined, entry: Running): Effect.Effect<void> => {
      if (draining) return Effect.sync(() => refuseBusy(replyTo, request, `worker ${workerId} is shutting down`))
      return Effect.flatMap(scanner.pathOf(request.model), (path) => {
        if (Option.isNone(path)) {
          return Effect.map(scanner.current, ({ availableModels: served }) => {
            const listed = served.slice(0, LISTED_MODELS).join(", ") + (served.length > LISTED_MODELS ? ` and ${served.length - LISTED_MODELS} more` : "")
            refuse(replyTo, "model_not_found", `worker ${workerId} does not serve model "${request.model}" (serves: ${listed || "none"})`)
          })
        }
        return Effect.flatMap(stats.tryAcquire(options.maxConcurrent), (acquired) =>
          acquired
            ? generate(request, replyTo, entry, path.value)
            : Effect.sync(() => refuseBusy(replyTo, request, `worker ${workerId} is running its maximum of ${options.maxConcurrent} requests`))
        )
      })
    }

    const onRequest = (message: RawMessage) => {
      const replyTo = message.reply === undefined || message.reply === "" ? undefined : message.reply
      const decoded = decodeRequest(message.data)
      if (Either.isLeft(decoded)) {
        logInvalid(message.subject, decoded.left, replyTo !== undefined)
        return refuse(replyTo, "invalid_request", `invalid inference request: ${decoded.left.slice(0, 500)}`)
      }
      const request = decoded.right
      const id = request.requestId
      if (running.has(id)) return refuse(replyTo, "invalid_request", `request ${id} is already running on ${workerId}`)
      const entry: Running = { startedAt: clock.unsafeCurrentTimeMillis(), fiber: undefined, stop: undefined, untrack: undefined }
      running.set(id, entry)
      entry.fiber = runFork(
        serve(request, replyTo, entry).pipe(
          Effect.ensuring(
            Effect.sync(() => {
              entry.untrack?.()
              if (running.get(id) === entry) running.delete(id)
            })
          )
        )
      )
    }

    const onCancel = (message: RawMessage) => {
      const decoded = decodeCancel(message.data)
      if (Either.isLeft(decoded)) return logInvalid(message.subject, decoded.left, false)
      const entry = running.get(decoded.right.requestId as RequestId)
      if (entry === undefined) return runFork(Effect.logDebug(`cancel for ${decoded.right.requestId}, which is not running here`))
      stop(entry, "cancel")
    }

    yield* Effect.acquireRelease(
      Effect.sync(() => [nats.listen(Subjects.inference(workerId), onRequest), nats.listen(Subjects.cancel(workerId), onCancel)]),
      (subscriptions) => Effect.sync(() => subscriptions.forEach((s) => s.close()))
    )

    // `worker.request_timeout_ms` for every running request from one scheduled fiber, not a timer each.
    const tickMs = Math.min(1_000, Math.max(10, Math.floor(options.requestTimeoutMs / 20)))
    yield* Effect.sleep(tickMs).pipe(
      Effect.zipRight(
        Effect.sync(() => {
          const now = clock.unsafeCurrentTimeMillis()
          for (const entry of running.values()) if (now - entry.startedAt > options.requestTimeoutMs) stop(entry, "timeout")
        })
      ),
      Effect.forever,
      Effect.forkScoped
    )

    const drain = (timeoutMs: number) =>
      // eslint-disable-next-line no-restricted-syntax -- once, at shutdown
      Effect.gen(function* () {
        draining = true
        if (running.size === 0) return
        yield* Effect.logInfo(`draining ${running.size} running request(s), up to ${timeoutMs} ms`)
        const idle = Effect.void.pipe(Effect.repeat({ until: () => running.size === 0, schedule: Schedule.spaced("20 millis") }))
        // Interruptible: drain runs in a finalizer, where a timeout could not stop the wait otherwise.
        const finished = yield* Effect.interruptible(idle).pipe(Effect.timeoutOption(timeoutMs))
        if (Option.isNone(finished)) {
          const left = [...running.values()]
          yield* Effect.logWarning(`drain timeout: stopping ${left.length} request(s)`)
          for (const entry of left) stop(entry, "shutdown")
          yield* Fiber.awaitAll(left.flatMap((e) => (e.fiber === undefined ? [] : [e.fiber])))
        }
      }).pipe(Effect.withSpan("Worker.drain"))

    const handler: InferenceHandler = { drain, running: Effect.sync(() => running.size), owners }
    return handler
  })
