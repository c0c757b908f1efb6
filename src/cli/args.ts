import { Either } from "effect"

/** What `scripts/cluster.ts` was asked to do. */
export type ClusterCommand =
  | { readonly command: "status" }
  | { readonly command: "workers" }
  | { readonly command: "generate"; readonly model: string; readonly prompt: string; readonly maxTokens?: number }
  | { readonly command: "help" }

export interface ClusterCliArgs {
  readonly url: string
  readonly apiKey?: string
  /** `--json`: print the RPC result as JSON (NDJSON events for `generate`) instead of text. */
  readonly json?: true
  readonly run: ClusterCommand
}

export const DEFAULT_RPC_URL = "http://127.0.0.1:8080/rpc"

export const USAGE = `usage: tsx scripts/cluster.ts <command> [options]

commands:
  status                                 the controller, worker counts and request statistics
  workers                                every registered worker
  generate MODEL PROMPT [--max-tokens N] stream a completion to stdout

options:
  --url URL          RPC endpoint (env CLUSTER_URL, default ${DEFAULT_RPC_URL})
  --api-key KEY      bearer key when the controller has api_keys (env CLUSTER_API_KEY)
  --max-tokens N     most tokens to generate (generate only)
  --json             print the result as JSON (generate: one JSON event per line)
  -h, --help         this text`

/** Options that take a value. */
const FLAGS = new Set(["--url", "--api-key", "--max-tokens"])
/** Options that are on or off. */
const SWITCHES = new Set(["--json"])

/**
 * Parses the arguments after the script name. Flags take `--flag value` or `--flag=value`; the
 * environment supplies `CLUSTER_URL` and `CLUSTER_API_KEY`, flags win. Words after `PROMPT` are
 * joined to it, so an unquoted prompt works too. The error is one line for stderr.
 */
export const parseClusterArgs = (
  argv: ReadonlyArray<string>,
  env: Readonly<Record<string, string | undefined>> = {}
): Either.Either<ClusterCliArgs, string> => {
  const flags = new Map<string, string>()
  const switches = new Set<string>()
  const positional: Array<string> = []
  for (let i = 0; i < argv.length; i++) {
    const arg = argv[i] ?? ""
    if (arg === "-h" || arg === "--help") {
      return Either.right({ url: DEFAULT_RPC_URL, run: { command: "help" } })
    }
    if (arg === "--") {
      positional.push(...argv.slice(i + 1))
      break
    }
    if (!arg.startsWith("--")) {
      positional.push(arg)
      continue
    }
    const eq = arg.indexOf("=")
    const name = eq === -1 ? arg : arg.slice(0, eq)
    if (SWITCHES.has(name)) {
      if (eq !== -1) return Either.left(`option ${name} takes no value`)
      switches.add(name)
      continue
    }
    if (!FLAGS.has(name)) return Either.left(`unknown option ${name} (see --help)`)
    const value = eq === -1 ? argv[++i] : arg.slice(eq + 1)
    if (value === undefined || value === "") return Either.left(`option ${name} needs a value`)
    flags.set(name, value)
  }

  const url = flags.get("--url") ?? env["CLUSTER_URL"] ?? DEFAULT_RPC_URL
  const apiKey = flags.get("--api-key") ?? env["CLUSTER_API_KEY"]
  const base = {
    url,
    ...(apiKey === undefined || apiKey === "" ? {} : { apiKey }),
    ...(switches.has("--json") ? { json: true as const } : {})
  }
  const maxTokensFlag = flags.get("--max-tokens")

  const [command, ...rest] = positional
  switch (command) {
    case "status":
    case "workers": {
      if (rest.length > 0) return Either.left(`${command} takes no arguments, got "${rest.join(" ")}"`)
      if (maxTokensFlag !== undefined) return Either.left("--max-tokens applies to generate only")
      return Either.right({ ...base, run: { command } })
    }
    case "generate": {
      const [model, ...words] = rest
      if (model === undefined || words.length === 0) return Either.left("generate needs MODEL and PROMPT")
      let maxTokens: number | undefined
      if (maxTokensFlag !== undefined) {
        maxTokens = Number(maxTokensFlag)
        if (!Number.isInteger(maxTokens) || maxTokens <= 0) {
          return Either.left(`--max-tokens must be a positive integer, got "${maxTokensFlag}"`)
        }
      }
      const prompt = words.join(" ")
      return Either.right({
        ...base,
        run: { command: "generate", model, prompt, ...(maxTokens === undefined ? {} : { maxTokens }) }
      })
    }
    case undefined:
      return Either.left("missing command: status, workers or generate (see --help)")
    default:
      return Either.left(`unknown command "${command}": status, workers or generate (see --help)`)
  }
}
