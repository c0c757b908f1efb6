import { NodeContext, NodeHttpClient } from "@effect/platform-node"
import { describe, expect, it } from "@effect/vitest"
import { Chunk, Context, Effect, Either, Exit, Fiber, Layer, Redacted, Schema, Stream } from "effect"
import { ClusterConfigService } from "../../../src/config/cluster-config.js"
import { RequestId } from "../../../src/domain/ids.js"
import type { InferenceRequest } from "../../../src/domain/inference.js"
import { InferenceEngineLive } from "../../../src/worker/engines/engine-live.js"
import { type EnginePiece, InferenceEngine } from "../../../src/worker/engines/inference-engine.js"
import { chatCompletionBody, makeOpenAiEngine, parseSseLine } from "../../../src/worker/engines/openai-engine.js"
import { chunk, sse, testHttpServer } from "../support/http-server.js"
import { eventually } from "../support/test-transport.js"

const request = (over: Partial<InferenceRequest> = {}): InferenceRequest => ({
  requestId: Schema.decodeSync(RequestId)("r1"),
  model: "cluster/model",
  messages: [{ role: "user", content: "hello there" }],
  maxTokens: 16,
  stream: true,
  ...over
})

/** The engine over an HTTP client that lives as long as the test's scope. */
const engineAt = (baseUrl: string, options: { model?: string; apiKey?: string } = {}) =>
  Effect.flatMap(Layer.build(NodeHttpClient.layer), (context) =>
    makeOpenAiEngine({
      baseUrl,
      apiKey: options.apiKey !== undefined ? Redacted.make(options.apiKey) : undefined,
      model: (r) => options.model ?? r.model
    }).pipe(Effect.provide(context))
  )

const collect = <E>(stream: Stream.Stream<EnginePiece, E>) =>
  Stream.runCollect(stream).pipe(Effect.map(Chunk.toReadonlyArray))

const texts = (pieces: ReadonlyArray<EnginePiece>) => pieces.flatMap((p) => (p._tag === "Token" ? [p.text] : []))

describe("SSE parsing", () => {
  it("reads data lines, [DONE], comments, usage, finish reasons, upstream errors", () => {
    expect(parseSseLine(": keep-alive")).toEqual(Either.right({ _tag: "Ignore" }))
    expect(parseSseLine("")).toEqual(Either.right({ _tag: "Ignore" }))
    expect(parseSseLine("event: message")).toEqual(Either.right({ _tag: "Ignore" }))
    expect(parseSseLine("data:")).toEqual(Either.right({ _tag: "Ignore" }))
    expect(parseSseLine("data: [DONE]\r")).toEqual(Either.right({ _tag: "Done" }))
    expect(parseSseLine(`data: ${JSON.stringify(chunk("Hi"))}`)).toEqual(
      Either.right({ _tag: "Chunk", texts: ["Hi"], finishReason: undefined, usage: undefined })
    )
    expect(parseSseLine(`data:${JSON.stringify(chunk(null, "length"))}`)).toEqual(
      Either.right({ _tag: "Chunk", texts: [], finishReason: "length", usage: undefined })
    )
    expect(parseSseLine(`data: ${JSON.stringify({ choices: [{ text: "legacy", finish_reason: "eos" }] })}`)).toEqual(
      Either.right({ _tag: "Chunk", texts: ["legacy"], finishReason: "stop", usage: undefined })
    )
    expect(
      parseSseLine(`data: ${JSON.stringify({ choices: [], usage: { prompt_tokens: 3, completion_tokens: 4 } })}`)
    ).toEqual(Either.right({ _tag: "Chunk", texts: [], finishReason: undefined, usage: { promptTokens: 3, completionTokens: 4 } }))
    expect(parseSseLine(`data: ${JSON.stringify({ error: { message: "overloaded" } })}`)).toEqual(
      Either.right({ _tag: "UpstreamError", message: "overloaded" })
    )
    expect(parseSseLine(`data: ${JSON.stringify({ error: "plain" })}`)).toEqual(
      Either.right({ _tag: "UpstreamError", message: "plain" })
    )
    expect(parseSseLine(`data: ${JSON.stringify({ error: { code: 1 } })}`)).toEqual(
      Either.right({ _tag: "UpstreamError", message: '{"code":1}' })
    )
    expect(Either.isLeft(parseSseLine("data: {not json"))).toBe(true)
    expect(Either.isLeft(parseSseLine(`data: ${JSON.stringify({ choices: "nope" })}`))).toBe(true)
  })

  it("builds the upstream body: prompt as a user message, optional fields only when given", () => {
    expect(chatCompletionBody(request({ messages: undefined, prompt: "p" }), undefined)).toEqual({
      messages: [{ role: "user", content: "p" }],
      max_tokens: 16,
      stream: true,
      stream_options: { include_usage: true }
    })
    expect(chatCompletionBody(request({ temperature: 0.5, topP: 0.9, stop: ["\n"] }), "m")).toMatchObject({
      model: "m",
      temperature: 0.5,
      top_p: 0.9,
      stop: ["\n"]
    })
    expect(chatCompletionBody(request({ stop: [] }), "m")).not.toHaveProperty("stop")
  })
})

