import { describe, expect, it } from "vitest"
import { Either, Schema } from "effect"
import {
  decodeGuarded,
  findTooDeep,
  formatIssue,
  formatPath,
  guardedDecoder,
  MAX_JSON_DEPTH,
  parseJson
} from "../../src/domain/decode.js"

const Message = Schema.Struct({ role: Schema.String, content: Schema.Unknown })
const Body = Schema.Struct({ model: Schema.String, messages: Schema.Array(Message) })

/** `depth` arrays inside each other: `[[[…]]]`, as JSON text and parsed (JSON.parse is iterative in V8). */
const nested = (depth: number): unknown => JSON.parse("[".repeat(depth) + "]".repeat(depth))

describe("findTooDeep", () => {
  it("accepts values within the bound and names the path where it is crossed", () => {
    expect(findTooDeep({ a: [1, { b: "x" }] }, 3)).toBeUndefined()
    expect(findTooDeep({ a: [1, { b: [] }] }, 3)).toEqual(["a", 1, "b"])
    expect(findTooDeep("plain", 0)).toBeUndefined()
    expect(findTooDeep([], 0)).toEqual([])
  })

  it("reports the first crossing in document order", () => {
    const value = { first: { ok: 1 }, second: [[["deep"]]], third: [[["deeper too"]]] }
    expect(findTooDeep(value, 3)).toEqual(["second", 0, 0])
  })

  it("walks 100k levels without recursion, and treats a cycle as too deep", () => {
    const path = findTooDeep({ messages: [{ role: "user", content: nested(100_000) }] }, MAX_JSON_DEPTH)
    expect(path?.slice(0, 3)).toEqual(["messages", 0, "content"])
    expect(path).toHaveLength(MAX_JSON_DEPTH)
    const cyclic: Record<string, unknown> = {}
    cyclic["self"] = cyclic
    expect(findTooDeep(cyclic, 10)).toHaveLength(10)
  })
})

describe("formatPath", () => {
  it("writes paths as code would", () => {
    expect(formatPath(["messages", 0, "content"])).toBe("messages[0].content")
    expect(formatPath([0, "a b", "ok"])).toBe('[0]["a b"].ok')
    expect(formatPath([])).toBe("")
  })

  it("writes a run of one segment once with its count, so that a too-deep path stays short", () => {
    expect(formatPath(["model", ...Array.from({ length: 64 }, () => 0)])).toBe("model[0]×64")
    expect(formatPath([0, 0, 0, "a"])).toBe("[0][0][0].a")
    expect(formatPath(["x", "x", "x", "x"])).toBe("x×4")
  })

  it("cuts long paths and escapes keys that would break a line", () => {
    const long = formatPath(["messages", 0, "content", ...Array.from({ length: 100 }, (_, i) => i)])
    expect(long.startsWith("messages[0].content[0][1][2]")).toBe(true)
    expect(long).toMatch(/…\(\+\d+ chars\)$/)
    expect(formatPath(["a\nb"])).toBe('["a\\nb"]')
  })
})

