import { type InferenceError, UpstreamRejected, WorkerFailed } from "../domain/errors.js"
import type { TokenLogprob, TokenMessage } from "../domain/inference.js"
import type { RelayEvent } from "../domain/route.js"

/**
 * The relay of one attempt as a pure step function: given what has been relayed so far and the
 * next message from the worker, what to pass on and whether the attempt ends. The effectful shell
 * (`relay.ts`) only feeds it messages and acts on its answer.
 */

/**
 * Why a request moved to another worker: the `reason` label of `mlx_cluster_retries_total`.
 * `busy` (issue 14) is no retry: the Router sends the request back to the admission queue instead
 * (`mlx_cluster_requeues_total`), so it never appears in that label.
 */
export type RetryKind = "no_responders" | "ack_timeout" | "invalid_ack" | "refused" | "busy" | "worker_offline" | "worker_error"

/** How an attempt ends. */
export type AttemptOutcome =
  | { readonly _tag: "Done"; readonly done: Extract<RelayEvent, { type: "done" }> }
  /** This worker cannot serve it and nothing was relayed yet: try another. */
  | { readonly _tag: "Retry"; readonly kind: RetryKind; readonly reason: string }
  | { readonly _tag: "Fail"; readonly error: InferenceError }

export interface RelayState {
  /** The index the worker's next token must have. */
  readonly expected: number
  /** The worker sent `done` or `error`: it runs nothing more for this attempt (no cancel needed). */
  readonly finished: boolean
}

export const initialRelayState: RelayState = { expected: 0, finished: false }

export interface StepContext {
  readonly workerId: string
  /** Tokens relayed to the client by earlier attempts of the same request. */
  readonly relayedBefore: number
}

export interface StepResult {
  readonly state: RelayState
  /** What to pass on to the consumer, if anything. */
  readonly event?: RelayEvent
  /** Set when the attempt ends with this message. */
  readonly outcome?: AttemptOutcome
}

/** Worker error codes that say the request itself cannot succeed anywhere: no retry. */
export const FINAL_WORKER_CODES: ReadonlySet<string> = new Set(["timeout", "cancelled", "invalid_request"])

/** The message's indexes are the expected ones: the event to pass on; otherwise the gap ends the attempt. */
const inOrder = (state: RelayState, index: number, count: number, event: RelayEvent, ctx: StepContext): StepResult => {
  if (index !== state.expected) {
    // Not `finished`: the worker may still be generating, so the shell cancels it.
    return {
      state,
      outcome: {
        _tag: "Fail",
        error: new WorkerFailed({
          workerId: ctx.workerId,
          code: "token_gap",
          message: `expected token ${state.expected} from worker ${ctx.workerId}, got ${index}`
        })
      }
    }
  }
  return { state: { ...state, expected: index + count }, event }
}

const tokensEvent = (
  state: RelayState,
  index: number,
  tokens: ReadonlyArray<string>,
  logprobs: ReadonlyArray<TokenLogprob> | undefined,
  ctx: StepContext
): StepResult =>
  inOrder(state, index, tokens.length, logprobs === undefined ? { type: "tokens", index, tokens } : { type: "tokens", index, tokens, logprobs }, ctx)

/** One message from the worker. Must not be called after an outcome. */
export const step = (state: RelayState, message: TokenMessage, ctx: StepContext): StepResult => {
  switch (message.type) {
    case "tokens":
      return tokensEvent(state, message.index, message.tokens, message.logprobs, ctx)
    case "token":
      return tokensEvent(state, message.index, [message.token], undefined, ctx)
    case "tool_calls":
      // Each delta takes one index, as a token does.
      return inOrder(state, message.index, message.deltas.length, { type: "toolCalls", index: message.index, deltas: message.deltas }, ctx)
    case "done": {
      const done: Extract<RelayEvent, { type: "done" }> = {
        type: "done",
        finishReason: message.finishReason,
        usage: message.usage,
        latencyMs: message.latencyMs,
        workerId: ctx.workerId,
        ...(message.systemFingerprint === undefined ? {} : { systemFingerprint: message.systemFingerprint })
      }
      return { state: { ...state, finished: true }, event: done, outcome: { _tag: "Done", done } }
    }
    case "error": {
      const next = { ...state, finished: true }
      // The engine's upstream refused the request itself (issue 12): the client's error, final.
      if (message.status !== undefined) {
        return {
          state: next,
          outcome: {
            _tag: "Fail",
            error: new UpstreamRejected({
              workerId: ctx.workerId,
              status: message.status,
              message: message.message,
              code: message.code,
              ...(message.errorType === undefined ? {} : { errorType: message.errorType }),
              ...(message.param === undefined ? {} : { param: message.param })
            })
          }
        }
      }
      // Before any token, a worker's own failure (engine down, upstream unreachable) is that worker's
      // problem: another one may serve the request.
      if (ctx.relayedBefore === 0 && state.expected === 0 && !FINAL_WORKER_CODES.has(message.code)) {
        return { state: next, outcome: { _tag: "Retry", kind: "worker_error", reason: `failed (${message.code}: ${message.message})` } }
      }
      return {
        state: next,
        outcome: { _tag: "Fail", error: new WorkerFailed({ workerId: ctx.workerId, code: message.code, message: message.message }) }
      }
    }
  }
}

/** The outcome when the worker is lost (offline, no responders) or hung: retry while nothing was relayed. */
export const workerLost = (state: RelayState, ctx: StepContext, reason: string): AttemptOutcome =>
  ctx.relayedBefore === 0 && state.expected === 0
    ? { _tag: "Retry", kind: "worker_offline", reason: `went offline (${reason})` }
    : {
        _tag: "Fail",
        error: new WorkerFailed({ workerId: ctx.workerId, code: "worker_lost", message: `worker ${ctx.workerId} went offline: ${reason}` })
      }
