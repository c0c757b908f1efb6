import { HttpApiBuilder, HttpServerRequest, HttpServerResponse } from "@effect/platform"
import { HttpIncomingMessage } from "@effect/platform"
import { FileSystem } from "@effect/platform"
import { Chunk, Clock, Effect, Either, Exit, FiberId, Option, Scope, Stream } from "effect"
import { randomUUID } from "node:crypto"
import { ClusterConfigService } from "../config/cluster-config.js"
import { Registry } from "../controller/registry.js"
import { type RelayEvent, Router, type RouteRequest } from "../controller/router.js"
import { ClusterApi } from "../domain/api.js"
import { BodyTooLarge, type InferenceError, WorkerFailed } from "../domain/errors.js"
import {
  type ChatCompletion,
  ChatCompletionRequest,
  type Completion,
  CompletionRequest,
  type ModelList
} from "../domain/openai.js"
import { errorResponse, sseErrorEvent } from "./error-response.js"
import {
  chatToRoute,
  checkContentLength,
  completionToRoute,
  decodeBody,
  parseJson
} from "./openai-request.js"
import type { TokenLimits } from "./route-request.js"
import { chatFormat, completionFormat, encodeEvents, type SseFormat, type StreamIdentity } from "./sse.js"

const encoder = new TextEncoder()

const SSE_HEADERS = { "cache-control": "no-cache", "x-accel-buffering": "no" }

/**
 * Streams `events` as SSE. The first chunk is awaited before the response starts, so a request that
 * fails before its first token (no worker, timeout) gets a real HTTP error status; afterwards a
 * failure becomes one SSE error event and no `[DONE]`. The Router's stream lives in a scope of its
 * own that closes with the body: a client that goes away interrupts it, which cancels the worker.
 */
export const sseResponse = (events: Stream.Stream<RelayEvent, InferenceError>, format: SseFormat) =>
  Effect.gen(function* () {
    const scope = yield* Scope.make()
    const pull = yield* Scope.extend(Stream.toPull(events), scope)
    const first = yield* Effect.either(pull).pipe(Effect.onInterrupt(() => Scope.close(scope, Exit.interrupt(FiberId.none))))
    if (Either.isLeft(first)) {
      const error = Option.getOrElse(
        first.left,
        () => new WorkerFailed({ workerId: "", code: "empty_stream", message: "the worker ended without a result" })
      )
      yield* Scope.close(scope, Exit.fail(error))
      return errorResponse(error)
    }
    // After the first chunk, one stage: each pull writes every event that is waiting as one chunk.
    let pending: string | undefined = format.head + encodeEvents(format, first.right)
    let ended: Exit.Exit<void, InferenceError> | undefined
    const next: Effect.Effect<Chunk.Chunk<Uint8Array>, Option.Option<never>> = Effect.suspend(() => {
      if (pending !== undefined) {
        const text = pending
        pending = undefined
        return Effect.succeed(Chunk.of(encoder.encode(text)))
      }
      if (ended !== undefined) return Effect.fail(Option.none())
      return pull.pipe(
        Effect.map((events) => Chunk.of(encoder.encode(encodeEvents(format, events)))),
        Effect.catchAll((end) => {
          if (Option.isNone(end)) {
            ended = Exit.void
            return Effect.fail(Option.none())
          }
          ended = Exit.fail(end.value)
          return Effect.succeed(Chunk.of(encoder.encode(sseErrorEvent(end.value))))
        })
      )
    })
    const body = Stream.repeatEffectChunkOption(next).pipe(
      // Closing with the right exit tells the Router whether the client left (a cancel) or it ended.
      Stream.ensuringWith((exit) => Scope.close(scope, ended ?? (Exit.isFailure(exit) ? exit : Exit.void)))
    )
    return HttpServerResponse.stream(body, { contentType: "text/event-stream", headers: SSE_HEADERS })
  })

/** Reads and decodes a JSON body with the body limit; every failure is a wire error. */
const readBody = <A>(decode: (json: unknown) => Effect.Effect<A, InferenceError>, limitBytes: number) =>
  Effect.gen(function* () {
    const request = yield* HttpServerRequest.HttpServerRequest
    yield* checkContentLength(request.headers["content-length"], limitBytes)
    const text = yield* request.text.pipe(
      Effect.provideService(HttpIncomingMessage.MaxBodySize, Option.some(FileSystem.Size(limitBytes))),
      Effect.mapError(() => new BodyTooLarge({ limitBytes }))
    )
    return yield* Effect.flatMap(parseJson(text), decode)
  })

