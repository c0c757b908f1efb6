import { createOpenAICompatible } from "@ai-sdk/openai-compatible"
import { AIMessageChunk } from "@langchain/core/messages"
import { ChatOpenAI } from "@langchain/openai"
import { expect, inject, layer } from "@effect/vitest"
import { generateText, jsonSchema, tool, type ToolSet } from "ai"
import { Context, Effect, Layer } from "effect"
import OpenAI from "openai"
import { baseUrl, controllerLayer, workerLayer } from "../support/cluster.js"
import { eventually } from "../support/eventually.js"
import { fakeUpstream, TOO_LONG_MESSAGE, UPSTREAM_FINGERPRINT } from "../support/fake-upstream.js"
import type { TestHttpServer } from "../worker/support/http-server.js"
import { attemptCountingClient, openaiClient, promise } from "./support/openai-clients.js"

/**
 * Issue 12 through the `openai` engine: a real controller and two real workers whose engine talks
 * to an in-test OpenAI-compatible server (test/support/fake-upstream.ts) that records what it
 * received. Every field a client sends arrives there unchanged; tool calls, logprobs and the
 * fingerprint it answers come back to the client in OpenAI's shapes; `/v1/completions` goes to its
 * `/v1/completions`; its 400 reaches the client as a 400 with its message, tried on one worker only.
 */

const natsUrl = inject("natsUrl")
const MODEL = "up/model"

class Upstream extends Context.Tag("test/Upstream")<Upstream, TestHttpServer>() {}

const openAiWorker = (id: string) =>
  Layer.unwrapEffect(
    Effect.map(Upstream, (upstream) =>
      workerLayer(natsUrl, {
        id,
        models: [MODEL],
        patch: (c) => ({ ...c, worker: { ...c.worker, engine: { ...c.worker.engine, type: "openai", openai: { ...c.worker.engine.openai, baseUrl: upstream.baseUrl } } } })
      })
    )
  )

const ClusterLive = Layer.mergeAll(openAiWorker("upstream-w1"), openAiWorker("upstream-w2")).pipe(
  Layer.provideMerge(Layer.scoped(Upstream, fakeUpstream)),
  Layer.provideMerge(controllerLayer(natsUrl))
)

/** The requests the upstream received from now on. */
const receivedSince = Effect.map(Upstream, (upstream) => {
  const from = upstream.received.length
  return () => upstream.received.slice(from)
})

const postJson = (path: string, body: unknown) =>
  Effect.flatMap(baseUrl, (url) =>
    promise(() =>
      fetch(`${url}${path}`, { method: "POST", headers: { "content-type": "application/json" }, body: JSON.stringify(body) }).then(async (r) => ({
        status: r.status,
        body: (await r.json()) as Record<string, unknown>
      }))
    )
  )

const weatherTool = {
  type: "function",
  function: {
    name: "get_weather",
    description: "The weather forecast of a city",
    parameters: { type: "object", properties: { city: { type: "string" }, days: { type: "integer" } }, required: ["city", "days"] },
    strict: true
  }
} as const

