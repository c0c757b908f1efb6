import { ID_PATTERN, MAX_ID_LENGTH } from "./ids.js"
import { isJsonObject, type JsonObject } from "./json.js"
import { FinishReason, type TokenLogprob, type TokenMessage, type ToolCallDelta, type TopLogprob } from "./inference.js"

/**
 * The decoder of `response.{requestId}` on the hot path. Every relayed token batch crosses here, so
 * it is `JSON.parse` plus a hand-written check of exactly what the `TokenMessage` Schema requires
 * (a Schema decode costs about twice as much per message). test/domain/token-wire.test.ts holds
 * the two equal: whatever one accepts the other accepts, with the same fields. Workers encode
 * with `plainEncoderFor(TokenMessage)` (src/nats/codec.ts).
 */

const textDecoder = new TextDecoder()

const FINISH_REASONS: ReadonlySet<unknown> = new Set(FinishReason.literals)

/** `Schema.int()` is a safe integer. */
const isCount = (u: unknown): u is number => typeof u === "number" && Number.isSafeInteger(u) && u >= 0
/** Exactly `RequestId`: 1..128 letters, digits, `-` and `_`. */
const isRequestId = (u: unknown): u is string => typeof u === "string" && u.length > 0 && u.length <= MAX_ID_LENGTH && ID_PATTERN.test(u)

const allStrings = (u: unknown): u is ReadonlyArray<string> => {
  if (!Array.isArray(u) || u.length === 0) return false
  for (const item of u) if (typeof item !== "string") return false
  return true
}

/** `Schema.Finite` (JSON.parse gives Infinity for `1e999`). */
const isFiniteNumber = (u: unknown): u is number => typeof u === "number" && Number.isFinite(u)
const isNumberArray = (u: unknown): u is ReadonlyArray<number> => Array.isArray(u) && u.every(isFiniteNumber)

/** `bytes` as the Schema takes it: absent, `null` or an array of numbers; `false` when invalid. */
const bytesOf = (json: JsonObject): { readonly bytes?: ReadonlyArray<number> | null } | false => {
  const bytes = json["bytes"]
  if (bytes === undefined) return {}
  if (bytes === null) return { bytes: null }
  return isNumberArray(bytes) ? { bytes } : false
}

/** Every item of `u` read by `item`, or undefined when `u` is not an array or one item is invalid. */
const arrayOf = <A>(u: unknown, item: (u: unknown) => A | undefined): Array<A> | undefined => {
  if (!Array.isArray(u)) return undefined
  const out: Array<A> = []
  for (const element of u) {
    const entry = item(element)
    if (entry === undefined) return undefined
    out.push(entry)
  }
  return out
}

/** What a `TopLogprob` and a `TokenLogprob` both start with: a `token` and a finite `logprob`. */
const isLogprobEntry = (u: unknown): u is JsonObject & { readonly token: string; readonly logprob: number } =>
  isJsonObject(u) && typeof u["token"] === "string" && isFiniteNumber(u["logprob"])

const topLogprob = (u: unknown): TopLogprob | undefined => {
  if (!isLogprobEntry(u)) return undefined
  const bytes = bytesOf(u)
  return bytes === false ? undefined : { token: u.token, logprob: u.logprob, ...bytes }
}

const tokenLogprob = (u: unknown): TokenLogprob | undefined => {
  if (!isLogprobEntry(u)) return undefined
  const bytes = bytesOf(u)
  if (bytes === false) return undefined
  const tops = arrayOf(u["top_logprobs"], topLogprob)
  return tops === undefined ? undefined : { token: u.token, logprob: u.logprob, ...bytes, top_logprobs: tops }
}

const optionalString = (u: unknown): u is string | undefined => u === undefined || typeof u === "string"

