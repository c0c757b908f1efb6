import { FinishReason, type TokenMessage } from "./inference.js"

/**
 * The codec of `response.{requestId}` on the hot path. Every relayed token batch crosses here, so
 * it is `JSON.parse` plus a hand-written check of exactly what the `TokenMessage` Schema requires
 * (a Schema decode costs about twice as much per message). test/domain/token-wire.test.ts holds
 * the two equal: whatever one accepts the other accepts, with the same fields.
 */

const textDecoder = new TextDecoder()
const textEncoder = new TextEncoder()

const FINISH_REASONS: ReadonlySet<unknown> = new Set(FinishReason.literals)
/** The `RequestId` pattern: a NATS subject token. */
const SUBJECT_TOKEN = /^[^.*>\s]+$/

type Json = Record<string, unknown>

const isObject = (u: unknown): u is Json => typeof u === "object" && u !== null && !Array.isArray(u)
const isCount = (u: unknown): u is number => typeof u === "number" && Number.isInteger(u) && u >= 0
const isRequestId = (u: unknown): u is string => typeof u === "string" && u.length > 0 && SUBJECT_TOKEN.test(u)

const allStrings = (u: unknown): u is ReadonlyArray<string> => {
  if (!Array.isArray(u) || u.length === 0) return false
  for (const item of u) if (typeof item !== "string") return false
  return true
}

/** The message's own fields only (excess properties are dropped, as the Schema does). */
const checked = (json: Json): TokenMessage | string => {
  const requestId = json["requestId"]
  if (!isRequestId(requestId)) return "requestId: expected a subject token"
  switch (json["type"]) {
    case "tokens": {
      const { index, tokens } = json
      if (!isCount(index)) return "index: expected a non-negative integer"
      if (!allStrings(tokens)) return "tokens: expected a non-empty array of strings"
      return { type: "tokens", requestId: requestId as TokenMessage["requestId"], index, tokens }
    }
    case "token": {
      const { index, token } = json
      if (!isCount(index)) return "index: expected a non-negative integer"
      if (typeof token !== "string") return "token: expected a string"
      return { type: "token", requestId: requestId as TokenMessage["requestId"], index, token }
    }
    case "done": {
      const { finishReason, usage, latencyMs } = json
      if (!FINISH_REASONS.has(finishReason)) return `finishReason: expected one of ${FinishReason.literals.join(", ")}`
      if (!isObject(usage) || !isCount(usage["promptTokens"]) || !isCount(usage["completionTokens"])) {
        return "usage: expected { promptTokens, completionTokens } as non-negative integers"
      }
      if (typeof latencyMs !== "number" || !Number.isFinite(latencyMs) || latencyMs < 0) {
        return "latencyMs: expected a non-negative number"
      }
      return {
        type: "done",
        requestId: requestId as TokenMessage["requestId"],
        finishReason: finishReason as FinishReason,
        usage: { promptTokens: usage["promptTokens"], completionTokens: usage["completionTokens"] },
        latencyMs
      }
    }
    case "error": {
      const { code, message } = json
      if (typeof code !== "string") return "code: expected a string"
      if (typeof message !== "string") return "message: expected a string"
      return { type: "error", requestId: requestId as TokenMessage["requestId"], code, message }
    }
    default:
      return 'type: expected "token", "tokens", "done" or "error"'
  }
}

/** A token message from its JSON bytes, or why it is not one. */
export const decodeTokenMessage = (bytes: Uint8Array): TokenMessage | string => {
  let json: unknown
  try {
    json = JSON.parse(textDecoder.decode(bytes))
  } catch {
    return "not JSON"
  }
  return isObject(json) ? checked(json) : "expected a JSON object"
}

/** A token message as JSON bytes (its encoded form is its type: plain JSON, no transformations). */
export const encodeTokenMessage = (message: TokenMessage): Uint8Array => textEncoder.encode(JSON.stringify(message))
