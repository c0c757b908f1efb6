import { describe, expect, it } from "vitest"
import { quoteForLog, sanitizeForLog } from "../../src/domain/log-text.js"

describe("quoteForLog", () => {
  it("quotes the value and escapes line breaks and control characters, so it cannot forge a line", () => {
    const forged = 'gpt\n[08:00:00.000] INFO (#1): worker evil online: registered'
    const quoted = quoteForLog(forged)
    expect(quoted).not.toContain("\n")
    expect(quoted.startsWith('"gpt\\n[08:00')).toBe(true)
    expect(quoteForLog("a\rb\tc\u001b[31md")).toBe('"a\\rb\\tc\\u001b[31md"')
  })

  it("escapes what JSON leaves alone but terminals act on: DEL, C1 controls, separators, bidi overrides", () => {
    expect(quoteForLog("x\u009b31my")).toBe('"x\\u009b31my"')
    expect(quoteForLog("\u007f\u2028\u2029\u202e\u2066")).toBe('"\\u007f\\u2028\\u2029\\u202e\\u2066"')
    expect(quoteForLog("Llama-3.2 ü 日本")).toBe('"Llama-3.2 ü 日本"')
  })

  it("cuts long values and says how much was cut", () => {
    const long = "m".repeat(8 * 1024 * 1024)
    const quoted = quoteForLog(long)
    expect(quoted).toBe(`"${"m".repeat(200)}"…(+${8 * 1024 * 1024 - 200} chars)`)
    expect(quoteForLog("abcdef", 3)).toBe('"abc"…(+3 chars)')
    expect(quoteForLog("abc", 3)).toBe('"abc"')
  })
})

describe("sanitizeForLog", () => {
  it("escapes without quoting and cuts", () => {
    expect(sanitizeForLog("Expected string, actual \"a\nb\"")).toBe('Expected string, actual "a\\nb"')
    expect(sanitizeForLog("x\u0000y\u0085")).toBe("x\\u0000y\\u0085")
    expect(sanitizeForLog("abcdef", 4)).toBe("abcd…(+2 chars)")
  })
})
