import { Schema } from "effect"
import { NonNegativeInt } from "./ids.js"

/**
 * Request migration (issue 13): when a stream's worker is lost or hung after tokens were relayed,
 * the controller sends the rest of the request to another worker with a `continuation` — the
 * answer so far — and that worker generates what follows it.
 *
 * The rules of a continued attempt, for engines and controllers alike:
 * - the engine generates the continuation of `text` (the answer so far, exactly as the client got
 *   it), at most `maxTokens` more tokens (the controller has already subtracted `completionTokens`);
 * - the worker numbers its tokens from 0 as always; the controller adds `completionTokens` to every
 *   index it relays, so the client sees one stream whose indexes go on where they stopped;
 * - its `done.usage` counts that attempt: `completionTokens` the tokens it generated,
 *   `promptTokens` the request's own prompt without the continuation text (an engine whose
 *   upstream counts the text as prompt subtracts `completionTokens`); the controller adds the
 *   continuation's tokens, so the client's usage counts every token of the answer.
 */
export const Continuation = Schema.Struct({
  /** The answer relayed to the client so far. */
  text: Schema.String,
  /** How many tokens that was. */
  completionTokens: NonNegativeInt
})
export type Continuation = typeof Continuation.Type

/**
 * What can be continued, named after the OpenAI route a request reaches an engine's upstream by:
 * `chat` (the engine continues a final assistant message holding the text; a bare prompt from the
 * WebSocket or RPC goes upstream as a chat too) and `completions` (a legacy completion: the engine
 * completes the prompt followed by the text).
 */
export const ContinuationKind = Schema.Literal("chat", "completions")
export type ContinuationKind = typeof ContinuationKind.Type

/** The kind a request would need: `completions` for a legacy completion (`endpoint`), else `chat`. */
export const continuationKindOf = (request: { readonly endpoint?: string | undefined }): ContinuationKind =>
  request.endpoint === "completions" ? "completions" : "chat"

/**
 * Whether a worker's registration says its engine continues requests of `kind`
 * (`capabilities.continuation`; a worker that lists nothing, e.g. an older version, continues nothing).
 */
export const continues = (capabilities: { readonly continuation?: ReadonlyArray<string> | undefined }, kind: ContinuationKind): boolean =>
  capabilities.continuation?.includes(kind) ?? false
