import { NodeContext, NodeHttpClient } from "@effect/platform-node"
import { describe, expect, it } from "@effect/vitest"
import { Context, Effect, Either, Exit, Fiber, Layer, Redacted } from "effect"
import type { InferenceRequest } from "../../../src/domain/inference.js"
import { InferenceEngineLive } from "../../../src/worker/engines/engine-live.js"
import { InferenceEngine } from "../../../src/worker/engines/inference-engine.js"
import {
  chatCompletionBody,
  makeOpenAiEngine,
  openAiContinuation,
  parseSseLine,
  withoutContinuation
} from "../../../src/worker/engines/openai-engine.js"
import { chunk, sse, testHttpServer } from "../support/http-server.js"
import { eventually } from "../../support/eventually.js"
import { engineConfigLayer, engineRequest } from "../support/engine-fixtures.js"
import { runEngine, runEngineEither, tokenRecorder } from "../support/run-engine.js"

const request = (over: Partial<InferenceRequest> = {}): InferenceRequest =>
  engineRequest({ model: "cluster/model", messages: [{ role: "user", content: "hello there" }], maxTokens: 16, ...over })

/** The engine over an HTTP client that lives as long as the test's scope. */
const engineAt = (baseUrl: string, options: { model?: string; apiKey?: string; continueChat?: boolean } = {}) =>
  Effect.flatMap(Layer.build(NodeHttpClient.layer), (context) =>
    makeOpenAiEngine({
      baseUrl,
      apiKey: options.apiKey !== undefined ? Redacted.make(options.apiKey) : undefined,
      model: (r) => options.model ?? r.model,
      ...(options.continueChat === undefined ? {} : { continueChat: options.continueChat })
    }).pipe(Effect.provide(context))
  )

