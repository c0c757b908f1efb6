/**
 * The benchmark's driver: `npm run bench` (= ensure nats-server, then `tsx bench/main.ts`).
 *
 *   npm run bench -- [--concurrency 1,32,256,1024] [--duration 5] [--warmup 1] [--tokens 32]
 *                    [--workers 2] [--stress 2000] [--timeout 120] [--log-level warning] [--profile]
 *   npm run bench -- --scenario chat [...]      (--help lists each scenario's options)
 *   npm run bench -- --scenario hostile [...]   (issue 9's figures: registration flood, deep JSON)
 *   npm run bench -- --scenario tail [...]      (where the TTFT tail at concurrency 1 comes from)
 *   npm run bench -- --scenario held [...]      (memory one stream in flight holds in the controller)
 *
 * Picks the scenario (relay.ts, the default; chat-scenario.ts; hostile-scenario.ts; tail-scenario.ts;
 * held-scenario.ts), gives it one
 * `BenchRun`, and makes sure that whatever happens the run's children stop: at the end, on a
 * harness failure, on SIGINT or SIGTERM (a second one kills them at once), and when this process
 * exits.
 */
import { resolve } from "node:path"
import { runChatScenario, CHAT_USAGE } from "./chat-scenario.js"
import { splitScenario, UsageError } from "./cli.js"
import { HELD_USAGE, runHeldScenario } from "./held-scenario.js"
import { HOSTILE_USAGE, runHostileScenario } from "./hostile-scenario.js"
import { RELAY_USAGE } from "./relay-options.js"
import { runRelay } from "./relay.js"
import { BenchRun } from "./run.js"
import { runTailScenario, TAIL_USAGE } from "./tail-scenario.js"

const SCENARIOS = {
  relay: { run: runRelay, usage: RELAY_USAGE },
  chat: { run: runChatScenario, usage: CHAT_USAGE },
  hostile: { run: runHostileScenario, usage: HOSTILE_USAGE },
  tail: { run: runTailScenario, usage: TAIL_USAGE },
  held: { run: runHeldScenario, usage: HELD_USAGE }
} as const

const run = new BenchRun(resolve(import.meta.dirname, ".."))

process.on("exit", () => run.killSync())
let signals = 0
const onSignal = (signal: NodeJS.Signals) => {
  run.interrupt()
  if (++signals > 1) {
    run.killSync()
    process.exit(130)
  }
  process.stderr.write(`[bench] ${signal}: stopping every child process\n`)
  void run.stop(3_000).finally(() => process.exit(130))
}
process.on("SIGINT", onSignal)
process.on("SIGTERM", onSignal)

const { scenario: name, argv } = splitScenario(process.argv.slice(2))
const scenario = Object.hasOwn(SCENARIOS, name) ? SCENARIOS[name as keyof typeof SCENARIOS] : undefined

const main = async (): Promise<void> => {
  if (scenario === undefined) throw new UsageError(`--scenario ${name}: expected relay (the default), chat, hostile, tail or held`)
  try {
    await scenario.run(run, argv)
  } finally {
    await run.stop(3_000)
  }
}

main().then(
  () => process.exit(0),
  (error: unknown) => {
    if (error instanceof UsageError) process.stderr.write(`bench: ${error.message}\n${scenario?.usage ?? RELAY_USAGE}`)
    else if (!run.interrupted) process.stderr.write(`bench: harness failure: ${error instanceof Error ? (error.stack ?? error.message) : String(error)}\n`)
    process.exit(run.interrupted ? 130 : 1)
  }
)
