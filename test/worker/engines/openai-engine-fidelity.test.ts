import { NodeHttpClient } from "@effect/platform-node"
import { describe, expect, it } from "@effect/vitest"
import { Effect, Either, Layer } from "effect"
import type { InferenceRequest } from "../../../src/domain/inference.js"
import { chatCompletionBody, logprobsOf, makeOpenAiEngine, parseSseLine, upstreamFailure } from "../../../src/worker/engines/openai-engine.js"
import { sse, testHttpServer } from "../support/http-server.js"
import { engineRequest } from "../support/engine-fixtures.js"
import { runEngine, runEngineEither } from "../support/run-engine.js"

/** The openai engine and issue 12: every field upstream, every answer field back, refusals kept. */

const request = (over: Partial<InferenceRequest> = {}): InferenceRequest =>
  engineRequest({ model: "cluster/model", messages: [{ role: "user", content: "hello there" }], ...over })

const engineAt = (baseUrl: string) =>
  Effect.flatMap(Layer.build(NodeHttpClient.layer), (context) => makeOpenAiEngine({ baseUrl, model: (r) => r.model }).pipe(Effect.provide(context)))

const line = (chunk: unknown) => parseSseLine(`data: ${JSON.stringify(chunk)}`)
const right = <A>(e: Either.Either<A, string>): A => Either.getOrThrowWith(e, (l) => new Error(l))

describe("the upstream body", () => {
  it("params first and verbatim, then the contract fields; no max_tokens when none; the client's max_completion_tokens kept", () => {
    const params = { tools: [{ type: "function" }], seed: 1, user: "u", top_k: 3 }
    expect(chatCompletionBody(request({ params, temperature: 0.1, stop: ["x"] }), "m")).toEqual({
      ...params,
      model: "m",
      messages: [{ role: "user", content: "hello there" }],
      temperature: 0.1,
      stop: ["x"],
      stream: true,
      stream_options: { include_usage: true }
    })
    const spelled = chatCompletionBody(request({ maxTokens: 9, params: { max_completion_tokens: 9 } }), undefined)
    expect(spelled).toMatchObject({ max_completion_tokens: 9 })
    expect(spelled).not.toHaveProperty("max_tokens")
    expect(chatCompletionBody(request({ maxTokens: 9 }), undefined)).toMatchObject({ max_tokens: 9 })
  })

  it("legacy completions: the raw prompt, no messages", () => {
    const body = chatCompletionBody(request({ messages: undefined, prompt: "Once", endpoint: "completions", params: { echo: true } }), "m")
    expect(body).toEqual({ echo: true, model: "m", prompt: "Once", stream: true, stream_options: { include_usage: true } })
  })
})

describe("SSE chunks with tool calls, logprobs and fingerprints", () => {
  it("tool-call deltas are normalised to OpenAI's delta shape", () => {
    const parsed = right(
      line({
        choices: [
          {
            delta: {
              tool_calls: [
                { index: 0, id: "c1", type: "function", function: { name: "f", arguments: "" } },
                { index: null, id: null, type: "custom", function: { name: null, arguments: "{}" } },
                { function: null }
              ]
            }
          }
        ]
      })
    )
    expect(parsed).toEqual({
      _tag: "Chunk",
      texts: [],
      finishReason: undefined,
      usage: undefined,
      toolCalls: [{ index: 0, id: "c1", type: "function", function: { name: "f", arguments: "" } }, { index: 0, function: { arguments: "{}" } }, { index: 0 }]
    })
  })

  it("finish reasons: tool_calls, legacy function_call, content_filter; anything else is stop; the fingerprint is kept", () => {
    const finish = (reason: string) => (right(line({ choices: [{ delta: {}, finish_reason: reason }] })) as { finishReason?: string }).finishReason
    expect(finish("tool_calls")).toBe("tool_calls")
    expect(finish("function_call")).toBe("tool_calls")
    expect(finish("content_filter")).toBe("content_filter")
    expect(finish("eos")).toBe("stop")
    expect(right(line({ system_fingerprint: "fp_1", choices: [] }))).toMatchObject({ systemFingerprint: "fp_1" })
    expect(right(line({ system_fingerprint: null, choices: [] }))).not.toHaveProperty("systemFingerprint")
  })

  it("logprobs: the chat shape as is, the legacy shape turned into it, unreadable entries dropped", () => {
    const chat = { content: [{ token: "a", logprob: -1, bytes: [97], top_logprobs: [{ token: "a", logprob: -1 }, { token: 5 }] }, { id: 3, logprob: -2 }] }
    expect(logprobsOf(chat)).toEqual([{ token: "a", logprob: -1, bytes: [97], top_logprobs: [{ token: "a", logprob: -1 }] }])
    expect(logprobsOf({ content: [{ token: "b", logprob: -1, bytes: "x" }] })).toEqual([{ token: "b", logprob: -1, top_logprobs: [] }])
    const legacy = { tokens: ["x", "y", 7], token_logprobs: [null, -0.5], top_logprobs: [{ x: -0.1 }, null], text_offset: [0, 1] }
    expect(logprobsOf(legacy)).toEqual([
      { token: "x", logprob: 0, top_logprobs: [{ token: "x", logprob: -0.1 }] },
      { token: "y", logprob: -0.5, top_logprobs: [] }
    ])
    expect(logprobsOf(null)).toEqual([])
    expect(logprobsOf({ other: 1 })).toEqual([])
    expect(right(line({ choices: [{ delta: { content: "a" }, logprobs: chat }] }))).toMatchObject({ texts: ["a"], logprobs: [{ token: "a" }] })
  })
})

