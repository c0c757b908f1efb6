import { HttpClient, HttpClientRequest } from "@effect/platform"
import { Effect, Either, Layer, Option, ParseResult, Redacted, Schema, Stream } from "effect"
import { ClusterConfigService } from "../../config/cluster-config.js"
import type { ContinuationKind } from "../../domain/continuation.js"
import type { FinishReason, InferenceRequest, Usage } from "../../domain/inference.js"
import {
  countPromptTokens,
  type EmitTokens,
  EngineError,
  type Finish,
  finish,
  InferenceEngine,
  type InferenceEngineService
} from "./inference-engine.js"

/**
 * The `openai` engine: any OpenAI-compatible server. `POST {base_url}/chat/completions` with
 * `stream: true`, read as server-sent events (`data: {...}` lines ending in `data: [DONE]`).
 *
 * - Model sent upstream: `engine.openai.model`, else the cluster's model name (mlx-lm omits it:
 *   `mlx_lm.server` then uses the model it was started with).
 * - A prompt is sent as one user message. `stream_options.include_usage` is asked for; usage comes
 *   from the chunk that carries it, else prompt words and received pieces are counted.
 * - Every content delta is one token piece. `finish_reason: "length"` → length, any other → stop.
 * - Failures become an `EngineError`: non-2xx (`upstream_error`, with the status and the start of
 *   the body), no connection (`upstream_unreachable`), a stream that ends or breaks before
 *   `[DONE]` and before any finish reason (`upstream_disconnected`), a data line that is not a chunk
 *   (`upstream_malformed`), an `error` object in the stream (`upstream_error`).
 * - Interrupting the stream aborts the upstream HTTP request.
 * - Continuation (issue 13), with `engine.openai.continue_chat`: the answer so far is sent as a
 *   final assistant message with `continue_final_message: true, add_generation_prompt: false`
 *   (vLLM, SGLang; llama.cpp's server continues such a message by itself). A prompt request goes
 *   upstream as a chat too, so it continues the same way. Without the setting the engine registers
 *   no continuation capability and refuses a continuation (`continuation_unsupported`), because a
 *   server that does not continue would answer with a new turn.
 */

export interface OpenAiTarget {
  /** e.g. `http://127.0.0.1:8000/v1` (a trailing `/` is fine). */
  readonly baseUrl: string
  readonly apiKey?: Redacted.Redacted<string> | undefined
  /** The `model` field sent upstream; `undefined` omits the field. */
  readonly model: (request: InferenceRequest) => string | undefined
  /** The upstream continues a final assistant message (`engine.openai.continue_chat`, issue 13). */
  readonly continueChat?: boolean
}

const Delta = Schema.Struct({ content: Schema.optional(Schema.NullOr(Schema.String)) })

const ChunkChoice = Schema.Struct({
  delta: Schema.optional(Schema.NullOr(Delta)),
  /** Legacy `/completions` chunks carry `text`. */
  text: Schema.optional(Schema.NullOr(Schema.String)),
  finish_reason: Schema.optional(Schema.NullOr(Schema.String))
})

const ChunkUsage = Schema.Struct({
  prompt_tokens: Schema.Number.pipe(Schema.int(), Schema.nonNegative()),
  completion_tokens: Schema.Number.pipe(Schema.int(), Schema.nonNegative())
})

/** One `chat.completion.chunk` (extra fields are ignored). */
export const ChatCompletionChunk = Schema.Struct({
  choices: Schema.optional(Schema.Array(ChunkChoice)),
  usage: Schema.optional(Schema.NullOr(ChunkUsage)),
  error: Schema.optional(Schema.Unknown)
})

/** What one SSE line means. */
export type SseLine =
  | { readonly _tag: "Ignore" }
  | { readonly _tag: "Done" }
  | {
      readonly _tag: "Chunk"
      readonly texts: ReadonlyArray<string>
      readonly finishReason: FinishReason | undefined
      readonly usage: Usage | undefined
    }
  | { readonly _tag: "UpstreamError"; readonly message: string }

const decodeChunk = Schema.decodeUnknownEither(Schema.parseJson(ChatCompletionChunk))

const errorText = (error: unknown): string => {
  if (typeof error === "string") return error
  if (typeof error === "object" && error !== null && "message" in error && typeof error.message === "string") {
    return error.message
  }
  return JSON.stringify(error)
}

