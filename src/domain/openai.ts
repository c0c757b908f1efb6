import { Schema } from "effect"

/**
 * The OpenAI wire shapes the controller speaks (snake_case, as OpenAI clients send them). Fields an
 * OpenAI client may send that a cluster cannot honour (seed, penalties, logit_bias, user, …) are
 * accepted and ignored, so unmodified clients keep working.
 */

const TextPart = Schema.Struct({ type: Schema.Literal("text"), text: Schema.String })
/** Content is a string or, in newer clients, a list of parts of which only text is supported. */
export const MessageContent = Schema.Union(Schema.String, Schema.Array(TextPart), Schema.Null)

export const OpenAiChatMessage = Schema.Struct({
  role: Schema.Literal("system", "developer", "user", "assistant", "tool"),
  content: MessageContent,
  name: Schema.optional(Schema.String)
})
export type OpenAiChatMessage = typeof OpenAiChatMessage.Type

const Stop = Schema.Union(Schema.String, Schema.Array(Schema.String), Schema.Null)
const MaxTokens = Schema.Number.pipe(Schema.int(), Schema.positive())
const Temperature = Schema.Number.pipe(Schema.between(0, 2))
const TopP = Schema.Number.pipe(Schema.between(0, 1))

export const StreamOptions = Schema.Struct({ include_usage: Schema.optional(Schema.NullOr(Schema.Boolean)) })

/** Routing extensions of this cluster: only workers with every tag; higher priority queues first. */
const ClusterExtensions = {
  tags: Schema.optional(Schema.Array(Schema.String)),
  priority: Schema.optional(Schema.Number.pipe(Schema.int()))
}

const Common = {
  model: Schema.String.pipe(Schema.minLength(1)),
  max_tokens: Schema.optional(Schema.NullOr(MaxTokens)),
  temperature: Schema.optional(Schema.NullOr(Temperature)),
  top_p: Schema.optional(Schema.NullOr(TopP)),
  stop: Schema.optional(Stop),
  stream: Schema.optional(Schema.NullOr(Schema.Boolean)),
  stream_options: Schema.optional(Schema.NullOr(StreamOptions)),
  n: Schema.optional(Schema.NullOr(Schema.Literal(1))),
  ...ClusterExtensions
}

export const ChatCompletionRequest = Schema.Struct({
  ...Common,
  messages: Schema.Array(OpenAiChatMessage).pipe(Schema.minItems(1)),
  max_completion_tokens: Schema.optional(Schema.NullOr(MaxTokens))
})
export type ChatCompletionRequest = typeof ChatCompletionRequest.Type

export const CompletionRequest = Schema.Struct({
  ...Common,
  prompt: Schema.Union(Schema.String, Schema.Array(Schema.String).pipe(Schema.itemsCount(1)))
})
export type CompletionRequest = typeof CompletionRequest.Type

export const OpenAiUsage = Schema.Struct({
  prompt_tokens: Schema.Number,
  completion_tokens: Schema.Number,
  total_tokens: Schema.Number
})

export const FinishReasonWire = Schema.NullOr(Schema.Literal("stop", "length"))

export const ChatCompletion = Schema.Struct({
  id: Schema.String,
  object: Schema.Literal("chat.completion"),
  created: Schema.Number,
  model: Schema.String,
  choices: Schema.Array(
    Schema.Struct({
      index: Schema.Number,
      message: Schema.Struct({ role: Schema.Literal("assistant"), content: Schema.String }),
      finish_reason: FinishReasonWire
    })
  ),
  usage: OpenAiUsage
})
export type ChatCompletion = typeof ChatCompletion.Type

/** One SSE event of a streamed chat completion (documented in the OpenAPI spec). */
export const ChatCompletionChunk = Schema.Struct({
  id: Schema.String,
  object: Schema.Literal("chat.completion.chunk"),
  created: Schema.Number,
  model: Schema.String,
  choices: Schema.Array(
    Schema.Struct({
      index: Schema.Number,
      delta: Schema.Struct({ role: Schema.optional(Schema.Literal("assistant")), content: Schema.optional(Schema.String) }),
      finish_reason: FinishReasonWire
    })
  ),
  usage: Schema.optional(Schema.NullOr(OpenAiUsage))
})

export const Completion = Schema.Struct({
  id: Schema.String,
  object: Schema.Literal("text_completion"),
  created: Schema.Number,
  model: Schema.String,
  choices: Schema.Array(
    Schema.Struct({ index: Schema.Number, text: Schema.String, finish_reason: FinishReasonWire, logprobs: Schema.Null })
  ),
  usage: OpenAiUsage
})
export type Completion = typeof Completion.Type

export const ModelObject = Schema.Struct({
  id: Schema.String,
  object: Schema.Literal("model"),
  created: Schema.Number,
  owned_by: Schema.String
})

export const ModelList = Schema.Struct({
  object: Schema.Literal("list"),
  data: Schema.Array(ModelObject)
})
export type ModelList = typeof ModelList.Type
