import { Cause, Effect, Either, Exit, type Fiber, FiberId, Option, Runtime } from "effect"
import type { IncomingMessage, ServerResponse } from "node:http"
import { ClusterConfigService } from "../config/cluster-config.js"
import { RequestJournal } from "../controller/request-journal.js"
import { Router } from "../controller/router.js"
import { NatsTransport } from "../nats/nats-transport.js"
import { BodyTooLarge, type InferenceError, type InvalidRequest, WorkerFailed } from "../domain/errors.js"
import { isJsonObject } from "../domain/json.js"
import { type ChatCompletion, ChatCompletionRequest, type Completion, CompletionRequest } from "../domain/openai.js"
import type { DoneEvent, RelaySink, RouteRequest } from "../domain/route.js"
import { type AnswerCollector, collectAnswer } from "./answer.js"
import { readBody } from "./body-reader.js"
import { answerHeaders, sseErrorEvent, writeError, writeJson } from "./error-response.js"
import { chatToRoute, completionToRoute, decodeBody, parseJson } from "./openai-request.js"
import type { TokenLimits } from "./route-request.js"
import { chatFormat, completionFormat, encodeEvent, headFor, type SseFormat, type StreamIdentity } from "./sse.js"

/**
 * `POST /v1/chat/completions` and `POST /v1/completions`, served straight from the front door's
 * Node request (issue 10): one fiber per request (the Router's `execute`), the body read and
 * decoded in plain code, and the relayed events written to the socket by the Router's sink — one
 * write per bus message, several SSE chunks each. Going through @effect/platform's router and a
 * `Stream` body cost 0.3–0.8 ms of CPU per request, more than this whole path is allowed (see
 * README, "Benchmark"); the routes stay in the HttpApi for the OpenAPI document.
 *
 * Semantics are OpenAI's: a failure before the first token is a real HTTP error status; afterwards
 * one SSE error event ends the stream, without `[DONE]`. A client that goes away interrupts the
 * fiber, which cancels the worker's work. A client reading more slowly than the worker writes is
 * cut off with `slow_consumer` once `controller.api.max_buffered_bytes` wait to be sent.
 */

export type InferenceKind = "chat" | "completions"

/** What the front door already knows of the request. */
export interface LaneContext {
  readonly requestId: string
  readonly client: string
  readonly receivedAt: number
  /** The CORS headers every answer carries; undefined when there are none. */
  readonly cors: Readonly<Record<string, string>> | undefined
}

/** A stream's head: one literal (no spread), the CORS headers only when there are any. */
const sseHead = (ctx: LaneContext): Record<string, string> => {
  const head = { "content-type": "text/event-stream", "cache-control": "no-cache", "x-accel-buffering": "no", "x-request-id": ctx.requestId }
  return ctx.cors === undefined ? head : { ...head, ...ctx.cors }
}

/** A whole answer that moved to another worker says how often in a header (issue 13; a stream says it in its last chunk). */
const migrationsHeader = (done: DoneEvent): Record<string, string> =>
  done.migrations !== undefined && done.migrations > 0 ? { "x-cluster-migrations": String(done.migrations) } : {}

interface Shape<B> {
  readonly decode: (json: unknown) => Either.Either<B, InvalidRequest>
  readonly toRoute: (body: B, limits: TokenLimits) => Either.Either<RouteRequest, InvalidRequest>
  readonly idPrefix: string
  readonly format: (id: StreamIdentity) => SseFormat
  /** The request asked for logprobs (the whole answer then carries `logprobs`, else `null`). */
  readonly logprobsAsked: (body: B) => boolean
  /** Legacy completions' `text_offset` of the answer's first character (`request`: the body as routed, its prompt joined). */
  readonly textOffset: (body: B, request: RouteRequest) => number | undefined
  readonly whole: (answer: AnswerCollector, id: StreamIdentity, done: DoneEvent, logprobsAsked: boolean) => ChatCompletion | Completion
}

const chat: Shape<ChatCompletionRequest> = {
  decode: decodeBody(ChatCompletionRequest),
  toRoute: chatToRoute,
  idPrefix: "chatcmpl",
  format: chatFormat,
  logprobsAsked: (body) => body.logprobs === true,
  textOffset: () => undefined,
  whole: (answer, id, done, logprobsAsked) => answer.chat(id, done, logprobsAsked)
}

const completions: Shape<CompletionRequest> = {
  decode: decodeBody(CompletionRequest),
  toRoute: completionToRoute,
  idPrefix: "cmpl",
  format: completionFormat,
  logprobsAsked: (body) => typeof body.logprobs === "number",
  // With `echo` the answer starts with the prompt; otherwise after it.
  textOffset: (body, request) => (body.echo === true ? 0 : (request.prompt ?? "").length),
  whole: (answer, id, done, logprobsAsked) => answer.completion(id, done, logprobsAsked)
}

