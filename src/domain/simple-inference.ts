import { Schema } from "effect"
import { NonNegativeNumber } from "./ids.js"
import { PlainChatMessage } from "./inference.js"

/**
 * The plain request of the WebSocket (`data` of an `inference` frame) and of the RPC `Generate`:
 * a model, a prompt or plain chat messages, and the two sampling fields these doors take. One
 * shape, one rule (`promptOrMessagesProblem`), for both doors.
 */
export const SimpleInferenceFields = {
  model: Schema.String.pipe(Schema.minLength(1)),
  prompt: Schema.optional(Schema.String),
  messages: Schema.optional(Schema.Array(PlainChatMessage).pipe(Schema.minItems(1))),
  /** Above `controller.api.max_tokens_ceiling`: refused. Absent: the engine's own limit applies. */
  maxTokens: Schema.optional(Schema.Number.pipe(Schema.int(), Schema.positive())),
  temperature: Schema.optional(NonNegativeNumber)
}

/** What is wrong with a request that gives both a prompt and messages, or neither; undefined when it is fine. */
export const promptOrMessagesProblem = (request: { readonly prompt?: unknown; readonly messages?: unknown }): string | undefined =>
  (request.prompt === undefined) === (request.messages === undefined) ? "exactly one of prompt or messages is required" : undefined

/** The shape with its rule, for doors that decode it themselves (the WebSocket). */
export const SimpleInference = Schema.Struct(SimpleInferenceFields).pipe(Schema.filter(promptOrMessagesProblem))
export type SimpleInference = typeof SimpleInference.Type
