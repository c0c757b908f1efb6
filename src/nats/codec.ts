import { Either, type ParseResult, Schema } from "effect"
import { firstIssue, formatIssue, guardedDecoder, parseJson } from "../domain/decode.js"

/**
 * JSON + Schema codecs for NATS payloads, compiled once per schema: the token relay decodes every
 * message, so building a decoder per message would sit on the hot path. Decoding goes through the
 * one guarded decoder (src/domain/decode.ts): a message nested too deep, or one that would exhaust
 * the stack, is just another invalid message, never an exception in nats' read loop.
 */
const textEncoder = new TextEncoder()
const textDecoder = new TextDecoder()

type Decode = (bytes: Uint8Array) => Either.Either<unknown, string>
type Encode = (value: unknown) => Either.Either<Uint8Array, string>

const decoders = new WeakMap<Schema.Schema.Any, Decode>()
const encoders = new WeakMap<Schema.Schema.Any, Encode>()

/**
 * Bytes → JSON → `A`. The failure is one line safe to log: `not JSON (…)`, or the first schema
 * issue with its path (`fails its schema at skills.availableModels[3]: Expected string, actual 5`).
 */
export const decoderFor = <A, I>(schema: Schema.Schema<A, I>): ((bytes: Uint8Array) => Either.Either<A, string>) => {
  let decode = decoders.get(schema)
  if (decode === undefined) {
    const fromUnknown = guardedDecoder(schema)
    decode = (bytes) => {
      const json = parseJson(textDecoder.decode(bytes))
      if (Either.isLeft(json)) return Either.left(json.left.message)
      return Either.mapLeft(fromUnknown(json.right), (issue) =>
        issue.path === "" ? `fails its schema: ${issue.message}` : `fails its schema at ${formatIssue(issue)}`
      )
    }
    decoders.set(schema, decode)
  }
  return decode as (bytes: Uint8Array) => Either.Either<A, string>
}

const formatError = (error: ParseResult.ParseError) => formatIssue(firstIssue(error))

/** `A` → encoded → JSON bytes; our own values, so a failure is a bug, reported with its path. */
export const encoderFor = <A, I>(schema: Schema.Schema<A, I>): ((value: A) => Either.Either<Uint8Array, string>) => {
  let encode = encoders.get(schema)
  if (encode === undefined) {
    const toEncoded = Schema.encodeUnknownEither(schema, { errors: "first" })
    encode = (value) =>
      Either.map(Either.mapLeft(toEncoded(value), formatError), (encoded) => textEncoder.encode(JSON.stringify(encoded)))
    encoders.set(schema, encode)
  }
  return encode as (value: A) => Either.Either<Uint8Array, string>
}
