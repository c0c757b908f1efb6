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
import { createServer, type ServerResponse } from "node:http"
import { RequestId } from "../src/domain/ids.js"
import type { InferenceRequest } from "../src/domain/inference.js"
import { chatFormat } from "../src/http/sse.js"
import { planSynthetic } from "../src/worker/engines/synthetic-engine.js"
import { type ChatBody, chatHandler, inGroups, listen, SSE_HEADERS } from "./bare-http.js"

const REQUEST_ID = RequestId.make("floor")

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
  res.writeHead(200, SSE_HEADERS)
  let closed = false
  res.once("close", () => {
    closed = true
  })
  inGroups(
    plan.tokens,
    (tokens, index, last) => {
      let out = index === 0 ? format.head : ""
      for (const token of tokens) out += format.token(token)
      if (last) res.end(out + format.end(finishReason, usage))
      else res.write(out)
    },
    () => closed
  )
}

listen(createServer(chatHandler(serveChat)), "floor")
