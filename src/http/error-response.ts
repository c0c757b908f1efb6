import * as HttpServerResponse from "@effect/platform/HttpServerResponse"
import type { ServerResponse } from "node:http"
import { toOpenAiError, type WireError } from "../domain/errors.js"

/**
 * The one place a wire error becomes an HTTP response: status and OpenAI body from the error's
 * schema annotations, plus `Retry-After` for the errors that say when to come back. Two writers of
 * the same answer: for handlers of the Effect router and for the front door's plain Node responses.
 */
const retryAfter = (error: WireError): Record<string, string> =>
  "retryAfterSeconds" in error && typeof error.retryAfterSeconds === "number" ? { "retry-after": String(error.retryAfterSeconds) } : {}

export const errorResponse = (error: WireError): HttpServerResponse.HttpServerResponse => {
  const { status, body } = toOpenAiError(error)
  return HttpServerResponse.unsafeJson(body, { status, headers: retryAfter(error) })
}

/** Writes `error` as the whole response of `res` (whose headers must not be sent yet). */
export const writeError = (res: ServerResponse, error: WireError, headers: Record<string, string> = {}): number => {
  const { status, body } = toOpenAiError(error)
  writeJson(res, status, body, { ...retryAfter(error), ...headers })
  return status
}

/**
 * The headers every answer carries: its request id and the CORS headers (`corsHeaders`), given to
 * each `writeHead` rather than set with `setHeader`, which makes node keep a header table beside
 * the head it writes (0.5 KB for a stream's whole life).
 */
export const answerHeaders = (requestId: string, cors: Readonly<Record<string, string>> | undefined): Record<string, string> =>
  cors === undefined ? { "x-request-id": requestId } : { "x-request-id": requestId, ...cors }

/** A whole JSON response. */
export const writeJson = (res: ServerResponse, status: number, body: unknown, headers: Record<string, string> = {}): void => {
  const text = JSON.stringify(body)
  res.writeHead(status, { "content-type": "application/json", "content-length": Buffer.byteLength(text), ...headers })
  res.end(text)
}

/** The SSE event that ends a stream which fails after its first token. */
export const sseErrorEvent = (error: WireError): string => `data: ${JSON.stringify(toOpenAiError(error).body)}\n\n`
