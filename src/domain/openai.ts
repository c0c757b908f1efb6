import { Schema } from "effect"
import { ChatMessage, FinishReason, TokenLogprob, ToolCallDelta } from "./inference.js"

/**
 * The OpenAI wire shapes the controller speaks (snake_case, as OpenAI clients send them). Every
 * field of a request travels to the engine (issue 12): the ones below are checked, any other one is
 * kept as the client sent it (`params` on the bus). Whether an engine honours a field is decided by
 * the capabilities of src/domain/features.ts, never by dropping it.
 */

/** Whatever else an object carries travels with it unchanged. */
const OtherFields = Schema.Record({ key: Schema.String, value: Schema.Unknown })

/** Every OpenAI message field is kept: `content` string, `null` or parts, `name`, `tool_calls`, `tool_call_id`, … */
export const OpenAiChatMessage = ChatMessage
export type OpenAiChatMessage = typeof OpenAiChatMessage.Type

const Stop = Schema.Union(Schema.String, Schema.Array(Schema.String), Schema.Null)
const MaxTokens = Schema.Number.pipe(Schema.int(), Schema.positive())
const Temperature = Schema.Number.pipe(Schema.between(0, 2))
const TopP = Schema.Number.pipe(Schema.between(0, 1))
const Penalty = Schema.Number.pipe(Schema.between(-2, 2))
const Count = Schema.Number.pipe(Schema.int(), Schema.nonNegative())

export const StreamOptions = Schema.Struct({ include_usage: Schema.optional(Schema.NullOr(Schema.Boolean)) }, OtherFields)

/** Routing extensions of this cluster: only workers with every tag; higher priority queues first. Never forwarded. */
const ClusterExtensions = {
  tags: Schema.optional(Schema.Array(Schema.String)),
  priority: Schema.optional(Schema.Number.pipe(Schema.int()))
}

export const FunctionTool = Schema.Struct(
  {
    type: Schema.String,
    function: Schema.optional(
      Schema.Struct(
        {
          name: Schema.String,
          description: Schema.optional(Schema.String),
          parameters: Schema.optional(OtherFields),
          strict: Schema.optional(Schema.NullOr(Schema.Boolean))
        },
        OtherFields
      )
    )
  },
  OtherFields
)

export const ToolChoice = Schema.Union(Schema.Literal("none", "auto", "required"), Schema.Struct({ type: Schema.String }, OtherFields))

export const ResponseFormat = Schema.Struct(
  {
    type: Schema.Literal("text", "json_object", "json_schema"),
    json_schema: Schema.optional(
      Schema.Struct(
        { name: Schema.String, description: Schema.optional(Schema.String), schema: Schema.optional(OtherFields), strict: Schema.optional(Schema.NullOr(Schema.Boolean)) },
        OtherFields
      )
    )
  },
  OtherFields
)

/** Fields both routes share. */
const Common = {
  model: Schema.String.pipe(Schema.minLength(1)),
  max_tokens: Schema.optional(Schema.NullOr(MaxTokens)),
  temperature: Schema.optional(Schema.NullOr(Temperature)),
  top_p: Schema.optional(Schema.NullOr(TopP)),
  stop: Schema.optional(Stop),
  stream: Schema.optional(Schema.NullOr(Schema.Boolean)),
  stream_options: Schema.optional(Schema.NullOr(StreamOptions)),
  /** One choice per request: values above 1 are refused with a 400. */
  n: Schema.optional(Schema.NullOr(Schema.Number.pipe(Schema.int(), Schema.positive()))),
  seed: Schema.optional(Schema.NullOr(Schema.Number.pipe(Schema.int()))),
  presence_penalty: Schema.optional(Schema.NullOr(Penalty)),
  frequency_penalty: Schema.optional(Schema.NullOr(Penalty)),
  logit_bias: Schema.optional(Schema.NullOr(Schema.Record({ key: Schema.String, value: Schema.Number.pipe(Schema.between(-100, 100)) }))),
  user: Schema.optional(Schema.String),
  ...ClusterExtensions
}

