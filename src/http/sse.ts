import type { Chunk } from "effect"
import type { RelayEvent } from "../controller/router.js"
import type { Usage } from "../domain/inference.js"

/**
 * OpenAI's streaming formats, written as string templates: the relay formats every token, so the
 * constant part of each chunk is built once per request and only the token is JSON-escaped.
 */
export interface SseFormat {
  /** Sent before the first token (the chat format's role chunk), or "". */
  readonly head: string
  readonly token: (text: string) => string
  /** The last events: the finish chunk, the usage chunk when asked for, and `[DONE]`. */
  readonly end: (finishReason: "stop" | "length", usage: Usage) => string
}

export const DONE = "data: [DONE]\n\n"

const usageJson = (u: Usage) =>
  `{"prompt_tokens":${u.promptTokens},"completion_tokens":${u.completionTokens},"total_tokens":${u.promptTokens + u.completionTokens}}`

export interface StreamIdentity {
  readonly id: string
  readonly created: number
  readonly model: string
  readonly includeUsage: boolean
}

export const chatFormat = ({ id, created, model, includeUsage }: StreamIdentity): SseFormat => {
  const prefix = `data: {"id":${JSON.stringify(id)},"object":"chat.completion.chunk","created":${created},"model":${JSON.stringify(model)},"choices":[{"index":0,`
  const suffix = includeUsage ? `]` + `,"usage":null}\n\n` : `]}\n\n`
  return {
    head: `${prefix}"delta":{"role":"assistant","content":""},"finish_reason":null}${suffix}`,
    token: (text) => `${prefix}"delta":{"content":${JSON.stringify(text)}},"finish_reason":null}${suffix}`,
    end: (finishReason, usage) =>
      `${prefix}"delta":{},"finish_reason":"${finishReason}"}${suffix}` +
      (includeUsage
        ? `data: {"id":${JSON.stringify(id)},"object":"chat.completion.chunk","created":${created},"model":${JSON.stringify(model)},"choices":[],"usage":${usageJson(usage)}}\n\n`
        : "") +
      DONE
  }
}

export const completionFormat = ({ id, created, model, includeUsage }: StreamIdentity): SseFormat => {
  const prefix = `data: {"id":${JSON.stringify(id)},"object":"text_completion","created":${created},"model":${JSON.stringify(model)},"choices":[{"index":0,`
  const suffix = includeUsage ? `]` + `,"usage":null}\n\n` : `]}\n\n`
  return {
    head: "",
    token: (text) => `${prefix}"text":${JSON.stringify(text)},"logprobs":null,"finish_reason":null}${suffix}`,
    end: (finishReason, usage) =>
      `${prefix}"text":"","logprobs":null,"finish_reason":"${finishReason}"}${suffix}` +
      (includeUsage
        ? `data: {"id":${JSON.stringify(id)},"object":"text_completion","created":${created},"model":${JSON.stringify(model)},"choices":[],"usage":${usageJson(usage)}}\n\n`
        : "") +
      DONE
  }
}

/** All the events of one relayed chunk as one string: one socket write for tokens that arrived together. */
export const encodeEvents = (format: SseFormat, events: Chunk.Chunk<RelayEvent>): string => {
  let out = ""
  for (const event of events) {
    out += event.type === "token" ? format.token(event.token) : format.end(event.finishReason, event.usage)
  }
  return out
}

