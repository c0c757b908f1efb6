/**
 * A small operator CLI over the controller's typed RPC group (`/rpc`):
 *
 *   tsx scripts/cluster.ts status | workers | generate MODEL PROMPT [--max-tokens N]
 *                          [--url URL] [--api-key KEY] [--json]
 *
 * `--url` defaults to `CLUSTER_URL`, else `http://127.0.0.1:8080/rpc`; `--api-key` to
 * `CLUSTER_API_KEY`. `--json` prints the RPC result as JSON (`generate`: one event per line).
 * Any failure prints one line on stderr and exits 1.
 */
import * as NodeRuntime from "@effect/platform-node/NodeRuntime"
import { Cause, Clock, Effect, Either, Option, Stream } from "effect"
import { parseClusterArgs, USAGE, type ClusterCommand } from "../src/cli/args.js"
import {
  eventJson,
  formatGenerateSummary,
  formatStatus,
  formatWorkers,
  statusJson,
  workersJson
} from "../src/cli/format.js"
import type { GenerateEvent } from "../src/domain/rpc.js"
import { ClusterClient, describeError, layer as clusterClientLayer } from "../src/rpc-client.js"

const out = (text: string) => Effect.sync(() => process.stdout.write(text))

const generateRequest = (command: Extract<ClusterCommand, { command: "generate" }>) => ({
  model: command.model,
  prompt: command.prompt,
  ...(command.maxTokens === undefined ? {} : { maxTokens: command.maxTokens })
})

const run = (command: ClusterCommand, json: boolean) =>
  Effect.gen(function* () {
    const cluster = yield* ClusterClient
    switch (command.command) {
      case "help":
        return yield* out(`${USAGE}\n`)
      case "status": {
        const status = yield* cluster.ClusterStatus()
        return yield* out(`${json ? statusJson(status) : formatStatus(status)}\n`)
      }
      case "workers": {
        const workers = [...(yield* cluster.ListWorkers())].sort((a, b) => a.workerId.localeCompare(b.workerId))
        return yield* out(`${json ? workersJson(workers) : formatWorkers(workers, yield* Clock.currentTimeMillis)}\n`)
      }
      case "generate": {
        if (json) return yield* cluster.Generate(generateRequest(command)).pipe(Stream.runForEach((e) => out(`${eventJson(e)}\n`)))
        const startedAt = yield* Clock.currentTimeMillis
        const request = generateRequest(command)
        let done = Option.none<Extract<GenerateEvent, { type: "done" }>>()
        let printed = false
        yield* cluster.Generate(request).pipe(
          Stream.runForEach((event) =>
            event.type === "token"
              ? Effect.zipRight(
                  Effect.sync(() => {
                    printed = true
                  }),
                  out(event.token)
                )
              : Effect.sync(() => {
                  done = Option.some(event)
                })
          ),
          // A failure after some tokens: end their line before the error line on stderr.
          Effect.onError(() => (printed ? out("\n") : Effect.void))
        )
        const elapsed = (yield* Clock.currentTimeMillis) - startedAt
        return yield* Option.match(done, {
          onNone: () => out("\n"),
          onSome: (d) => out(`\n${formatGenerateSummary(d, elapsed)}\n`)
        })
      }
    }
  })

const main = Effect.suspend(() => {
  const parsed = parseClusterArgs(process.argv.slice(2), process.env)
  if (Either.isLeft(parsed)) return Effect.fail(parsed.left)
  const { run: command, url, apiKey, json } = parsed.right
  return run(command, json === true).pipe(
    Effect.mapError(describeError),
    Effect.provide(clusterClientLayer({ url, ...(apiKey === undefined ? {} : { apiKey }) }))
  )
}).pipe(
  Effect.catchAllCause((cause) => {
    if (Cause.isInterruptedOnly(cause)) return Effect.failCause(cause)
    const line = Option.match(Cause.failureOption(cause), {
      onSome: (message) => message,
      onNone: () => {
        const defect = Cause.squash(cause)
        return defect instanceof Error ? defect.message : String(defect)
      }
    })
    return Effect.sync(() => process.stderr.write(`cluster: ${line}\n`)).pipe(Effect.zipRight(Effect.fail(line)))
  })
)

NodeRuntime.runMain(main, { disableErrorReporting: true })
