import { readFileSync } from "node:fs"
import { resolve } from "node:path"
import { describe, expect, it } from "vitest"

const root = resolve(import.meta.dirname, "..", "..")

describe("heap flags", () => {
  it("are the first thing src/main.ts imports, so that they apply before any request path module allocates", () => {
    const imports = readFileSync(resolve(root, "src/main.ts"), "utf8")
      .split("\n")
      .filter((line) => line.startsWith("import "))
    expect(imports[0]).toBe(`import "./process/heap-flags.js"`)
  })

  it("turn allocation-site pretenuring off", async () => {
    const source = readFileSync(resolve(root, "src/process/heap-flags.ts"), "utf8")
    expect(source).toContain(`setFlagsFromString("--no-allocation-site-pretenuring")`)
    // Setting it again is harmless: the module only sets flags.
    await expect(import("../../src/process/heap-flags.js")).resolves.toBeDefined()
  })
})
