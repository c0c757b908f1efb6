/**
 * Generates a NATS bus with roles for a real cluster:
 *
 *   npx tsx scripts/nats-config.ts --workers studio-1,studio-2 [--controllers main] [--out nats-cluster]
 *                                  [--listen 0.0.0.0:4222] [--url nats://controller.local:4222]
 *
 * Writes into --out (folder 700, files 600): `nats-server.conf` (one user per controller and per
 * worker, with the permissions of src/nats/bus-permissions.ts), `controller-NAME.yaml` and
 * `worker-ID.yaml` (the `cluster:` keys each node needs), and `credentials.json` (the passwords,
 * reused when the script runs again, so adding a worker does not change the others' passwords).
 * See docs/cluster-setup.md, "Securing the bus".
 */
import { randomBytes } from "node:crypto"
import { chmodSync, mkdirSync, readFileSync, writeFileSync } from "node:fs"
import { hostname } from "node:os"
import { join } from "node:path"
import { Either } from "effect"
import { NATS_CONFIG_USAGE, parseNatsConfigArgs, StoredPasswords } from "../src/cli/nats-config-args.js"
import { decodeGuarded, parseJson } from "../src/domain/decode.js"
import { busFiles, busUsers } from "../src/nats/bus-config.js"

const fail = (message: string): never => {
  process.stderr.write(`nats-config: ${message}\n`)
  process.exit(1)
}

const readStored = (file: string): Readonly<Record<string, string>> => {
  let text: string
  try {
    text = readFileSync(file, "utf8")
  } catch {
    return {}
  }
  const decoded = Either.flatMap(parseJson(text), decodeGuarded(StoredPasswords))
  return Either.isRight(decoded) ? decoded.right : fail(`${file} is not a password list; move it away to start afresh`)
}

const writePrivate = (path: string, text: string) => {
  writeFileSync(path, text, { mode: 0o600 })
  chmodSync(path, 0o600)
}

const parsed = parseNatsConfigArgs(process.argv.slice(2), hostname())
if (Either.isLeft(parsed)) fail(parsed.left)
const command = Either.getOrThrow(parsed)
if (command._tag === "Help") {
  process.stdout.write(`${NATS_CONFIG_USAGE}\n`)
  process.exit(0)
}

mkdirSync(command.out, { recursive: true, mode: 0o700 })
chmodSync(command.out, 0o700)
const storedFile = join(command.out, "credentials.json")
const stored = readStored(storedFile)
const users = busUsers(command)
const passwords: Record<string, string> = {}
for (const user of users) passwords[user] = stored[user] ?? randomBytes(24).toString("base64url")

writePrivate(storedFile, `${JSON.stringify(passwords, null, 2)}\n`)
const files = busFiles({ ...command, passwords })
for (const file of files) writePrivate(join(command.out, file.name), file.text)

const kept = users.filter((u) => stored[u] !== undefined).length
process.stdout.write(
  [
    `wrote ${files.length + 1} files to ${command.out}/ (mode 600; ${users.length - kept} new password(s), ${kept} kept):`,
    ...files.map((f) => `  ${f.name}`),
    "  credentials.json",
    "",
    "next:",
    `  on the NATS host:  nats-server -c ${join(command.out, "nats-server.conf")}`,
    "  on each node:      copy the keys of its controller-NAME.yaml / worker-ID.yaml into its config",
    "                     (nats.mode external, server_url, user, pass; worker.id; controller.allowed_workers)",
    ""
  ].join("\n")
)
