import { expect, inject, layer } from "@effect/vitest"
import { Effect, Schema } from "effect"
import { ClusterStatus } from "../../src/domain/cluster.js"
import { GenerateEvent } from "../../src/domain/rpc.js"
import { WorkerInfo } from "../../src/domain/worker.js"
import { execFile } from "node:child_process"
import { fileURLToPath } from "node:url"
import { FakeWorker } from "../support/fake-worker.js"
import { baseUrl, testServerLayer, unique } from "../http/support/test-server.js"

const natsUrl = inject("natsUrl")
const MODEL = unique("test-cli/model")
const root = fileURLToPath(new URL("../..", import.meta.url))
const tsx = fileURLToPath(new URL("../../node_modules/.bin/tsx", import.meta.url))

/** Starting tsx + effect takes seconds on a small machine, more while other test files run. */
const SPAWN_TIMEOUT = 90_000

interface Run {
  readonly code: number
  readonly stdout: string
  readonly stderr: string
}

/** `tsx scripts/cluster.ts ...args` in the repo root (the local tsx, as `npx tsx` runs it), without the caller's CLUSTER_* variables. */
const cli = (args: ReadonlyArray<string>, env: Record<string, string> = {}) =>
  Effect.async<Run>((resume) => {
    const { CLUSTER_URL: _url, CLUSTER_API_KEY: _key, ...inherited } = process.env
    const child = execFile(
      tsx,
      ["scripts/cluster.ts", ...args],
      { cwd: root, env: { ...inherited, ...env }, timeout: SPAWN_TIMEOUT - 5_000 },
      (error, stdout, stderr) => {
        const code = error === null ? 0 : typeof error.code === "number" ? error.code : 1
        resume(Effect.succeed({ code, stdout, stderr }))
      }
    )
    return Effect.sync(() => child.kill())
  })

layer(
  testServerLayer({ natsUrl, workerId: unique("cli-worker"), models: [MODEL], tokenDelayMs: 5 }),
  { excludeTestServices: true }
)("scripts/cluster.ts against a running controller", (it) => {
  it.effect("status and workers print readable tables", () =>
    Effect.gen(function* () {
      const worker = yield* FakeWorker
      const url = `${yield* baseUrl}/rpc`
      const [status, workers] = yield* Effect.all([cli(["status", "--url", url]), cli(["workers"], { CLUSTER_URL: url })], {
        concurrency: "unbounded"
      })
      expect(status.stderr).toBe("")
      expect(status.code).toBe(0)
      expect(status.stdout).toMatch(/^controller {2}ready, version \S+, mode controller, uptime /)
      expect(status.stdout).toMatch(/\nworkers {5}\d+ total, \d+ online, \d+ offline\n/)
      expect(status.stdout).toMatch(
        /\nrequests {4}\d+ total = \d+ active \+ \d+ succeeded \+ \d+ failed \+ \d+ cancelled, success rate \d+\.\d %\n$/
      )

      // `workers` took its URL from CLUSTER_URL.
      expect(workers.code).toBe(0)
      const lines = workers.stdout.trimEnd().split("\n")
      expect(lines[0]).toMatch(/^ID +STATUS +HOST +CHIP +GPU GB +MODELS +TAGS +SLOTS +SERVED +LAST HEARTBEAT$/)
      const row = lines.find((l) => l.startsWith(`${worker.workerId} `))
      expect(row).toMatch(new RegExp(`^${worker.workerId} +online +\\S+ +Apple M2 Max +48 +${MODEL}`))
    }),
    SPAWN_TIMEOUT
  )

  it.effect("--json prints each command's RPC result as JSON (generate: one event per line)", () =>
    Effect.gen(function* () {
      const worker = yield* FakeWorker
      const url = `${yield* baseUrl}/rpc`
      const [status, workers, generate] = yield* Effect.all(
        [
          cli(["status", "--json", "--url", url]),
          cli(["workers", "--json", "--url", url]),
          cli(["generate", MODEL, "hi", "--max-tokens", "2", "--json", "--url", url])
        ],
        { concurrency: "unbounded" }
      )
      expect([status.code, workers.code, generate.code]).toEqual([0, 0, 0])
      const decodedStatus = Schema.decodeUnknownSync(ClusterStatus)(JSON.parse(status.stdout))
      const { active, succeeded, failed, cancelled, total } = decodedStatus.requests
      expect(active + succeeded + failed + cancelled).toBe(total)
      const decodedWorkers = Schema.decodeUnknownSync(Schema.Array(WorkerInfo))(JSON.parse(workers.stdout))
      expect(decodedWorkers.map((w) => w.workerId)).toContain(worker.workerId)
      const events = generate.stdout.trimEnd().split("\n").map((line) => Schema.decodeUnknownSync(GenerateEvent)(JSON.parse(line)))
      expect(events.map((e) => e.type)).toEqual(["token", "token", "done"])
    }),
    SPAWN_TIMEOUT
  )

  it.effect("generate streams the tokens to stdout, then a summary line", () =>
    Effect.gen(function* () {
      const run = yield* cli(["generate", MODEL, "say", "hi", "--max-tokens", "4", "--url", `${yield* baseUrl}/rpc`])
      expect(run.code).toBe(0)
      expect(run.stdout).toMatch(/^t0 t1 t2 t3 \n\[4 tokens in .*, finish length, prompt 3 tokens, worker cli-worker-\w+\]\n$/)
    }),
    SPAWN_TIMEOUT
  )

  it.effect("an error is one readable line on stderr and exit code 1", () =>
    Effect.gen(function* () {
      const url = `${yield* baseUrl}/rpc`
      // The other failures (unreachable controller, bad arguments) take the same path; their
      // texts are tested in-process (describeError, parseClusterArgs) to keep this file fast.
      const unknownModel = yield* cli(["generate", "no/such-model", "hi", "--url", url])
      expect(unknownModel.code).toBe(1)
      expect(unknownModel.stdout).toBe("")
      expect(unknownModel.stderr).toMatch(/^cluster: The model "no\/such-model" does not exist.*\(model_not_found\)\n$/)
    }),
    SPAWN_TIMEOUT
  )
})
