import { describe, expect, it } from "@effect/vitest"
import { Arbitrary, Either, FastCheck as fc, Schema } from "effect"
import { TokenMessage } from "../../src/domain/inference.js"
import { decodeTokenMessage } from "../../src/domain/token-wire.js"
import { plainEncoderFor } from "../../src/nats/codec.js"

/**
 * The hot-path codec of `response.{requestId}` must be exactly as strict as the `TokenMessage`
 * Schema: whatever one accepts the other accepts, with the same fields; whatever one refuses the
 * other refuses. Checked on valid messages, on valid messages with one member broken or removed
 * (anywhere: `usage.promptTokens`, `logprobs[0].top_logprobs[1].bytes`, `deltas[0].function`), and
 * on arbitrary JSON.
 */

const encoder = new TextEncoder()
const decodeBySchema = Schema.decodeUnknownEither(TokenMessage)
/**
 * The Schema decode as the nodes run it (`guardedDecoder`): a decode that throws is a refusal.
 * Effect's union lookup calls `String()` on the discriminator, which throws for a JSON object
 * such as `{ "toString": [] }` — a case the property found (seed -58731011).
 */
const bySchema = (input: unknown): Either.Either<TokenMessage, unknown> => {
  try {
    return decodeBySchema(input)
  } catch (cause) {
    return Either.left(cause)
  }
}

/** Both decoders on the same JSON text: equal results, or both a refusal. */
const agree = (text: string) => {
  const hand = decodeTokenMessage(encoder.encode(text))
  let parsed: unknown
  let parses = true
  try {
    parsed = JSON.parse(text)
  } catch {
    parses = false
  }
  const schema = parses ? Either.getRight(bySchema(parsed)) : undefined
  if (schema !== undefined && schema._tag === "Some") {
    expect(typeof hand).toBe("object")
    expect(hand).toEqual(schema.value)
  } else {
    expect(typeof hand).toBe("string")
  }
  return schema !== undefined && schema._tag === "Some"
}

/** Valid messages as they travel (JSON), including the optional members of issue 12. */
const valid = Arbitrary.make(TokenMessage).map((m) => JSON.parse(JSON.stringify(m)) as unknown)

type Path = ReadonlyArray<string | number>

const pathsOf = (u: unknown, at: Path = []): Array<Path> => {
  if (typeof u !== "object" || u === null) return [at]
  const children = Array.isArray(u) ? u.map((_, i) => i) : Object.keys(u)
  return [at, ...children.flatMap((k) => pathsOf((u as Record<string | number, unknown>)[k], [...at, k]))]
}

/** `u` with the member at `path` replaced by `value` (removed when `value` is undefined). */
const setAt = (u: unknown, path: Path, value: unknown): unknown => {
  if (path.length === 0) return value
  const [head, ...rest] = path as [string | number, ...Array<string | number>]
  if (Array.isArray(u)) {
    const copy = [...u]
    if (rest.length === 0 && value === undefined) copy.splice(head as number, 1)
    else copy[head as number] = setAt(copy[head as number], rest, value)
    return copy
  }
  const copy = { ...(u as Record<string, unknown>) }
  if (rest.length === 0 && value === undefined) delete copy[head as string]
  else copy[head as string] = setAt(copy[head as string], rest, value)
  return copy
}

/** A valid message with one member, anywhere, replaced by arbitrary JSON or removed. */
const broken = fc
  .tuple(valid, fc.nat(), fc.option(fc.jsonValue(), { freq: 4, nil: undefined }))
  .map(([message, pick, value]) => {
    const paths = pathsOf(message)
    return setAt(message, paths[pick % paths.length] ?? [], value)
  })

