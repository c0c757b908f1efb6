/** The relay scenario's command line (the default scenario of `npm run bench`). */
import { type LogLevel, parseFlags, type Runtime, UsageError } from "./cli.js"

export const RELAY_USAGE = `Usage: npm run bench -- [options]      (tsx bench/main.ts [options])
  --concurrency LIST   concurrency levels, comma-separated     default 1,32,256,1024
  --duration S         measured seconds per level and target   default 5
  --jit-warmup S       unmeasured load on each target before the first level, at its
                       concurrency (V8 compiles the request path; 0: none)  default 10
  --warmup S           warm-up seconds before each measurement default 1
  --tokens T           max_tokens of every request             default 32
  --workers N          synthetic workers                        default 2
  --stress N           streams started at once (0: skip)        default 2000
  --timeout S          per-request client timeout (the controller's request_timeout_ms)  default 120
  --log-level L        the cluster's log_level (diagnosis)     default warning
  --runtime R          how the cluster runs: tsx (node --import tsx src/main.ts) or dist
                       (npm run build's node dist/main.js)          default tsx
  --profile            --cpu-prof the controller into bench/profiles (see README, "Benchmark"; tsx only)
  --scenario chat      the cache-aware routing scenario instead (see --scenario chat --help)
  -h, --help           this text
`

export interface RelayOptions {
  readonly concurrency: ReadonlyArray<number>
  readonly durationSeconds: number
  /** Unmeasured load on each target before the first level (reported as its start-up figures). */
  readonly jitWarmupSeconds: number
  readonly warmupSeconds: number
  readonly tokens: number
  readonly workers: number
  readonly stress: number
  readonly timeoutSeconds: number
  readonly profile: boolean
  readonly logLevel: LogLevel
  readonly runtime: Runtime
}

export const parseRelayOptions = (argv: ReadonlyArray<string>): RelayOptions | "help" => {
  const flags = parseFlags(argv, {
    values: ["concurrency", "duration", "jit-warmup", "warmup", "tokens", "workers", "stress", "timeout", "log-level", "runtime"],
    booleans: ["profile"]
  })
  if (flags === "help") return "help"
  const concurrency = flags.list("concurrency", "1,32,256,1024").map(Number)
  if (concurrency.some((c) => !Number.isInteger(c) || c < 1)) {
    throw new UsageError(`--concurrency ${flags.string("concurrency", "")}: expected positive integers, comma-separated`)
  }
  const runtime = flags.runtime()
  // The profile's source mapping reads tsx's inline maps.
  if (runtime === "dist" && flags.boolean("profile")) throw new UsageError("--profile works with --runtime tsx only")
  return {
    concurrency,
    durationSeconds: flags.number("duration", 5, 0.5),
    jitWarmupSeconds: flags.number("jit-warmup", 10, 0),
    warmupSeconds: flags.number("warmup", 1, 0),
    tokens: flags.number("tokens", 32, 1, true),
    workers: flags.number("workers", 2, 1, true),
    stress: flags.number("stress", 2000, 0, true),
    timeoutSeconds: flags.number("timeout", 120, 1),
    profile: flags.boolean("profile"),
    logLevel: flags.logLevel(),
    runtime
  }
}
