import { describe, expect, it } from "@effect/vitest"
import { type DeepRow, deepRowOk, errorOfBody, firstChars, jsonWithRaw, markdownTable, nestedArray, TOO_DEEP } from "../../bench/hostile-report.js"
import { findTooDeep } from "../../src/domain/decode.js"

describe("hostile benchmark: payloads", () => {
  it("nestedArray is `depth` arrays inside each other", () => {
    expect(nestedArray(3)).toBe("[[[]]]")
    const parsed: unknown = JSON.parse(nestedArray(65))
    expect(findTooDeep(parsed, 64)).toHaveLength(64)
    expect(findTooDeep(JSON.parse(nestedArray(64)), 64)).toBeUndefined()
  })

  it("jsonWithRaw puts raw JSON where the placeholder string was, `$` included", () => {
    expect(jsonWithRaw({ model: "X", n: 1 }, { X: "[[1]]" })).toBe('{"model":[[1]],"n":1}')
    expect(JSON.parse(jsonWithRaw({ a: ["X"] }, { X: '"$&$1"' }))).toEqual({ a: ["$&$1"] })
    expect(() => jsonWithRaw({ a: 1 }, { X: "1" })).toThrow(/placeholder/)
  })

  it("firstChars cuts and flattens", () => {
    expect(firstChars("a\n  b", 10)).toBe("a b")
    expect(firstChars("abcdef", 3)).toBe("abc…")
  })
})

describe("hostile benchmark: reading answers", () => {
  it("reads OpenAI's error body, a WebSocket error frame and @effect/rpc's Exit and Defect lines", () => {
    expect(errorOfBody('{"error":{"message":"m","type":"invalid_request_error","code":"invalid_request"}}')).toEqual({ code: "invalid_request", message: "m" })
    expect(errorOfBody('{"type":"error","id":"x","data":{"code":"invalid_request","message":"bad"}}')).toEqual({ code: "invalid_request", message: "bad" })
    const die = { _tag: "Exit", requestId: "1", exit: { _tag: "Failure", cause: { _tag: "Die", defect: "tree text" } } }
    expect(errorOfBody(`${JSON.stringify(die)}\n`)).toEqual({ code: "defect", message: "tree text" })
    const fail = { _tag: "Exit", requestId: "1", exit: { _tag: "Failure", cause: { _tag: "Sequential", left: { _tag: "Empty" }, right: { _tag: "Fail", error: { _tag: "InvalidRequest", message: "no" } } } } }
    expect(errorOfBody(`{"_tag":"Chunk","values":[]}\n${JSON.stringify(fail)}\n`)).toEqual({ code: "InvalidRequest", message: "no" })
    expect(errorOfBody('{"_tag":"Defect","defect":{"message":"boom"}}')).toEqual({ code: "defect", message: "boom" })
    expect(errorOfBody("")).toEqual({ code: undefined, message: undefined })
    expect(errorOfBody("not json")).toEqual({ code: undefined, message: undefined })
  })

  it("a row is as expected when it names the depth, answered 400 (or not over HTTP) and the node lives", () => {
    const row: DeepRow = { surface: "s", field: "f", outcome: "HTTP 400", status: 400, code: "invalid_request", message: `x: ${TOO_DEEP}`, survived: true, ms: 1 }
    expect(deepRowOk(row)).toBe(true)
    expect(deepRowOk({ ...row, status: undefined })).toBe(true)
    expect(deepRowOk({ ...row, status: 500 })).toBe(false)
    expect(deepRowOk({ ...row, message: undefined })).toBe(false)
    expect(deepRowOk({ ...row, survived: false })).toBe(false)
    expect(deepRowOk({ ...row, status: 200, message: "other", contrast: true })).toBe(true)
  })

  it("markdownTable escapes pipes and newlines and aligns", () => {
    expect(markdownTable(["a", "b"], [["x|y", "1\n2"]], ["l", "r"])).toEqual(["| a | b |", "|---|---:|", "| x\\|y | 1 2 |"])
  })
})
