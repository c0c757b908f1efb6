import type { TokenLogprob } from "../domain/inference.js"
import type { ChatCompletion, Completion, ToolCall } from "../domain/openai.js"
import type { DoneEvent, RelayEvent } from "../domain/route.js"
import { completionLogprobs, type StreamIdentity } from "./sse.js"

/**
 * A non-streamed answer, gathered from the relayed events: the text, the logprob entries and the
 * tool calls (their deltas merged by `index`: the first names id and function, the rest append to
 * the arguments), rendered at the end in OpenAI's `chat.completion` or `text_completion` shape.
 */
export interface AnswerCollector {
  readonly push: (event: RelayEvent) => void
  readonly chat: (id: StreamIdentity, done: DoneEvent, logprobsAsked: boolean) => ChatCompletion
  readonly completion: (id: StreamIdentity, done: DoneEvent, logprobsAsked: boolean) => Completion
}

interface PartialCall {
  id: string
  name: string
  arguments: string
}

const usageOf = (u: DoneEvent["usage"]) => ({
  prompt_tokens: u.promptTokens,
  completion_tokens: u.completionTokens,
  total_tokens: u.promptTokens + u.completionTokens
})

export const collectAnswer = (): AnswerCollector => {
  const parts: Array<string> = []
  const logprobs: Array<TokenLogprob> = []
  const calls = new Map<number, PartialCall>()

  const push = (event: RelayEvent): void => {
    switch (event.type) {
      case "tokens":
        for (const token of event.tokens) parts.push(token)
        if (event.logprobs !== undefined) for (const entry of event.logprobs) logprobs.push(entry)
        return
      case "toolCalls":
        for (const delta of event.deltas) {
          let call = calls.get(delta.index)
          if (call === undefined) {
            call = { id: "", name: "", arguments: "" }
            calls.set(delta.index, call)
          }
          if (delta.id !== undefined) call.id = delta.id
          if (delta.function?.name !== undefined) call.name += delta.function.name
          if (delta.function?.arguments !== undefined) call.arguments += delta.function.arguments
        }
        return
      case "done":
        return
    }
  }

  const fingerprint = (done: DoneEvent) => (done.systemFingerprint === undefined ? {} : { system_fingerprint: done.systemFingerprint })

  const chat = (id: StreamIdentity, done: DoneEvent, logprobsAsked: boolean): ChatCompletion => {
    const toolCalls: Array<ToolCall> = [...calls.entries()]
      .sort(([a], [b]) => a - b)
      .map(([, c]) => ({ id: c.id, type: "function", function: { name: c.name, arguments: c.arguments } }))
    const text = parts.join("")
    return {
      id: id.id,
      object: "chat.completion",
      created: id.created,
      model: id.model,
      choices: [
        {
          index: 0,
          message: {
            role: "assistant",
            // OpenAI: `null` when the model only called tools.
            content: toolCalls.length > 0 && text === "" ? null : text,
            ...(toolCalls.length > 0 ? { tool_calls: toolCalls } : {})
          },
          logprobs: logprobsAsked ? { content: logprobs } : null,
          finish_reason: done.finishReason
        }
      ],
      usage: usageOf(done.usage),
      ...fingerprint(done)
    }
  }

  const completion = (id: StreamIdentity, done: DoneEvent, logprobsAsked: boolean): Completion => ({
    id: id.id,
    object: "text_completion",
    created: id.created,
    model: id.model,
    choices: [
      {
        index: 0,
        text: parts.join(""),
        finish_reason: done.finishReason,
        logprobs: logprobsAsked ? completionLogprobs(logprobs, id.textOffset ?? 0)[0] : null
      }
    ],
    usage: usageOf(done.usage),
    ...fingerprint(done)
  })

  return { push, chat, completion }
}
