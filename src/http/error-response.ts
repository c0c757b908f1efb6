import { HttpServerResponse } from "@effect/platform"
import { toOpenAiError, type WireError } from "../domain/errors.js"

/**
 * The one place a wire error becomes an HTTP response: status and OpenAI body from the error's
 * schema annotations, plus `Retry-After` for the errors that say when to come back.
 */
export const errorResponse = (error: WireError): HttpServerResponse.HttpServerResponse => {
  const { status, body } = toOpenAiError(error)
  const retryAfter = "retryAfterSeconds" in error ? { "retry-after": String(error.retryAfterSeconds) } : undefined
  return HttpServerResponse.unsafeJson(body, { status, ...(retryAfter === undefined ? {} : { headers: retryAfter }) })
}

/** The SSE event that ends a stream which fails after its first token. */
export const sseErrorEvent = (error: WireError): string => `data: ${JSON.stringify(toOpenAiError(error).body)}\n\n`