/** Near misses the generators above rarely hit by chance. */
const edgeCases: ReadonlyArray<unknown> = [
  { type: "tokens", requestId: "r", index: 0, tokens: ["a"], logprobs: null },
  { type: "tokens", requestId: "r", index: 0, tokens: ["a"], logprobs: [] },
  { type: "tokens", requestId: "r", index: 0, tokens: ["a"], logprobs: [{ token: "a", logprob: -1 }] },
  { type: "tokens", requestId: "r", index: 0, tokens: ["a"], logprobs: [{ token: "a", logprob: -1, top_logprobs: [], bytes: null }] },
  { type: "tokens", requestId: "r", index: 0, tokens: ["a"], logprobs: [{ token: "a", logprob: -1, top_logprobs: [], bytes: [1, "2"] }] },
  { type: "tokens", requestId: "r", index: 0, tokens: ["a"], logprobs: [{ token: "a", logprob: "-1", top_logprobs: [] }] },
  { type: "tool_calls", requestId: "r", index: 0, deltas: [] },
  { type: "tool_calls", requestId: "r", index: 0, deltas: [{ index: 0 }] },
  { type: "tool_calls", requestId: "r", index: 0, deltas: [{ index: 0, type: "custom" }] },
  { type: "tool_calls", requestId: "r", index: 0, deltas: [{ index: 0, function: null }] },
  { type: "tool_calls", requestId: "r", index: 0, deltas: [{ index: 0, function: { name: null } }] },
  { type: "tool_calls", requestId: "r", index: 3, deltas: [{ index: 1, id: "c", type: "function", function: { name: "f", arguments: "{" }, extra: 1 }] },
  { type: "done", requestId: "r", finishReason: "tool_calls", usage: { promptTokens: 1, completionTokens: 2 }, latencyMs: 3, systemFingerprint: "fp" },
  { type: "done", requestId: "r", finishReason: "function_call", usage: { promptTokens: 1, completionTokens: 2 }, latencyMs: 3 },
  { type: "done", requestId: "r", finishReason: "stop", usage: { promptTokens: 1, completionTokens: 2 }, latencyMs: 3, systemFingerprint: null },
  { type: "error", requestId: "r", code: "c", message: "m", status: 400, errorType: "invalid_request_error", param: "messages" },
  { type: "error", requestId: "r", code: "c", message: "m", status: 500 },
  { type: "error", requestId: "r", code: "c", message: "m", status: 399 },
  { type: "error", requestId: "r", code: "c", message: "m", status: 400.5 },
  { type: "error", requestId: "r", code: "c", message: "m", param: null },
  { type: "tokens", requestId: "x".repeat(128), index: 0, tokens: ["a"] },
  { type: "tokens", requestId: "x".repeat(129), index: 0, tokens: ["a"] },
  { type: "tokens", requestId: "é", index: 0, tokens: ["a"] },
  { type: "tokens", requestId: "a.b", index: 0, tokens: ["a"] },
  // A discriminator whose String() throws: the Schema decode throws, both refuse it.
  { type: { toString: [] }, requestId: "-", index: 0, token: "" }
]

describe("token wire codec: as strict as the TokenMessage Schema", () => {
  it("agrees with the Schema on valid messages, and reads back what it writes", () => {
    fc.assert(
      fc.property(valid, (message) => {
        expect(agree(JSON.stringify(message))).toBe(true)
        const decoded = decodeTokenMessage(encoder.encode(JSON.stringify(message)))
        expect(typeof decoded).toBe("object")
        if (typeof decoded === "object") expect(decodeTokenMessage(plainEncoderFor(TokenMessage)(decoded))).toEqual(decoded)
      }),
      { numRuns: 500 }
    )
  })

  it("agrees with the Schema on messages with one member broken or removed", () => {
    let refused = 0
    fc.assert(
      fc.property(broken, (message) => {
        if (!agree(JSON.stringify(message))) refused++
      }),
      { numRuns: 1500 }
    )
    // The property must have seen refusals, not only messages the change left valid.
    expect(refused).toBeGreaterThan(300)
  })

  it("agrees with the Schema on arbitrary JSON and on near misses", () => {
    fc.assert(fc.property(fc.jsonValue(), (value) => void agree(JSON.stringify(value))), { numRuns: 300 })
    for (const message of edgeCases) agree(JSON.stringify(message))
    expect(decodeTokenMessage(encoder.encode("{ not json"))).toBe("not JSON")
  })

  it("keeps the issue-12 members and drops unknown ones", () => {
    const text = JSON.stringify({
      type: "tokens",
      requestId: "r-1",
      index: 2,
      tokens: ["Hi"],
      logprobs: [{ token: "Hi", logprob: -0.5, bytes: [72, 105], top_logprobs: [{ token: "Hi", logprob: -0.5, extra: true }] }],
      extra: 1
    })
    expect(decodeTokenMessage(encoder.encode(text))).toEqual({
      type: "tokens",
      requestId: "r-1",
      index: 2,
      tokens: ["Hi"],
      logprobs: [{ token: "Hi", logprob: -0.5, bytes: [72, 105], top_logprobs: [{ token: "Hi", logprob: -0.5 }] }]
    })
    const refusal = { type: "error", requestId: "r-1", code: "context_length_exceeded", message: "too long", status: 400, errorType: "invalid_request_error", param: "messages" }
    expect(decodeTokenMessage(encoder.encode(JSON.stringify(refusal)))).toEqual(refusal)
  })
})
