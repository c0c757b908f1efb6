import { describe, expect, it } from "vitest"
import { Either } from "effect"
import { parseNatsConfigArgs } from "../../src/cli/nats-config-args.js"

describe("nats-config arguments", () => {
  it("reads the lists and options, with defaults", () => {
    expect(parseNatsConfigArgs(["--workers", "a, b"], "ctl")).toEqual(
      Either.right({ _tag: "Generate", workers: ["a", "b"], controllers: ["main"], out: "nats-cluster", listen: "0.0.0.0:4222", url: "nats://ctl:4222" })
    )
    expect(
      parseNatsConfigArgs(["--workers=a", "--controllers", "c1,c2", "--out", "d", "--listen", "127.0.0.1:5222", "--url", "tls://x:1"], "h")
    ).toMatchObject({ right: { controllers: ["c1", "c2"], out: "d", listen: "127.0.0.1:5222", url: "tls://x:1" } })
    expect(parseNatsConfigArgs(["-h"], "h")).toEqual(Either.right({ _tag: "Help" }))
  })

  it("refuses what would make a broken or ambiguous config", () => {
    const error = (argv: ReadonlyArray<string>) => Either.getLeft(parseNatsConfigArgs(argv, "h"))
    expect(error([])).toEqual(expect.objectContaining({ value: "--workers is required (see --help)" }))
    expect(error(["--workers", "a,a"])).toEqual(expect.objectContaining({ value: "--workers: a name appears twice" }))
    expect(error(["--workers", ","])).toEqual(expect.objectContaining({ value: "--workers: at least one name" }))
    expect(error(["--workers", "a", "--listen", "nope"])._tag).toBe("Some")
    expect(error(["--workers", "a", "--url", "http://x"])._tag).toBe("Some")
    expect(error(["--workers"])).toEqual(expect.objectContaining({ value: "--workers needs a value" }))
    expect(error(["--workers", "a", "extra"])).toEqual(expect.objectContaining({ value: 'unknown argument "extra" (see --help)' }))
  })
})
