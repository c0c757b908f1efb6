import { Schema } from "effect"
import { Continuation } from "./continuation.js"
import { ControllerId, NonNegativeInt, NonNegativeNumber, RequestId, WorkerId } from "./ids.js"

/** OpenAI's roles; `function` is the legacy form of a tool result. */
export const ChatRole = Schema.Literal("system", "developer", "user", "assistant", "tool", "function")
export type ChatRole = typeof ChatRole.Type

/** Whatever else an object carries travels with it unchanged. */
const OtherFields = Schema.Record({ key: Schema.String, value: Schema.Unknown })

/** One part of a content array: `{ type: "text", text }`, `{ type: "image_url", image_url }`, … kept whole. */
export const ContentPart = Schema.Struct({ type: Schema.String }, OtherFields)
export type ContentPart = typeof ContentPart.Type

/** A string, `null` (an assistant turn that only calls tools), or an array of parts. */
export const MessageContent = Schema.Union(Schema.String, Schema.Array(ContentPart), Schema.Null)
export type MessageContent = typeof MessageContent.Type

/** One call of an assistant message's `tool_calls` (OpenAI's shape; other fields kept). */
export const MessageToolCall = Schema.Struct(
  {
    id: Schema.String,
    type: Schema.String,
    function: Schema.optional(Schema.Struct({ name: Schema.String, arguments: Schema.String }, OtherFields))
  },
  OtherFields
)

/**
 * A chat message as the client sent it, every field kept (snake_case, as OpenAI spells them): the
 * known ones are checked, any other one (`refusal`, `audio`, a provider's own) travels unchanged to
 * the engine. Engines that need plain text read it with `messageText`.
 */
export const ChatMessage = Schema.Struct(
  {
    role: ChatRole,
    content: Schema.optional(MessageContent),
    name: Schema.optional(Schema.String),
    tool_calls: Schema.optional(Schema.Array(MessageToolCall)),
    tool_call_id: Schema.optional(Schema.String)
  },
  OtherFields
)
export type ChatMessage = typeof ChatMessage.Type

/** The message shape of the WebSocket and RPC front doors: a role and plain text. */
export const PlainChatMessage = Schema.Struct({
  role: ChatRole,
  content: Schema.String
})
export type PlainChatMessage = typeof PlainChatMessage.Type

/** The text of a message's content: a string as is, the `text` of its text parts, "" for none. */
export const contentText = (content: MessageContent | undefined): string => {
  if (content === undefined || content === null) return ""
  if (typeof content === "string") return content
  let text = ""
  for (const part of content) if (part.type === "text" && typeof part["text"] === "string") text += part["text"]
  return text
}

/** A message as plain text, for engines and indexes that only read words. */
export const messageText = (message: { readonly content?: MessageContent | undefined }): string => contentText(message.content)

const wordCount = (text: string): number => text.split(/\s+/).filter((w) => w.length > 0).length

/**
 * Prompt tokens as engines without a tokenizer count them: the whitespace-separated words of every
 * message and of the prompt. The controller counts the same way for an answer whose worker was lost.
 */
export const countPromptTokens = (request: {
  readonly messages?: ReadonlyArray<{ readonly content?: MessageContent | undefined }> | undefined
  readonly prompt?: string | undefined
}): number => (request.messages ?? []).reduce((n, m) => n + wordCount(messageText(m)), 0) + wordCount(request.prompt ?? "")

/** The OpenAI route a request came from; the `openai` engine calls the same route upstream. */
export const InferenceEndpoint = Schema.Literal("chat", "completions")
export type InferenceEndpoint = typeof InferenceEndpoint.Type

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
  continuation: Schema.optional(Continuation),
  /**
   * Every other field of the client's OpenAI request, verbatim (snake_case): `tools`,
   * `tool_choice`, `response_format`, `logprobs`, `top_logprobs`, `seed`, `presence_penalty`,
   * `frequency_penalty`, `logit_bias`, `user`, `suffix`, `echo`, `max_completion_tokens`, … The
   * fields above are not repeated here; `stream`, `stream_options` and the cluster's `tags` and
   * `priority` are the controller's and never forwarded.
   */
  params: Schema.optional(Schema.Record({ key: Schema.String, value: Schema.Unknown })),
  /** What the client called (absent: `chat` when `messages` are given, else `completions`). */
  endpoint: Schema.optional(InferenceEndpoint)
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

