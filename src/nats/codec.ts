import { Either, type ParseResult, Schema, type SchemaAST } from "effect"
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

/**
 * Whether a schema's encoded form is its value as it is: no transformation, class or declaration
 * anywhere in it (a refinement only checks). Suspended (recursive) schemas count as not plain.
 */
export const isPlainSchema = (ast: SchemaAST.AST): boolean => {
  switch (ast._tag) {
    case "Transformation":
    case "Declaration":
    case "Suspend":
      return false
    case "Refinement":
      return isPlainSchema(ast.from)
    case "TypeLiteral":
      return ast.propertySignatures.every((p) => isPlainSchema(p.type)) && ast.indexSignatures.every((i) => isPlainSchema(i.type))
    case "Union":
      return ast.types.every(isPlainSchema)
    case "TupleType":
      return ast.elements.every((e) => isPlainSchema(e.type)) && ast.rest.every((r) => isPlainSchema(r.type))
    default:
      return true
  }
}

/**
 * `A` → JSON bytes with no Schema pass, for the request path's own messages (the dispatched
 * `InferenceRequest`, the worker's ack): their Schema encode was the controller's biggest item of
 * project code in the profile (4 % of its CPU at c=256) and only checked values the code had just
 * built field by field. Safe only where the encoded form is the value itself (`isPlainSchema`,
 * checked here once) and the value carries no fields beyond the schema's — the receiver still
 * decodes it with the schema. test/nats/codec.test.ts pins it to the Schema encoder's output.
 */
export const plainEncoderFor = <A, I>(schema: Schema.Schema<A, I>): ((value: A) => Uint8Array) => {
  if (!plainSchemas.has(schema)) {
    if (!isPlainSchema(schema.ast)) throw new Error(`plainEncoderFor: ${String(schema.ast)} is not encoded as it is`)
    plainSchemas.add(schema)
  }
  return encodePlain
}

const plainSchemas = new WeakSet<Schema.Schema.Any>()
const encodePlain = (value: unknown): Uint8Array => textEncoder.encode(JSON.stringify(value))
