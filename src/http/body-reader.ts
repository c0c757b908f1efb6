import type { IncomingMessage } from "node:http"

export type BodyResult =
  | { readonly _tag: "Body"; readonly text: string }
  /** Over the limit, by its Content-Length or while it streamed in (chunked): answer 413. */
  | { readonly _tag: "TooLarge" }
  /** The client went away before the body was complete. */
  | { readonly _tag: "Aborted" }

/**
 * Reads a request body of at most `limitBytes` as UTF-8 and calls `done` exactly once. A declared
 * length over the limit is refused before reading; a chunked body is counted as it arrives and
 * refused as soon as it passes the limit — what arrives after that is read and dropped (not
 * buffered), so that the client still receives the 413 instead of a connection reset.
 */
export const readBody = (req: IncomingMessage, limitBytes: number, done: (result: BodyResult) => void): void => {
  let settled = false
  const settle = (result: BodyResult) => {
    if (settled) return
    settled = true
    done(result)
  }
  const declared = Number(req.headers["content-length"])
  if (Number.isFinite(declared) && declared > limitBytes) {
    req.resume()
    return settle({ _tag: "TooLarge" })
  }
  const chunks: Array<Buffer> = []
  let size = 0
  req.on("data", (chunk: Buffer) => {
    if (settled) return
    size += chunk.length
    if (size > limitBytes) {
      chunks.length = 0
      settle({ _tag: "TooLarge" })
    } else {
      chunks.push(chunk)
    }
  })
  req.on("end", () => settle({ _tag: "Body", text: Buffer.concat(chunks, size).toString("utf8") }))
  req.on("error", () => settle({ _tag: "Aborted" }))
  req.on("close", () => {
    if (!req.complete) settle({ _tag: "Aborted" })
  })
}
