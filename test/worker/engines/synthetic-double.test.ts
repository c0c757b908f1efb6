import { describe, expect, it } from "@effect/vitest"
import { Effect, Fiber, TestClock } from "effect"
import type { InferenceRequest } from "../../../src/domain/inference.js"
import { exampleFromSchema } from "../../../src/worker/engines/schema-example.js"
import { makeSyntheticEngine, naturalAnswer, planSynthetic, prng, SYSTEM_FINGERPRINT } from "../../../src/worker/engines/synthetic-engine.js"
import { engineRequest } from "../support/engine-fixtures.js"
import { runEngine } from "../support/run-engine.js"

/** The synthetic engine as a full double of an OpenAI-compatible model (issue 12). */

const request = (over: Partial<InferenceRequest> = {}): InferenceRequest =>
  engineRequest({ model: "synthetic/demo", messages: [{ role: "user", content: "What is the weather?" }], endpoint: "chat", ...over })

const weather = {
  type: "function",
  function: {
    name: "get_weather",
    parameters: { type: "object", properties: { city: { type: "string" }, days: { type: "integer", minimum: 1, maximum: 7 } }, required: ["city", "days"] }
  }
}
const time = { type: "function", function: { name: "get_time", parameters: { type: "object", properties: {} } } }
const noParameters = { type: "function", function: { name: "ping" } }

const fast = makeSyntheticEngine({ tokensPerSecond: 0, firstTokenMs: 0 })

const source = (seed = 1) => ({ next: prng(seed), words: ["alpha", "beta", "gamma"] })

const argumentsOf = (plan: ReturnType<typeof planSynthetic>) => JSON.parse((plan.toolCalls ?? []).map((d) => d.function?.arguments ?? "").join("")) as unknown

describe("exampleFromSchema: a value matching a JSON Schema", () => {
  it("objects, arrays, enums, consts, numbers in range, formats, unions, refs", () => {
    const schema = {
      type: "object",
      properties: {
        name: { type: "string", minLength: 12, maxLength: 14 },
        age: { type: "integer", minimum: 18, maximum: 20 },
        score: { type: "number", exclusiveMinimum: 0, exclusiveMaximum: 1 },
        kind: { enum: ["a", "b"] },
        fixed: { const: 7 },
        tags: { type: "array", items: { type: "string" }, minItems: 2 },
        when: { type: "string", format: "date-time" },
        maybe: { anyOf: [{ type: "null" }, { type: "boolean" }] },
        either: { type: ["null", "integer"] },
        friend: { $ref: "#/$defs/Friend" },
        merged: { allOf: [{ type: "object", properties: { a: { type: "integer" } } }, { properties: { b: { type: "string" } } }] },
        pair: { type: "array", prefixItems: [{ type: "string" }, { type: "integer" }] },
        nothing: { type: "null" }
      },
      $defs: { Friend: { type: "object", properties: { id: { type: "string", format: "uuid" } } } }
    }
    const value = exampleFromSchema(schema, source()) as Record<string, unknown>
    expect(typeof value["name"]).toBe("string")
    expect((value["name"] as string).length).toBeGreaterThanOrEqual(12)
    expect((value["name"] as string).length).toBeLessThanOrEqual(14)
    expect(value["age"]).toBeGreaterThanOrEqual(18)
    expect(value["age"]).toBeLessThanOrEqual(20)
    expect(Number.isInteger(value["age"])).toBe(true)
    expect(value["score"]).toBeGreaterThan(0)
    expect(value["score"]).toBeLessThan(1)
    expect(["a", "b"]).toContain(value["kind"])
    expect(value["fixed"]).toBe(7)
    expect((value["tags"] as Array<unknown>).length).toBe(2)
    expect(value["when"]).toBe("2025-01-01T12:00:00Z")
    expect(typeof value["maybe"]).toBe("boolean")
    expect(Number.isInteger(value["either"])).toBe(true)
    expect(value["friend"]).toEqual({ id: "00000000-0000-4000-8000-000000000000" })
    expect(value["merged"]).toEqual({ a: expect.any(Number), b: expect.any(String) })
    expect(value["pair"]).toEqual([expect.any(String), expect.any(Number)])
    expect(value["nothing"]).toBeNull()
    // Deterministic: the same draws give the same value.
    expect(exampleFromSchema(schema, source())).toEqual(value)
  })

  it("stops at depth 8 on a recursive schema; anything but a schema object is a string", () => {
    const tree = { $ref: "#/$defs/Node", $defs: { Node: { type: "object", properties: { child: { $ref: "#/$defs/Node" } } } } }
    expect(JSON.stringify(exampleFromSchema(tree, source()))).toContain("null")
    expect(typeof exampleFromSchema(true, source())).toBe("string")
    expect(exampleFromSchema({ $ref: "http://elsewhere/x" }, source())).toEqual(expect.any(String))
  })
})

