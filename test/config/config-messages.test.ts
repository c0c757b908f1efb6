import { describe, expect, it } from "@effect/vitest"
import { Effect, Either, Schema } from "effect"
import { describeParseError, knownKeysAt } from "../../src/config/config-messages.js"
import { ConfigFile } from "../../src/config/schema.js"

describe("message helpers", () => {
  it.effect("knownKeysAt reads the keys of a mapping from the schema, through unions and lists", () =>
    Effect.sync(() => {
      expect(knownKeysAt([])).toEqual(["cluster"])
      expect(knownKeysAt(["cluster", "controller", "api"])).toContain("api_keys")
      // `tls` is `boolean | { … }`: the mapping's keys.
      expect(knownKeysAt(["cluster", "nats", "tls"])).toContain("ca_file")
      expect(knownKeysAt(["cluster", "nope"])).toEqual([])
    }))

  it.effect("describeParseError merges union alternatives and humanises lists", () =>
    Effect.sync(() => {
      const explain = (raw: unknown) => {
        const result = Schema.decodeUnknownEither(ConfigFile)(raw)
        if (Either.isRight(result)) throw new Error("expected a failure")
        return describeParseError(result.left)
      }
      expect(explain({ cluster: { worker: { tags: "x" } } })).toStrictEqual({
        keyPath: "cluster.worker.tags",
        problem: 'expected a list of string, got "x"'
      })
      expect(explain({ cluster: { nats: { tls: 5 } } })).toStrictEqual({
        keyPath: "cluster.nats.tls",
        problem: "expected boolean | a mapping, got 5"
      })
      expect(explain({ cluster: { load_balancing: { strategy: "random" } } })).toStrictEqual({
        keyPath: "cluster.load_balancing.strategy",
        problem: 'expected "smart" | "round_robin" | "least_loaded", got "random"'
      })
      const long = "x".repeat(200)
      expect(explain({ cluster: { mode: long } }).problem).toMatch(/got "x+…$/)
    }))

  it.effect("describeParseError keeps a message it cannot parse", () =>
    Effect.sync(() => {
      const result = Schema.decodeUnknownEither(Schema.Struct({ a: Schema.String }))({})
      if (Either.isRight(result)) throw new Error("expected a failure")
      expect(describeParseError(result.left)).toStrictEqual({ keyPath: "a", problem: "is missing" })
    }))

})
