import { Schema } from "effect"
import { Continuation } from "./continuation.js"
import { ControllerId, NonNegativeInt, NonNegativeNumber, RequestId, WorkerId } from "./ids.js"

export const ChatRole = Schema.Literal("system", "developer", "user", "assistant", "tool")
export type ChatRole = typeof ChatRole.Type

export const ChatMessage = Schema.Struct({
  role: ChatRole,
  content: Schema.String
})
export type ChatMessage = typeof ChatMessage.Type

/** Controller → worker on `worker.{id}.inference`. Exactly one of `messages` or `prompt` is expected. */
export const InferenceRequest = Schema.Struct({
  requestId: RequestId,
  model: Schema.String.pipe(Schema.minLength(1)),
  messages: Schema.optional(Schema.Array(ChatMessage)),
  prompt: Schema.optional(Schema.String),
  /** Absent: the engine's own limit applies. */
  maxTokens: Schema.optional(Schema.Number.pipe(Schema.int(), Schema.positive())),
  temperature: Schema.optional(NonNegativeNumber),
  topP: Schema.optional(NonNegativeNumber),
  stop: Schema.optional(Schema.Array(Schema.String)),
  stream: Schema.Boolean,
  /**
   * extension (issue 14): the controller that owns the request. The worker counts its requests per
   * controller (acks, refusals, heartbeats) and stops them when that controller stops answering
   * `controller.{controllerId}.probe`. Absent (an older controller): counted under nobody, never probed.
   */
  controllerId: Schema.optional(ControllerId),
  /** extension (issue 13): the answer so far, to be continued (see `continuation.ts`). */
  continuation: Schema.optional(Continuation)
})
export type InferenceRequest = typeof InferenceRequest.Type

export const RefusalReason = Schema.Literal("busy", "model_not_found", "invalid_request")
export type RefusalReason = typeof RefusalReason.Type

/**
 * extension (issue 14): the worker's own count of what it runs, sent with an ack and a refusal, so
 * that a controller balances on the worker's view rather than on its own dispatches alone:
 * `active` requests hold a slot now (the acked one included), `activeForController` of them belong
 * to the request's `controllerId` (absent when the request named none).
 */
const WorkerLoadFields = {
  active: Schema.optional(NonNegativeInt),
  activeForController: Schema.optional(NonNegativeInt)
}

export const InferenceAck = Schema.Struct({
  accepted: Schema.Literal(true),
  workerId: WorkerId,
  ...WorkerLoadFields
})
export const InferenceRefusal = Schema.Struct({
  accepted: Schema.Literal(false),
  reason: RefusalReason,
  message: Schema.String,
  ...WorkerLoadFields
})
/** The worker's immediate reply to an inference request. */
export const InferenceReply = Schema.Union(InferenceAck, InferenceRefusal)
export type InferenceReply = typeof InferenceReply.Type

export const CancelRequest = Schema.Struct({ requestId: RequestId })
export type CancelRequest = typeof CancelRequest.Type

export const FinishReason = Schema.Literal("stop", "length")
export type FinishReason = typeof FinishReason.Type

export const Usage = Schema.Struct({
  promptTokens: NonNegativeInt,
  completionTokens: NonNegativeInt
})
export type Usage = typeof Usage.Type

export const TokenChunk = Schema.Struct({
  type: Schema.Literal("token"),
  requestId: RequestId,
  index: NonNegativeInt,
  token: Schema.String
})

/** Every token the engine produced and the worker has not sent yet, in one message; `index` is the first token's. */
export const TokenBatch = Schema.Struct({
  type: Schema.Literal("tokens"),
  requestId: RequestId,
  index: NonNegativeInt,
  tokens: Schema.Array(Schema.String).pipe(Schema.minItems(1))
})

export const TokenDone = Schema.Struct({
  type: Schema.Literal("done"),
  requestId: RequestId,
  finishReason: FinishReason,
  usage: Usage,
  latencyMs: NonNegativeNumber
})

export const TokenError = Schema.Struct({
  type: Schema.Literal("error"),
  requestId: RequestId,
  code: Schema.String,
  message: Schema.String
})

/**
 * Worker → controller on `response.{requestId}`, in order. Workers send `tokens` batches;
 * controllers also accept the single `token` form.
 */
export const TokenMessage = Schema.Union(TokenChunk, TokenBatch, TokenDone, TokenError)
export type TokenMessage = typeof TokenMessage.Type
export type TokenChunk = typeof TokenChunk.Type
export type TokenBatch = typeof TokenBatch.Type
export type TokenDone = typeof TokenDone.Type
export type TokenError = typeof TokenError.Type
