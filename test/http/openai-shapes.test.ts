import { describe, expect, it } from "@effect/vitest"
import { Either } from "effect"
import { RouteNotFound, toOpenAiError, UnsupportedParameter, UpstreamRejected } from "../../src/domain/errors.js"
import type { ChatCompletionRequest, CompletionRequest } from "../../src/domain/openai.js"
import type { DoneEvent } from "../../src/domain/route.js"
import { collectAnswer } from "../../src/http/answer.js"
import { modelIdOf } from "../../src/http/openai-handlers.js"
import { chatToRoute, completionToRoute, paramsOf } from "../../src/http/openai-request.js"
import { chatFormat, completionFormat, encodeEvent, headFor } from "../../src/http/sse.js"

/** The OpenAI shapes of issue 12, piece by piece: request mapping, SSE chunks, whole answers, errors. */

const limits = { maxTokensCeiling: null }
const identity = { id: "chatcmpl-1", created: 1, model: "m", includeUsage: false }
const done: DoneEvent = { type: "done", finishReason: "stop", usage: { promptTokens: 2, completionTokens: 3 }, latencyMs: 1, workerId: "w", systemFingerprint: "fp" }
const entry = (token: string, logprob = -0.5) => ({ token, logprob, top_logprobs: [{ token, logprob }] })

const chunksOf = (sse: string): Array<Record<string, unknown>> =>
  sse
    .split("\n\n")
    .filter((e) => e.startsWith("data: {"))
    .map((e) => JSON.parse(e.slice(6)) as Record<string, unknown>)

describe("request mapping", () => {
  it("every field the controller does not read itself is a param, verbatim; max_completion_tokens is both", () => {
    const body = JSON.parse(
      '{"model":"m","messages":[{"role":"user","content":"x"}],"stream":true,"stream_options":{"include_usage":true},"tags":["a"],"priority":2,"max_tokens":5,"temperature":1,"top_p":0.5,"stop":"s","seed":3,"user":"u","max_completion_tokens":4,"__proto__":{"polluted":true}}'
    ) as Record<string, unknown>
    expect(paramsOf(body)).toEqual({ seed: 3, user: "u", max_completion_tokens: 4 })
    expect(paramsOf({ model: "m", messages: [] })).toBeUndefined()
    const route = Either.getOrThrow(chatToRoute(body as unknown as ChatCompletionRequest, limits))
    expect(route).toMatchObject({ model: "m", endpoint: "chat", maxTokens: 4, stop: ["s"], temperature: 1, topP: 0.5, tags: ["a"], priority: 2, requires: [{ feature: "seed", param: "seed" }] })
    expect(({} as Record<string, unknown>)["polluted"]).toBeUndefined()
  })

  it("an assistant turn may have no content; any other role may not; a text part needs its text", () => {
    const ok = chatToRoute({ model: "m", messages: [{ role: "user", content: "x" }, { role: "assistant", tool_calls: [] }] } as ChatCompletionRequest, limits)
    expect(Either.isRight(ok)).toBe(true)
    const noText = chatToRoute({ model: "m", messages: [{ role: "user", content: [{ type: "text" }] }] } as ChatCompletionRequest, limits)
    expect(Either.isLeft(noText) && noText.left).toMatchObject({ param: "messages[0].content[0].text" })
  })

  it("legacy completions: the raw prompt, route completions, best_of above 1 refused, a ceiling naming max_tokens", () => {
    const route = Either.getOrThrow(completionToRoute({ model: "m", prompt: ["abc"], echo: true } as CompletionRequest, limits))
    expect(route).toMatchObject({ prompt: "abc", endpoint: "completions", params: { echo: true }, requires: [{ feature: "completions" }, { feature: "echo" }] })
    const bestOf = completionToRoute({ model: "m", prompt: "p", best_of: 2 } as CompletionRequest, limits)
    expect(Either.isLeft(bestOf) && bestOf.left).toMatchObject({ param: "best_of" })
    const above = completionToRoute({ model: "m", prompt: "p", max_tokens: 11 } as CompletionRequest, { maxTokensCeiling: 10 })
    expect(Either.isLeft(above) && above.left).toMatchObject({ param: "max_tokens", message: expect.stringContaining("limit of 10 tokens") })
  })
})

