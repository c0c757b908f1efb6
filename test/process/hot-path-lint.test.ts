import { ESLint, Linter } from "eslint"
import { resolve } from "node:path"
import tseslint from "typescript-eslint"
import { beforeAll, describe, expect, it } from "vitest"

/**
 * The lint rule that keeps generators made per call off the request path (eslint.config.js): the
 * rule the project's own config gives the request-path modules, run on small programs.
 */
const root = resolve(import.meta.dirname, "..", "..")

let rule: Linter.RuleEntry | undefined

const lint = (code: string) => {
  if (rule === undefined) throw new Error("no rule")
  const linter = new Linter({ configType: "flat" })
  return linter
    .verify(code, [{ files: ["**/*.ts"], languageOptions: { parser: tseslint.parser }, rules: { "no-restricted-syntax": rule } }], { filename: "x.ts" })
    .map((m) => m.message)
}

describe("request-path lint: no generator made per call", () => {
  beforeAll(async () => {
    const config = (await new ESLint({ cwd: root }).calculateConfigForFile(resolve(root, "src/controller/router.ts"))) as Linter.Config
    rule = config.rules?.["no-restricted-syntax"]
  })

  it("applies to the request path's modules", async () => {
    expect(rule).toBeDefined()
    const eslint = new ESLint({ cwd: root })
    for (const file of ["src/http/inference-lane.ts", "src/nats/nats-transport-live.ts", "src/worker/inference-handler.ts", "src/worker/engines/synthetic-engine.ts"]) {
      const config = (await eslint.calculateConfigForFile(resolve(root, file))) as Linter.Config
      expect(config.rules?.["no-restricted-syntax"], file).toEqual(rule)
    }
  })

  it("refuses Effect.gen or Either.gen made inside a function", () => {
    expect(lint(`export const f = (x: number) => Effect.gen(function* () { return yield* g(x) })`)).toHaveLength(1)
    expect(lint(`export function f(x: number) { return Either.gen(function* () { return x }) }`)).toHaveLength(1)
    expect(lint(`export const f = (x: number) => { const run = Effect.gen(function* () { return x }); return run }`)).toHaveLength(1)
    expect(lint(`export const f = (x: number) => Effect.gen(function* () { return x })`)[0]).toMatch(/Effect\.fnUntraced/)
  })

  it("accepts generators made once: at module level, in a service's constructor, with Effect.fnUntraced", () => {
    expect(lint(`export const program = Effect.gen(function* () { return 1 })`)).toEqual([])
    expect(lint(`export const f = Effect.fnUntraced(function* (x: number) { return yield* g(x) })`)).toEqual([])
    expect(
      lint(`export const make = Effect.gen(function* () {
        const step = Effect.fnUntraced(function* (x: number) { return x })
        const once = Effect.gen(function* () { return 2 })
        return { step, once }
      })`)
    ).toEqual([])
  })
})