describe("synthetic engine: tools", () => {
  it("tool_choice by name, required, auto (the first tool) and none", () => {
    const named = planSynthetic(request({ params: { tools: [time, weather], tool_choice: { type: "function", function: { name: "get_weather" } } } }))
    expect(named.finishReason).toBe("tool_calls")
    expect(named.tokens).toEqual([])
    expect(named.toolCalls?.[0]).toEqual({ index: 0, id: expect.stringMatching(/^call_[0-9a-f]{16}$/), type: "function", function: { name: "get_weather", arguments: "" } })
    expect(named.toolCalls?.slice(1).every((d) => d.index === 0 && d.id === undefined && d.function?.arguments !== undefined)).toBe(true)
    const args = argumentsOf(named) as { city: string; days: number }
    expect(typeof args.city).toBe("string")
    expect(args.days).toBeGreaterThanOrEqual(1)
    expect(args.days).toBeLessThanOrEqual(7)
    expect(planSynthetic(request({ params: { tools: [time, weather], tool_choice: "required" } })).toolCalls?.[0]?.function?.name).toBe("get_time")
    expect(planSynthetic(request({ params: { tools: [time, weather] } })).toolCalls?.[0]?.function?.name).toBe("get_time")
    const none = planSynthetic(request({ params: { tools: [weather], tool_choice: "none" } }))
    expect(none.toolCalls).toBeUndefined()
    expect(none.tokens.length).toBeGreaterThan(0)
    expect(argumentsOf(planSynthetic(request({ params: { tools: [noParameters] } })))).toEqual({})
  })

  it("auto after a tool result answers in text; required still calls", () => {
    const afterTool = request({
      messages: [
        { role: "user", content: "Weather?" },
        { role: "assistant", content: null, tool_calls: [{ id: "c", type: "function", function: { name: "get_weather", arguments: "{}" } }] },
        { role: "tool", tool_call_id: "c", content: "sunny" }
      ],
      params: { tools: [weather] }
    })
    expect(planSynthetic(afterTool).toolCalls).toBeUndefined()
    expect(planSynthetic(afterTool).finishReason).toBe("stop")
    expect(planSynthetic({ ...afterTool, params: { tools: [weather], tool_choice: "required" } }).toolCalls).toBeDefined()
    // Without messages (a raw prompt) there is nobody to call tools.
    expect(planSynthetic(request({ messages: undefined, prompt: "p", params: { tools: [weather] } })).toolCalls).toBeUndefined()
  })

  it("max_tokens cuts a call's deltas: finish length", () => {
    const cut = planSynthetic(request({ maxTokens: 2, params: { tools: [weather], tool_choice: "required" } }))
    expect(cut.toolCalls).toHaveLength(2)
    expect(cut.finishReason).toBe("length")
  })

  it.effect("streams the deltas through emitToolCalls, counts them as completion tokens, and gives its fingerprint", () =>
    Effect.gen(function* () {
      const r = request({ params: { tools: [weather], tool_choice: "required" } })
      const run = yield* runEngine(fast, r)
      expect(run.tokens).toEqual([])
      expect(run.toolCalls).toEqual(planSynthetic(r).toolCalls)
      expect(run.finish).toMatchObject({ finishReason: "tool_calls", usage: { completionTokens: run.toolCalls.length }, systemFingerprint: SYSTEM_FINGERPRINT })
      // Paced like tokens, on the Effect clock.
      const paced = makeSyntheticEngine({ tokensPerSecond: 10, firstTokenMs: 0 })
      const fiber = yield* Effect.fork(runEngine(paced, r))
      yield* TestClock.adjust(`${run.toolCalls.length * 100} millis`)
      const pacedRun = yield* Fiber.join(fiber)
      expect(pacedRun.toolCalls).toEqual(run.toolCalls)
      expect(pacedRun.batches).toEqual([])
    })
  )
})