describe("SSE chunks", () => {
  it("chat: the role chunk fits the answer (content \"\" for text, null for a tool call); one chunk per delta", () => {
    const format = chatFormat(identity)
    const toolCalls = { type: "toolCalls", index: 0, deltas: [{ index: 0, id: "c", type: "function", function: { name: "f", arguments: "" } }, { index: 0, function: { arguments: "{}" } }] } as const
    expect(chunksOf(headFor(format, toolCalls))[0]).toMatchObject({ choices: [{ delta: { role: "assistant", content: null } }] })
    expect(chunksOf(headFor(format, { type: "tokens", index: 0, tokens: ["a"] }))[0]).toMatchObject({ choices: [{ delta: { role: "assistant", content: "" } }] })
    const deltas = chunksOf(encodeEvent(format, toolCalls))
    expect(deltas.map((c) => (c["choices"] as Array<{ delta: unknown }>)[0]?.delta)).toEqual([
      { tool_calls: [toolCalls.deltas[0]] },
      { tool_calls: [toolCalls.deltas[1]] }
    ])
    const end = chunksOf(encodeEvent(format, { ...done, finishReason: "tool_calls" }))
    expect(end[0]).toMatchObject({ choices: [{ finish_reason: "tool_calls" }], system_fingerprint: "fp" })
  })

  it("chat logprobs go with their token, or all with the first token when an upstream chunk held several tokens", () => {
    const format = chatFormat(identity)
    const each = chunksOf(encodeEvent(format, { type: "tokens", index: 0, tokens: ["a", "b"], logprobs: [entry("a"), entry("b")] }))
    expect(each.map((c) => (c["choices"] as Array<{ logprobs: unknown }>)[0]?.logprobs)).toEqual([{ content: [entry("a")] }, { content: [entry("b")] }])
    const together = chunksOf(encodeEvent(format, { type: "tokens", index: 0, tokens: ["ab", "c"], logprobs: [entry("a"), entry("b"), entry("c")] }))
    expect(together.map((c) => (c["choices"] as Array<{ logprobs: unknown }>)[0]?.logprobs)).toEqual([
      { content: [entry("a"), entry("b"), entry("c")] },
      { content: [] }
    ])
  })

  it("completions: the legacy logprobs shape with running text offsets; usage chunk with the fingerprint", () => {
    const format = completionFormat({ ...identity, includeUsage: true, textOffset: 5 })
    const chunks = chunksOf(encodeEvent(format, { type: "tokens", index: 0, tokens: [" a", " bc"], logprobs: [entry(" a"), entry(" bc", -1)] }))
    expect(chunks.map((c) => (c["choices"] as Array<{ logprobs: unknown }>)[0]?.logprobs)).toEqual([
      { tokens: [" a"], token_logprobs: [-0.5], top_logprobs: [{ " a": -0.5 }], text_offset: [5] },
      { tokens: [" bc"], token_logprobs: [-1], top_logprobs: [{ " bc": -1 }], text_offset: [7] }
    ])
    expect(encodeEvent(format, { type: "toolCalls", index: 0, deltas: [{ index: 0 }] })).toBe("")
    const end = chunksOf(encodeEvent(format, done))
    expect(end[1]).toMatchObject({ choices: [], usage: { total_tokens: 5 }, system_fingerprint: "fp" })
  })
})

describe("whole answers", () => {
  it("chat: several tool calls merged by index, content null without text, logprobs null unless asked", () => {
    const answer = collectAnswer()
    answer.push({ type: "toolCalls", index: 0, deltas: [{ index: 1, id: "c2", type: "function", function: { name: "g", arguments: "{\"x\"" } }, { index: 0, id: "c1", type: "function", function: { name: "f", arguments: "{}" } }] })
    answer.push({ type: "toolCalls", index: 2, deltas: [{ index: 1, function: { arguments: ":1}" } }] })
    const whole = answer.chat(identity, { ...done, finishReason: "tool_calls" }, false)
    expect(whole.choices[0]).toEqual({
      index: 0,
      message: {
        role: "assistant",
        content: null,
        tool_calls: [
          { id: "c1", type: "function", function: { name: "f", arguments: "{}" } },
          { id: "c2", type: "function", function: { name: "g", arguments: '{"x":1}' } }
        ]
      },
      logprobs: null,
      finish_reason: "tool_calls"
    })
    expect(whole.system_fingerprint).toBe("fp")
  })

  it("text with logprobs, chat and legacy", () => {
    const answer = collectAnswer()
    answer.push({ type: "tokens", index: 0, tokens: ["Hi", "!"], logprobs: [entry("Hi"), entry("!")] })
    expect(answer.chat(identity, done, true).choices[0]).toMatchObject({ message: { content: "Hi!" }, logprobs: { content: [entry("Hi"), entry("!")] } })
    expect(answer.completion({ ...identity, textOffset: 3 }, done, true).choices[0]?.logprobs).toEqual({
      tokens: ["Hi", "!"],
      token_logprobs: [-0.5, -0.5],
      top_logprobs: [{ Hi: -0.5 }, { "!": -0.5 }],
      text_offset: [3, 5]
    })
    expect(answer.completion(identity, done, false).choices[0]?.logprobs).toBeNull()
  })
})

describe("errors and routes", () => {
  it("an upstream's refusal is answered with its own status, type, code and param", () => {
    const e = new UpstreamRejected({ workerId: "w", status: 422, message: "bad", code: "invalid_value", errorType: "invalid_request_error", param: "seed" })
    expect(toOpenAiError(e)).toEqual({ status: 422, body: { error: { message: "bad", type: "invalid_request_error", code: "invalid_value", param: "seed" } } })
    expect(toOpenAiError(new UpstreamRejected({ workerId: "w", status: 400, message: "m", code: "upstream_rejected" })).body.error.type).toBe("invalid_request_error")
    expect(toOpenAiError(new UnsupportedParameter({ model: "m", param: "tools", feature: "tools" }))).toMatchObject({
      status: 400,
      body: { error: { type: "invalid_request_error", code: "unsupported_parameter" } }
    })
    expect(toOpenAiError(new RouteNotFound({ method: "GET", path: "/x" }))).toEqual({
      status: 404,
      body: { error: { message: "Invalid URL (GET /x)", type: "invalid_request_error", code: "unknown_url" } }
    })
  })

  it("the model id of /v1/models/... holds '/', encoded or not", () => {
    expect(modelIdOf("/v1/models/mlx-community/Llama-3")).toBe("mlx-community/Llama-3")
    expect(modelIdOf("/v1/models/mlx-community%2FLlama-3?x=1")).toBe("mlx-community/Llama-3")
    expect(modelIdOf("/v1/other")).toBeUndefined()
    expect(modelIdOf("/v1/models/%E0%A4%A")).toBeUndefined()
  })
})
