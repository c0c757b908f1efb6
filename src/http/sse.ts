import type { FinishReason, TokenLogprob, ToolCallDelta, Usage } from "../domain/inference.js"
import type { CompletionLogprobs } from "../domain/openai.js"
import type { RelayEvent } from "../domain/route.js"

/**
 * OpenAI's streaming formats, written as string templates: the relay formats every token, so the
 * constant part of each chunk is built once per request and only the token is JSON-escaped.
 * Chat chunks carry `delta.content` (with `logprobs.content` when the request asked for them) or
 * `delta.tool_calls` (one delta per chunk, as OpenAI streams them); legacy completion chunks carry
 * `text` and, asked for, `logprobs` in their own shape (`tokens`, `token_logprobs`, `top_logprobs`,
 * `text_offset`). `system_fingerprint`, known at the end, is on the finish and usage chunks.
 */
export interface SseFormat {
  /** Sent before the first token of a text answer (the chat format's role chunk), or "". */
  readonly head: string
  /** Sent before the first delta of an answer that is a tool call (`content: null`), or "". */
  readonly toolHead: string
  /** One chunk of text; `logprobs`: its entries (chat shape) when the request asked for them. */
  readonly token: (text: string, logprobs?: ReadonlyArray<TokenLogprob>) => string
  /** One chunk of one tool-call delta. */
  readonly toolCall: (delta: ToolCallDelta) => string
  /** The last events: the finish chunk, the usage chunk when asked for, and `[DONE]`. */
  readonly end: (finishReason: FinishReason, usage: Usage, systemFingerprint?: string) => string
}

export const DONE = "data: [DONE]\n\n"

const usageJson = (u: Usage) =>
  `{"prompt_tokens":${u.promptTokens},"completion_tokens":${u.completionTokens},"total_tokens":${u.promptTokens + u.completionTokens}}`

export interface StreamIdentity {
  readonly id: string
  readonly created: number
  readonly model: string
  readonly includeUsage: boolean
  /** Legacy completions: where the answer's text starts (the prompt's length; 0 with `echo`), for `text_offset`. */
  readonly textOffset?: number
}

const fingerprintJson = (systemFingerprint: string | undefined) =>
  systemFingerprint === undefined ? "" : `,"system_fingerprint":${JSON.stringify(systemFingerprint)}`

/**
 * A string V8 holds as one flat run of characters. A template literal with a long result is a
 * *cons string*, a tree of its pieces; every stream keeps its frame for its whole life, and as
 * trees they held 1.2 KB per stream (`npm run bench -- --scenario held`) instead of their 0.3 KB
 * of text. `Array.prototype.join` of several pieces always allocates a flat string.
 */
const flat = (...pieces: ReadonlyArray<string>): string => pieces.join("")

/**
 * What every chunk of one stream shares, built once per request, flat: the opening up to the
 * choice (`open`, then `prefix` with the choice's index) and its close (`suffix`). The formats
 * are classes, so that a stream holds these strings and no closure of its own.
 */
abstract class StreamFrame {
  protected readonly open: string
  protected readonly prefix: string
  protected readonly suffix: string
  private readonly includeUsage: boolean

  constructor(object: string, { id, created, model, includeUsage }: StreamIdentity) {
    this.open = flat('data: {"id":', JSON.stringify(id), ',"object":"', object, '","created":', String(created), ',"model":', JSON.stringify(model), ',"choices":[')
    this.prefix = flat(this.open, '{"index":0,')
    this.suffix = includeUsage ? `],"usage":null}\n\n` : `]}\n\n`
    this.includeUsage = includeUsage
  }

  /** The format's empty piece before `finish_reason` in the finish chunk. */
  protected abstract readonly finishBody: string

  end(finishReason: FinishReason, usage: Usage, systemFingerprint?: string): string {
    const fingerprint = fingerprintJson(systemFingerprint)
    const finish = `${this.prefix}${this.finishBody}"finish_reason":"${finishReason}"}]`
    return this.includeUsage
      ? `${finish},"usage":null${fingerprint}}\n\n${this.open}],"usage":${usageJson(usage)}${fingerprint}}\n\n${DONE}`
      : `${finish}${fingerprint}}\n\n${DONE}`
  }
}

class ChatFormat extends StreamFrame implements SseFormat {
  protected readonly finishBody = `"delta":{},`

