/**
 * The benchmark's bare relay: the controller's job — HTTP in, a worker over NATS, SSE out — done in
 * plain JavaScript with nothing else, to show what this machine charges for the architecture
 * itself (the extra processes, sockets and wake-ups of every request) apart from the controller's
 * code. Same bus protocol as the cluster's, under its own subjects (`bare.*`): the front subscribes
 * to `bare.response.{id}`, dispatches to `bare.worker.{k}.inference` as a NATS request and takes
 * the ack (a turn's SUBs and PUBs in one write, as the cluster's transport sends them); the worker
 * answers with the synthetic engine's tokens for the prompt (the same plan as the cluster's
 * workers and the floor), in groups of 32 with a `setImmediate` between groups, as
 * one `tokens` message per group and a `done` message. No retries, deadlines, queue, validation
 * beyond parsing, metrics or logs: a reference, not a product. `--token-interval-ms N` makes a
 * worker send one token every N ms instead, so that streams stay open (the held scenario).
 *
 *   node --import tsx bench/bare-relay.ts --role worker --nats-url URL --index K [--token-interval-ms N]
 *   node --import tsx bench/bare-relay.ts --role front --nats-url URL --workers N [--port P] [--host H]
 *
 * The worker prints `bare worker K ready`, the front `bare relay listening on http://H:PORT`.
 */
import { connect, type Msg, type NatsConnection, type Subscription } from "nats"
import { randomUUID } from "node:crypto"
import { createServer, type ServerResponse } from "node:http"
import { RequestId } from "../src/domain/ids.js"
import type { FinishReason, InferenceRequest, Usage } from "../src/domain/inference.js"
import { chatFormat } from "../src/http/sse.js"
import { makeWriteBatch } from "../src/nats/write-batch.js"
import { planSynthetic } from "../src/worker/engines/synthetic-engine.js"
import { type ChatBody, chatHandler, fail, flag, inGroups, listen, SSE_HEADERS } from "./bare-http.js"

const encoder = new TextEncoder()
const decoder = new TextDecoder()
const json = (value: unknown) => encoder.encode(JSON.stringify(value))

type BareMessage =
  | { readonly type: "tokens"; readonly requestId: string; readonly index: number; readonly tokens: ReadonlyArray<string> }
  | { readonly type: "done"; readonly requestId: string; readonly finishReason: FinishReason; readonly usage: Usage }

const worker = (nc: NatsConnection, index: number, intervalMs: number) => {
  nc.subscribe(`bare.worker.${index}.inference`, {
    callback: (error, msg: Msg) => {
      if (error !== null) return
      const request = JSON.parse(decoder.decode(msg.data)) as InferenceRequest
      msg.respond(json({ accepted: true }))
      const plan = planSynthetic(request)
      const subject = `bare.response.${request.requestId}`
      const send = (tokens: ReadonlyArray<string>, index: number, last: boolean) => {
        nc.publish(subject, json({ type: "tokens", requestId: request.requestId, index, tokens } satisfies BareMessage))
        if (!last) return
        const usage = { promptTokens: plan.promptTokens, completionTokens: plan.tokens.length }
        nc.publish(subject, json({ type: "done", requestId: request.requestId, finishReason: plan.finishReason, usage } satisfies BareMessage))
      }
      inGroups(plan.tokens, send, () => false, intervalMs)
    }
  })
  process.stdout.write(`bare worker ${index} ready\n`)
}

const front = (nc: NatsConnection, workers: number) => {
  let turn = 0
  // As the controller's transport does: the SUBs and PUBs of a turn's requests leave in one write.
  const writes = makeWriteBatch((cause) => void process.stderr.write(`bare relay: ${String(cause)}\n`))
  const serveChat = (body: ChatBody, res: ServerResponse) => {
    const requestId = RequestId.make(randomUUID())
    const format = chatFormat({ id: `chatcmpl-${requestId}`, created: Math.floor(Date.now() / 1000), model: body.model, includeUsage: body.includeUsage })
    let started = false
    let closed = false
    let sub: Subscription | undefined
    const close = () => {
      closed = true
      sub?.unsubscribe()
    }
    res.once("close", close)
    const request: InferenceRequest = { requestId, model: body.model, messages: body.messages, maxTokens: body.maxTokens, stream: true }
    turn = (turn % workers) + 1
    const worker = turn
    writes.run(() => {
      if (closed) return
      sub = nc.subscribe(`bare.response.${requestId}`, {
        callback: (error, msg) => {
          if (error !== null) return
          const message = JSON.parse(decoder.decode(msg.data)) as BareMessage
          let out = ""
          if (!started) {
            started = true
            res.writeHead(200, SSE_HEADERS)
            out = format.head
          }
          if (message.type === "tokens") {
            for (const token of message.tokens) out += format.token(token)
            res.write(out)
          } else {
            close()
            res.end(out + format.end(message.finishReason, message.usage))
          }
        }
      })
      nc.request(`bare.worker.${worker}.inference`, json(request), { timeout: 5_000 }).catch((error: Error) => {
        close()
        if (!started) fail(res, 503, `the bare worker did not ack: ${error.message}`)
      })
    })
  }
  listen(createServer(chatHandler(serveChat)), "bare relay", () => void nc.close())
}

const natsUrl = flag("nats-url")
if (natsUrl === undefined) throw new Error("--nats-url is required")
const nc = await connect({ servers: natsUrl, noEcho: true })
if (flag("role") === "worker") {
  worker(nc, Number(flag("index") ?? "1"), Number(flag("token-interval-ms") ?? "0"))
  const shutdown = () => void nc.drain().finally(() => process.exit(0))
  process.once("SIGTERM", shutdown)
  process.once("SIGINT", shutdown)
} else {
  front(nc, Number(flag("workers") ?? "1"))
}