export const FinishReason = Schema.Literal("stop", "length", "tool_calls", "content_filter")
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

/** One of the most likely tokens at a position (OpenAI's `top_logprobs` entry). */
export const TopLogprob = Schema.Struct({
  token: Schema.String,
  /** Finite: JSON has no -Infinity (OpenAI sends -9999.0 for a token that cannot occur). */
  logprob: Schema.Finite,
  bytes: Schema.optional(Schema.NullOr(Schema.Array(Schema.Finite)))
})
export type TopLogprob = typeof TopLogprob.Type

/** The log probability of one generated token, with its alternatives: OpenAI's chat `logprobs.content` entry. */
export const TokenLogprob = Schema.Struct({ ...TopLogprob.fields, top_logprobs: Schema.Array(TopLogprob) })
export type TokenLogprob = typeof TokenLogprob.Type

/**
 * Every token the engine produced and the worker has not sent yet, in one message; `index` is the
 * first token's. `logprobs`, when the request asked for them: the entries of these tokens' text in
 * order (one per token for engines that know tokens; an upstream server's chunk may hold several).
 */
export const TokenBatch = Schema.Struct({
  type: Schema.Literal("tokens"),
  requestId: RequestId,
  index: NonNegativeInt,
  tokens: Schema.Array(Schema.String).pipe(Schema.minItems(1)),
  logprobs: Schema.optional(Schema.Array(TokenLogprob))
})

/** One streamed tool-call delta, exactly as OpenAI streams it in `choices[].delta.tool_calls`. */
export const ToolCallDelta = Schema.Struct({
  index: NonNegativeInt,
  id: Schema.optional(Schema.String),
  type: Schema.optional(Schema.Literal("function")),
  function: Schema.optional(
    Schema.Struct({ name: Schema.optional(Schema.String), arguments: Schema.optional(Schema.String) })
  )
})
export type ToolCallDelta = typeof ToolCallDelta.Type

/**
 * Tool-call deltas, in order. The message takes `deltas.length` indexes (as a `tokens` message
 * takes one per token), so gap detection covers text and tool calls alike.
 */
export const ToolCallBatch = Schema.Struct({
  type: Schema.Literal("tool_calls"),
  requestId: RequestId,
  index: NonNegativeInt,
  deltas: Schema.Array(ToolCallDelta).pipe(Schema.minItems(1))
})

export const TokenDone = Schema.Struct({
  type: Schema.Literal("done"),
  requestId: RequestId,
  finishReason: FinishReason,
  usage: Usage,
  latencyMs: NonNegativeNumber,
  /** The engine's `system_fingerprint`, when its upstream gave one. */
  systemFingerprint: Schema.optional(Schema.String)
})

export const TokenError = Schema.Struct({
  type: Schema.Literal("error"),
  requestId: RequestId,
  code: Schema.String,
  message: Schema.String,
  /**
   * Set when the engine's upstream refused the request itself (its 4xx): the client gets this
   * status with `message`, `code`, `errorType` (its OpenAI `type`) and `param`, and no other worker is tried.
   */
  status: Schema.optional(Schema.Number.pipe(Schema.int(), Schema.between(400, 499))),
  errorType: Schema.optional(Schema.String),
  param: Schema.optional(Schema.String)
})

/**
 * Worker → controller on `response.{requestId}`, in order. Workers send `tokens` batches (and
 * `tool_calls` batches for requests with tools); controllers also accept the single `token` form.
 * Indexes run over tokens and tool-call deltas together, without gaps.
 */
export const TokenMessage = Schema.Union(TokenChunk, TokenBatch, ToolCallBatch, TokenDone, TokenError)
export type TokenMessage = typeof TokenMessage.Type
export type TokenChunk = typeof TokenChunk.Type
export type TokenBatch = typeof TokenBatch.Type
export type ToolCallBatch = typeof ToolCallBatch.Type
export type TokenDone = typeof TokenDone.Type
export type TokenError = typeof TokenError.Type
