import { Context, Data, type Effect } from "effect"
import type { ContinuationKind } from "../../domain/continuation.js"
import type { Feature } from "../../domain/features.js"
import { type FinishReason, type InferenceRequest, type TokenLogprob, type ToolCallDelta, type Usage } from "../../domain/inference.js"
import type { PromptCacheStats } from "../../domain/worker.js"

/** How a generation ended. */
export interface Finish {
  readonly finishReason: FinishReason
  readonly usage: Usage
  /** The upstream's `system_fingerprint`, when it gave one. */
  readonly systemFingerprint?: string
}

export const finish = (finishReason: FinishReason, usage: Usage, systemFingerprint?: string): Finish => ({
  finishReason,
  usage,
  ...(systemFingerprint === undefined ? {} : { systemFingerprint })
})

/**
 * An engine failure; `code` becomes the `code` of the `error` TokenMessage. Codes used:
 * `upstream_error` (non-2xx answer), `upstream_unreachable` (no connection), `upstream_disconnected`
 * (stream cut before its end), `upstream_malformed` (unparseable SSE), `engine_start_failed`
 * (mlx-lm server did not come up), `engine_stopped` (the engine was shutting down),
 * `continuation_unsupported` (asked to continue an answer it cannot). A defect becomes the
 * handler's `internal_error`.
 */
export class EngineError extends Data.TaggedError("EngineError")<{
  readonly code: string
  readonly message: string
  readonly cause?: unknown
  /**
   * The upstream server refused the request itself (a 4xx about the request: 400, 413, 422): the
   * client gets this status with `message`, `code`, `errorType` and `param`, and no other worker
   * is tried. Absent for every failure of the worker or its server.
   */
  readonly status?: number
  readonly errorType?: string
  readonly param?: string
}> {}

/**
 * Receives generated tokens, in order, as soon as the engine has them; `logprobs` when the request
 * asked for them (OpenAI's chat `logprobs.content` entries of these tokens).
 */
export type EmitTokens = (tokens: ReadonlyArray<string>, logprobs?: ReadonlyArray<TokenLogprob>) => void

/** Receives tool-call deltas, in order, exactly as OpenAI streams them. */
export type EmitToolCalls = (deltas: ReadonlyArray<ToolCallDelta>) => void

export interface InferenceEngineService {
  /** The engine's type string: `capabilities.engine` (`synthetic`, `openai`, `mlx-lm`). */
  readonly type: string
  /**
   * Generates the answer to `request` with the model at `modelPath` (a path from the skills). Every
   * group of tokens goes to `emit` (with their logprobs when the request asked for them), every
   * group of tool-call deltas to `emitToolCalls`, as soon as the engine has them — never held back
   * to wait for more — and the effect succeeds with how it finished. Push, not a `Stream`: the
   * worker publishes each group as one bus message with no Effect machinery per token (issue 10).
   * Interrupting the effect stops the work (the upstream request is aborted).
   */
  readonly generate: (
    request: InferenceRequest,
    modelPath: string,
    emit: EmitTokens,
    emitToolCalls: EmitToolCalls
  ) => Effect.Effect<Finish, EngineError>
  /**
   * What the engine honours for every model beyond plain generation (src/domain/features.ts): sent
   * as `capabilities.features`, so that the controller only sends it requests it can honour.
   */
  readonly features: ReadonlyArray<Feature>
  /** The engine's prompt-cache counters, when it keeps one it can report (heartbeat `promptCache`). */
  readonly promptCache?: Effect.Effect<PromptCacheStats>
  /**
   * The kinds of request this engine continues from a `continuation` (issue 13, see
   * src/domain/continuation.ts); registered as `capabilities.continuation`. None when absent: the
   * controller never sends it a continuation.
   */
  readonly continuation?: ReadonlyArray<ContinuationKind>
}

/** The inference engine port; its implementation is chosen by `worker.engine.type`. */
export class InferenceEngine extends Context.Tag("worker/InferenceEngine")<InferenceEngine, InferenceEngineService>() {}