describe("SSE parsing", () => {
  it("names where a malformed chunk is wrong, in the one issue format the rest of the cluster uses", () => {
    const wrongShape = parseSseLine(`data: ${JSON.stringify({ choices: [{ delta: { content: 5 } }] })}`)
    expect(Either.isLeft(wrongShape) && wrongShape.left).toMatch(/choices\[0\]\.delta\.content: Expected string/)
    const notJson = parseSseLine("data: {oops")
    expect(Either.isLeft(notJson) && notJson.left).toMatch(/malformed SSE data "\{oops": not JSON/)
    const deep = parseSseLine(`data: ${"[".repeat(200)}${"]".repeat(200)}`)
    expect(Either.isLeft(deep) && deep.left).toMatch(/nested deeper than 64 levels/)
  })

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

describe("continuing an answer (issue 13)", () => {
  const continued = request({ maxTokens: 6, continuation: { text: "Once upon", completionTokens: 2 } })

  it("the body: the answer so far as a final assistant message, with continue_final_message and no generation prompt", () => {
    expect(chatCompletionBody(continued, "m")).toEqual({
      model: "m",
      messages: [
        { role: "user", content: "hello there" },
        { role: "assistant", content: "Once upon" }
      ],
      continue_final_message: true,
      add_generation_prompt: false,
      max_tokens: 6,
      stream: true,
      stream_options: { include_usage: true }
    })
    // a prompt request goes upstream as a chat, so it continues the same way
    expect(chatCompletionBody({ ...continued, messages: undefined, prompt: "p" }, undefined)).toMatchObject({
      messages: [
        { role: "user", content: "p" },
        { role: "assistant", content: "Once upon" }
      ]
    })
    expect(chatCompletionBody(request(), "m")).not.toHaveProperty("continue_final_message")
  })

  it("usage: the continuation's tokens leave the prompt count; the capability follows continue_chat", () => {
    expect(withoutContinuation({ promptTokens: 12, completionTokens: 4 }, { text: "a b", completionTokens: 2 })).toEqual({
      promptTokens: 10,
      completionTokens: 4
    })
    expect(withoutContinuation({ promptTokens: 1, completionTokens: 4 }, { text: "a b", completionTokens: 2 })?.promptTokens).toBe(0)
    expect(withoutContinuation(undefined, { text: "", completionTokens: 2 })).toBeUndefined()
    expect(openAiContinuation(true, ["completions"])).toEqual(["chat", "completions"])
    expect(openAiContinuation(true, [])).toEqual(["chat"])
    // Legacy completions continue exactly at /v1/completions (prompt + the text so far): no setting needed.
    expect(openAiContinuation(false, ["completions"])).toEqual(["completions"])
    expect(openAiContinuation(false, [])).toEqual([])
  })

  it.scopedLive("with continue_chat: continues upstream; usage counts this attempt and the request's own prompt", () =>
    Effect.gen(function* () {
      const server = yield* testHttpServer((_req, res) =>
        sse(res, [chunk(" a"), chunk(" time", "length"), { choices: [], usage: { prompt_tokens: 9, completion_tokens: 2 } }, "[DONE]"])
      )
      const engine = yield* engineAt(server.baseUrl, { continueChat: true })
      expect(engine.continuation).toEqual(["chat", "completions"])
      const run = yield* runEngine(engine, continued)
      expect(run.tokens).toEqual([" a", " time"])
      expect(run.finish).toEqual({ finishReason: "length", usage: { promptTokens: 7, completionTokens: 2 } })
      expect(server.received[0]?.body).toMatchObject({
        messages: [
          { role: "user", content: "hello there" },
          { role: "assistant", content: "Once upon" }
        ],
        continue_final_message: true,
        add_generation_prompt: false,
        max_tokens: 6
      })
    })
  )

  it.scopedLive("without continue_chat: no chat capability, and a chat continuation is refused before anything is sent upstream", () =>
    Effect.gen(function* () {
      const server = yield* testHttpServer((_req, res) => sse(res, [chunk("x", "stop"), "[DONE]"]))
      const engine = yield* engineAt(server.baseUrl)
      expect(engine.continuation).toEqual(["completions"])
      const outcome = yield* runEngineEither(engine, continued)
      expect(outcome.tokens).toEqual([])
      expect(outcome.result).toEqual(Either.left(expect.objectContaining({ _tag: "EngineError", code: "continuation_unsupported" })))
      expect(server.received).toEqual([])
    })
  )

  it.scopedLive("a legacy completion continues at /v1/completions with the prompt followed by the text so far", () =>
    Effect.gen(function* () {
      const server = yield* testHttpServer((_req, res) =>
        sse(res, [{ choices: [{ index: 0, text: " time", finish_reason: "length" }] }, { choices: [], usage: { prompt_tokens: 5, completion_tokens: 1 } }, "[DONE]"])
      )
      const engine = yield* engineAt(server.baseUrl)
      const completion = request({ messages: undefined, prompt: "Tell a story:", endpoint: "completions", maxTokens: 3, continuation: { text: " Once upon a", completionTokens: 3 } })
      const run = yield* runEngine(engine, completion)
      expect(run.tokens).toEqual([" time"])
      expect(run.finish.usage).toEqual({ promptTokens: 2, completionTokens: 1 })
      expect(server.received[0]?.url).toBe("/v1/completions")
      expect(server.received[0]?.body).toMatchObject({ prompt: "Tell a story: Once upon a", max_tokens: 3 })
      expect(server.received[0]?.body).not.toHaveProperty("continue_final_message")
    })
  )
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
      const run = yield* runEngine(engine, request({ temperature: 0.2 }), "/models/x")
      expect(run.tokens).toEqual(["Hel", "lo"])
      expect(run.finish).toEqual({ finishReason: "stop", usage: { promptTokens: 9, completionTokens: 2 } })
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
      const run = yield* runEngine(engine, request(), "/p")
      expect(run.tokens).toEqual(["a", "b", "c"])
      expect(run.finish).toEqual({ finishReason: "length", usage: { promptTokens: 2, completionTokens: 3 } })
      expect(server.received[0]?.body).toMatchObject({ model: "upstream-model" })
    })
  )

  it.scopedLive("the tokens of one network read are emitted together, at once, without waiting for the next read", () =>
    Effect.gen(function* () {
      // The server sends the rest only after the engine emitted the first read: an engine holding
      // tokens back to wait for more would never finish.
      let firstEmitted: () => void = () => undefined
      const emitted = new Promise<void>((resolve) => {
        firstEmitted = resolve
      })
      const server = yield* testHttpServer((_req, res) => {
        res.writeHead(200, { "content-type": "text/event-stream" })
        res.write([chunk("Hel"), chunk("lo")].map((c) => `data: ${JSON.stringify(c)}\n\n`).join(""))
        void emitted.then(() => {
          res.write(`data: ${JSON.stringify(chunk("!", "stop"))}\n\ndata: [DONE]\n\n`)
          res.end()
        })
      })
      const engine = yield* engineAt(server.baseUrl)
      const batches: Array<ReadonlyArray<string>> = []
      const finish = yield* engine
        .generate(
          request(),
          "/p",
          (tokens) => {
            batches.push([...tokens])
            firstEmitted()
          },
          () => undefined
        )
        .pipe(Effect.timeout("5 seconds"))
      expect(batches).toEqual([["Hel", "lo"], ["!"]])
      expect(finish).toEqual({ finishReason: "stop", usage: { promptTokens: 2, completionTokens: 3 } })
    })
  )

  it.scopedLive("without maxTokens the upstream request carries no max_tokens", () =>
    Effect.gen(function* () {
      const server = yield* testHttpServer((_req, res) => sse(res, [chunk("a", "stop"), "[DONE]"]))
      const engine = yield* engineAt(server.baseUrl)
      yield* runEngine(engine, request({ maxTokens: undefined }), "/p")
      expect(server.received[0]?.body).toMatchObject({ stream: true })
      expect(server.received[0]?.body).not.toHaveProperty("max_tokens")
    })
  )

  it.scopedLive("a stream that ends with a finish reason but without [DONE] is accepted", () =>
    Effect.gen(function* () {
      const server = yield* testHttpServer((_req, res) => sse(res, [chunk("x"), chunk(null, "stop")]))
      const engine = yield* engineAt(server.baseUrl)
      const run = yield* runEngine(engine, request(), "/p")
      expect(run.tokens).toEqual(["x"])
      expect(run.finish).toMatchObject({ finishReason: "stop" })
    })
  )

  it.scopedLive("upstream 500 becomes upstream_error with the status and body text", () =>
    Effect.gen(function* () {
      const server = yield* testHttpServer((_req, res) => {
        res.writeHead(500, { "content-type": "text/plain" })
        res.end("model exploded")
      })
      const engine = yield* engineAt(server.baseUrl)
      const error = yield* Effect.flip(runEngine(engine, request(), "/p"))
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
      const outcome = yield* runEngineEither(engine, request(), "/p")
      expect(outcome.tokens).toEqual(["one", "two"])
      expect(outcome.result).toEqual(Either.left(expect.objectContaining({ _tag: "EngineError", code: "upstream_disconnected" })))
    })
  )

  it.scopedLive("a stream closed cleanly before [DONE] and any finish reason is upstream_disconnected", () =>
    Effect.gen(function* () {
      const server = yield* testHttpServer((_req, res) => sse(res, [chunk("one")]))
      const engine = yield* engineAt(server.baseUrl)
      const outcome = yield* runEngineEither(engine, request(), "/p")
      expect(outcome.tokens).toEqual(["one"])
      expect(outcome.result).toEqual(Either.left(expect.objectContaining({ code: "upstream_disconnected" })))
    })
  )

  it.scopedLive("malformed SSE becomes upstream_malformed; an error event becomes upstream_error", () =>
    Effect.gen(function* () {
      const malformed = yield* testHttpServer((_req, res) => sse(res, [chunk("ok"), "{this is not json", "[DONE]"]))
      const error = yield* Effect.flip(runEngine(yield* engineAt(malformed.baseUrl), request(), "/p"))
      expect(error).toMatchObject({ code: "upstream_malformed" })
      expect(error.message).toContain("this is not json")
      const failing = yield* testHttpServer((_req, res) => sse(res, [{ error: { message: "out of memory" } }]))
      const upstream = yield* Effect.flip(runEngine(yield* engineAt(failing.baseUrl), request(), "/p"))
      expect(upstream).toMatchObject({ code: "upstream_error", message: "out of memory" })
    })
  )

  it.scopedLive("no server listening becomes upstream_unreachable", () =>
    Effect.gen(function* () {
      const engine = yield* engineAt(`http://127.0.0.1:1/v1`)
      const error = yield* Effect.flip(runEngine(engine, request(), "/p"))
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
      const recorder = tokenRecorder()
      const fiber = yield* engine.generate(request(), "/p", recorder.emit, recorder.emitToolCalls).pipe(Effect.fork)
      yield* eventually(Effect.sync(() => expect(recorder.tokens().length).toBeGreaterThanOrEqual(3)))
      expect(recorder.tokens().slice(0, 3)).toEqual(["t0", "t1", "t2"])
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
              engineConfigLayer((engine) => ({ ...engine, type: "openai", openai: { ...engine.openai, baseUrl: server.baseUrl, model: "fixed" } }))
            ])
          )
        ),
        Context.get(InferenceEngine)
      )
      expect(engine.type).toBe("openai")
      const run = yield* runEngine(engine, request(), "/p")
      expect(run.tokens).toEqual(["z"])
      expect(server.received[0]?.body).toMatchObject({ model: "fixed" })
    })
  )
})