describe("upstream failures", () => {
  it("a refusal of the request (400, 413, 422) keeps status, message, code, type and param", () => {
    const body = JSON.stringify({ error: { message: "too long", type: "invalid_request_error", param: "messages", code: "context_length_exceeded" } })
    expect(upstreamFailure(400, body)).toMatchObject({
      code: "context_length_exceeded",
      message: "too long",
      status: 400,
      errorType: "invalid_request_error",
      param: "messages"
    })
    expect(upstreamFailure(422, JSON.stringify({ detail: [{ loc: ["body", "n"], msg: "bad" }] }))).toMatchObject({
      status: 422,
      code: "upstream_rejected",
      message: expect.stringContaining('"msg":"bad"')
    })
    expect(upstreamFailure(400, JSON.stringify({ detail: "Received tools but model does not support tool calling." }))).toMatchObject({
      message: "Received tools but model does not support tool calling."
    })
    expect(upstreamFailure(413, "plain text")).toMatchObject({ status: 413, message: "plain text", code: "upstream_rejected" })
    expect(upstreamFailure(400, "")).toMatchObject({ status: 400, message: "upstream answered 400" })
  })

  it("anything else is the worker's problem: upstream_error without a status (another worker may serve it)", () => {
    for (const status of [401, 403, 404, 408, 429, 500, 503]) {
      const e = upstreamFailure(status, '{"error":{"message":"x"}}')
      expect(e.code).toBe("upstream_error")
      expect(e.status).toBeUndefined()
      expect(e.message).toContain(`upstream answered ${status}`)
    }
  })
})

describe("the engine against a local server", () => {
  it.scopedLive("tool-call deltas go to emitToolCalls; a chunk with logprobs is emitted alone with its entries", () =>
    Effect.gen(function* () {
      const entry = (token: string) => ({ token, logprob: -0.5, top_logprobs: [] })
      const server = yield* testHttpServer((req, res) => {
        const body = req.body as { tools?: unknown }
        if (body.tools !== undefined) {
          return sse(res, [
            { choices: [{ delta: { tool_calls: [{ index: 0, id: "c", type: "function", function: { name: "f", arguments: "" } }] } }] },
            { choices: [{ delta: { tool_calls: [{ index: 0, function: { arguments: "{}" } }] } }] },
            { system_fingerprint: "fp_t", choices: [{ delta: {}, finish_reason: "tool_calls" }] },
            "[DONE]"
          ])
        }
        sse(res, [
          { choices: [{ delta: { content: "a" }, logprobs: { content: [entry("a")] } }] },
          { choices: [{ delta: { content: "b" }, logprobs: { content: [entry("b")] } }] },
          { choices: [{ delta: { content: "c" } }] },
          { choices: [{ delta: {}, finish_reason: "stop" }] },
          "[DONE]"
        ])
      })
      const engine = yield* engineAt(server.baseUrl)
      const calls = yield* runEngine(engine, request({ params: { tools: [{ type: "function", function: { name: "f" } }] } }))
      expect(calls.toolCalls).toEqual([{ index: 0, id: "c", type: "function", function: { name: "f", arguments: "" } }, { index: 0, function: { arguments: "{}" } }])
      expect(calls.finish).toEqual({ finishReason: "tool_calls", usage: { promptTokens: 2, completionTokens: 2 }, systemFingerprint: "fp_t" })
      const text = yield* runEngine(engine, request({ params: { logprobs: true } }))
      expect(text.tokens).toEqual(["a", "b", "c"])
      expect(text.logprobs).toEqual([entry("a"), entry("b")])
      expect(text.batches.length).toBeGreaterThanOrEqual(3)
    })
  )

  it.scopedLive("legacy completions go to /completions; the server's 400 is an EngineError carrying its status", () =>
    Effect.gen(function* () {
      const server = yield* testHttpServer((req, res) => {
        if (req.url.endsWith("/completions") && !req.url.endsWith("/chat/completions")) {
          return sse(res, [{ choices: [{ text: " done", finish_reason: "stop" }] }, "[DONE]"])
        }
        res.writeHead(400, { "content-type": "application/json" })
        res.end(JSON.stringify({ error: { message: "bad seed", type: "invalid_request_error", param: "seed", code: null } }))
      })
      const engine = yield* engineAt(server.baseUrl)
      const done = yield* runEngine(engine, request({ messages: undefined, prompt: "It is", endpoint: "completions" }))
      expect(done.tokens).toEqual([" done"])
      expect(server.received[0]?.url).toBe("/v1/completions")
      const refused = yield* runEngineEither(engine, request({ params: { seed: -1 } }))
      expect(Either.isLeft(refused.result) && refused.result.left).toMatchObject({
        status: 400,
        message: "bad seed",
        code: "upstream_rejected",
        errorType: "invalid_request_error",
        param: "seed"
      })
    })
  )
})
