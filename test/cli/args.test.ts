import { describe, expect, it } from "@effect/vitest"
import { Either } from "effect"
import { DEFAULT_RPC_URL, parseClusterArgs } from "../../src/cli/args.js"

describe("parseClusterArgs", () => {
  it("reads the commands with the default URL", () => {
    expect(parseClusterArgs(["status"])).toEqual(Either.right({ url: DEFAULT_RPC_URL, run: { command: "status" } }))
    expect(parseClusterArgs(["workers"])).toEqual(Either.right({ url: DEFAULT_RPC_URL, run: { command: "workers" } }))
  })

  it("reads generate with its model, prompt and --max-tokens in either form", () => {
    expect(parseClusterArgs(["generate", "m/x", "hello there", "--max-tokens", "12"])).toEqual(
      Either.right({ url: DEFAULT_RPC_URL, run: { command: "generate", model: "m/x", prompt: "hello there", maxTokens: 12 } })
    )
    expect(parseClusterArgs(["--max-tokens=3", "generate", "m/x", "unquoted", "words"])).toEqual(
      Either.right({ url: DEFAULT_RPC_URL, run: { command: "generate", model: "m/x", prompt: "unquoted words", maxTokens: 3 } })
    )
    expect(parseClusterArgs(["generate", "m/x", "--", "--not-a-flag"])).toEqual(
      Either.right({ url: DEFAULT_RPC_URL, run: { command: "generate", model: "m/x", prompt: "--not-a-flag" } })
    )
  })

  it("takes the URL and key from the environment, flags first", () => {
    const env = { CLUSTER_URL: "http://env:1/rpc", CLUSTER_API_KEY: "env-key" }
    expect(parseClusterArgs(["status"], env)).toEqual(
      Either.right({ url: "http://env:1/rpc", apiKey: "env-key", run: { command: "status" } })
    )
    expect(parseClusterArgs(["status", "--url", "http://flag:2/rpc", "--api-key=flag-key"], env)).toEqual(
      Either.right({ url: "http://flag:2/rpc", apiKey: "flag-key", run: { command: "status" } })
    )
    expect(parseClusterArgs(["status"], { CLUSTER_API_KEY: "" })).toEqual(
      Either.right({ url: DEFAULT_RPC_URL, run: { command: "status" } })
    )
  })

  it("reads --json on every command, anywhere on the line", () => {
    expect(parseClusterArgs(["status", "--json"])).toEqual(Either.right({ url: DEFAULT_RPC_URL, json: true, run: { command: "status" } }))
    expect(parseClusterArgs(["--json", "workers"])).toEqual(Either.right({ url: DEFAULT_RPC_URL, json: true, run: { command: "workers" } }))
    expect(parseClusterArgs(["generate", "m/x", "hi", "--json"])).toEqual(
      Either.right({ url: DEFAULT_RPC_URL, json: true, run: { command: "generate", model: "m/x", prompt: "hi" } })
    )
  })

  it("asks for help", () => {
    expect(parseClusterArgs(["status", "--help"])).toEqual(Either.right({ url: DEFAULT_RPC_URL, run: { command: "help" } }))
    expect(parseClusterArgs(["-h"])).toEqual(Either.right({ url: DEFAULT_RPC_URL, run: { command: "help" } }))
  })

  it.each([
    [[], "missing command"],
    [["deploy"], 'unknown command "deploy"'],
    [["status", "extra"], "status takes no arguments"],
    [["workers", "--max-tokens", "3"], "--max-tokens applies to generate only"],
    [["generate", "m/x"], "generate needs MODEL and PROMPT"],
    [["generate", "m/x", "p", "--max-tokens", "0"], "--max-tokens must be a positive integer"],
    [["generate", "m/x", "p", "--max-tokens", "2.5"], "--max-tokens must be a positive integer"],
    [["status", "--url"], "option --url needs a value"],
    [["status", "--verbose"], "unknown option --verbose"],
    [["status", "--json=yes"], "option --json takes no value"]
  ])("refuses %j with one line", (argv, message) => {
    const result = parseClusterArgs(argv)
    expect(Either.isLeft(result)).toBe(true)
    expect(Either.getLeft(result).pipe((o) => (o._tag === "Some" ? o.value : ""))).toContain(message)
  })
})
