import * as HttpClient from "@effect/platform/HttpClient"
import * as HttpClientRequest from "@effect/platform/HttpClientRequest"
import { Effect, Either, Layer, Option, Redacted, Schema, Stream } from "effect"
import { ClusterConfigService } from "../../config/cluster-config.js"
import { formatIssue, guardedDecoder, parseJson } from "../../domain/decode.js"
import { isJsonObject, type JsonObject } from "../../domain/json.js"
import type { ContinuationKind } from "../../domain/continuation.js"
import { DEFAULT_OPENAI_FEATURES, type Feature } from "../../domain/features.js"
import { countPromptTokens, type FinishReason, type InferenceRequest, type TokenLogprob, type ToolCallDelta, type TopLogprob, type Usage } from "../../domain/inference.js"
import {
  type EmitToolCalls,
  type EmitTokens,
  EngineError,
  type Finish,
  finish,
  InferenceEngine,
  type InferenceEngineService
} from "./inference-engine.js"

/**
 * The `openai` engine: any OpenAI-compatible server, asked for a stream (`stream: true`) and read as
 * server-sent events (`data: {...}` lines ending in `data: [DONE]`).
 *
 * - Route: what the client called (issue 12). `/v1/completions` requests (`endpoint:
 *   "completions"`) go to `{base_url}/completions` with the raw `prompt` (no chat template);
 *   everything else to `{base_url}/chat/completions`, a bare prompt (WebSocket, RPC) as one user
 *   message.
 * - Body: every field the client sent (`params`: tools, tool_choice, response_format, logprobs,
 *   seed, penalties, logit_bias, user, suffix, echo, …) unchanged, the messages as the client sent
 *   them, then `max_tokens` (unless the client spelled it `max_completion_tokens`, which travels as
 *   is), `temperature`, `top_p`, `stop`, `stream: true` and `stream_options.include_usage`. No
 *   `max_tokens` when the client gave none: the server's own limit applies.
 * - Model sent upstream: `engine.openai.model`, else the cluster's model name (mlx-lm omits it:
 *   `mlx_lm.server` then uses the model it was started with).
 * - Answer: each chunk's `delta.content` (or `text`) is one token piece, with the chunk's
 *   `logprobs` (chat: `content` entries; completions: `tokens`/`token_logprobs`/`top_logprobs`,
 *   turned into chat entries); `delta.tool_calls` are passed on as tool-call deltas;
 *   `finish_reason` `stop`, `length`, `tool_calls` (also the legacy `function_call`) and
 *   `content_filter` are kept, any other is `stop`; the last `system_fingerprint` seen is kept.
 *   Usage comes from the chunk that carries it, else prompt words and received pieces are counted.
 * - Failures become an `EngineError`. The server refusing the request itself (400, 413, 422) keeps
 *   its status, message, code, type and param: the client sees them, no other worker is tried.
 *   Other non-2xx answers (`upstream_error`: 401/403 is this worker's key, 404 its route or model
 *   name, 408/429/5xx its load) are this worker's problem: another worker may serve the request.
 *   No connection (`upstream_unreachable`), a stream that ends or breaks before `[DONE]` and
 *   before any finish reason (`upstream_disconnected`), a data line that is not a chunk
 *   (`upstream_malformed`), an `error` object in the stream (`upstream_error`).
 * - Interrupting the stream aborts the upstream HTTP request.
 * - Continuation (issue 13): a legacy completion continues exactly with the raw prompt followed by
 *   the answer so far, so an engine whose upstream serves `/v1/completions` continues those
 *   always. A chat continues only with `engine.openai.continue_chat`: the answer so far is sent as
 *   a final assistant message with `continue_final_message: true, add_generation_prompt: false`
 *   (vLLM, SGLang; llama.cpp's server continues such a message by itself). Without the setting the
 *   engine registers no chat continuation and refuses one (`continuation_unsupported`), because a
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

const WireToolCallDelta = Schema.Struct({
  index: Schema.optional(Schema.NullOr(Schema.Number)),
  id: Schema.optional(Schema.NullOr(Schema.String)),
  type: Schema.optional(Schema.NullOr(Schema.String)),
  function: Schema.optional(
    Schema.NullOr(Schema.Struct({ name: Schema.optional(Schema.NullOr(Schema.String)), arguments: Schema.optional(Schema.NullOr(Schema.String)) }))
  )
})

const Delta = Schema.Struct({
  content: Schema.optional(Schema.NullOr(Schema.String)),
  tool_calls: Schema.optional(Schema.NullOr(Schema.Array(WireToolCallDelta)))
})

const ChunkChoice = Schema.Struct({
  delta: Schema.optional(Schema.NullOr(Delta)),
  /** Legacy `/completions` chunks carry `text`. */
  text: Schema.optional(Schema.NullOr(Schema.String)),
  finish_reason: Schema.optional(Schema.NullOr(Schema.String)),
  /** Read leniently by `logprobsOf`: servers differ in what they put here. */
  logprobs: Schema.optional(Schema.Unknown)
})

