import { describe, expect, it } from "@effect/vitest"
import { parseFlags, UsageError } from "../../bench/cli.js"
import { parseRelayOptions } from "../../bench/relay-options.js"

describe("bench: command line", () => {
  const known = { values: ["duration", "log-level", "concurrency", "runtime"], booleans: ["profile"] }

  it("reads --name value, --name=value, bare booleans and lists; -h anywhere is help", () => {
    const flags = parseFlags(["--duration", "2.5", "--profile", "--concurrency=1, 32"], known)
    if (flags === "help") throw new Error("help")
    expect(flags.number("duration", 5, 0.5)).toBe(2.5)
    expect(flags.boolean("profile")).toBe(true)
    expect(flags.list("concurrency", "1")).toEqual(["1", "32"])
    expect(flags.logLevel()).toBe("warning")
    expect(flags.has("log-level")).toBe(false)
    expect(flags.runtime()).toBe("tsx")
    const dist = parseFlags(["--runtime", "dist"], known)
    expect(dist !== "help" && dist.runtime()).toBe("dist")
    expect(parseFlags(["--duration", "2", "-h"], known)).toBe("help")
  })

  it("refuses unknown flags, missing values, numbers out of range and unknown log levels", () => {
    const read = (argv: ReadonlyArray<string>) => {
      const flags = parseFlags(argv, known)
      if (flags === "help") throw new Error("help")
      return {
        duration: flags.number("duration", 5, 0.5),
        level: flags.logLevel(),
        whole: flags.number("concurrency", 1, 1, true),
        runtime: flags.runtime()
      }
    }
    expect(() => read(["--durations", "2"])).toThrow(new UsageError("unknown flag --durations"))
    expect(() => read(["--duration"])).toThrow(new UsageError("--duration needs a value"))
    expect(() => read(["--duration", "0.1"])).toThrow(new UsageError("--duration 0.1: expected a number ≥ 0.5"))
    expect(() => read(["--duration", ""])).toThrow(UsageError)
    expect(() => read(["--concurrency", "1.5"])).toThrow(new UsageError("--concurrency 1.5: expected an integer ≥ 1"))
    expect(() => read(["--log-level", "loud"])).toThrow(new UsageError("--log-level loud: expected debug, info, warning, error"))
    expect(() => read(["stray"])).toThrow(new UsageError('unexpected argument "stray"'))
    expect(() => read(["--runtime", "bun"])).toThrow(new UsageError("--runtime bun: expected tsx or dist"))
  })

  it("the relay scenario: --runtime dist runs the build; --profile needs tsx (its source mapping reads tsx's maps)", () => {
    const options = parseRelayOptions(["--runtime", "dist"])
    expect(options !== "help" && options.runtime).toBe("dist")
    const defaults = parseRelayOptions([])
    expect(defaults !== "help" && defaults.runtime).toBe("tsx")
    expect(() => parseRelayOptions(["--runtime", "dist", "--profile"])).toThrow(new UsageError("--profile works with --runtime tsx only"))
  })
})
