import { readFileSync } from "node:fs"
import type * as V8 from "node:v8"
import { resolve } from "node:path"
import { describe, expect, it, vi } from "vitest"

const root = resolve(import.meta.dirname, "..", "..")

const setFlagsFromString = vi.hoisted(() => vi.fn<(flags: string) => void>())
vi.mock("node:v8", async (original) => ({ ...(await original<typeof V8>()), setFlagsFromString }))

describe("heap flags", () => {
  it("are the first thing src/main.ts imports, so that they apply before any request path module allocates", () => {
    const imports = readFileSync(resolve(root, "src/main.ts"), "utf8")
      .split("\n")
      .filter((line) => line.startsWith("import "))
    expect(imports[0]).toBe(`import "./process/heap-flags.js"`)
  })

  it("turn allocation-site pretenuring off", async () => {
    await import("../../src/process/heap-flags.js")
    expect(setFlagsFromString.mock.calls).toEqual([["--no-allocation-site-pretenuring"]])
  })
})