const ChunkUsage = Schema.Struct({
  prompt_tokens: Schema.Number.pipe(Schema.int(), Schema.nonNegative()),
  completion_tokens: Schema.Number.pipe(Schema.int(), Schema.nonNegative())
})

/** One `chat.completion.chunk` or `text_completion` chunk (extra fields are ignored). */
export const ChatCompletionChunk = Schema.Struct({
  choices: Schema.optional(Schema.Array(ChunkChoice)),
  usage: Schema.optional(Schema.NullOr(ChunkUsage)),
  system_fingerprint: Schema.optional(Schema.NullOr(Schema.String)),
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
      /** The chunk's log probabilities (present only when it carried some). */
      readonly logprobs?: ReadonlyArray<TokenLogprob>
      /** The chunk's tool-call deltas (present only when it carried some). */
      readonly toolCalls?: ReadonlyArray<ToolCallDelta>
      readonly systemFingerprint?: string
    }
  | { readonly _tag: "UpstreamError"; readonly message: string }

const decodeChunkValue = guardedDecoder(ChatCompletionChunk)
const decodeChunk = (data: string) => Either.flatMap(parseJson(data), decodeChunkValue)

const errorText = (error: unknown): string => {
  if (typeof error === "string") return error
  if (typeof error === "object" && error !== null && "message" in error && typeof error.message === "string") {
    return error.message
  }
  return JSON.stringify(error)
}

const FINISH_REASONS: ReadonlyMap<string, FinishReason> = new Map([
  ["stop", "stop"],
  ["length", "length"],
  ["tool_calls", "tool_calls"],
  ["function_call", "tool_calls"],
  ["content_filter", "content_filter"]
])

const bytesOf = (entry: JsonObject): { readonly bytes?: ReadonlyArray<number> | null } =>
  entry["bytes"] === null
    ? { bytes: null }
    : Array.isArray(entry["bytes"]) && entry["bytes"].every((b) => typeof b === "number")
      ? { bytes: entry["bytes"] as ReadonlyArray<number> }
      : {}

/** An entry with a token and a numeric logprob (the rest read leniently): as a `TopLogprob`, else none. */
const topEntry = (u: unknown): Array<TopLogprob> =>
  isJsonObject(u) && typeof u["token"] === "string" && typeof u["logprob"] === "number"
    ? [{ token: u["token"], logprob: u["logprob"], ...bytesOf(u) }]
    : []

/**
 * A choice's `logprobs` as chat entries: the chat shape (`{ content: [...] }`) as it is; the legacy
 * completions shape (`tokens`, `token_logprobs`, `top_logprobs` as `{ token: logprob }` maps)
 * turned into it. Entries without a token or a numeric logprob are dropped.
 */
export const logprobsOf = (u: unknown): ReadonlyArray<TokenLogprob> => {
  if (!isJsonObject(u)) return []
  if (Array.isArray(u["content"])) {
    // A chat entry is a top-logprob entry plus its own alternatives.
    return u["content"].flatMap((entry): Array<TokenLogprob> =>
      topEntry(entry).map((head) => {
        const tops = (entry as JsonObject)["top_logprobs"]
        return { ...head, top_logprobs: Array.isArray(tops) ? tops.flatMap(topEntry) : [] }
      })
    )
  }
  const tokens = u["tokens"]
  if (!Array.isArray(tokens)) return []
  const values = Array.isArray(u["token_logprobs"]) ? u["token_logprobs"] : []
  const tops = Array.isArray(u["top_logprobs"]) ? u["top_logprobs"] : []
  return tokens.flatMap((token: unknown, i): Array<TokenLogprob> => {
    if (typeof token !== "string") return []
    const value: unknown = values[i]
    const top: unknown = tops[i]
    return [
      {
        token,
        // The first echoed token has none (`null`): 0 stands in for it.
        logprob: typeof value === "number" ? value : 0,
        top_logprobs: isJsonObject(top)
          ? Object.entries(top).flatMap(([t, lp]) => (typeof lp === "number" ? [{ token: t, logprob: lp }] : []))
          : []
      }
    ]
  })
}

const toolCallDelta = (d: typeof WireToolCallDelta.Type): ToolCallDelta => ({
  index: typeof d.index === "number" && Number.isInteger(d.index) && d.index >= 0 ? d.index : 0,
  ...(typeof d.id === "string" ? { id: d.id } : {}),
  ...(d.type === "function" ? { type: "function" as const } : {}),
  ...(d.function !== undefined && d.function !== null
    ? {
        function: {
          ...(typeof d.function.name === "string" ? { name: d.function.name } : {}),
          ...(typeof d.function.arguments === "string" ? { arguments: d.function.arguments } : {})
        }
      }
    : {})
})

/** Parses one line of an SSE body; `Left` is a malformed data line. */
export const parseSseLine = (line: string): Either.Either<SseLine, string> => {
  const trimmed = line.endsWith("\r") ? line.slice(0, -1) : line
  if (!trimmed.startsWith("data:")) return Either.right({ _tag: "Ignore" }) // comments, event:, id:, blank lines
  const data = trimmed.slice(5).trim()
  if (data.length === 0) return Either.right({ _tag: "Ignore" })
  if (data === "[DONE]") return Either.right({ _tag: "Done" })
  return Either.match(decodeChunk(data), {
    onLeft: (error) =>
      Either.left(`malformed SSE data ${JSON.stringify(data.slice(0, 120))}: ${formatIssue(error)}`),
    onRight: (chunk): Either.Either<SseLine, string> => {
      if (chunk.error !== undefined && chunk.error !== null) {
        return Either.right({ _tag: "UpstreamError", message: errorText(chunk.error) })
      }
      const texts: Array<string> = []
      const logprobs: Array<TokenLogprob> = []
      const toolCalls: Array<ToolCallDelta> = []
      let finishReason: FinishReason | undefined
      for (const choice of chunk.choices ?? []) {
        const text = choice.delta?.content ?? choice.text ?? ""
        if (text.length > 0) texts.push(text)
        for (const entry of logprobsOf(choice.logprobs)) logprobs.push(entry)
        for (const delta of choice.delta?.tool_calls ?? []) toolCalls.push(toolCallDelta(delta))
        if (choice.finish_reason !== undefined && choice.finish_reason !== null) {
          finishReason = FINISH_REASONS.get(choice.finish_reason) ?? "stop"
        }
      }
      const usage =
        chunk.usage !== undefined && chunk.usage !== null
          ? { promptTokens: chunk.usage.prompt_tokens, completionTokens: chunk.usage.completion_tokens }
          : undefined
      return Either.right({
        _tag: "Chunk",
        texts,
        finishReason,
        usage,
        ...(logprobs.length > 0 ? { logprobs } : {}),
        ...(toolCalls.length > 0 ? { toolCalls } : {}),
        ...(typeof chunk.system_fingerprint === "string" ? { systemFingerprint: chunk.system_fingerprint } : {})
      })
    }
  })
}

/** The route a request goes to upstream. */
export const upstreamEndpoint = (request: InferenceRequest): "chat/completions" | "completions" =>
  request.endpoint === "completions" ? "completions" : "chat/completions"

/**
 * The chat messages sent upstream. With a `continuation` (issue 13) the answer so far follows as a
 * final assistant message, and the body asks the server to continue it rather than to start a new turn.
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

/** The JSON body of the upstream request (see the module comment). */
export const chatCompletionBody = (request: InferenceRequest, model: string | undefined): Record<string, unknown> => {
  const params = request.params ?? {}
  const completions = upstreamEndpoint(request) === "completions"
  const spelledAsCompletionTokens = params["max_completion_tokens"] !== undefined
  return {
    ...params,
    ...(model !== undefined ? { model } : {}),
    ...(completions
      ? { prompt: (request.prompt ?? "") + (request.continuation?.text ?? "") }
      : { messages: upstreamMessages(request), ...(request.continuation === undefined ? {} : CONTINUE_FINAL_MESSAGE) }),
    ...(request.maxTokens !== undefined && !spelledAsCompletionTokens ? { max_tokens: request.maxTokens } : {}),
    ...(request.temperature !== undefined ? { temperature: request.temperature } : {}),
    ...(request.topP !== undefined ? { top_p: request.topP } : {}),
    ...(request.stop !== undefined && request.stop.length > 0 ? { stop: request.stop } : {}),
    stream: true,
    stream_options: { include_usage: true }
  }
}

const joinUrl = (base: string, path: string): string => `${base.replace(/\/+$/, "")}/${path}`

const MAX_ERROR_BODY = 500

/** Statuses with which a server refuses the request itself: the client's to see, pointless to retry elsewhere. */
export const CLIENT_ERROR_STATUSES: ReadonlySet<number> = new Set([400, 413, 422])

/** The engine error of a non-2xx answer with body `text` (see the module comment). */
export const upstreamFailure = (status: number, text: string): EngineError => {
  if (CLIENT_ERROR_STATUSES.has(status)) {
    const body = Either.getOrUndefined(parseJson(text))
    const error = isJsonObject(body) ? (isJsonObject(body["error"]) ? body["error"] : body) : {}
    const str = (u: unknown) => (typeof u === "string" && u.length > 0 ? u : undefined)
    const detail = error["detail"]
    const message =
      str(error["message"]) ??
      str(detail) ??
      (detail !== undefined ? JSON.stringify(detail).slice(0, MAX_ERROR_BODY) : undefined) ??
      (text.length > 0 ? text.slice(0, MAX_ERROR_BODY) : `upstream answered ${status}`)
    const errorType = str(error["type"])
    const param = str(error["param"])
    return new EngineError({
      code: str(error["code"]) ?? "upstream_rejected",
      message,
      status,
      ...(errorType === undefined ? {} : { errorType }),
      ...(param === undefined ? {} : { param })
    })
  }
  return new EngineError({
    code: "upstream_error",
    message: `upstream answered ${status}${text.length > 0 ? `: ${text.slice(0, MAX_ERROR_BODY)}` : ""}`
  })
}

/** The state of one upstream stream as its lines are read. */
interface UpstreamState {
  pieces: number
  finishReason: FinishReason | undefined
  usage: Usage | undefined
  systemFingerprint: string | undefined
  done: boolean
}

/** Where the pieces of one network read go, in order: text (with logprobs) and tool-call deltas in runs. */
interface ReadOutput {
  readonly emit: EmitTokens
  readonly emitToolCalls: EmitToolCalls
}

/**
 * Passes on the pieces of one batch of SSE lines (as one network read brought them) — the texts of
 * a run of chunks together (a chunk with logprobs alone, so that its entries stay with its text),
 * the tool-call deltas of a run together — or returns the engine error one of them means. Updates `state` with the finish reason, usage, fingerprint and `[DONE]`.
 */
const readLines = (lines: Iterable<string>, state: UpstreamState, out: ReadOutput): EngineError | undefined => {
  let texts: Array<string> = []
  let deltas: Array<ToolCallDelta> = []
  const flushTexts = () => {
    if (texts.length === 0) return
    out.emit(texts)
    state.pieces += texts.length
    texts = []
  }
  const flushDeltas = () => {
    if (deltas.length === 0) return
    out.emitToolCalls(deltas)
    state.pieces += deltas.length
    deltas = []
  }
  for (const line of lines) {
    if (state.done) break
    const parsed = parseSseLine(line)
    if (Either.isLeft(parsed)) {
      flushTexts()
      flushDeltas()
      return new EngineError({ code: "upstream_malformed", message: parsed.left })
    }
    switch (parsed.right._tag) {
      case "Ignore":
        break
      case "Done":
        state.done = true
        break
      case "UpstreamError":
        flushTexts()
        flushDeltas()
        return new EngineError({ code: "upstream_error", message: parsed.right.message })
      case "Chunk": {
        const chunk = parsed.right
        if (chunk.finishReason !== undefined) state.finishReason = chunk.finishReason
        if (chunk.usage !== undefined) state.usage = chunk.usage
        if (chunk.systemFingerprint !== undefined) state.systemFingerprint = chunk.systemFingerprint
        if (chunk.texts.length > 0 && chunk.logprobs !== undefined) {
          // A chunk with logprobs is a message of its own: its entries stay with its text.
          flushDeltas()
          flushTexts()
          out.emit(chunk.texts, chunk.logprobs)
          state.pieces += chunk.texts.length
        } else if (chunk.texts.length > 0) {
          flushDeltas()
          for (const text of chunk.texts) texts.push(text)
        }
        if (chunk.toolCalls !== undefined) {
          flushTexts()
          for (const delta of chunk.toolCalls) deltas.push(delta)
        }
      }
    }
  }
  flushTexts()
  flushDeltas()
  return undefined
}

/**
 * Streams one completion from an OpenAI-compatible server (the route the client called), passing
 * the pieces of each network read on together: per read, not per token, is the unit of work.
 */
export const streamChatCompletion = (
  client: HttpClient.HttpClient,
  target: OpenAiTarget,
  request: InferenceRequest,
  emit: EmitTokens,
  emitToolCalls: EmitToolCalls
): Effect.Effect<Finish, EngineError> =>
  Effect.suspend(() => {
    const continuation = request.continuation
    if (continuation !== undefined && upstreamEndpoint(request) === "chat/completions" && target.continueChat !== true) {
      // Guard: controllers only send continuations to workers that registered the capability.
      return Effect.fail(
        new EngineError({ code: "continuation_unsupported", message: "this engine's upstream does not continue a chat (engine.openai.continue_chat is off)" })
      )
    }
    const url = joinUrl(target.baseUrl, upstreamEndpoint(request))
    let httpRequest = HttpClientRequest.post(url).pipe(
      HttpClientRequest.setHeader("accept", "text/event-stream"),
      HttpClientRequest.bodyUnsafeJson(chatCompletionBody(request, target.model(request)))
    )
    if (target.apiKey !== undefined) {
      httpRequest = HttpClientRequest.bearerToken(httpRequest, Redacted.value(target.apiKey))
    }
    const state: UpstreamState = { pieces: 0, finishReason: undefined, usage: undefined, systemFingerprint: undefined, done: false }
    const out: ReadOutput = { emit, emitToolCalls }

    const response = client.execute(httpRequest).pipe(
      Effect.mapError(
        (cause) => new EngineError({ code: "upstream_unreachable", message: `cannot reach ${url}: ${cause.message}`, cause })
      ),
      Effect.flatMap((res) =>
        res.status >= 200 && res.status < 300
          ? Effect.succeed(res)
          : res.text.pipe(
              Effect.orElseSucceed(() => ""),
              Effect.flatMap((text) => Effect.fail(upstreamFailure(res.status, text)))
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
      Stream.runForEachChunk((lines) => {
        const failed = readLines(lines, state, out)
        return failed === undefined ? Effect.void : Effect.fail(failed)
      })
    )

    return Effect.zipRight(
      read,
      Effect.suspend(() =>
        state.done || state.finishReason !== undefined
          ? Effect.succeed(
              finish(
                state.finishReason ?? "stop",
                withoutContinuation(state.usage, continuation) ?? { promptTokens: countPromptTokens(request), completionTokens: state.pieces },
                state.systemFingerprint
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

/**
 * What the engine can continue: legacy completions when its upstream serves `/v1/completions`
 * (the `completions` feature), chats only with `continue_chat`.
 */
export const openAiContinuation = (continueChat: boolean, features: ReadonlyArray<Feature>): ReadonlyArray<ContinuationKind> => [
  ...(continueChat ? (["chat"] as const) : []),
  ...(features.includes("completions") ? (["completions"] as const) : [])
]

/** An engine talking to one OpenAI-compatible server. */
export const makeOpenAiEngine = (target: OpenAiTarget, type = "openai", features: ReadonlyArray<Feature> = DEFAULT_OPENAI_FEATURES) =>
  Effect.map(
    HttpClient.HttpClient,
    (client): InferenceEngineService => ({
      type,
      features,
      continuation: openAiContinuation(target.continueChat === true, features),
      generate: (request, _modelPath, emit, emitToolCalls) => streamChatCompletion(client, target, request, emit, emitToolCalls)
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
      yield* Effect.logInfo(`inference engine: openai-compatible server at ${openai.baseUrl} (honours: ${openai.features.join(", ") || "plain generation only"})`)
      return yield* makeOpenAiEngine(
        {
          baseUrl: openai.baseUrl,
          apiKey: openai.apiKey,
          model: (request) => Option.getOrElse(fixedModel, () => request.model),
          continueChat: openai.continueChat
        },
        "openai",
        openai.features
      )
    })
  )
