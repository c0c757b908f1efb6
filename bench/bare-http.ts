/**
 * What the benchmark's two bare servers (floor-server.ts, bare-relay.ts) share: their command-line
 * flags, the chat request they read (parsed by hand, as a bare server would), their error answers,
 * and their shutdown on SIGTERM/SIGINT.
 */
import type { IncomingMessage, Server, ServerResponse } from "node:http"
import type { ChatMessage } from "../src/domain/inference.js"
import { YIELD_EVERY } from "../src/worker/engines/synthetic-engine.js"

const DEFAULT_MAX_TOKENS = 512
const MAX_TOKENS_CEILING = 8192

/** `--name value` from the command line. */
export const flag = (name: string): string | undefined => {
  const i = process.argv.indexOf(`--${name}`)
  return i === -1 ? undefined : process.argv[i + 1]
}

export interface ChatBody {
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

export const fail = (res: ServerResponse, status: number, message: string) => {
  res.writeHead(status, { "content-type": "application/json" })
  res.end(JSON.stringify({ error: { message, type: "invalid_request_error", code: null } }))
}

export const SSE_HEADERS = { "content-type": "text/event-stream", "cache-control": "no-cache", "x-accel-buffering": "no" }

/**
 * The request handler of a bare server: `GET /health`, and `POST /v1/chat/completions` read whole
 * and parsed, then given to `serveChat`; anything else is a 404.
 */
export const chatHandler =
  (serveChat: (body: ChatBody, res: ServerResponse) => void) =>
  (req: IncomingMessage, res: ServerResponse): void => {
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

/**
 * `tokens` in the synthetic engine's groups, one group per `setImmediate`, as `tokens_per_second: 0`
 * yields them; or, given `intervalMs` > 0, one token at a time that far apart, the first at once
 * (as `tokens_per_second` paces it: streams that stay open, for the held scenario). `onGroup` gets
 * each group, the index of its first token, and whether it is the last (an empty answer is one empty
 * last group). Stops early once `stopped()` says so.
 */
export const inGroups = (
  tokens: ReadonlyArray<string>,
  onGroup: (group: ReadonlyArray<string>, index: number, last: boolean) => void,
  stopped: () => boolean = () => false,
  intervalMs = 0
): void => {
  const size = intervalMs > 0 ? 1 : YIELD_EVERY
  let next = 0
  const step = () => {
    if (stopped()) return
    const index = next
    next = Math.min(next + size, tokens.length)
    onGroup(tokens.slice(index, next), index, next >= tokens.length)
    if (next >= tokens.length) return
    if (intervalMs > 0) setTimeout(step, intervalMs)
    else setImmediate(step)
  }
  step()
}

/** Listens on `--host`/`--port` and prints `NAME listening on http://H:PORT` when ready; SIGTERM/SIGINT close it. */
export const listen = (server: Server, name: string, onShutdown: () => void = () => {}) => {
  server.maxHeadersCount = 100
  const host = flag("host") ?? "127.0.0.1"
  server.listen({ port: Number(flag("port") ?? "0"), host }, () => {
    const address = server.address()
    const port = typeof address === "object" && address !== null ? address.port : 0
    process.stdout.write(`${name} listening on http://${host}:${port}\n`)
  })
  const shutdown = () => {
    onShutdown()
    server.close(() => process.exit(0))
    server.closeAllConnections()
    setTimeout(() => process.exit(0), 2_000).unref()
  }
  process.once("SIGTERM", shutdown)
  process.once("SIGINT", shutdown)
}
