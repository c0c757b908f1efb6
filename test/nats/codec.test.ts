import { describe, expect, it } from "vitest"
import { Either, FastCheck as fc, Schema } from "effect"
import { InferenceReply, InferenceRequest, TokenMessage } from "../../src/domain/inference.js"
import { decoderFor, encoderFor, isPlainSchema, plainEncoderFor } from "../../src/nats/codec.js"
import { wireValuesOf } from "../support/wire-values.js"

const Ping = Schema.Struct({ n: Schema.Number, tags: Schema.optional(Schema.Array(Schema.String)) })
const bytes = (text: string) => new TextEncoder().encode(text)

describe("NATS codec", () => {
  it("round-trips a message and compiles one decoder per schema", () => {
    const encoded = encoderFor(Ping)({ n: 1 })
    expect(Either.isRight(encoded) && decoderFor(Ping)(encoded.right)).toEqual(Either.right({ n: 1 }))
    expect(decoderFor(Ping)).toBe(decoderFor(Ping))
  })

  it("describes invalid messages in one line with the field's path", () => {
    expect(decoderFor(Ping)(bytes('{"n":1,"tags":["a",2]}'))).toEqual(
      Either.left("fails its schema at tags[1]: Expected string, actual 2")
    )
    expect(decoderFor(Ping)(bytes("[]"))).toMatchObject({ left: expect.stringMatching(/^fails its schema: Expected/) })
    expect(decoderFor(Ping)(bytes("{ nope"))).toMatchObject({ left: expect.stringMatching(/^not JSON \(/) })
  })

  it("refuses a message nested 100k deep in a field, naming the field", () => {
    const deep = `{"n":1,"tags":${"[".repeat(100_000)}${"]".repeat(100_000)}}`
    const result = decoderFor(Ping)(bytes(deep))
    expect(Either.isLeft(result)).toBe(true)
    expect(Either.isLeft(result) && result.left).toBe("fails its schema at tags[0]×63: nested deeper than 64 levels")
    expect(Either.isLeft(result) && result.left).toMatch(/nested deeper than 64 levels$/)
  })

  it("refuses to encode a value that breaks its own schema", () => {
    expect(Either.isLeft(encoderFor(Ping)({ n: "x" } as unknown as { n: number }))).toBe(true)
  })

  describe("plain encoder (the request path's messages, no Schema pass)", () => {
    const text = (bytes: Uint8Array) => JSON.parse(new TextDecoder().decode(bytes)) as unknown
    /** For any valid value: the same JSON as the Schema encoder's, and the receiver decodes the same value. */
    const agreesWithSchema = <A, I>(schema: Schema.Schema<A, I>) => {
      const plain = plainEncoderFor(schema)
      const full = encoderFor(schema)
      const decode = decoderFor(schema)
      fc.assert(
        fc.property(wireValuesOf(schema), (value) => {
          const byFull = Either.getOrThrow(full(value))
          expect(text(plain(value))).toEqual(text(byFull))
          expect(decode(plain(value))).toEqual(decode(byFull))
        }),
        { numRuns: 300 }
      )
    }
    it("sends what the Schema encoder sends, for any valid InferenceRequest", () => agreesWithSchema(InferenceRequest))
    it("sends what the Schema encoder sends, for any valid InferenceReply", () => agreesWithSchema(InferenceReply))
    it("sends what the Schema encoder sends, for any valid TokenMessage", () => agreesWithSchema(TokenMessage))

    it("refuses a schema whose encoded form is not the value itself", () => {
      const WithDate = Schema.Struct({ at: Schema.Date })
      expect(isPlainSchema(WithDate.ast)).toBe(false)
      expect(isPlainSchema(Schema.Struct({ n: Schema.optional(Schema.Array(Schema.Union(Schema.Literal("a"), Schema.Int))) }).ast)).toBe(true)
      expect(isPlainSchema(Schema.Tuple(Schema.String, Schema.NumberFromString).ast)).toBe(false)
      expect(() => plainEncoderFor(WithDate)).toThrow(/not encoded as it is/)
      expect(plainEncoderFor(Ping)({ n: 2, tags: ["x"] })).toEqual(bytes('{"n":2,"tags":["x"]}'))
    })
  })
})