export const makeInferenceLane = Effect.gen(function* () {
  const router = yield* Router
  const journal = yield* RequestJournal
  const api = (yield* ClusterConfigService).controller.api
  const nats = yield* NatsTransport
  // A body the bus cannot carry is refused here with the real reason, not after every worker was tried.
  const maxPayload = nats.maxPayload()
  const bodyLimit = Math.min(api.maxBodyBytes, maxPayload)
  const tooLarge =
    bodyLimit < api.maxBodyBytes
      ? new BodyTooLarge({ limitBytes: bodyLimit, reason: `the bus carries at most ${maxPayload} bytes per message (nats max_payload)` })
      : new BodyTooLarge({ limitBytes: bodyLimit })
  if (bodyLimit < api.maxBodyBytes) {
    yield* Effect.logWarning(
      `controller.api.max_body_bytes (${api.maxBodyBytes}) is above the NATS server's max_payload (${maxPayload}): bodies over ${maxPayload} bytes get 413`
    )
  }
  const runtime = yield* Effect.runtime<never>()
  const runFork = Runtime.runFork(runtime)
  const runSync = Runtime.runSync(runtime)

  /** Answers a request refused before routing, and records it. */
  const refuse = (kind: InferenceKind, res: ServerResponse, ctx: LaneContext, error: InvalidRequest | BodyTooLarge, model = "") => {
    const headers = answerHeaders(ctx.requestId, ctx.cors)
    const status = writeError(res, error, error._tag === "BodyTooLarge" ? { ...headers, connection: "close" } : headers)
    runSync(
      journal.record({
        requestId: ctx.requestId,
        method: "POST",
        route: kind,
        model,
        modelKnown: false,
        outcome: "failed",
        status,
        errorCode: error._tag === "BodyTooLarge" ? "body_too_large" : "invalid_request",
        errorMessage: error.message,
        tokens: 0,
        durationMs: Date.now() - ctx.receivedAt,
        retries: 0,
        startedAt: ctx.receivedAt,
        client: ctx.client
      })
    )
  }

  /** What the fiber's end means for a response that may have started streaming. */
  const settle = <A>(res: ServerResponse, ctx: LaneContext, exit: Exit.Exit<A, InferenceError>, started: boolean, onSuccess: (value: A) => void) => {
    if (res.writableEnded || res.destroyed) return
    if (Exit.isSuccess(exit)) return onSuccess(exit.value)
    if (Cause.isInterruptedOnly(exit.cause)) return void res.destroy()
    const error = Option.getOrElse(Cause.failureOption(exit.cause), () => {
      runSync(Effect.logError("an inference request failed unexpectedly", exit.cause))
      return new WorkerFailed({ workerId: "", code: "internal_error", message: "The request failed unexpectedly" })
    })
    if (started) res.end(sseErrorEvent(error))
    else writeError(res, error, answerHeaders(ctx.requestId, ctx.cors))
  }

  const serve = <B extends ChatCompletionRequest | CompletionRequest>(
    kind: InferenceKind,
    shape: Shape<B>,
    text: string,
    res: ServerResponse,
    ctx: LaneContext
  ) => {
    const parsedJson = parseJson(text)
    const parsed = Either.flatMap(parsedJson, shape.decode)
    if (Either.isLeft(parsed)) {
      // The model for the journal, from the JSON already parsed (a body that fails its schema is not parsed twice).
      const json = Either.getOrUndefined(parsedJson)
      const model = isJsonObject(json) && typeof json["model"] === "string" ? json["model"] : ""
      return refuse(kind, res, ctx, parsed.left, model)
    }
    const body = parsed.right
    const route = shape.toRoute(body, api)
    if (Either.isLeft(route)) return refuse(kind, res, ctx, route.left, body.model)
    // The spread last (`toRoute` sets neither field): a spread followed by more properties costs V8 a new hidden class per request.
    const request: RouteRequest = { requestId: ctx.requestId, client: ctx.client, ...route.right }
    const textOffset = shape.textOffset(body, route.right)
    const id: StreamIdentity = {
      id: `${shape.idPrefix}-${ctx.requestId}`,
      created: Math.floor(ctx.receivedAt / 1000),
      model: body.model,
      includeUsage: body.stream_options?.include_usage === true,
      ...(textOffset === undefined ? {} : { textOffset })
    }
    let started = false
    let fiber: Fiber.RuntimeFiber<DoneEvent, InferenceError>
    if (body.stream === true) {
      const format = shape.format(id)
      const sink: RelaySink = {
        push: (event) => {
          let out = encodeEvent(format, event)
          if (!started) {
            started = true
            res.writeHead(200, sseHead(ctx))
            out = headFor(format, event) + out
          }
          // The last event: its chunks and the response's end in one socket write, not two.
          if (event.type === "done") {
            res.end(out)
            return true
          }
          res.write(out)
          return res.writableLength <= api.maxBufferedBytes
        }
      }
      fiber = runFork(router.execute(request, sink))
      fiber.addObserver((exit) => settle(res, ctx, exit, started, () => res.end()))
    } else {
      const answer = collectAnswer()
      const logprobsAsked = shape.logprobsAsked(body)
      fiber = runFork(router.execute(request, { push: (event) => (answer.push(event), true) }))
      fiber.addObserver((exit) =>
        settle(res, ctx, exit, false, (done) => writeJson(res, 200, shape.whole(answer, id, done, logprobsAsked), { ...migrationsHeader(done), ...answerHeaders(ctx.requestId, ctx.cors) }))
      )
    }
    // The client went away before the answer was complete (ended: the worker is done already): stop the work.
    res.on("close", () => {
      if (!res.writableEnded) fiber.unsafeInterruptAsFork(FiberId.none)
    })
  }

  return (kind: InferenceKind, req: IncomingMessage, res: ServerResponse, ctx: LaneContext): void =>
    readBody(req, bodyLimit, (result) => {
      switch (result._tag) {
        case "Aborted":
          return
        case "TooLarge":
          return refuse(kind, res, ctx, tooLarge)
        case "Body":
          return kind === "chat" ? serve(kind, chat, result.text, res, ctx) : serve(kind, completions, result.text, res, ctx)
      }
    })
})