describe("guardedDecoder", () => {
  const decode = guardedDecoder(Body)

  it("decodes a valid value", () => {
    const body = { model: "m", messages: [{ role: "user", content: "hi" }] }
    expect(decode(body)).toEqual(Either.right(body))
  })

  it("names the first issue's field, from the structured issues", () => {
    const result = decode({ model: "m", messages: [{ role: 5, content: "hi" }] })
    expect(result).toEqual(
      Either.left({ path: "messages[0].role", message: "Expected string, actual 5", kind: "Type", expected: ["string"], actual: 5, custom: false })
    )
    expect(Either.isLeft(result) && formatIssue(result.left)).toBe("messages[0].role: Expected string, actual 5")
    expect(decode({ messages: [] })).toEqual(Either.left({ path: "model", message: "is missing", kind: "Missing" }))
    expect(decode("text")).toMatchObject({ left: { path: "", kind: "Type" } })
  })

  it("names every alternative of a union the value matches none of (without the optional's undefined)", () => {
    const Chat = Schema.Struct({
      role: Schema.Literal("system", "user", "assistant"),
      name: Schema.optional(Schema.String),
      id: Schema.optional(Schema.Union(Schema.String, Schema.Number))
    })
    const decodeChat = guardedDecoder(Chat)
    expect(decodeChat({ role: "bot" })).toEqual(
      Either.left({
        path: "role",
        message: 'Expected "system" | "user" | "assistant", actual "bot"',
        kind: "Type",
        expected: ['"system"', '"user"', '"assistant"'],
        actual: "bot",
        custom: false
      })
    )
    expect(decodeChat({ role: "user", name: 5 })).toMatchObject({ left: { path: "name", message: "Expected string, actual 5" } })
    expect(decodeChat({ role: "user", id: true })).toMatchObject({
      left: { path: "id", message: "Expected string | number, actual true", expected: ["string", "number"], actual: true }
    })
  })

  it("names every alternative of a union inside a filtered struct (the refinement's base failed first)", () => {
    const Role = Schema.Literal("system", "user")
    const Filtered = Schema.Struct({ messages: Schema.Array(Schema.Struct({ role: Role })) }).pipe(
      Schema.filter(() => true)
    )
    expect(guardedDecoder(Filtered)({ messages: [{ role: "bot" }] })).toEqual(
      Either.left({
        path: "messages[0].role",
        message: 'Expected "system" | "user", actual "bot"',
        kind: "Type",
        expected: ['"system"', '"user"'],
        actual: "bot",
        custom: false
      })
    )
  })

  it("keeps a refinement's own message and the path inside it", () => {
    const Positive = Schema.Struct({ items: Schema.Array(Schema.Number.pipe(Schema.positive({ message: () => "must be above zero" }))) })
    expect(guardedDecoder(Positive)({ items: [1, -2] })).toEqual(
      Either.left({ path: "items[1]", message: "must be above zero", kind: "Refinement", expected: ["a positive number"], actual: -2, custom: true })
    )
  })

  it("refuses JSON nested 100k deep inside a field with the field's path, without throwing", () => {
    const result = decode({ model: "m", messages: [{ role: "user", content: nested(100_000) }] })
    expect(Either.isLeft(result)).toBe(true)
    if (Either.isLeft(result)) {
      expect(result.left.path.startsWith("messages[0].content[0]")).toBe(true)
      expect(result.left.message).toBe(`nested deeper than ${MAX_JSON_DEPTH} levels`)
      expect(result.left.kind).toBe("TooDeep")
    }
  })

  it("keeps a value's own description short and free of line breaks", () => {
    const result = decode({ model: "m", messages: [{ role: `x\n${"y".repeat(10_000)}`.length, content: 1 }] })
    expect(result).toMatchObject({ left: { path: "messages[0].role" } })
    const huge = decode({ model: 1, messages: [] })
    expect(huge).toMatchObject({ left: { path: "model", message: "Expected string, actual 1" } })
    const long = decode({ model: ["a\nb".repeat(1_000)], messages: [] })
    expect(Either.isLeft(long) && long.left.message.length).toBeLessThan(400)
    expect(Either.isLeft(long) && long.left.message.includes("\n")).toBe(false)
  })

  it("says what a union of a value and a mapping expected, seen through the mapping's transformation", () => {
    const Tls = Schema.Struct({ tls: Schema.Union(Schema.Boolean, Schema.Struct({ ca: Schema.String }).pipe(Schema.rename({ ca: "caFile" }))) })
    expect(guardedDecoder(Tls)({ tls: 5 })).toMatchObject({ left: { path: "tls", kind: "Type", actual: 5 } })
    const issue = guardedDecoder(Tls)({ tls: 5 })
    expect(Either.isLeft(issue) && issue.left.expected?.length).toBe(2)
    expect(Either.isLeft(issue) && issue.left.expected?.[0]).toBe("boolean")
  })

  it("turns a stack overflow inside the schema into a failure", () => {
    // A recursive schema within the depth bound but a tiny bound for the test: no overflow, the
    // recursion is checked. With a bound above the stack's reach, the overflow is still caught.
    interface Tree {
      readonly children: ReadonlyArray<Tree>
    }
    const TreeSchema: Schema.Schema<Tree> = Schema.Struct({
      children: Schema.Array(Schema.suspend((): Schema.Schema<Tree> => TreeSchema))
    })
    let deep: Tree = { children: [] }
    for (let i = 0; i < 200_000; i++) deep = { children: [deep] }
    const unbounded = guardedDecoder(TreeSchema, { maxDepth: Number.MAX_SAFE_INTEGER })
    expect(unbounded(deep)).toEqual(Either.left({ path: "", message: "too deeply nested to check", kind: "Unchecked" }))
    expect(guardedDecoder(TreeSchema, { maxDepth: 10 })(deep)).toMatchObject({ left: { message: "nested deeper than 10 levels" } })
  })

  it("decodeGuarded caches one decoder per schema", () => {
    expect(decodeGuarded(Body)).toBe(decodeGuarded(Body))
    expect(decodeGuarded(Body)({ model: "m", messages: [] })).toEqual(Either.right({ model: "m", messages: [] }))
  })
})

describe("parseJson", () => {
  it("parses, and says what is wrong with text that is not JSON", () => {
    expect(parseJson('{"a":1}')).toEqual(Either.right({ a: 1 }))
    const bad = parseJson("{ not json")
    expect(Either.isLeft(bad) && bad.left.message.startsWith("not JSON (")).toBe(true)
  })
})
