import { createOpenAICompatible } from "@ai-sdk/openai-compatible"
import { AIMessage, AIMessageChunk, HumanMessage, ToolMessage } from "@langchain/core/messages"
import { tool as langchainTool } from "@langchain/core/tools"
import { ChatOpenAI } from "@langchain/openai"
import { expect, inject, layer } from "@effect/vitest"
import { generateObject, generateText, stepCountIs, streamText, tool, type ToolSet } from "ai"
import { Effect, Layer } from "effect"
import OpenAI from "openai"
import { zodResponseFormat } from "openai/helpers/zod"
import { z } from "zod"
import { baseUrl, controllerLayer, workerLayer } from "../support/cluster.js"
import { eventually } from "../support/eventually.js"
import { attemptCountingClient, openaiClient, promise } from "./support/openai-clients.js"

/**
 * Issue 12 with three clients nobody here wrote — the official `openai` SDK v6, the Vercel AI SDK
 * (`ai` + `@ai-sdk/openai-compatible`) and LangChain JS (`@langchain/openai`) — against a real
 * controller and two real workers (the synthetic engine, a full double of an OpenAI-compatible
 * model) over a real nats-server: tool calling (forced and auto, streamed and not, a follow-up turn
 * with the tool's result), structured output, logprobs, seed, legacy completions, the model routes.
 */

const natsUrl = inject("natsUrl")
const MODEL = "mlx-community/Llama-3.2-3B-Instruct-4bit"

const ClusterLive = Layer.mergeAll(
  workerLayer(natsUrl, { id: "clients-w1", models: [MODEL] }),
  workerLayer(natsUrl, { id: "clients-w2", models: [MODEL] })
).pipe(Layer.provideMerge(controllerLayer(natsUrl)))

const WeatherInput = z.object({
  city: z.string().describe("The city"),
  days: z.number().int().min(1).max(7),
  unit: z.enum(["celsius", "fahrenheit"])
})

const weatherTool: OpenAI.Chat.Completions.ChatCompletionTool = {
  type: "function",
  function: {
    name: "get_weather",
    description: "The weather forecast of a city",
    parameters: z.toJSONSchema(WeatherInput) as Record<string, unknown>
  }
}
const timeTool: OpenAI.Chat.Completions.ChatCompletionTool = {
  type: "function",
  function: { name: "get_time", description: "The time in a city", parameters: { type: "object", properties: { city: { type: "string" } }, required: ["city"] } }
}

const Person = z.object({ name: z.string(), age: z.number().int().min(0).max(120), tags: z.array(z.string()).min(1), active: z.boolean() })

const collect = async <T>(stream: AsyncIterable<T>): Promise<Array<T>> => {
  const out: Array<T> = []
  for await (const item of stream) out.push(item)
  return out
}