describe("openai engine against a local SSE server", () => {
  it.scopedLive("streams tokens and takes usage from the final chunk", () =>
    Effect.gen(function* () {
      const server = yield* testHttpServer((_req, res) =>
        sse(res, [
          chunk("Hel"),
          chunk("lo"),
          chunk(null, "stop"),
          { choices: [], usage: { prompt_tokens: 9, completion_tokens: 2 } },
          "[DONE]"
        ])
      )
      const engine = yield* engineAt(`${server.baseUrl}/`, { apiKey: "sk-test" })
      const pieces = yield* collect(engine.generate(request({ temperature: 0.2 }), "/models/x"))
      expect(texts(pieces)).toEqual(["Hel", "lo"])
      expect(pieces.at(-1)).toEqual({ _tag: "Finish", finishReason: "stop", usage: { promptTokens: 9, completionTokens: 2 } })
      const received = server.received[0]
      expect(received?.method).toBe("POST")
      expect(received?.url).toBe("/v1/chat/completions")
      expect(received?.headers.authorization).toBe("Bearer sk-test")
      expect(received?.body).toMatchObject({
        model: "cluster/model",
        messages: [{ role: "user", content: "hello there" }],
        max_tokens: 16,
        stream: true,
        temperature: 0.2
      })
      expect(engine.type).toBe("openai")
    })
  )

  it.scopedLive("counts usage when the server sends none; length finish; a configured model name", () =>
    Effect.gen(function* () {
      const server = yield* testHttpServer((_req, res) => sse(res, [chunk("a"), chunk("b"), chunk("c", "length"), "[DONE]"]))
      const engine = yield* engineAt(server.baseUrl, { model: "upstream-model" })
      const pieces = yield* collect(engine.generate(request(), "/p"))
      expect(texts(pieces)).toEqual(["a", "b", "c"])
      expect(pieces.at(-1)).toEqual({ _tag: "Finish", finishReason: "length", usage: { promptTokens: 2, completionTokens: 3 } })
      expect(server.received[0]?.body).toMatchObject({ model: "upstream-model" })
    })
  )

  it.scopedLive("a stream that ends with a finish reason but without [DONE] is accepted", () =>
    Effect.gen(function* () {
      const server = yield* testHttpServer((_req, res) => sse(res, [chunk("x"), chunk(null, "stop")]))
      const engine = yield* engineAt(server.baseUrl)
      const pieces = yield* collect(engine.generate(request(), "/p"))
      expect(pieces.at(-1)).toMatchObject({ _tag: "Finish", finishReason: "stop" })
    })
  )

  it.scopedLive("upstream 500 becomes upstream_error with the status and body text", () =>
    Effect.gen(function* () {
      const server = yield* testHttpServer((_req, res) => {
        res.writeHead(500, { "content-type": "text/plain" })
        res.end("model exploded")
      })
      const engine = yield* engineAt(server.baseUrl)
      const error = yield* Effect.flip(collect(engine.generate(request(), "/p")))
      expect(error).toMatchObject({ _tag: "EngineError", code: "upstream_error" })
      expect(error.message).toContain("500")
      expect(error.message).toContain("model exploded")
    })
  )

  it.scopedLive("a dropped connection mid-stream becomes upstream_disconnected after the tokens already sent", () =>
    Effect.gen(function* () {
      const server = yield* testHttpServer((_req, res) => {
        sse(res, [chunk("one"), chunk("two")], false)
        setTimeout(() => res.socket?.destroy(), 30)
      })
      const engine = yield* engineAt(server.baseUrl)
      const seen: Array<string> = []
      const error = yield* Effect.flip(
        engine.generate(request(), "/p").pipe(
          Stream.runForEach((p) => Effect.sync(() => p._tag === "Token" && seen.push(p.text)))
        )
      )
      expect(seen).toEqual(["one", "two"])
      expect(error).toMatchObject({ _tag: "EngineError", code: "upstream_disconnected" })
    })
  )

  it.scopedLive("a stream closed cleanly before [DONE] and any finish reason is upstream_disconnected", () =>
    Effect.gen(function* () {
      const server = yield* testHttpServer((_req, res) => sse(res, [chunk("one")]))
      const engine = yield* engineAt(server.baseUrl)
      const error = yield* Effect.flip(collect(engine.generate(request(), "/p")))
      expect(error).toMatchObject({ code: "upstream_disconnected" })
    })
  )

  it.scopedLive("malformed SSE becomes upstream_malformed; an error event becomes upstream_error", () =>
    Effect.gen(function* () {
      const malformed = yield* testHttpServer((_req, res) => sse(res, [chunk("ok"), "{this is not json", "[DONE]"]))
      const error = yield* Effect.flip(collect((yield* engineAt(malformed.baseUrl)).generate(request(), "/p")))
      expect(error).toMatchObject({ code: "upstream_malformed" })
      expect(error.message).toContain("this is not json")
      const failing = yield* testHttpServer((_req, res) => sse(res, [{ error: { message: "out of memory" } }]))
      const upstream = yield* Effect.flip(collect((yield* engineAt(failing.baseUrl)).generate(request(), "/p")))
      expect(upstream).toMatchObject({ code: "upstream_error", message: "out of memory" })
    })
  )

  it.scopedLive("no server listening becomes upstream_unreachable", () =>
    Effect.gen(function* () {
      const engine = yield* engineAt(`http://127.0.0.1:1/v1`)
      const error = yield* Effect.flip(collect(engine.generate(request(), "/p")))
      expect(error).toMatchObject({ code: "upstream_unreachable" })
    })
  )

  it.scopedLive("interrupting the stream aborts the upstream request", () =>
    Effect.gen(function* () {
      let timer: NodeJS.Timeout | undefined
      const server = yield* testHttpServer((_req, res) => {
        res.writeHead(200, { "content-type": "text/event-stream" })
        let n = 0
        timer = setInterval(() => res.write(`data: ${JSON.stringify(chunk(`t${n++}`))}\n\n`), 10)
        res.on("close", () => clearInterval(timer))
      })
      yield* Effect.addFinalizer(() => Effect.sync(() => clearInterval(timer)))
      const engine = yield* engineAt(server.baseUrl)
      const seen: Array<string> = []
      const fiber = yield* engine.generate(request(), "/p").pipe(
        Stream.runForEach((p) => Effect.sync(() => p._tag === "Token" && seen.push(p.text))),
        Effect.fork
      )
      yield* eventually(Effect.sync(() => expect(seen.length).toBeGreaterThanOrEqual(3)))
      const exit = yield* Fiber.interrupt(fiber)
      expect(Exit.isInterrupted(exit)).toBe(true)
      yield* eventually(Effect.sync(() => expect(server.aborted()).toBe(1)), { timeoutMs: 2000 })
    })
  )

  it.scopedLive("InferenceEngineLive picks the openai engine from worker.engine.type", () =>
    Effect.gen(function* () {
      const server = yield* testHttpServer((_req, res) => sse(res, [chunk("z", "stop"), "[DONE]"]))
      const engine = yield* Effect.map(
        Layer.build(
          InferenceEngineLive.pipe(
            Layer.provide([
              NodeHttpClient.layer,
              NodeContext.layer,
              ClusterConfigService.layerTest((c) => ({
                ...c,
                worker: {
                  ...c.worker,
                  engine: { ...c.worker.engine, type: "openai", openai: { baseUrl: server.baseUrl, model: "fixed" } }
                }
              }))
            ])
          )
        ),
        Context.get(InferenceEngine)
      )
      expect(engine.type).toBe("openai")
      const pieces = yield* collect(engine.generate(request(), "/p"))
      expect(texts(pieces)).toEqual(["z"])
      expect(server.received[0]?.body).toMatchObject({ model: "fixed" })
    })
  )
})
