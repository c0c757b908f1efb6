import { describe, expect, it } from "@effect/vitest"
import { DEFAULT_OPENAI_FEATURES, FEATURES, featuresFor, LEGACY_FEATURES, MLX_LM_FEATURES, requirementsOf } from "../../src/domain/features.js"
import type { ChatMessage } from "../../src/domain/inference.js"

const user: ChatMessage = { role: "user", content: "hi" }
const needs = (input: Parameters<typeof requirementsOf>[0]) => requirementsOf(input).map((r) => `${r.feature}:${r.param}`)

describe("requirementsOf: what a request needs an engine to honour", () => {
  it("a plain chat or a bare prompt (WebSocket, RPC) needs nothing", () => {
    expect(needs({ endpoint: "chat", messages: [user] })).toEqual([])
    expect(needs({ prompt: "p" } as never)).toEqual([])
    expect(needs({ messages: [user], params: { user: "u", metadata: { a: 1 }, top_k: 5, n: 1 } })).toEqual([])
  })

  it("names the parameter that needs each feature, once per feature, in a fixed order", () => {
    expect(
      needs({
        endpoint: "chat",
        messages: [user],
        params: {
          tools: [{ type: "function" }],
          tool_choice: "required",
          response_format: { type: "json_schema" },
          logprobs: true,
          top_logprobs: 2,
          seed: 0,
          presence_penalty: 1,
          frequency_penalty: -1,
          logit_bias: { "1": 5 }
        }
      })
    ).toEqual([
      "tools:tools",
      "response_format:response_format",
      "logprobs:logprobs",
      "seed:seed",
      "presence_penalty:presence_penalty",
      "frequency_penalty:frequency_penalty",
      "logit_bias:logit_bias"
    ])
    expect(needs({ endpoint: "chat", messages: [user], params: { tool_choice: { type: "function", function: { name: "f" } } } })).toEqual(["tools:tool_choice"])
    expect(needs({ endpoint: "chat", messages: [user], params: { top_logprobs: 3 } })).toEqual(["logprobs:top_logprobs"])
  })

  it("values that change nothing need nothing", () => {
    expect(
      needs({
        endpoint: "chat",
        messages: [user],
        params: {
          tools: [],
          tool_choice: "none",
          response_format: { type: "text" },
          logprobs: false,
          top_logprobs: 0,
          seed: null,
          presence_penalty: 0,
          frequency_penalty: 0,
          logit_bias: {},
          echo: false,
          suffix: ""
        }
      })
    ).toEqual([])
  })

  it("legacy completions: the route itself, logprobs as a number (0 included), echo and suffix", () => {
    expect(needs({ endpoint: "completions", params: { logprobs: 0, echo: true, suffix: "end" } })).toEqual([
      "completions:prompt",
      "logprobs:logprobs",
      "echo:echo",
      "suffix:suffix"
    ])
  })

  it("tool calling in the history and content parts other than text are found by position", () => {
    const history: ReadonlyArray<ChatMessage> = [
      user,
      { role: "assistant", content: null, tool_calls: [{ id: "c", type: "function", function: { name: "f", arguments: "{}" } }] },
      { role: "tool", tool_call_id: "c", content: "r" }
    ]
    expect(needs({ endpoint: "chat", messages: history })).toEqual(["tools:messages[1].tool_calls"])
    expect(needs({ endpoint: "chat", messages: [user, { role: "function", name: "f", content: "r" }] })).toEqual(["tools:messages[1].role"])
    expect(needs({ endpoint: "chat", messages: [{ role: "assistant", content: "", function_call: { name: "f" } }] })).toEqual([
      "tools:messages[0].function_call"
    ])
    const parts: ReadonlyArray<ChatMessage> = [
      { role: "user", content: [{ type: "text", text: "look" }, { type: "image_url", image_url: { url: "x" } }] }
    ]
    expect(needs({ endpoint: "chat", messages: parts })).toEqual(["multimodal:messages[0].content[1].type"])
    expect(needs({ endpoint: "chat", messages: [{ role: "user", content: [{ type: "text", text: "only text" }] }] })).toEqual([])
  })
})

describe("featuresFor and the engines' lists", () => {
  it("per-model list, else the worker's, else the legacy set", () => {
    expect(featuresFor({ features: ["tools"], modelFeatures: { m: ["seed"] } }, "m")).toEqual(["seed"])
    expect(featuresFor({ features: ["tools"], modelFeatures: { m: ["seed"] } }, "other")).toEqual(["tools"])
    expect(featuresFor({}, "m")).toEqual(LEGACY_FEATURES)
    expect(featuresFor({ modelFeatures: { toString: ["x"] } }, "m")).toEqual(LEGACY_FEATURES)
  })

  it("an OpenAI-compatible server by default: all but echo and suffix; mlx_lm.server: what its source reads", () => {
    expect(DEFAULT_OPENAI_FEATURES).toEqual(FEATURES.filter((f) => f !== "echo" && f !== "suffix"))
    expect([...MLX_LM_FEATURES].sort()).toEqual(["completions", "frequency_penalty", "logit_bias", "presence_penalty", "seed", "tools"])
  })
})
