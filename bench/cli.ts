/**
 * The benchmark's command line, shared by its scenarios: `--scenario NAME` picks one, then
 * `--name value` / `--name=value` flags and bare boolean flags, each checked against the scenario's
 * list, so that a typo is an error rather than a silently ignored option.
 */

/** A mistake on the command line: the driver prints the message and the scenario's usage. */
export class UsageError extends Error {}

export type LogLevel = "debug" | "info" | "warning" | "error"
const LOG_LEVELS: ReadonlyArray<LogLevel> = ["debug", "info", "warning", "error"]

/** `--scenario NAME` out of the arguments: the scenario (default `relay`) and the rest. */
export const splitScenario = (argv: ReadonlyArray<string>): { readonly scenario: string; readonly argv: ReadonlyArray<string> } => {
  const rest: Array<string> = []
  let scenario = "relay"
  for (let i = 0; i < argv.length; i++) {
    const arg = argv[i] ?? ""
    if (arg === "--scenario") scenario = argv[++i] ?? ""
    else if (arg.startsWith("--scenario=")) scenario = arg.slice("--scenario=".length)
    else rest.push(arg)
  }
  return { scenario, argv: rest }
}

/** The flags given, read with a fallback and checked. */
export interface Flags {
  readonly has: (name: string) => boolean
  readonly boolean: (name: string) => boolean
  readonly string: (name: string, fallback: string) => string
  /** A number ≥ `min` (a whole one when `integer`). */
  readonly number: (name: string, fallback: number, min: number, integer?: boolean) => number
  /** A comma-separated list, each item trimmed. */
  readonly list: (name: string, fallback: string) => Array<string>
  readonly logLevel: () => LogLevel
  /** `--runtime`: how the cluster runs the program (default tsx). */
  readonly runtime: () => Runtime
}

/** `tsx`: `node --import tsx src/main.ts`; `dist`: the build's `node dist/main.js` (scripts/build.ts). */
export type Runtime = "tsx" | "dist"

/**
 * Reads `argv` against the flags a scenario knows (`values`: take a value; `booleans`: bare).
 * `-h`/`--help` anywhere: "help".
 */
export const parseFlags = (
  argv: ReadonlyArray<string>,
  known: { readonly values: ReadonlyArray<string>; readonly booleans?: ReadonlyArray<string> }
): Flags | "help" => {
  const values = new Map<string, string>()
  const booleans = new Set<string>()
  for (let i = 0; i < argv.length; i++) {
    const arg = argv[i] ?? ""
    if (arg === "-h" || arg === "--help") return "help"
    if (!arg.startsWith("--")) throw new UsageError(`unexpected argument "${arg}"`)
    const eq = arg.indexOf("=")
    const name = eq === -1 ? arg.slice(2) : arg.slice(2, eq)
    if (known.booleans?.includes(name) === true && eq === -1) {
      booleans.add(name)
      continue
    }
    if (!known.values.includes(name)) throw new UsageError(`unknown flag --${name}`)
    const value = eq === -1 ? argv[++i] : arg.slice(eq + 1)
    if (value === undefined) throw new UsageError(`--${name} needs a value`)
    values.set(name, value)
  }
  const number = (name: string, fallback: number, min: number, integer = false) => {
    const raw = values.get(name)
    if (raw === undefined) return fallback
    const n = Number(raw)
    if (raw.trim() === "" || !Number.isFinite(n) || n < min || (integer && !Number.isInteger(n))) {
      throw new UsageError(`--${name} ${raw}: expected ${integer ? "an integer" : "a number"} ≥ ${min}`)
    }
    return n
  }
  return {
    has: (name) => values.has(name),
    boolean: (name) => booleans.has(name),
    string: (name, fallback) => values.get(name) ?? fallback,
    number,
    list: (name, fallback) => (values.get(name) ?? fallback).split(",").map((s) => s.trim()),
    logLevel: () => {
      const level = values.get("log-level") ?? "warning"
      if (!(LOG_LEVELS as ReadonlyArray<string>).includes(level)) {
        throw new UsageError(`--log-level ${level}: expected ${LOG_LEVELS.join(", ")}`)
      }
      return level as LogLevel
    },
    runtime: () => {
      const runtime = values.get("runtime") ?? "tsx"
      if (runtime !== "tsx" && runtime !== "dist") throw new UsageError(`--runtime ${runtime}: expected tsx or dist`)
      return runtime
    }
  }
}
