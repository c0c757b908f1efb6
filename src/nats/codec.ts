import { Either, ParseResult, Schema } from "effect"

/**
 * JSON + Schema codecs for NATS payloads, compiled once per schema: the token relay decodes every
 * message, so building a decoder per message would sit on the hot path.
 */
const textEncoder = new TextEncoder()
const textDecoder = new TextDecoder()

type Decode = (bytes: Uint8Array) => Either.Either<unknown, string>
type Encode = (value: unknown) => Either.Either<Uint8Array, string>

const decoders = new WeakMap<Schema.Schema.Any, Decode>()
const encoders = new WeakMap<Schema.Schema.Any, Encode>()

const formatError = (error: ParseResult.ParseError) => ParseResult.TreeFormatter.formatErrorSync(error)

export const decoderFor = <A, I>(schema: Schema.Schema<A, I>): ((bytes: Uint8Array) => Either.Either<A, string>) => {
  let decode = decoders.get(schema)
  if (decode === undefined) {
    const fromUnknown = Schema.decodeUnknownEither(schema, { errors: "first" })
    decode = (bytes) => {
      let json: unknown
      try {
        json = JSON.parse(textDecoder.decode(bytes))
      } catch (cause) {
        return Either.left(`not JSON (${cause instanceof Error ? cause.message : String(cause)})`)
      }
      try {
        return Either.mapLeft(fromUnknown(json), formatError)
      } catch (cause) {
        // A deeply nested payload can exhaust the stack while it is checked or its error formatted:
        // it is just another invalid message, never an exception in nats' read loop.
        return Either.left(`fails its schema (${cause instanceof Error ? cause.message : String(cause)})`)
      }
    }
    decoders.set(schema, decode)
  }
  return decode as (bytes: Uint8Array) => Either.Either<A, string>
}

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