layer(ClusterLive, { excludeTestServices: true })("three real OpenAI clients against the synthetic engine", (it) => {
  it.effect("both workers are online", () =>
    Effect.gen(function* () {
      const url = yield* baseUrl
      yield* eventually(
        promise(() => fetch(`${url}/api/cluster/status`).then(async (r) => ((await r.json()) as { workers: { online: number } }).workers.online === 2))
      )
    })
  )

  // -- openai SDK v6 ------------------------------------------------------------------------------

  it.effect("openai: a forced tool call, not streamed: tool_calls with arguments matching the schema, finish tool_calls", () =>
    Effect.gen(function* () {
      const openai = yield* openaiClient
      const completion = yield* promise(() =>
        openai.chat.completions.create({
          model: MODEL,
          messages: [{ role: "user", content: "What is the weather in Paris?" }],
          tools: [timeTool, weatherTool],
          tool_choice: { type: "function", function: { name: "get_weather" } }
        })
      )
      const choice = completion.choices[0]
      expect(choice?.finish_reason).toBe("tool_calls")
      expect(choice?.message.content).toBeNull()
      const call = choice?.message.tool_calls?.[0]
      expect(call?.type).toBe("function")
      expect(call?.id).toMatch(/^call_/)
      if (call?.type !== "function") throw new Error("expected a function call")
      expect(call.function.name).toBe("get_weather")
      expect(WeatherInput.parse(JSON.parse(call.function.arguments))).toBeDefined()
      expect(completion.system_fingerprint).toBe("fp_synthetic")
    })
  )

  it.effect("openai: auto tool choice, streamed: deltas as OpenAI streams them, assembled by the SDK's stream helper", () =>
    Effect.gen(function* () {
      const openai = yield* openaiClient
      const request = {
        model: MODEL,
        messages: [{ role: "user" as const, content: "What time is it in Lyon?" }],
        tools: [timeTool, weatherTool],
        stream_options: { include_usage: true }
      }
      const raw = yield* promise(async () => collect(await openai.chat.completions.create({ ...request, stream: true })))
      expect(raw[0]?.choices[0]?.delta).toMatchObject({ role: "assistant", content: null })
      const deltas = raw.flatMap((c) => c.choices[0]?.delta.tool_calls ?? [])
      expect(deltas[0]).toMatchObject({ index: 0, type: "function", function: { name: "get_time", arguments: "" } })
      expect(deltas[0]?.id).toMatch(/^call_/)
      expect(deltas.length).toBeGreaterThan(2)
      expect(deltas.slice(1).every((d) => d.id === undefined && d.function?.name === undefined)).toBe(true)
      expect(raw.find((c) => c.choices[0]?.finish_reason !== null && c.choices.length > 0)?.choices[0]?.finish_reason).toBe("tool_calls")
      expect(raw.at(-1)?.usage?.completion_tokens).toBe(deltas.length)

      const final = yield* promise(() => openai.chat.completions.stream(request).finalChatCompletion())
      const call = final.choices[0]?.message.tool_calls?.[0]
      if (call?.type !== "function") throw new Error("expected a function call")
      expect(call.function.name).toBe("get_time")
      expect(JSON.parse(call.function.arguments)).toEqual({ city: expect.any(String) })
      // Same request, same call: the whole answer equals the streamed one.
      const whole = yield* promise(() => openai.chat.completions.create(request))
      expect(whole.choices[0]?.message.tool_calls).toEqual(final.choices[0]?.message.tool_calls)
    })
  )

  it.effect("openai: a follow-up turn with the tool's result (assistant content null + tool_calls, then role tool) answers in text", () =>
    Effect.gen(function* () {
      const openai = yield* openaiClient
      const first = yield* promise(() =>
        openai.chat.completions.create({ model: MODEL, messages: [{ role: "user", content: "Weather in Oslo?" }], tools: [weatherTool], tool_choice: "required" })
      )
      const assistant = first.choices[0]?.message
      const call = assistant?.tool_calls?.[0]
      if (assistant === undefined || call === undefined) throw new Error("expected a tool call")
      const followUp = yield* promise(() =>
        openai.chat.completions.create({
          model: MODEL,
          messages: [
            { role: "user", content: "Weather in Oslo?" },
            { role: "assistant", content: null, tool_calls: assistant.tool_calls ?? [] },
            { role: "tool", tool_call_id: call.id, content: '{"forecast":"snow"}' }
          ],
          tools: [weatherTool]
        })
      )
      expect(followUp.choices[0]?.finish_reason).toBe("stop")
      expect(followUp.choices[0]?.message.tool_calls).toBeUndefined()
      expect(followUp.choices[0]?.message.content?.length ?? 0).toBeGreaterThan(0)
    })
  )

  it.effect("openai: structured output with json_schema (the SDK's zod helper parses it) and json_object", () =>
    Effect.gen(function* () {
      const openai = yield* openaiClient
      const parsed = yield* promise(() =>
        openai.chat.completions.parse({
          model: MODEL,
          messages: [{ role: "user", content: "Describe a person" }],
          response_format: zodResponseFormat(Person, "person")
        })
      )
      expect(Person.parse(parsed.choices[0]?.message.parsed)).toBeDefined()
      const object = yield* promise(() =>
        openai.chat.completions.create({ model: MODEL, messages: [{ role: "user", content: "JSON please" }], response_format: { type: "json_object" } })
      )
      const value = JSON.parse(object.choices[0]?.message.content ?? "") as unknown
      expect(typeof value).toBe("object")
    })
  )

  it.effect("openai: logprobs with top_logprobs, streamed and not: one entry per token, the alternatives asked for", () =>
    Effect.gen(function* () {
      const openai = yield* openaiClient
      const request = { model: MODEL, messages: [{ role: "user" as const, content: "Say something" }], max_tokens: 6, logprobs: true, top_logprobs: 3 }
      const whole = yield* promise(() => openai.chat.completions.create(request))
      const content = whole.choices[0]?.logprobs?.content ?? []
      expect(content).toHaveLength(6)
      expect(content.map((e) => e.token).join("")).toBe(whole.choices[0]?.message.content)
      expect(content.every((e) => e.logprob <= 0 && e.top_logprobs.length === 3 && e.top_logprobs[0]?.token === e.token)).toBe(true)
      const chunks = yield* promise(async () => collect(await openai.chat.completions.create({ ...request, stream: true })))
      const streamed = chunks.flatMap((c) => c.choices[0]?.logprobs?.content ?? [])
      expect(streamed).toEqual(content)
      const none = yield* promise(() =>
        openai.chat.completions.create({ model: MODEL, messages: request.messages, max_tokens: 6, logprobs: false })
      )
      expect(none.choices[0]?.logprobs).toBeNull()
    })
  )

  it.effect("openai: the same seed gives the same text, another seed another; no max_tokens: the engine's own length", () =>
    Effect.gen(function* () {
      const openai = yield* openaiClient
      const ask = (seed: number) =>
        promise(() => openai.chat.completions.create({ model: MODEL, messages: [{ role: "user", content: "Tell me a story" }], seed }))
      const [a, b, c] = yield* Effect.all([ask(7), ask(7), ask(8)], { concurrency: 3 })
      expect(a.choices[0]?.message.content).toBe(b.choices[0]?.message.content)
      expect(a.choices[0]?.message.content).not.toBe(c.choices[0]?.message.content)
      // No max_tokens: nothing was capped; the synthetic answer ends by itself.
      expect(a.choices[0]?.finish_reason).toBe("stop")
    })
  )

  it.effect("openai: content parts (text and image_url) and a developer message are accepted", () =>
    Effect.gen(function* () {
      const openai = yield* openaiClient
      const completion = yield* promise(() =>
        openai.chat.completions.create({
          model: MODEL,
          max_tokens: 4,
          messages: [
            { role: "developer", content: "Be brief" },
            {
              role: "user",
              content: [
                { type: "text", text: "What is in this image?" },
                { type: "image_url", image_url: { url: "data:image/png;base64,iVBORw0KGgo=" } }
              ]
            }
          ]
        })
      )
      expect(completion.choices[0]?.message.content?.length ?? 0).toBeGreaterThan(0)
    })
  )

  it.effect("openai: legacy completions with echo and logprobs, streamed and not", () =>
    Effect.gen(function* () {
      const openai = yield* openaiClient
      const prompt = "Once upon a time"
      const whole = yield* promise(() => openai.completions.create({ model: MODEL, prompt, max_tokens: 5, echo: true, logprobs: 2 }))
      const choice = whole.choices[0]
      expect(choice?.text.startsWith(prompt)).toBe(true)
      expect(choice?.logprobs?.tokens?.join("")).toBe(choice?.text)
      expect(choice?.logprobs?.text_offset?.[0]).toBe(0)
      expect(choice?.logprobs?.top_logprobs?.every((t) => Object.keys(t).length >= 1)).toBe(true)
      expect(whole.usage?.completion_tokens).toBe(5)
      const chunks = yield* promise(async () => collect(await openai.completions.create({ model: MODEL, prompt, max_tokens: 5, logprobs: 1, stream: true })))
      const text = chunks.map((c) => c.choices[0]?.text ?? "").join("")
      const offsets = chunks.flatMap((c) => c.choices[0]?.logprobs?.text_offset ?? [])
      expect(offsets[0]).toBe(prompt.length)
      expect(chunks.flatMap((c) => c.choices[0]?.logprobs?.tokens ?? []).join("")).toBe(text)
    })
  )

  it.effect("openai: models.retrieve works for an id with '/', and an unknown id is a 404 the SDK does not retry", () =>
    Effect.gen(function* () {
      const url = yield* baseUrl
      const openai = yield* openaiClient
      const model = yield* promise(() => openai.models.retrieve(MODEL))
      expect(model).toMatchObject({ id: MODEL, object: "model", owned_by: "mlx-community" })
      // curl's spelling: the id's '/' as is.
      const plain = yield* promise(() => fetch(`${url}/v1/models/${MODEL}`).then(async (r) => ({ status: r.status, body: (await r.json()) as unknown })))
      expect(plain).toMatchObject({ status: 200, body: { id: MODEL } })
      const { openai: counting, attempts } = yield* attemptCountingClient
      const error = yield* Effect.flip(Effect.tryPromise(() => counting.models.retrieve("nobody/nothing")))
      expect(error.cause).toBeInstanceOf(OpenAI.NotFoundError)
      expect((error.cause as InstanceType<typeof OpenAI.NotFoundError>).code).toBe("model_not_found")
      expect(attempts()).toBe(1)
    })
  )

  it.effect("an unknown route is OpenAI's 404 body, not an empty one", () =>
    Effect.gen(function* () {
      const url = yield* baseUrl
      const r = yield* promise(() => fetch(`${url}/v1/embeddingz`, { method: "POST", body: "{}" }).then(async (res) => ({ status: res.status, body: (await res.json()) as unknown })))
      expect(r).toEqual({
        status: 404,
        body: { error: { message: "Invalid URL (POST /v1/embeddingz)", type: "invalid_request_error", code: "unknown_url" } }
      })
    })
  )

  it.effect("refusals name the parameter: n > 1, legacy functions, a user message without content", () =>
    Effect.gen(function* () {
      const openai = yield* openaiClient
      const refused = (body: Record<string, unknown>) =>
        Effect.flip(Effect.tryPromise(() => openai.chat.completions.create({ model: MODEL, messages: [{ role: "user", content: "x" }], ...body } as never)))
      const n = yield* refused({ n: 2 })
      expect(n.cause).toBeInstanceOf(OpenAI.BadRequestError)
      expect((n.cause as InstanceType<typeof OpenAI.BadRequestError>).param).toBe("n")
      const functions = yield* refused({ functions: [{ name: "f", parameters: {} }] })
      expect((functions.cause as InstanceType<typeof OpenAI.BadRequestError>).param).toBe("functions")
      const noContent = yield* refused({ messages: [{ role: "user" }] })
      expect((noContent.cause as InstanceType<typeof OpenAI.BadRequestError>).param).toBe("messages[0].content")
    })
  )

  // -- Vercel AI SDK ------------------------------------------------------------------------------

  const vercel = Effect.map(baseUrl, (url) =>
    createOpenAICompatible({ name: "cluster", baseURL: `${url}/v1`, apiKey: "unused", supportsStructuredOutputs: true, includeUsage: true })
  )

  it.effect("Vercel AI SDK: generateText with a forced tool, streamText with tools, and a multi-step run that feeds the result back", () =>
    Effect.gen(function* () {
      const provider = yield* vercel
      const model = provider.chatModel(MODEL)
      // The SDK's tool types do not survive `exactOptionalPropertyTypes`: the set is typed by hand.
      const weather = { get_weather: tool({ description: "The weather forecast of a city", inputSchema: WeatherInput }) } as unknown as ToolSet
      const forced = yield* promise(() =>
        generateText({ model, prompt: "Weather in Rome?", tools: weather, toolChoice: { type: "tool", toolName: "get_weather" }, maxRetries: 0 })
      )
      expect(forced.finishReason).toBe("tool-calls")
      expect(forced.toolCalls[0]?.toolName).toBe("get_weather")
      expect(WeatherInput.parse(forced.toolCalls[0]?.input)).toBeDefined()

      const streamed = streamText({ model, prompt: "Weather in Rome?", tools: weather, toolChoice: "required", maxRetries: 0 })
      const calls = yield* promise(() => streamed.toolCalls)
      expect(calls.map((c) => c.toolName)).toEqual(["get_weather"])
      expect(WeatherInput.parse(calls[0]?.input)).toBeDefined()

      const executed: Array<unknown> = []
      const run = yield* promise(() =>
        generateText({
          model,
          prompt: "Weather in Rome?",
          tools: {
            get_weather: tool({
              description: "The weather forecast of a city",
              inputSchema: WeatherInput,
              execute: (input) => {
                executed.push(input)
                return Promise.resolve({ forecast: "sunny" })
              }
            })
          } as unknown as ToolSet,
          stopWhen: stepCountIs(3),
          maxRetries: 0
        })
      )
      expect(executed).toHaveLength(1)
      expect(run.steps).toHaveLength(2)
      expect(run.finishReason).toBe("stop")
      expect(run.text.length).toBeGreaterThan(0)
    })
  )

  it.effect("Vercel AI SDK: generateObject returns an object matching the schema (json_schema)", () =>
    Effect.gen(function* () {
      const provider = yield* vercel
      const result = yield* promise(() => generateObject({ model: provider.chatModel(MODEL), schema: Person, prompt: "Describe a person", maxRetries: 0 }))
      expect(Person.parse(result.object)).toEqual(result.object)
    })
  )

  it.effect("Vercel AI SDK: streamText text with usage and the provider's logprobs option passed through", () =>
    Effect.gen(function* () {
      const provider = yield* vercel
      const result = streamText({ model: provider.chatModel(MODEL), prompt: "Hello", maxOutputTokens: 5, seed: 3, maxRetries: 0 })
      const text = yield* promise(() => result.text)
      const usage = yield* promise(() => result.usage)
      expect(text.length).toBeGreaterThan(0)
      expect(usage.outputTokens).toBe(5)
      const again = yield* promise(() => generateText({ model: provider.chatModel(MODEL), prompt: "Hello", maxOutputTokens: 5, seed: 3, maxRetries: 0 }))
      expect(again.text).toBe(text)
    })
  )

  // -- LangChain JS -------------------------------------------------------------------------------

  const langchain = (options: ConstructorParameters<typeof ChatOpenAI>[0] = {}) =>
    Effect.map(baseUrl, (url) => new ChatOpenAI({ model: MODEL, apiKey: "unused", configuration: { baseURL: `${url}/v1` }, maxRetries: 0, ...options }))

  const weatherLangchain = langchainTool(async (input: z.infer<typeof WeatherInput>) => Promise.resolve(`sunny in ${input.city}`), {
    name: "get_weather",
    description: "The weather forecast of a city",
    schema: WeatherInput
  })

  it.effect("LangChain: bindTools, invoked and streamed, then a follow-up turn with a ToolMessage", () =>
    Effect.gen(function* () {
      const llm = yield* langchain()
      const withTools = llm.bindTools([weatherLangchain], { tool_choice: "get_weather" })
      const message = yield* promise(() => withTools.invoke("Weather in Madrid?"))
      expect(message.tool_calls).toHaveLength(1)
      const call = message.tool_calls?.[0]
      expect(call?.name).toBe("get_weather")
      expect(WeatherInput.parse(call?.args)).toBeDefined()

      const chunks = yield* promise(async () => collect(await withTools.stream("Weather in Madrid?")))
      const merged = chunks.reduce<AIMessageChunk>((acc, c) => acc.concat(c), new AIMessageChunk({ content: "" }))
      expect(merged.tool_calls?.map((c) => c.name)).toEqual(["get_weather"])
      expect(merged.tool_calls?.[0]?.args).toEqual(call?.args)

      const answer = yield* promise(() =>
        llm.bindTools([weatherLangchain]).invoke([
          new HumanMessage("Weather in Madrid?"),
          new AIMessage({ content: "", tool_calls: message.tool_calls ?? [] }),
          new ToolMessage({ tool_call_id: call?.id ?? "", content: "sunny" })
        ])
      )
      expect(answer.tool_calls ?? []).toEqual([])
      expect(typeof answer.content === "string" && answer.content.length > 0).toBe(true)
    })
  )

  it.effect("LangChain: withStructuredOutput (json_schema and function calling) returns the schema's object", () =>
    Effect.gen(function* () {
      const llm = yield* langchain()
      const bySchema = yield* promise(() => llm.withStructuredOutput(Person, { name: "person", method: "jsonSchema" }).invoke("Describe a person"))
      expect(Person.parse(bySchema)).toEqual(bySchema)
      const byTool = yield* promise(() => llm.withStructuredOutput(Person, { name: "person", method: "functionCalling" }).invoke("Describe a person"))
      expect(Person.parse(byTool)).toEqual(byTool)
      const byDefault = yield* promise(() => llm.withStructuredOutput(Person).invoke("Describe a person"))
      expect(Person.parse(byDefault)).toEqual(byDefault)
    })
  )

  it.effect("LangChain: logprobs come back in response_metadata", () =>
    Effect.gen(function* () {
      const llm = yield* langchain({ logprobs: true, topLogprobs: 2, maxTokens: 4 })
      const message = yield* promise(() => llm.invoke("Hi"))
      const logprobs = (message.response_metadata as { logprobs?: { content?: ReadonlyArray<{ token: string; top_logprobs: ReadonlyArray<unknown> }> } }).logprobs
      expect(logprobs?.content).toHaveLength(4)
      expect(logprobs?.content?.every((e) => e.top_logprobs.length === 2)).toBe(true)
    })
  )
})