const includeUsage = (body: { readonly stream_options?: { readonly include_usage?: boolean | null | undefined } | null | undefined }) =>
  body.stream_options?.include_usage === true

const usageOf = (u: { promptTokens: number; completionTokens: number }) => ({
  prompt_tokens: u.promptTokens,
  completion_tokens: u.completionTokens,
  total_tokens: u.promptTokens + u.completionTokens
})

/** The OpenAI group: thin handlers that decode, call the Router, encode. */
export const OpenAiHandlersLive = HttpApiBuilder.group(ClusterApi, "openai", (handlers) =>
  Effect.gen(function* () {
    const router = yield* Router
    const registry = yield* Registry
    const config = yield* ClusterConfigService
    const limits: TokenLimits = config.controller.api
    const maxBody = config.controller.api.maxBodyBytes
    const decodeChat = decodeBody(ChatCompletionRequest)
    const decodeCompletion = decodeBody(CompletionRequest)

    const identity = (prefix: string, model: string, usage: boolean) =>
      Effect.map(
        Clock.currentTimeMillis,
        (now): StreamIdentity => ({ id: `${prefix}-${randomUUID()}`, created: Math.floor(now / 1000), model, includeUsage: usage })
      )

    /**
     * One inference route: read and decode the body, then stream or collect through the Router; every
     * failure becomes its OpenAI-shaped response.
     */
    const inferenceRoute =
      <B extends ChatCompletionRequest | CompletionRequest>(route: {
        readonly decode: (json: unknown) => Effect.Effect<B, InferenceError>
        readonly toRoute: (body: B, limits: TokenLimits) => RouteRequest
        readonly idPrefix: string
        readonly format: (id: StreamIdentity) => SseFormat
        readonly whole: (id: StreamIdentity, text: string, done: Extract<RelayEvent, { type: "done" }>) => ChatCompletion | Completion
      }) =>
      () =>
        Effect.gen(function* () {
          const body = yield* readBody(route.decode, maxBody)
          const id = yield* identity(route.idPrefix, body.model, includeUsage(body))
          const request = route.toRoute(body, limits)
          return body.stream === true
            ? yield* sseResponse(router.route(request), route.format(id))
            : yield* router
                .complete(request)
                .pipe(Effect.map(({ text, ...done }) => HttpServerResponse.unsafeJson(route.whole(id, text, done))))
        }).pipe(Effect.catchAll((error) => Effect.succeed(errorResponse(error))))

    return handlers
      .handleRaw(
        "chatCompletions",
        inferenceRoute({
          decode: decodeChat,
          toRoute: chatToRoute,
          idPrefix: "chatcmpl",
          format: chatFormat,
          whole: (id, text, done): ChatCompletion => ({
            id: id.id,
            object: "chat.completion",
            created: id.created,
            model: id.model,
            choices: [{ index: 0, message: { role: "assistant", content: text }, finish_reason: done.finishReason }],
            usage: usageOf(done.usage)
          })
        })
      )
      .handleRaw(
        "completions",
        inferenceRoute({
          decode: decodeCompletion,
          toRoute: completionToRoute,
          idPrefix: "cmpl",
          format: completionFormat,
          whole: (id, text, done): Completion => ({
            id: id.id,
            object: "text_completion",
            created: id.created,
            model: id.model,
            choices: [{ index: 0, text, finish_reason: done.finishReason, logprobs: null }],
            usage: usageOf(done.usage)
          })
        })
      )
      .handle("listModels", () =>
        Effect.map(registry.online, (workers): ModelList => {
          const firstSeen = new Map<string, number>()
          for (const w of workers) {
            for (const model of w.skills.availableModels) {
              firstSeen.set(model, Math.min(firstSeen.get(model) ?? Number.POSITIVE_INFINITY, w.registeredAt))
            }
          }
          return {
            object: "list",
            data: [...firstSeen.entries()]
              .sort(([a], [b]) => a.localeCompare(b))
              .map(([id, at]) => ({ id, object: "model", created: Math.floor(at / 1000), owned_by: id.split("/")[0] ?? "cluster" }))
          }
        })
      )
  })
)