/** Parses one line of an SSE body; `Left` is a malformed data line. */
export const parseSseLine = (line: string): Either.Either<SseLine, string> => {
  const trimmed = line.endsWith("\r") ? line.slice(0, -1) : line
  if (!trimmed.startsWith("data:")) return Either.right({ _tag: "Ignore" }) // comments, event:, id:, blank lines
  const data = trimmed.slice(5).trim()
  if (data.length === 0) return Either.right({ _tag: "Ignore" })
  if (data === "[DONE]") return Either.right({ _tag: "Done" })
  return Either.match(decodeChunk(data), {
    onLeft: (error) =>
      Either.left(`malformed SSE data ${JSON.stringify(data.slice(0, 120))}: ${ParseResult.TreeFormatter.formatErrorSync(error)}`),
    onRight: (chunk): Either.Either<SseLine, string> => {
      if (chunk.error !== undefined && chunk.error !== null) {
        return Either.right({ _tag: "UpstreamError", message: errorText(chunk.error) })
      }
      const texts: Array<string> = []
      let finishReason: FinishReason | undefined
      for (const choice of chunk.choices ?? []) {
        const text = choice.delta?.content ?? choice.text ?? ""
        if (text.length > 0) texts.push(text)
        if (choice.finish_reason !== undefined && choice.finish_reason !== null) {
          finishReason = choice.finish_reason === "length" ? "length" : "stop"
        }
      }
      const usage =
        chunk.usage !== undefined && chunk.usage !== null
          ? { promptTokens: chunk.usage.prompt_tokens, completionTokens: chunk.usage.completion_tokens }
          : undefined
      return Either.right({ _tag: "Chunk", texts, finishReason, usage })
    }
  })
}

/**
 * The messages sent upstream. With a `continuation` (issue 13) the answer so far follows as a final
 * assistant message, and the body asks the server to continue it rather than to start a new turn.
 */
const upstreamMessages = (request: InferenceRequest): ReadonlyArray<unknown> => {
  const messages = request.messages ?? [{ role: "user", content: request.prompt ?? "" }]
  return request.continuation === undefined ? messages : [...messages, { role: "assistant", content: request.continuation.text }]
}

/**
 * How a server is asked to continue the final assistant message: vLLM's and SGLang's
 * `continue_final_message` with `add_generation_prompt: false` (both needed there); llama.cpp's
 * server continues a final assistant message by itself and ignores the fields.
 */
export const CONTINUE_FINAL_MESSAGE = { continue_final_message: true, add_generation_prompt: false } as const

/** The JSON body of the upstream request. */
export const chatCompletionBody = (request: InferenceRequest, model: string | undefined): Record<string, unknown> => ({
  ...(model !== undefined ? { model } : {}),
  messages: upstreamMessages(request),
  ...(request.continuation === undefined ? {} : CONTINUE_FINAL_MESSAGE),
  max_tokens: request.maxTokens,
  stream: true,
  stream_options: { include_usage: true },
  ...(request.temperature !== undefined ? { temperature: request.temperature } : {}),
  ...(request.topP !== undefined ? { top_p: request.topP } : {}),
  ...(request.stop !== undefined && request.stop.length > 0 ? { stop: request.stop } : {})
})

const joinUrl = (base: string, path: string): string => `${base.replace(/\/+$/, "")}/${path}`

const MAX_ERROR_BODY = 500

/** The state of one upstream stream as its lines are read. */
interface UpstreamState {
  tokens: number
  finishReason: FinishReason | undefined
  usage: Usage | undefined
  done: boolean
}

/**
 * The texts of one batch of SSE lines (as one network read brought them), or the engine error one
 * of them means. Updates `state` with the finish reason, usage and `[DONE]`.
 */
const readLines = (lines: Iterable<string>, state: UpstreamState): Either.Either<ReadonlyArray<string>, EngineError> => {
  const texts: Array<string> = []
  for (const line of lines) {
    if (state.done) break
    const parsed = parseSseLine(line)
    if (Either.isLeft(parsed)) return Either.left(new EngineError({ code: "upstream_malformed", message: parsed.left }))
    switch (parsed.right._tag) {
      case "Ignore":
        break
      case "Done":
        state.done = true
        break
      case "UpstreamError":
        return Either.left(new EngineError({ code: "upstream_error", message: parsed.right.message }))
      case "Chunk": {
        const chunk = parsed.right
        if (chunk.finishReason !== undefined) state.finishReason = chunk.finishReason
        if (chunk.usage !== undefined) state.usage = chunk.usage
        for (const text of chunk.texts) texts.push(text)
      }
    }
  }
  state.tokens += texts.length
  return Either.right(texts)
}

/**
 * Streams one chat completion from an OpenAI-compatible server, passing the tokens of each network
 * read to `emit` together: per read, not per token, is the unit of work.
 */