const toolCallDelta = (u: unknown): ToolCallDelta | undefined => {
  if (!isJsonObject(u) || !isCount(u["index"])) return undefined
  const { id, type, function: fn } = u
  if (!optionalString(id) || (type !== undefined && type !== "function")) return undefined
  if (fn !== undefined && (!isJsonObject(fn) || !optionalString(fn["name"]) || !optionalString(fn["arguments"]))) return undefined
  return {
    index: u["index"],
    ...(id === undefined ? {} : { id }),
    ...(type === undefined ? {} : { type }),
    ...(fn === undefined
      ? {}
      : {
          function: {
            ...(fn["name"] === undefined ? {} : { name: fn["name"] as string }),
            ...(fn["arguments"] === undefined ? {} : { arguments: fn["arguments"] as string })
          }
        })
  }
}

const isUpstreamStatus = (u: unknown): u is number => typeof u === "number" && Number.isInteger(u) && u >= 400 && u <= 499

/** The message's own fields only (excess properties are dropped, as the Schema does). */
const checked = (json: JsonObject): TokenMessage | string => {
  const requestId = json["requestId"]
  if (!isRequestId(requestId)) return "requestId: expected 1 to 128 letters, digits, - and _"
  switch (json["type"]) {
    case "tokens": {
      const { index, tokens, logprobs } = json
      if (!isCount(index)) return "index: expected a non-negative integer"
      if (!allStrings(tokens)) return "tokens: expected a non-empty array of strings"
      if (logprobs === undefined) return { type: "tokens", requestId: requestId as TokenMessage["requestId"], index, tokens }
      const entries = arrayOf(logprobs, tokenLogprob)
      if (entries === undefined) return "logprobs: expected an array of { token, logprob, bytes?, top_logprobs }"
      return { type: "tokens", requestId: requestId as TokenMessage["requestId"], index, tokens, logprobs: entries }
    }
    case "tool_calls": {
      const { index, deltas } = json
      if (!isCount(index)) return "index: expected a non-negative integer"
      if (!Array.isArray(deltas) || deltas.length === 0) return "deltas: expected a non-empty array of tool-call deltas"
      const out = arrayOf(deltas, toolCallDelta)
      if (out === undefined) return "deltas: expected { index, id?, type?: \"function\", function?: { name?, arguments? } }"
      return { type: "tool_calls", requestId: requestId as TokenMessage["requestId"], index, deltas: out }
    }
    case "token": {
      const { index, token } = json
      if (!isCount(index)) return "index: expected a non-negative integer"
      if (typeof token !== "string") return "token: expected a string"
      return { type: "token", requestId: requestId as TokenMessage["requestId"], index, token }
    }
    case "done": {
      const { finishReason, usage, latencyMs, systemFingerprint } = json
      if (!FINISH_REASONS.has(finishReason)) return `finishReason: expected one of ${FinishReason.literals.join(", ")}`
      if (!isJsonObject(usage) || !isCount(usage["promptTokens"]) || !isCount(usage["completionTokens"])) {
        return "usage: expected { promptTokens, completionTokens } as non-negative integers"
      }
      if (typeof latencyMs !== "number" || !Number.isFinite(latencyMs) || latencyMs < 0) {
        return "latencyMs: expected a non-negative number"
      }
      if (!optionalString(systemFingerprint)) return "systemFingerprint: expected a string"
      return {
        type: "done",
        requestId: requestId as TokenMessage["requestId"],
        finishReason: finishReason as FinishReason,
        usage: { promptTokens: usage["promptTokens"], completionTokens: usage["completionTokens"] },
        latencyMs,
        ...(systemFingerprint === undefined ? {} : { systemFingerprint })
      }
    }
    case "error": {
      const { code, message, status, errorType, param } = json
      if (typeof code !== "string") return "code: expected a string"
      if (typeof message !== "string") return "message: expected a string"
      if (status !== undefined && !isUpstreamStatus(status)) return "status: expected an integer from 400 to 499"
      if (!optionalString(errorType)) return "errorType: expected a string"
      if (!optionalString(param)) return "param: expected a string"
      return {
        type: "error",
        requestId: requestId as TokenMessage["requestId"],
        code,
        message,
        ...(status === undefined ? {} : { status }),
        ...(errorType === undefined ? {} : { errorType }),
        ...(param === undefined ? {} : { param })
      }
    }
    default:
      return 'type: expected "token", "tokens", "tool_calls", "done" or "error"'
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
  return isJsonObject(json) ? checked(json) : "expected a JSON object"
}