describe("synthetic engine: structured output, logprobs, seed, penalties, logit_bias, echo", () => {
  it("response_format json_object and json_schema: valid JSON (matching the schema), in pieces", () => {
    const object = planSynthetic(request({ params: { response_format: { type: "json_object" } } }))
    expect(Object.keys(JSON.parse(object.tokens.join("")) as object)).toEqual(["answer"])
    const schema = { type: "object", properties: { n: { type: "integer", minimum: 3, maximum: 3 }, ok: { type: "boolean" } }, required: ["n", "ok"] }
    const typed = planSynthetic(request({ params: { response_format: { type: "json_schema", json_schema: { name: "x", schema } } } }))
    expect(JSON.parse(typed.tokens.join(""))).toEqual({ n: 3, ok: expect.any(Boolean) })
    expect(typed.tokens.every((t) => t.length <= 6)).toBe(true)
    expect(planSynthetic(request({ params: { response_format: { type: "text" } } })).tokens).toEqual(planSynthetic(request()).tokens)
  })

  it("chat logprobs: one entry per token, the token first among top_logprobs; completions: logprobs N", () => {
    const plan = planSynthetic(request({ maxTokens: 5, params: { logprobs: true, top_logprobs: 3 } }))
    expect(plan.logprobs).toHaveLength(5)
    plan.logprobs?.forEach((entry, i) => {
      expect(entry.token).toBe(plan.tokens[i])
      expect(entry.logprob).toBeLessThanOrEqual(0)
      expect(entry.bytes).toEqual([...new TextEncoder().encode(entry.token)])
      expect(entry.top_logprobs).toHaveLength(3)
      expect(entry.top_logprobs[0]?.token).toBe(entry.token)
      expect(entry.top_logprobs[1]?.logprob ?? 0).toBeLessThan(entry.logprob)
    })
    expect(planSynthetic(request({ maxTokens: 5, params: { logprobs: true } })).logprobs?.every((e) => e.top_logprobs.length === 0)).toBe(true)
    expect(planSynthetic(request({ maxTokens: 5, params: { logprobs: false, top_logprobs: 3 } })).logprobs).toBeUndefined()
    const legacy = planSynthetic(request({ messages: undefined, prompt: "Once", endpoint: "completions", maxTokens: 4, params: { logprobs: 2 } }))
    expect(legacy.logprobs?.map((e) => e.top_logprobs.length)).toEqual([2, 2, 2, 2])
  })

  it("seed: same seed, same text; another seed, another text; no seed: as before", () => {
    const a = planSynthetic(request({ params: { seed: 1 } })).tokens
    expect(planSynthetic(request({ params: { seed: 1 } })).tokens).toEqual(a)
    expect(planSynthetic(request({ params: { seed: 2 } })).tokens).not.toEqual(a)
    expect(planSynthetic(request({ params: { user: "someone" } })).tokens).toEqual(planSynthetic(request()).tokens)
  })

  it("presence_penalty avoids repeated words; a negative penalty repeats them; logit_bias bans or forces words", () => {
    const words = (tokens: ReadonlyArray<string>) => tokens.map((t) => t.trim().replace(/\.$/, "").toLowerCase())
    const plain = words(naturalAnswer(request()))
    const penalised = words(naturalAnswer(request({ params: { presence_penalty: 2 } })))
    const repeated = words(naturalAnswer(request({ params: { frequency_penalty: -2 } })))
    const distinct = (w: ReadonlyArray<string>) => new Set(w).size / w.length
    expect(distinct(penalised)).toBeGreaterThan(distinct(plain))
    expect(distinct(repeated)).toBeLessThan(distinct(plain))
    // Token ids are positions in the vocabulary: 1 is "cluster", 3 is "with".
    expect(words(naturalAnswer(request({ params: { logit_bias: { "1": -100 } } })))).not.toContain("cluster")
    expect(new Set(words(naturalAnswer(request({ params: { logit_bias: { "3": 100, "999": 100, x: "y" } } }))))).toEqual(new Set(["with"]))
  })

  it("echo: the prompt's words first, not counted as completion tokens", () => {
    const prompt = "Once upon a time"
    const plan = planSynthetic(request({ messages: undefined, prompt, endpoint: "completions", maxTokens: 3, params: { echo: true, logprobs: 0 } }))
    expect(plan.tokens.join("").startsWith(prompt)).toBe(true)
    expect(plan.echoed).toBe(4)
    expect(plan.tokens).toHaveLength(7)
    expect(plan.logprobs).toHaveLength(7)
  })

  it.effect("echoed tokens are emitted but not counted; logprobs travel with their tokens", () =>
    Effect.gen(function* () {
      const run = yield* runEngine(fast, request({ messages: undefined, prompt: "a b", endpoint: "completions", maxTokens: 3, params: { echo: true, logprobs: 1 } }))
      expect(run.tokens.join("").startsWith("a b")).toBe(true)
      expect(run.finish.usage.completionTokens).toBe(3)
      expect(run.logprobs.map((e) => e.token)).toEqual(run.tokens)
    })
  )
})