export const streamChatCompletion = (
  client: HttpClient.HttpClient,
  target: OpenAiTarget,
  request: InferenceRequest,
  emit: EmitTokens
): Effect.Effect<Finish, EngineError> =>
  Effect.suspend(() => {
    const continuation = request.continuation
    if (continuation !== undefined && target.continueChat !== true) {
      // Guard: controllers only send continuations to workers that registered the capability.
      return Effect.fail(
        new EngineError({ code: "continuation_unsupported", message: "this engine's upstream does not continue an answer (engine.openai.continue_chat is off)" })
      )
    }
    const url = joinUrl(target.baseUrl, "chat/completions")
    let httpRequest = HttpClientRequest.post(url).pipe(
      HttpClientRequest.setHeader("accept", "text/event-stream"),
      HttpClientRequest.bodyUnsafeJson(chatCompletionBody(request, target.model(request)))
    )
    if (target.apiKey !== undefined) {
      httpRequest = HttpClientRequest.bearerToken(httpRequest, Redacted.value(target.apiKey))
    }
    const state: UpstreamState = { tokens: 0, finishReason: undefined, usage: undefined, done: false }

    const response = client.execute(httpRequest).pipe(
      Effect.mapError(
        (cause) => new EngineError({ code: "upstream_unreachable", message: `cannot reach ${url}: ${cause.message}`, cause })
      ),
      Effect.flatMap((res) =>
        res.status >= 200 && res.status < 300
          ? Effect.succeed(res)
          : res.text.pipe(
              Effect.orElseSucceed(() => ""),
              Effect.flatMap((text) =>
                Effect.fail(
                  new EngineError({
                    code: "upstream_error",
                    message: `upstream answered ${res.status}${text.length > 0 ? `: ${text.slice(0, MAX_ERROR_BODY)}` : ""}`
                  })
                )
              )
            )
      )
    )

    const read = Stream.unwrap(Effect.map(response, (res) => res.stream)).pipe(
      Stream.catchTag("ResponseError", (cause) =>
        Stream.fail(new EngineError({ code: "upstream_disconnected", message: `upstream stream broke: ${cause.message}`, cause }))
      ),
      Stream.decodeText(),
      Stream.splitLines,
      Stream.takeUntil(() => state.done),
      Stream.runForEachChunk((lines) =>
        Either.match(readLines(lines, state), {
          onLeft: Effect.fail,
          onRight: (texts) => {
            if (texts.length > 0) emit(texts)
            return Effect.void
          }
        })
      )
    )

    return Effect.zipRight(
      read,
      Effect.suspend(() =>
        state.done || state.finishReason !== undefined
          ? Effect.succeed(
              finish(
                state.finishReason ?? "stop",
                withoutContinuation(state.usage, continuation) ?? { promptTokens: countPromptTokens(request), completionTokens: state.tokens }
              )
            )
          : Effect.fail(new EngineError({ code: "upstream_disconnected", message: "upstream stream ended before [DONE]" }))
      )
    )
  })

/**
 * The upstream's usage of a continued request as the cluster reports it (issue 13): the
 * continuation text was prompt upstream, but is answer to the client, so its tokens leave the
 * prompt count (the controller adds them to the completion tokens). Each streamed piece is about
 * one token, so this is exact up to how the upstream tokenizes the joined text.
 */
export const withoutContinuation = (usage: Usage | undefined, continuation: InferenceRequest["continuation"]): Usage | undefined =>
  usage === undefined || continuation === undefined
    ? usage
    : { promptTokens: Math.max(0, usage.promptTokens - continuation.completionTokens), completionTokens: usage.completionTokens }

/** What an engine with `continueChat` set can continue: today both kinds go upstream as a chat. */
export const openAiContinuation = (continueChat: boolean): ReadonlyArray<ContinuationKind> =>
  continueChat ? ["chat", "completions"] : []

/** An engine talking to one OpenAI-compatible server. */
export const makeOpenAiEngine = (target: OpenAiTarget, type = "openai") =>
  Effect.map(
    HttpClient.HttpClient,
    (client): InferenceEngineService => ({
      type,
      continuation: openAiContinuation(target.continueChat === true),
      generate: (request, _modelPath, emit) => streamChatCompletion(client, target, request, emit)
    })
  )

/** The openai engine with `worker.engine.openai` from the config. */
export const OpenAiEngineLive: Layer.Layer<InferenceEngine, never, ClusterConfigService | HttpClient.HttpClient> =
  Layer.effect(
    InferenceEngine,
    Effect.gen(function* () {
      const config = yield* ClusterConfigService
      const openai = config.worker.engine.openai
      const fixedModel = Option.fromNullable(openai.model)
      yield* Effect.logInfo(`inference engine: openai-compatible server at ${openai.baseUrl}`)
      return yield* makeOpenAiEngine({
        baseUrl: openai.baseUrl,
        apiKey: openai.apiKey,
        model: (request) => Option.getOrElse(fixedModel, () => request.model),
        continueChat: openai.continueChat
      })
    })
  )
