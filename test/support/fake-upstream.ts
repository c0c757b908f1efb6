import type * as Http from "node:http"
import { type ReceivedRequest, testHttpServer } from "../worker/support/http-server.js"

/**
 * An OpenAI-compatible server for the `openai` engine's end-to-end tests: it records every request
 * exactly as received (`received`) and answers from a script, streamed as OpenAI streams (the
 * engine always asks for a stream):
 *
 * - a last user message containing `TOO LONG` → 400 `context_length_exceeded` (OpenAI's body);
 * - `tools` (and `tool_choice` not `none`) and a conversation that does not end with a tool result →
 *   one call of the named (or first) tool with arguments `{"city":"Paris","days":3}`, streamed as a
 *   delta with id and name then two argument pieces, `finish_reason: tool_calls`;
 * - otherwise text (`Sunny in Paris.` in 4 chunks; after a tool result `The tool said: <result>`),
 *   with `logprobs.content` per chunk when `logprobs: true` (`top_logprobs` alternatives);
 * - `/completions`: `text_completion` chunks of ` once upon a time`, with the legacy logprobs shape
 *   when `logprobs` is a number;
 * - every chunk carries `system_fingerprint: fp_upstream`; a usage chunk comes last.
 */

export const UPSTREAM_FINGERPRINT = "fp_upstream"
export const UPSTREAM_ARGUMENTS = ['{"city":"Pa', 'ris","days":3}']
export const TOO_LONG_MESSAGE = "This model's maximum context length is 4096 tokens. However, your messages resulted in 9001 tokens."

type Json = Record<string, unknown>

const send = (res: Http.ServerResponse, events: ReadonlyArray<unknown>) => {
  res.writeHead(200, { "content-type": "text/event-stream" })
  for (const event of events) res.write(`data: ${typeof event === "string" ? event : JSON.stringify(event)}\n\n`)
  res.end()
}

const textOf = (message: Json | undefined): string => {
  const content = message?.["content"]
  if (typeof content === "string") return content
  if (Array.isArray(content)) return content.map((p: Json) => (typeof p["text"] === "string" ? p["text"] : "")).join("")
  return ""
}

const chatChunk = (model: unknown, delta: Json, extra: Json = {}, finishReason: string | null = null) => ({
  id: "chatcmpl-up",
  object: "chat.completion.chunk",
  created: 1,
  model,
  system_fingerprint: UPSTREAM_FINGERPRINT,
  choices: [{ index: 0, delta, finish_reason: finishReason, ...extra }]
})

const logprobEntry = (token: string, top: number) => ({
  token,
  logprob: -0.25,
  bytes: [...Buffer.from(token)],
  top_logprobs: Array.from({ length: top }, (_, k) => ({ token: k === 0 ? token : `alt${k}`, logprob: -0.25 - k, bytes: null }))
})

const answerChat = (body: Json, res: Http.ServerResponse) => {
  const messages = (Array.isArray(body["messages"]) ? body["messages"] : []) as Array<Json>
  const last = messages[messages.length - 1]
  const lastUser = [...messages].reverse().find((m) => m["role"] === "user")
  if (textOf(lastUser).includes("TOO LONG")) {
    res.writeHead(400, { "content-type": "application/json" })
    res.end(JSON.stringify({ error: { message: TOO_LONG_MESSAGE, type: "invalid_request_error", param: "messages", code: "context_length_exceeded" } }))
    return
  }
  const model = body["model"]
  const usage = { id: "chatcmpl-up", object: "chat.completion.chunk", created: 1, model, system_fingerprint: UPSTREAM_FINGERPRINT, choices: [], usage: { prompt_tokens: 11, completion_tokens: 4, total_tokens: 15 } }
  const tools = Array.isArray(body["tools"]) ? (body["tools"] as Array<Json>) : []
  const choice = body["tool_choice"]
  if (tools.length > 0 && choice !== "none" && last?.["role"] !== "tool") {
    const named = typeof choice === "object" && choice !== null ? ((choice as Json)["function"] as Json | undefined)?.["name"] : undefined
    const name = named ?? (tools[0]?.["function"] as Json | undefined)?.["name"]
    send(res, [
      chatChunk(model, { role: "assistant", content: null, tool_calls: [{ index: 0, id: "call_up_1", type: "function", function: { name, arguments: "" } }] }),
      ...UPSTREAM_ARGUMENTS.map((piece) => chatChunk(model, { tool_calls: [{ index: 0, function: { arguments: piece } }] })),
      chatChunk(model, {}, {}, "tool_calls"),
      usage,
      "[DONE]"
    ])
    return
  }
  const pieces = last?.["role"] === "tool" ? ["The tool", " said:", ` ${textOf(last)}`] : ["Sunny", " in", " Paris", "."]
  const top = typeof body["top_logprobs"] === "number" ? body["top_logprobs"] : 0
  const withLogprobs = body["logprobs"] === true
  send(res, [
    chatChunk(model, { role: "assistant", content: "" }),
    ...pieces.map((piece) => chatChunk(model, { content: piece }, withLogprobs ? { logprobs: { content: [logprobEntry(piece, top)] } } : {})),
    chatChunk(model, {}, {}, "stop"),
    usage,
    "[DONE]"
  ])
}

const answerCompletion = (body: Json, res: Http.ServerResponse) => {
  const pieces = [" once", " upon", " a", " time"]
  const top = typeof body["logprobs"] === "number" ? body["logprobs"] : undefined
  const prompt = typeof body["prompt"] === "string" ? body["prompt"] : ""
  let offset = prompt.length
  const chunk = (text: string, finishReason: string | null) => {
    const logprobs =
      top === undefined || text === ""
        ? null
        : { tokens: [text], token_logprobs: [-0.5], top_logprobs: [Object.fromEntries([[text, -0.5], ...Array.from({ length: Math.max(0, top - 1) }, (_, k) => [`alt${k + 1}`, -1.5 - k])])], text_offset: [offset] }
    offset += text.length
    return { id: "cmpl-up", object: "text_completion", created: 1, model: body["model"], system_fingerprint: UPSTREAM_FINGERPRINT, choices: [{ index: 0, text, logprobs, finish_reason: finishReason }] }
  }
  send(res, [...pieces.map((p) => chunk(p, null)), chunk("", "length"), "[DONE]"])
}

/** Starts the fake upstream in the current scope; `baseUrl` is `http://127.0.0.1:PORT/v1`. */
export const fakeUpstream = testHttpServer((request: ReceivedRequest, res) => {
  const body = (typeof request.body === "object" && request.body !== null ? request.body : {}) as Json
  if (request.url.endsWith("/chat/completions")) return answerChat(body, res)
  if (request.url.endsWith("/completions")) return answerCompletion(body, res)
  res.writeHead(404, { "content-type": "application/json" })
  res.end(JSON.stringify({ error: { message: `no route ${request.url}`, type: "invalid_request_error", code: null } }))
})
