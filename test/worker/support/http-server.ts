import * as Http from "node:http"
import type { AddressInfo } from "node:net"
import { Effect } from "effect"

export interface ReceivedRequest {
  readonly method: string
  readonly url: string
  readonly headers: Http.IncomingHttpHeaders
  readonly body: unknown
}

export interface TestHttpServer {
  readonly port: number
  /** `http://127.0.0.1:PORT/v1` */
  readonly baseUrl: string
  readonly received: Array<ReceivedRequest>
  /** Number of responses whose client went away before the response ended. */
  readonly aborted: () => number
}

export type Handler = (request: ReceivedRequest, res: Http.ServerResponse) => void

/** A node:http server on a free port, closed with the scope. */
export const testHttpServer = (handler: Handler) =>
  Effect.acquireRelease(
    Effect.async<{ server: Http.Server; info: TestHttpServer }>((resume) => {
      const received: Array<ReceivedRequest> = []
      let aborted = 0
      const server = Http.createServer((req, res) => {
        const chunks: Array<Buffer> = []
        req.on("data", (c: Buffer) => chunks.push(c))
        req.on("end", () => {
          const text = Buffer.concat(chunks).toString("utf8")
          let body: unknown = text
          try {
            body = text.length > 0 ? JSON.parse(text) : undefined
          } catch {
            body = text
          }
          const request: ReceivedRequest = {
            method: req.method ?? "",
            url: req.url ?? "",
            headers: req.headers,
            body
          }
          received.push(request)
          res.on("close", () => {
            if (!res.writableFinished) aborted++
          })
          handler(request, res)
        })
      })
      server.listen(0, "127.0.0.1", () => {
        const port = (server.address() as AddressInfo).port
        resume(
          Effect.succeed({
            server,
            info: { port, baseUrl: `http://127.0.0.1:${port}/v1`, received, aborted: () => aborted }
          })
        )
      })
    }),
    ({ server }) =>
      Effect.async<void>((resume) => {
        server.closeAllConnections()
        server.close(() => resume(Effect.void))
      })
  ).pipe(Effect.map(({ info }) => info))

/** Writes SSE `data:` events. */
export const sse = (res: Http.ServerResponse, events: ReadonlyArray<unknown>, end = true): void => {
  res.writeHead(200, { "content-type": "text/event-stream" })
  for (const event of events) res.write(`data: ${typeof event === "string" ? event : JSON.stringify(event)}\n\n`)
  if (end) res.end()
}

export const chunk = (content: string | null, finishReason: string | null = null) => ({
  id: "chatcmpl-1",
  object: "chat.completion.chunk",
  choices: [{ index: 0, delta: content === null ? {} : { content }, finish_reason: finishReason }]
})
