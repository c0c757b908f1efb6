import { describe, expect, it } from "vitest"
import type { DoneEvent } from "../../src/domain/route.js"
import { chatFormat, completionFormat, DONE, encodeEvent, withMigrations } from "../../src/http/sse.js"

const identity = (includeUsage: boolean) => ({ id: "chatcmpl-1", created: 1, model: "m", includeUsage })

const done = (migrations?: number): DoneEvent => ({
  type: "done",
  finishReason: "length",
  usage: { promptTokens: 3, completionTokens: 60 },
  latencyMs: 5,
  workerId: "w",
  ...(migrations === undefined ? {} : { migrations })
})

/** The JSON of every `data:` event before `[DONE]`. */
const chunks = (text: string): ReadonlyArray<Record<string, unknown>> => {
  expect(text.endsWith(DONE)).toBe(true)
  return text
    .slice(0, -DONE.length)
    .split("\n\n")
    .filter((e) => e.length > 0)
    .map((e) => JSON.parse(e.slice("data: ".length)) as Record<string, unknown>)
}

describe("SSE: the end of a stream that moved to another worker (issue 13)", () => {
  for (const [name, format] of [
    ["chat", chatFormat],
    ["completions", completionFormat]
  ] as const) {
    it(`${name}: "migrations" on the usage chunk when usage was asked for, else on the finish chunk; nothing when it never moved`, () => {
      const withUsage = chunks(encodeEvent(format(identity(true)), done(2)))
      expect(withUsage).toHaveLength(2)
      expect(withUsage[0]).not.toHaveProperty("migrations")
      expect(withUsage[1]).toMatchObject({ choices: [], usage: { prompt_tokens: 3, completion_tokens: 60, total_tokens: 63 }, migrations: 2 })
      const withoutUsage = chunks(encodeEvent(format(identity(false)), done(1)))
      expect(withoutUsage).toHaveLength(1)
      expect(withoutUsage[0]).toMatchObject({ choices: [{ finish_reason: "length" }], migrations: 1 })
      expect(encodeEvent(format(identity(true)), done())).toBe(format(identity(true)).end("length", done().usage))
      expect(encodeEvent(format(identity(false)), done(0))).toBe(format(identity(false)).end("length", done().usage))
    })
  }

  it("withMigrations leaves text it does not recognise alone", () => {
    expect(withMigrations("data: x\n\n", 1)).toBe("data: x\n\n")
    expect(withMigrations(`data: {"a":1}\n\n${DONE}`, 3)).toBe(`data: {"a":1,"migrations":3}\n\n${DONE}`)
  })
})
