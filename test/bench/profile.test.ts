import { describe, expect, it } from "@effect/vitest"
import { assignedName, type CpuProfile, remapProfile, windowOffsets } from "../../bench/profile.js"

describe("bench: the controller's CPU profile", () => {
  it("names a function after what it is assigned to on its line, and nothing else", () => {
    // V8 starts an arrow function at its first parameter; a function expression at `function`.
    const at = (line: string, before: string) => assignedName(line, line.indexOf(before) + before.length)
    expect(at("export const canonicalTarget = (raw: string) => {", "= (")).toBe("canonicalTarget")
    expect(at("  const serve = <B extends Request>(body: B) =>", ">(")).toBe("serve")
    expect(at("  const f: Handler = async (x) =>", "async (")).toBe("f")
    expect(at("      load: (workerId: string): number =>", ": (")).toBe("load")
    expect(at("  const g = function () {", "= ")).toBe("g")
    expect(at("    Either.map(toEncoded(value), (encoded) => encode(encoded))", "), (")).toBeUndefined()
    expect(at("  return (input) => {", "return (")).toBeUndefined()
    expect(at("      Effect.gen(function* () {", "gen(")).toBeUndefined()
  })

  it("moves mapped functions to their .ts positions, names the anonymous ones, keeps the rest", () => {
    const frame = (functionName: string, url: string, lineNumber: number, columnNumber: number) => ({
      functionName,
      url,
      lineNumber,
      columnNumber,
      scriptId: "7"
    })
    const profile: CpuProfile = {
      startTime: 1_000_000,
      endTime: 9_000_000,
      samples: [1, 2, 3],
      nodes: [
        { id: 1, callFrame: frame("", "file:///repo/src/a.ts", 1, 40), positionTicks: [{ line: 2, ticks: 9 }] },
        { id: 2, callFrame: frame("emit", "file:///repo/src/a.ts", 1, 90), children: [3] },
        { id: 3, callFrame: frame("pipe", "file:///repo/node_modules/effect/dist/esm/Function.js", 300, 4), positionTicks: [] },
        { id: 4, callFrame: frame("(garbage collector)", "", -1, -1) }
      ]
    }
    const lookup = (url: string, _line: number, column: number) =>
      url.endsWith("src/a.ts") ? { line: column / 10, column: 2, name: column === 40 ? "relay" : "ignored" } : undefined
    const { profile: out, mapped } = remapProfile(profile, lookup)
    expect(mapped).toBe(2)
    expect(out.nodes[0]).toEqual({ id: 1, callFrame: frame("relay", "file:///repo/src/a.ts", 4, 2) })
    expect(out.nodes[1]).toEqual({ id: 2, callFrame: frame("emit", "file:///repo/src/a.ts", 9, 2), children: [3] })
    expect(out.nodes.slice(2)).toEqual(profile.nodes.slice(2))
    expect({ ...out, nodes: [] }).toEqual({ ...profile, nodes: [] })
  })

  it("places the measured windows on the profile's time line, in seconds", () => {
    expect(windowOffsets(1_000_000, [{ label: "c=32", fromUs: 18_900_000, toUs: 23_900_000 }])).toEqual([{ label: "c=32", fromS: 17.9, toS: 22.9 }])
  })
})
