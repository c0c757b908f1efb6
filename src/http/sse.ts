import type { Usage } from "../domain/inference.js"
import type { RelayEvent } from "../domain/route.js"

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

/**
 * `end`'s text for a stream that moved to another worker (issue 13): the last chunk before
 * `[DONE]` — the usage chunk when asked for, else the finish chunk — carries `"migrations": N` as
 * an extension (SSE has no trailers). Unchanged when it never moved.
 */
export const withMigrations = (end: string, migrations: number | undefined): string => {
  const tail = `}\n\n${DONE}`
  if (migrations === undefined || migrations <= 0 || !end.endsWith(tail)) return end
  const cut = end.length - tail.length
  return `${end.slice(0, cut)},"migrations":${migrations}${end.slice(cut)}`
}

/** One relayed event as SSE text: one chunk per token, so tokens that arrived together share one socket write. */
export const encodeEvent = (format: SseFormat, event: RelayEvent): string => {
  if (event.type === "done") return withMigrations(format.end(event.finishReason, event.usage), event.migrations)
  let out = ""
  for (const token of event.tokens) out += format.token(token)
  return out
}

