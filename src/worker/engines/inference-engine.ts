import { Context, Data, type Effect } from "effect"
import type { ContinuationKind } from "../../domain/continuation.js"
import type { FinishReason, InferenceRequest, Usage } from "../../domain/inference.js"
import type { PromptCacheStats } from "../../domain/worker.js"

/** How a generation ended. */
export interface Finish {
  readonly finishReason: FinishReason
  readonly usage: Usage
}

export const finish = (finishReason: FinishReason, usage: Usage): Finish => ({ finishReason, usage })

/**
 * An engine failure; `code` becomes the `code` of the `error` TokenMessage. Codes used:
 * `upstream_error` (non-2xx answer), `upstream_unreachable` (no connection), `upstream_disconnected`
 * (stream cut before its end), `upstream_malformed` (unparseable SSE), `engine_start_failed`
 * (mlx-lm server did not come up), `engine_error` (anything else).
 */
export class EngineError extends Data.TaggedError("EngineError")<{
  readonly code: string
  readonly message: string
  readonly cause?: unknown
}> {}

/** Receives generated tokens, in order, as soon as the engine has them. */
export type EmitTokens = (tokens: ReadonlyArray<string>) => void

export interface InferenceEngineService {
  /** The engine's type string: `capabilities.engine` (`synthetic`, `openai`, `mlx-lm`). */
  readonly type: string
  /**
   * Generates the answer to `request` with the model at `modelPath` (a path from the skills). Every
   * group of tokens goes to `emit` as soon as the engine has it — never held back to wait for more —
   * and the effect succeeds with how it finished. Push, not a `Stream`: the worker publishes each
   * group as one bus message with no Effect machinery per token (issue 10). Interrupting the effect
   * stops the work (the upstream request is aborted).
   */
  readonly generate: (request: InferenceRequest, modelPath: string, emit: EmitTokens) => Effect.Effect<Finish, EngineError>
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

/** Prompt tokens as engines without a tokenizer count them: whitespace-separated words of every message. */
export const countPromptTokens = (request: InferenceRequest): number => {
  const texts = [...(request.messages ?? []).map((m) => m.content), ...(request.prompt !== undefined ? [request.prompt] : [])]
  return texts.reduce((n, text) => n + text.split(/\s+/).filter((w) => w.length > 0).length, 0)
}