layer(ClusterLive, { excludeTestServices: true })("the openai engine against a recording OpenAI-compatible upstream", (it) => {
  it.effect("both workers are online and say what their engine honours", () =>
    Effect.gen(function* () {
      const url = yield* baseUrl
      const workers = yield* eventually(
        promise(() =>
          fetch(`${url}/api/cluster/workers`).then(async (r) => {
            const list = (await r.json()) as ReadonlyArray<{ status: string; capabilities: { engine: string; features?: ReadonlyArray<string> } }>
            if (list.filter((w) => w.status === "online").length !== 2) throw new Error("not yet")
            return list
          })
        ).pipe(Effect.flatMap((w) => (w.length === 2 ? Effect.succeed(w) : Effect.fail("not yet"))))
      )
      expect(workers.every((w) => w.capabilities.engine === "openai")).toBe(true)
      expect(workers[0]?.capabilities.features).toEqual(
        expect.arrayContaining(["tools", "response_format", "logprobs", "seed", "completions", "multimodal"])
      )
      expect(workers[0]?.capabilities.features).not.toContain("echo")
    })
  )

  it.effect("every field of a chat request arrives upstream unchanged; the tool call it answers comes back", () =>
    Effect.gen(function* () {
      const since = yield* receivedSince
      const messages = [
        { role: "system", content: "You are a weather bot", name: "sys" },
        { role: "user", content: [{ type: "text", text: "Weather in Paris?" }, { type: "image_url", image_url: { url: "https://example.com/p.png", detail: "low" } }], name: "ann" },
        { role: "assistant", content: null, tool_calls: [{ id: "call_0", type: "function", function: { name: "get_weather", arguments: "{\"city\":\"Nice\",\"days\":1}" } }], refusal: null },
        { role: "tool", tool_call_id: "call_0", content: "rain" },
        { role: "user", content: "And in Paris?" }
      ]
      const fields = {
        tools: [weatherTool],
        tool_choice: { type: "function", function: { name: "get_weather" } },
        parallel_tool_calls: false,
        response_format: { type: "json_schema", json_schema: { name: "w", schema: { type: "object" }, strict: true } },
        logprobs: true,
        top_logprobs: 2,
        seed: 42,
        presence_penalty: 1.5,
        frequency_penalty: -0.5,
        logit_bias: { "1234": -100, "42": 5 },
        user: "user-7",
        metadata: { team: "weather" },
        service_tier: "auto",
        top_k: 40,
        chat_template_kwargs: { enable_thinking: false },
        max_completion_tokens: 77,
        temperature: 0.3,
        top_p: 0.9,
        stop: ["\n\n", "END"]
      }
      const r = yield* postJson("/v1/chat/completions", { model: MODEL, messages, ...fields })
      expect(r.status).toBe(200)
      const received = since()
      expect(received).toHaveLength(1)
      expect(received[0]?.url).toBe("/v1/chat/completions")
      const body = received[0]?.body as Record<string, unknown>
      expect(body).toEqual({ model: MODEL, messages, ...fields, stream: true, stream_options: { include_usage: true } })
      // The client's spelling of the limit travels, not a second one.
      expect(body).not.toHaveProperty("max_tokens")
      expect(r.body).toMatchObject({
        object: "chat.completion",
        system_fingerprint: UPSTREAM_FINGERPRINT,
        choices: [
          {
            finish_reason: "tool_calls",
            message: {
              role: "assistant",
              content: null,
              tool_calls: [{ id: "call_up_1", type: "function", function: { name: "get_weather", arguments: '{"city":"Paris","days":3}' } }]
            }
          }
        ]
      })
    })
  )

  it.effect("no max_tokens from the client: none upstream (the server's own limit applies)", () =>
    Effect.gen(function* () {
      const since = yield* receivedSince
      const openai = yield* openaiClient
      yield* promise(() => openai.chat.completions.create({ model: MODEL, messages: [{ role: "user", content: "hi" }] }))
      const body = since()[0]?.body as Record<string, unknown>
      expect(body).not.toHaveProperty("max_tokens")
      expect(body).not.toHaveProperty("max_completion_tokens")
      yield* promise(() => openai.chat.completions.create({ model: MODEL, messages: [{ role: "user", content: "hi" }], max_tokens: 9 }))
      expect(since()[1]?.body).toMatchObject({ max_tokens: 9 })
    })
  )

  it.effect("openai SDK: streamed tool calls and logprobs from upstream, assembled by the SDK", () =>
    Effect.gen(function* () {
      const openai = yield* openaiClient
      const final = yield* promise(() =>
        openai.chat.completions.stream({ model: MODEL, messages: [{ role: "user", content: "Weather?" }], tools: [weatherTool] }).finalChatCompletion()
      )
      expect(final.choices[0]?.finish_reason).toBe("tool_calls")
      expect(final.choices[0]?.message.tool_calls).toEqual([
        { id: "call_up_1", type: "function", function: { name: "get_weather", arguments: '{"city":"Paris","days":3}', parsed_arguments: { city: "Paris", days: 3 } } }
      ])
      const stream = yield* promise(() =>
        openai.chat.completions.create({ model: MODEL, messages: [{ role: "user", content: "Weather?" }], logprobs: true, top_logprobs: 2, stream: true })
      )
      const chunks = yield* promise(async () => {
        const all = []
        for await (const c of stream) all.push(c)
        return all
      })
      const entries = chunks.flatMap((c) => c.choices[0]?.logprobs?.content ?? [])
      expect(entries.map((e) => e.token)).toEqual(["Sunny", " in", " Paris", "."])
      expect(entries[0]).toEqual({ token: "Sunny", logprob: -0.25, bytes: [...Buffer.from("Sunny")], top_logprobs: [{ token: "Sunny", logprob: -0.25, bytes: null }, { token: "alt1", logprob: -1.25, bytes: null }] })
      expect(chunks.map((c) => c.choices[0]?.delta.content ?? "").join("")).toBe("Sunny in Paris.")
      const whole = yield* promise(() =>
        openai.chat.completions.create({ model: MODEL, messages: [{ role: "user", content: "Weather?" }], logprobs: true, top_logprobs: 2 })
      )
      expect(whole.choices[0]?.logprobs?.content).toEqual(entries)
      expect(whole.usage).toMatchObject({ prompt_tokens: 11, completion_tokens: 4 })
    })
  )

  it.effect("a follow-up turn: the assistant's tool_calls and the tool's result reach upstream as sent", () =>
    Effect.gen(function* () {
      const since = yield* receivedSince
      const openai = yield* openaiClient
      const messages: Array<OpenAI.Chat.Completions.ChatCompletionMessageParam> = [
        { role: "user", content: "Weather in Paris?" },
        { role: "assistant", content: null, tool_calls: [{ id: "call_up_1", type: "function", function: { name: "get_weather", arguments: '{"city":"Paris","days":3}' } }] },
        { role: "tool", tool_call_id: "call_up_1", content: "sunny, 24 C" }
      ]
      const answer = yield* promise(() => openai.chat.completions.create({ model: MODEL, messages, tools: [weatherTool] }))
      expect(answer.choices[0]?.message.content).toBe("The tool said: sunny, 24 C")
      expect(answer.choices[0]?.finish_reason).toBe("stop")
      expect((since()[0]?.body as { messages: unknown }).messages).toEqual(messages)
    })
  )

  it.effect("legacy completions go to the upstream's /v1/completions with the raw prompt; its logprobs come back in their shape", () =>
    Effect.gen(function* () {
      const since = yield* receivedSince
      const openai = yield* openaiClient
      const prompt = "Tell me a story:"
      const whole = yield* promise(() => openai.completions.create({ model: MODEL, prompt, max_tokens: 4, logprobs: 2, seed: 1 }))
      const received = since()[0]
      expect(received?.url).toBe("/v1/completions")
      expect(received?.body).toEqual({ model: MODEL, prompt, max_tokens: 4, logprobs: 2, seed: 1, stream: true, stream_options: { include_usage: true } })
      const choice = whole.choices[0]
      expect(choice?.text).toBe(" once upon a time")
      expect(choice?.finish_reason).toBe("length")
      expect(choice?.logprobs?.tokens).toEqual([" once", " upon", " a", " time"])
      expect(choice?.logprobs?.token_logprobs).toEqual([-0.5, -0.5, -0.5, -0.5])
      expect(choice?.logprobs?.top_logprobs?.[0]).toEqual({ " once": -0.5, alt1: -1.5 })
      expect(choice?.logprobs?.text_offset).toEqual([16, 21, 26, 28])
      expect(whole.system_fingerprint).toBe(UPSTREAM_FINGERPRINT)
    })
  )

  it.effect("a parameter no worker honours (echo) is a 400 naming it; nothing reaches upstream and the SDK does not retry", () =>
    Effect.gen(function* () {
      const since = yield* receivedSince
      const { openai, attempts } = yield* attemptCountingClient
      const error = yield* Effect.flip(Effect.tryPromise(() => openai.completions.create({ model: MODEL, prompt: "x", echo: true })))
      expect(error.cause).toBeInstanceOf(OpenAI.BadRequestError)
      const e = error.cause as InstanceType<typeof OpenAI.BadRequestError>
      expect(e.message).toContain(`Unsupported parameter: 'echo' is not supported by any worker serving "${MODEL}"`)
      expect(e.code).toBe("unsupported_parameter")
      expect(e.param).toBe("echo")
      expect(attempts()).toBe(1)
      expect(since()).toEqual([])
    })
  )

  it.effect("the upstream's 400 reaches the client as a 400 with its message and code, tried on one worker only, streamed or not", () =>
    Effect.gen(function* () {
      const since = yield* receivedSince
      const { openai, attempts } = yield* attemptCountingClient
      const error = yield* Effect.flip(
        Effect.tryPromise(() => openai.chat.completions.create({ model: MODEL, messages: [{ role: "user", content: "TOO LONG ".repeat(50) }] }))
      )
      expect(error.cause).toBeInstanceOf(OpenAI.BadRequestError)
      const e = error.cause as InstanceType<typeof OpenAI.BadRequestError>
      expect(e.status).toBe(400)
      expect(e.error).toEqual({ message: TOO_LONG_MESSAGE, type: "invalid_request_error", code: "context_length_exceeded", param: "messages" })
      expect(attempts()).toBe(1)
      // One worker tried it; the other was not asked (a client error is not the worker's).
      expect(since()).toHaveLength(1)
      const streamed = yield* postJson("/v1/chat/completions", { model: MODEL, messages: [{ role: "user", content: "TOO LONG" }], stream: true })
      expect(streamed).toEqual({
        status: 400,
        body: { error: { message: TOO_LONG_MESSAGE, type: "invalid_request_error", code: "context_length_exceeded", param: "messages" } }
      })
      expect(since()).toHaveLength(2)
    })
  )

  it.effect("Vercel AI SDK and LangChain read the upstream's tool calls through the cluster", () =>
    Effect.gen(function* () {
      const since = yield* receivedSince
      const url = yield* baseUrl
      const provider = createOpenAICompatible({ name: "cluster", baseURL: `${url}/v1`, apiKey: "unused" })
      const parameters = jsonSchema<{ city: string; days: number }>(weatherTool.function.parameters as never)
      const tools = { get_weather: tool({ description: "weather", inputSchema: parameters }) } as unknown as ToolSet
      const vercel = yield* promise(() =>
        generateText({ model: provider.chatModel(MODEL), prompt: "Weather?", tools, toolChoice: "required", seed: 5, maxRetries: 0 })
      )
      expect(vercel.toolCalls.map((c) => [c.toolName, c.input])).toEqual([["get_weather", { city: "Paris", days: 3 }]])
      expect(since()[0]?.body).toMatchObject({ tool_choice: "required", seed: 5, tools: [{ type: "function", function: { name: "get_weather" } }] })

      const llm = new ChatOpenAI({ model: MODEL, apiKey: "unused", configuration: { baseURL: `${url}/v1` }, maxRetries: 0 })
      const bound = llm.bindTools([weatherTool], { tool_choice: "required" })
      const message = yield* promise(() => bound.invoke("Weather?"))
      expect(message.tool_calls?.map((c) => [c.name, c.args, c.id])).toEqual([["get_weather", { city: "Paris", days: 3 }, "call_up_1"]])
      const chunks = yield* promise(async () => {
        const all: Array<AIMessageChunk> = []
        for await (const c of await bound.stream("Weather?")) all.push(c)
        return all
      })
      const merged = chunks.reduce<AIMessageChunk>((acc, c) => acc.concat(c), new AIMessageChunk({ content: "" }))
      expect(merged.tool_calls?.map((c) => [c.name, c.args])).toEqual([["get_weather", { city: "Paris", days: 3 }]])
    })
  )
})
