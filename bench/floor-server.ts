/**
 * The benchmark's floor: a bare `node:http` server that answers POST /v1/chat/completions with the
 * same SSE bytes the controller would send (same chunk format from src/http/sse.ts, same tokens
 * from the synthetic engine's plan), directly, with no NATS, no worker and no Effect runtime on the
 * request path. Tokens are written in the synthetic engine's groups of 32 with a `setImmediate`
 * between groups, as `tokens_per_second: 0` does.
 *
 *   node --import tsx bench/floor-server.ts [--port N] [--host H]
 *
 * Prints `floor listening on http://H:PORT` when ready; SIGTERM/SIGINT close it.
 */
import { randomUUID } from "node:crypto"
import { createServer, type IncomingMessage, type ServerResponse } from "node:http"
import { RequestId } from "../src/domain/ids.js"
import type { ChatMessage, InferenceRequest } from "../src/domain/inference.js"
import { chatFormat } from "../src/http/sse.js"
import { planSynthetic } from "../src/worker/engines/synthetic-engine.js"

const DEFAULT_MAX_TOKENS = 512
const MAX_TOKENS_CEILING = 8192
const GROUP = 32

const flag = (name: string): string | undefined => {
  const i = process.argv.indexOf(`--${name}`)
  return i === -1 ? undefined : process.argv[i + 1]
}

const REQUEST_ID = RequestId.make("floor")

interface ChatBody {
  readonly model: string
  readonly messages: ReadonlyArray<ChatMessage>
  readonly maxTokens: number
  readonly stream: boolean
  readonly includeUsage: boolean
}

const isRecord = (value: unknown): value is Record<string, unknown> => typeof value === "object" && value !== null

const parseChat = (text: string): ChatBody | string => {
  let json: unknown
  try {
    json = JSON.parse(text)
  } catch {
    return "malformed JSON"
  }
  if (!isRecord(json) || typeof json.model !== "string" || !Array.isArray(json.messages)) return "model and messages are required"
  const messages: Array<ChatMessage> = []
  for (const m of json.messages as ReadonlyArray<unknown>) {
    if (!isRecord(m) || typeof m.content !== "string") return "messages[].content must be a string"
    const role = m.role === "system" || m.role === "developer" || m.role === "assistant" || m.role === "tool" ? m.role : "user"
    messages.push({ role, content: m.content })
  }
  const requested = typeof json.max_tokens === "number" ? json.max_tokens : DEFAULT_MAX_TOKENS
  const options = json.stream_options
  return {
    model: json.model,
    messages,
    maxTokens: Math.min(Math.max(1, Math.floor(requested)), MAX_TOKENS_CEILING),
    stream: json.stream === true,
    includeUsage: isRecord(options) && options.include_usage === true
  }
}

const fail = (res: ServerResponse, status: number, message: string) => {
  res.writeHead(status, { "content-type": "application/json" })
  res.end(JSON.stringify({ error: { message, type: "invalid_request_error", code: null } }))
}

const serveChat = (body: ChatBody, res: ServerResponse) => {
  const request: InferenceRequest = {
    requestId: REQUEST_ID,
    model: body.model,
    messages: body.messages,
    maxTokens: body.maxTokens,
    stream: true
  }
  const plan = planSynthetic(request)
  const id = `chatcmpl-${randomUUID()}`
  const created = Math.floor(Date.now() / 1000)
  const usage = { promptTokens: plan.promptTokens, completionTokens: plan.tokens.length }
  const finishReason = plan.finishReason
  if (!body.stream) {
    res.writeHead(200, { "content-type": "application/json" })
    res.end(
      JSON.stringify({
        id,
        object: "chat.completion",
        created,
        model: body.model,
        choices: [{ index: 0, message: { role: "assistant", content: plan.tokens.join("") }, finish_reason: plan.finishReason }],
        usage: { prompt_tokens: usage.promptTokens, completion_tokens: usage.completionTokens, total_tokens: usage.promptTokens + usage.completionTokens }
      })
    )
    return
  }
  const format = chatFormat({ id, created, model: body.model, includeUsage: body.includeUsage })
  res.writeHead(200, { "content-type": "text/event-stream", "cache-control": "no-cache", "x-accel-buffering": "no" })
  let next = 0
  let closed = false
  res.once("close", () => {
    closed = true
  })
  const writeGroup = () => {
    if (closed) return
    let out = next === 0 ? format.head : ""
    const end = Math.min(next + GROUP, plan.tokens.length)
    for (; next < end; next++) out += format.token(plan.tokens[next] ?? "")
    if (next >= plan.tokens.length) {
      res.end(out + format.end(finishReason, usage))
      return
    }
    res.write(out)
    setImmediate(writeGroup)
  }
  writeGroup()
}

const handle = (req: IncomingMessage, res: ServerResponse) => {
  if (req.method !== "POST" || req.url !== "/v1/chat/completions") {
    if (req.method === "GET" && req.url === "/health") {
      res.writeHead(200, { "content-type": "application/json" })
      res.end('{"status":"ok"}')
      return
    }
    fail(res, 404, "not found")
    req.resume()
    return
  }
  const parts: Array<Buffer> = []
  req.on("data", (chunk: Buffer) => parts.push(chunk))
  req.on("end", () => {
    const body = parseChat(Buffer.concat(parts).toString("utf8"))
    if (typeof body === "string") fail(res, 400, body)
    else serveChat(body, res)
  })
}

const server = createServer(handle)
server.maxHeadersCount = 100
const host = flag("host") ?? "127.0.0.1"
server.listen({ port: Number(flag("port") ?? "0"), host }, () => {
  const address = server.address()
  const port = typeof address === "object" && address !== null ? address.port : 0
  process.stdout.write(`floor listening on http://${host}:${port}\n`)
})

const shutdown = () => {
  server.close(() => process.exit(0))
  server.closeAllConnections()
  setTimeout(() => process.exit(0), 2_000).unref()
}
process.once("SIGTERM", shutdown)
process.once("SIGINT", shutdown)
