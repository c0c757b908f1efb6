import { Either } from "effect"

/**
 * The command-line flags of docs/contract.md §1.1, as given: strings, not yet validated. Their values are
 * checked by the config schema after they have been laid over the file (see `applyOverrides`), so a
 * bad `--port abc` is reported exactly like a bad `port: abc` in the file.
 */
export interface CliFlags {
  readonly config?: string
  readonly mode?: string
  readonly port?: string
  readonly natsUrl?: string
  readonly modelDir?: string
  readonly workerId?: string
}

/** What the command line asks for: run with these flags, or print the usage text. */
export type CliCommand =
  | { readonly _tag: "Run"; readonly flags: CliFlags }
  | { readonly _tag: "Help"; readonly text: string }

/** Flag name (without `--`) → field of `CliFlags`. */
const flagFields = {
  config: "config",
  mode: "mode",
  port: "port",
  "nats-url": "natsUrl",
  "model-dir": "modelDir",
  "worker-id": "workerId"
} as const satisfies Record<string, keyof CliFlags>

type FlagName = keyof typeof flagFields

const isFlagName = (name: string): name is FlagName => Object.hasOwn(flagFields, name)

export const usage = `Usage: npx tsx src/main.ts [options]

Runs an mlx-serving cluster node: a controller, a worker, or both in one process.

Options:
  --config FILE        config file (YAML)               env CLUSTER_CONFIG   default config/cluster.yaml
  --mode MODE          controller | worker | both       env CLUSTER_MODE     file cluster.mode
  --port N             controller HTTP port             env CONTROLLER_PORT  file cluster.controller.port
  --nats-url URL[,URL] NATS server URL(s), in order     env NATS_URL         file cluster.nats.server_url
  --model-dir DIR      folder the worker scans          env MODEL_DIR        file cluster.worker.model_dir
  --worker-id ID       this worker's id                 env WORKER_ID        file cluster.worker.id
  -h, --help           print this text and exit

Flags beat environment variables, which beat the config file, which beats the built-in defaults.
Flags may be written "--port 8080" or "--port=8080".
`

/**
 * Parses `argv` (without the node and script paths). `--help` or `-h` anywhere wins over everything
 * else. Fails with a one-line message on an unknown flag, a positional argument or a missing value.
 * A flag given twice keeps its last value.
 */
export const parseCliFlags = (argv: ReadonlyArray<string>): Either.Either<CliCommand, string> => {
  if (argv.some((arg) => arg === "--help" || arg === "-h")) {
    return Either.right({ _tag: "Help", text: usage })
  }
  const flags: { -readonly [K in keyof CliFlags]: CliFlags[K] } = {}
  let i = 0
  while (i < argv.length) {
    const arg = argv[i] ?? ""
    i += 1
    if (!arg.startsWith("--") || arg === "--") {
      return Either.left(`unexpected argument "${arg}" (see --help)`)
    }
    const eq = arg.indexOf("=")
    const name = eq === -1 ? arg.slice(2) : arg.slice(2, eq)
    if (!isFlagName(name)) {
      return Either.left(`unknown flag "--${name}" (see --help)`)
    }
    let value: string
    if (eq !== -1) {
      value = arg.slice(eq + 1)
    } else {
      const next = argv[i]
      if (next === undefined || next.startsWith("--")) {
        return Either.left(`flag --${name} needs a value (see --help)`)
      }
      value = next
      i += 1
    }
    flags[flagFields[name]] = value
  }
  return Either.right({ _tag: "Run", flags })
}
