import { Either, Schema } from "effect"
import { formatIssue, guardedDecoder } from "../domain/decode.js"
import { WorkerIdString } from "../domain/ids.js"

/** What `scripts/nats-config.ts` was asked to do. */
export type NatsConfigCommand =
  | { readonly _tag: "Help" }
  | {
      readonly _tag: "Generate"
      readonly controllers: ReadonlyArray<string>
      readonly workers: ReadonlyArray<string>
      readonly out: string
      readonly listen: string
      readonly url: string
    }

export const NATS_CONFIG_USAGE = `usage: npx tsx scripts/nats-config.ts --workers ID,ID,… [options]

Writes a nats-server config with one user per controller and per worker (workers may only publish
their own messages and read their own subjects), and each node's NATS keys, into --out (mode 600).
Running it again keeps the passwords of the users that remain.

options:
  --workers IDS        worker ids, comma-separated (required; each is that worker's worker.id)
  --controllers NAMES  controller names, comma-separated (default: main)
  --out DIR            where the files go (default: nats-cluster)
  --listen HOST:PORT   where nats-server listens (default: 0.0.0.0:4222)
  --url URL            how the nodes reach it (default: nats://HOSTNAME:4222)
  -h, --help           this text`

const FLAGS = new Set(["--workers", "--controllers", "--out", "--listen", "--url"])

const decodeId = guardedDecoder(WorkerIdString)

const names = (what: string, value: string): Either.Either<ReadonlyArray<string>, string> => {
  const list = value
    .split(",")
    .map((s) => s.trim())
    .filter((s) => s !== "")
  if (list.length === 0) return Either.left(`${what}: at least one name`)
  for (const name of list) {
    const decoded = decodeId(name)
    if (Either.isLeft(decoded)) return Either.left(`${what}: ${JSON.stringify(name)}: ${formatIssue(decoded.left)}`)
  }
  if (new Set(list).size !== list.length) return Either.left(`${what}: a name appears twice`)
  return Either.right(list)
}

/** Parses the arguments after the script name (`--flag value` or `--flag=value`); one-line errors. */
export const parseNatsConfigArgs = (argv: ReadonlyArray<string>, hostname: string): Either.Either<NatsConfigCommand, string> => {
  const flags = new Map<string, string>()
  for (let i = 0; i < argv.length; i++) {
    const arg = argv[i] ?? ""
    if (arg === "-h" || arg === "--help") return Either.right({ _tag: "Help" })
    const eq = arg.indexOf("=")
    const name = eq === -1 ? arg : arg.slice(0, eq)
    if (!FLAGS.has(name)) return Either.left(`unknown argument ${JSON.stringify(arg)} (see --help)`)
    const value = eq === -1 ? argv[++i] : arg.slice(eq + 1)
    if (value === undefined || value === "") return Either.left(`${name} needs a value`)
    flags.set(name, value)
  }
  const workersFlag = flags.get("--workers")
  if (workersFlag === undefined) return Either.left("--workers is required (see --help)")
  return Either.gen(function* () {
    const workers = yield* names("--workers", workersFlag)
    const controllers = yield* names("--controllers", flags.get("--controllers") ?? "main")
    const url = flags.get("--url") ?? `nats://${hostname}:4222`
    if (!/^(nats|tls):\/\/[^\s]+$/.test(url)) yield* Either.left(`--url: expected nats://HOST:PORT, got ${JSON.stringify(url)}`)
    const listen = flags.get("--listen") ?? "0.0.0.0:4222"
    if (!/^[^\s:]+:\d{1,5}$/.test(listen)) yield* Either.left(`--listen: expected HOST:PORT, got ${JSON.stringify(listen)}`)
    const command: NatsConfigCommand = { _tag: "Generate", workers, controllers, out: flags.get("--out") ?? "nats-cluster", listen, url }
    return command
  })
}

/** `credentials.json` of the output folder: the password of every user, kept across runs. */
export const StoredPasswords = Schema.Record({ key: Schema.String, value: Schema.String.pipe(Schema.minLength(16)) })