export const ChatCompletionRequest = Schema.Struct(
  {
    ...Common,
    messages: Schema.Array(OpenAiChatMessage).pipe(Schema.minItems(1)),
    max_completion_tokens: Schema.optional(Schema.NullOr(MaxTokens)),
    tools: Schema.optional(Schema.Array(FunctionTool)),
    tool_choice: Schema.optional(ToolChoice),
    parallel_tool_calls: Schema.optional(Schema.Boolean),
    response_format: Schema.optional(ResponseFormat),
    logprobs: Schema.optional(Schema.NullOr(Schema.Boolean)),
    top_logprobs: Schema.optional(Schema.NullOr(Count.pipe(Schema.lessThanOrEqualTo(20))))
  },
  OtherFields
)
export type ChatCompletionRequest = typeof ChatCompletionRequest.Type

export const CompletionRequest = Schema.Struct(
  {
    ...Common,
    prompt: Schema.Union(Schema.String, Schema.Array(Schema.String).pipe(Schema.itemsCount(1))),
    suffix: Schema.optional(Schema.NullOr(Schema.String)),
    echo: Schema.optional(Schema.NullOr(Schema.Boolean)),
    /** Legacy completions: the number of most likely alternatives per token (0..5). */
    logprobs: Schema.optional(Schema.NullOr(Count.pipe(Schema.lessThanOrEqualTo(5)))),
    /** One choice per request: values above 1 are refused with a 400. */
    best_of: Schema.optional(Schema.NullOr(Schema.Number.pipe(Schema.int(), Schema.positive())))
  },
  OtherFields
)
export type CompletionRequest = typeof CompletionRequest.Type

export const OpenAiUsage = Schema.Struct({
  prompt_tokens: Schema.Number,
  completion_tokens: Schema.Number,
  total_tokens: Schema.Number
})

export const FinishReasonWire = Schema.NullOr(FinishReason)

/** A whole tool call of a non-streamed answer. */
export const ToolCall = Schema.Struct({
  id: Schema.String,
  type: Schema.Literal("function"),
  function: Schema.Struct({ name: Schema.String, arguments: Schema.String })
})
export type ToolCall = typeof ToolCall.Type

/** `choices[].logprobs` of a chat completion. */
export const ChatLogprobs = Schema.Struct({ content: Schema.NullOr(Schema.Array(TokenLogprob)) })

/** `choices[].logprobs` of a legacy completion. */
export const CompletionLogprobs = Schema.Struct({
  tokens: Schema.Array(Schema.String),
  token_logprobs: Schema.Array(Schema.Number),
  top_logprobs: Schema.Array(Schema.Record({ key: Schema.String, value: Schema.Number })),
  text_offset: Schema.Array(Schema.Number)
})
export type CompletionLogprobs = typeof CompletionLogprobs.Type

export const ChatCompletion = Schema.Struct({
  id: Schema.String,
  object: Schema.Literal("chat.completion"),
  created: Schema.Number,
  model: Schema.String,
  choices: Schema.Array(
    Schema.Struct({
      index: Schema.Number,
      message: Schema.Struct({
        role: Schema.Literal("assistant"),
        /** `null` when the answer is only tool calls. */
        content: Schema.NullOr(Schema.String),
        tool_calls: Schema.optional(Schema.Array(ToolCall))
      }),
      logprobs: Schema.optional(Schema.NullOr(ChatLogprobs)),
      finish_reason: FinishReasonWire
    })
  ),
  usage: OpenAiUsage,
  system_fingerprint: Schema.optional(Schema.String)
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
      delta: Schema.Struct({
        role: Schema.optional(Schema.Literal("assistant")),
        content: Schema.optional(Schema.String),
        tool_calls: Schema.optional(Schema.Array(ToolCallDelta))
      }),
      logprobs: Schema.optional(Schema.NullOr(ChatLogprobs)),
      finish_reason: FinishReasonWire
    })
  ),
  usage: Schema.optional(Schema.NullOr(OpenAiUsage)),
  system_fingerprint: Schema.optional(Schema.String)
})

export const Completion = Schema.Struct({
  id: Schema.String,
  object: Schema.Literal("text_completion"),
  created: Schema.Number,
  model: Schema.String,
  choices: Schema.Array(
    Schema.Struct({ index: Schema.Number, text: Schema.String, finish_reason: FinishReasonWire, logprobs: Schema.NullOr(CompletionLogprobs) })
  ),
  usage: OpenAiUsage,
  system_fingerprint: Schema.optional(Schema.String)
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
