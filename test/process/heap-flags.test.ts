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

  it("turn allocation-site pretenuring off and hold the old generation to twice the live heap, as the module loads", async () => {
    const { heapFlags } = await import("../../src/process/heap-flags.js")
    expect(setFlagsFromString.mock.calls).toEqual(heapFlags(process.execArgv, process.env["NODE_OPTIONS"]).map((flag) => [flag]))
    expect(heapFlags([], undefined)).toEqual(["--no-allocation-site-pretenuring", "--heap-growing-percent=100"])
    expect(heapFlags(["--enable-source-maps"], "--max-semi-space-size=4")).toEqual(["--no-allocation-site-pretenuring", "--heap-growing-percent=100"])
  })

  it("leave the growing factor to an operator who gave node one, in its flags or NODE_OPTIONS, in either spelling", async () => {
    const { heapFlags } = await import("../../src/process/heap-flags.js")
    const pretenuringOnly = ["--no-allocation-site-pretenuring"]
    expect(heapFlags(["--heap-growing-percent=0"], undefined)).toEqual(pretenuringOnly)
    expect(heapFlags([], "--max-semi-space-size=4 --heap_growing_percent=50")).toEqual(pretenuringOnly)
    expect(heapFlags([], "  --heap-growing-percent=300  ")).toEqual(pretenuringOnly)
  })
})