  constructor(identity: StreamIdentity) {
    super("chat.completion.chunk", identity)
  }

  get head(): string {
    return `${this.prefix}"delta":{"role":"assistant","content":""},"finish_reason":null}${this.suffix}`
  }

  get toolHead(): string {
    return `${this.prefix}"delta":{"role":"assistant","content":null},"finish_reason":null}${this.suffix}`
  }

  token(text: string, logprobs?: ReadonlyArray<TokenLogprob>): string {
    return logprobs === undefined
      ? `${this.prefix}"delta":{"content":${JSON.stringify(text)}},"finish_reason":null}${this.suffix}`
      : `${this.prefix}"delta":{"content":${JSON.stringify(text)}},"logprobs":{"content":${JSON.stringify(logprobs)}},"finish_reason":null}${this.suffix}`
  }

  toolCall(delta: ToolCallDelta): string {
    return `${this.prefix}"delta":{"tool_calls":[${JSON.stringify(delta)}]},"finish_reason":null}${this.suffix}`
  }
}

export const chatFormat = (identity: StreamIdentity): SseFormat => new ChatFormat(identity)

/**
 * Chat logprob entries in the legacy completions shape; `offset` is where the first entry's text
 * starts. Returns the shape and the offset after the last entry.
 */
export const completionLogprobs = (entries: ReadonlyArray<TokenLogprob>, offset: number): readonly [CompletionLogprobs, number] => {
  const tokens: Array<string> = []
  const tokenLogprobs: Array<number> = []
  const top: Array<Record<string, number>> = []
  const textOffset: Array<number> = []
  let at = offset
  for (const entry of entries) {
    tokens.push(entry.token)
    tokenLogprobs.push(entry.logprob)
    const alternatives: Record<string, number> = {}
    for (const t of entry.top_logprobs) alternatives[t.token] = t.logprob
    top.push(alternatives)
    textOffset.push(at)
    at += entry.token.length
  }
  return [{ tokens, token_logprobs: tokenLogprobs, top_logprobs: top, text_offset: textOffset }, at]
}

class CompletionFormat extends StreamFrame implements SseFormat {
  protected readonly finishBody = `"text":"","logprobs":null,`
  readonly head = ""
  readonly toolHead = ""
  /** Where the next token's text starts in the answer, for `text_offset`. */
  private offset: number

  constructor(identity: StreamIdentity) {
    super("text_completion", identity)
    this.offset = identity.textOffset ?? 0
  }

  token(text: string, logprobs?: ReadonlyArray<TokenLogprob>): string {
    if (logprobs === undefined) return `${this.prefix}"text":${JSON.stringify(text)},"logprobs":null,"finish_reason":null}${this.suffix}`
    const [shape, next] = completionLogprobs(logprobs, this.offset)
    this.offset = next
    return `${this.prefix}"text":${JSON.stringify(text)},"logprobs":${JSON.stringify(shape)},"finish_reason":null}${this.suffix}`
  }

  /** The legacy route has no tool calls. */
  toolCall(): string {
    return ""
  }
}

export const completionFormat = (identity: StreamIdentity): SseFormat => new CompletionFormat(identity)

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

/** What to send before the first event: the role chunk that fits the answer's kind. */
export const headFor = (format: SseFormat, first: RelayEvent): string => (first.type === "toolCalls" ? format.toolHead : format.head)

/**
 * One relayed event as SSE text: one chunk per token (or tool-call delta), so pieces that arrived
 * together share one socket write. Logprobs go with their token when there is one entry per token;
 * otherwise (an upstream chunk holds several tokens) all of them go with the first token.
 */
export const encodeEvent = (format: SseFormat, event: RelayEvent): string => {
  switch (event.type) {
    case "done":
      return withMigrations(format.end(event.finishReason, event.usage, event.systemFingerprint), event.migrations)
    case "toolCalls": {
      let out = ""
      for (const delta of event.deltas) out += format.toolCall(delta)
      return out
    }
    case "tokens": {
      const { tokens, logprobs } = event
      let out = ""
      if (logprobs === undefined) {
        for (const token of tokens) out += format.token(token)
        return out
      }
      const each = logprobs.length === tokens.length
      for (let i = 0; i < tokens.length; i++) {
        const entries = each ? logprobs.slice(i, i + 1) : i === 0 ? logprobs : []
        out += format.token(tokens[i] ?? "", entries)
      }
      return out
    }
  }
}
