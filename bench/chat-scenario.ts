/**
 * The chat scenario of the benchmark (issue 16): `npm run bench -- --scenario chat`.
 *
 *   npm run bench -- --scenario chat [--conversations 200] [--turns 6] [--workers 4]
 *        [--concurrency 16] [--prefill-rate 2000] [--decode-rate 0] [--tokens 192]
 *        [--strategies round_robin,least_loaded,smart] [--max-imbalance N] [--think-ms 500]
 *        [--log-level warning]
 *
 * Per strategy, its own cluster: a nats-server, N synthetic workers with a prefill cost
 * (`prefill_tokens_per_second`, their own prompt cache) and a controller with that
 * `load_balancing.strategy` (every process the real CLI, as in the relay benchmark), so that every
 * strategy starts from cold caches and zero counters. The client runs the same conversations on
 * each (chat-workload.ts), `--concurrency` at a time, each conversation's turns one
 * after the other, every turn sending back the answers it got; the strategies take turns in waves
 * of 2 × `--concurrency` conversations, so that a shared machine's changing load falls on all of
 * them alike. At the end it waits for a heartbeat and reads the workers' counters
 * (`/api/cluster/workers`: requests and `promptCache`) and the controller's affinity counters
 * (`/metrics`). Prints a markdown table and the targets, and saves JSON under bench/results/.
 *
 * Defaults: 16 conversations at once is 4 per worker, what a Mac serves at once (`max_concurrent`
 * 4 by default). A user pauses 500 ms between an answer and the next turn (real users take
 * longer): without any pause, the strategy with the fastest answers also sends the most requests
 * per second, and on a small shared machine that CPU lands in its own TTFT. Decoding is unpaced for
 * the same reason: the scenario measures prefill and routing, and paced tokens would only add
 * thousands of NATS messages per second.
 */
import { Agent } from "node:http"
import { cpus, loadavg } from "node:os"
import {
  type AffinityCounters,
  checkChatTargets,
  formatChatResults,
  parseAffinityCounters,
  type StrategyResult,
  summariseStrategy,
  type TurnSample,
  type WorkerReport
} from "./chat-report.js"
import { type Conversation, makeWorkload, messagesFor } from "./chat-workload.js"
import { parseFlags, UsageError } from "./cli.js"
import { assertRunning } from "./child.js"
import { type Cluster, type ClusterSettings, getJson, MODEL, sleep, startCluster, stopCluster } from "./cluster.js"
import { contentOf, streamOnce, type Target } from "./load.js"
import { type BenchRun, progress } from "./run.js"

const STRATEGIES = ["round_robin", "least_loaded", "smart"] as const
type Strategy = (typeof STRATEGIES)[number]

export const CHAT_USAGE = `Usage: npm run bench -- --scenario chat [options]
  --conversations N   conversations                                   default 200
  --turns N           turns per conversation                          default 6
  --workers N         synthetic workers                               default 4
  --concurrency N     conversations at once                           default 16
  --prefill-rate R    workers' prefill_tokens_per_second              default 2000
  --decode-rate R     workers' tokens_per_second (0: unpaced)         default 0
  --tokens N          max_tokens of every request                     default 192
  --strategies LIST   comma-separated, in order                       default round_robin,least_loaded,smart
  --max-imbalance N   load_balancing.affinity.max_imbalance           default: the config's default (2)
  --think-ms N        a user's pause between an answer and the next turn  default 500
  --seed N            workload seed                                   default 16
  --log-level L       the cluster's log_level                         default warning
  -h, --help          this text
`

interface ChatOptions {
  readonly conversations: number
  readonly turns: number
  readonly workers: number
  readonly concurrency: number
  readonly prefillRate: number
  readonly decodeRate: number
  readonly tokens: number
  readonly strategies: ReadonlyArray<Strategy>
  readonly seed: number
  readonly logLevel: string
  readonly maxImbalance: number | undefined
  readonly thinkMs: number
}

const parseChatOptions = (argv: ReadonlyArray<string>): ChatOptions | "help" => {
  const flags = parseFlags(argv, {
    values: ["conversations", "turns", "workers", "concurrency", "prefill-rate", "decode-rate", "tokens", "strategies", "seed", "log-level", "max-imbalance", "think-ms"]
  })
  if (flags === "help") return "help"
  const int = (name: string, fallback: number, min: number) => flags.number(name, fallback, min, true)
  const strategies = flags.list("strategies", STRATEGIES.join(","))
  const unknown = strategies.filter((s) => !(STRATEGIES as ReadonlyArray<string>).includes(s))
  if (unknown.length > 0) throw new UsageError(`--strategies: unknown ${unknown.join(", ")}; expected some of ${STRATEGIES.join(", ")}`)
  return {
    conversations: int("conversations", 200, 1),
    turns: int("turns", 6, 1),
    workers: int("workers", 4, 1),
    concurrency: int("concurrency", 16, 1),
    prefillRate: int("prefill-rate", 2000, 0),
    decodeRate: int("decode-rate", 0, 0),
    tokens: int("tokens", 192, 1),
    strategies: strategies as ReadonlyArray<Strategy>,
    seed: int("seed", 16, 0),
    logLevel: flags.logLevel(),
    maxImbalance: flags.has("max-imbalance") ? int("max-imbalance", 0, 0) : undefined,
    thinkMs: int("think-ms", 500, 0)
  }
}

const log = progress("chat")
const HEARTBEAT_MS = 500

/** What differs in one strategy's cluster from the relay benchmark's: prefill, its own cache, the strategy. */
const chatSettings = (strategy: Strategy, o: ChatOptions): ClusterSettings => ({
  logLevel: o.logLevel,
  maxConcurrent: 16,
  synthetic: { tokens_per_second: o.decodeRate, first_token_ms: 10, prefill_tokens_per_second: o.prefillRate, prompt_cache_size: 10 },
  api: { max_tokens_ceiling: 8192 },
  extra: {
    discovery: { heartbeat_interval_ms: HEARTBEAT_MS },
    load_balancing: { strategy, affinity: { enabled: true, ...(o.maxImbalance === undefined ? {} : { max_imbalance: o.maxImbalance }) } }
  }
})

interface WorkerInfoBody {
  readonly workerId: string
  readonly status: string
  readonly metrics?: {
    readonly requests: { readonly total: number; readonly active: number }
    readonly promptCache?: WorkerReport["promptCache"]
  }
}

const wordCount = (text: string) => text.split(/\s+/).filter((w) => w.length > 0).length

/** Runs every conversation, `concurrency` at a time, each turn after the previous one. */
const runConversations = async (
  target: Target,
  conversations: ReadonlyArray<Conversation>,
  o: ChatOptions,
  interrupted: () => boolean
): Promise<Array<TurnSample>> => {
  const agent = new Agent({ keepAlive: true, maxSockets: o.concurrency, maxFreeSockets: o.concurrency })
  const samples: Array<TurnSample> = []
  let next = 0
  const client = async () => {
    while (next < conversations.length && !interrupted()) {
      const conversation = conversations[next++] as Conversation
      const answers: Array<string> = []
      for (let turn = 0; turn < o.turns && !interrupted(); turn++) {
        const messages = messagesFor(conversation, turn, answers)
        const body = Buffer.from(JSON.stringify({ model: MODEL, stream: true, max_tokens: o.tokens, messages }))
        const result = await streamOnce({ agent, target, body, timeoutMs: 120_000, keepText: true })
        samples.push({
          conversation: conversation.id,
          turn,
          promptWords: messages.reduce((n, m) => n + wordCount(m.content), 0),
          ttftMs: result.ttftMs,
          durationMs: result.endedAt - result.startedAt,
          error: result.error
        })
        // A failed turn still leaves the conversation going (its answer is empty), as a user would retry.
        answers.push(result.error === undefined ? contentOf(result.text ?? "") : "")
        if (o.thinkMs > 0 && turn < o.turns - 1) await sleep(o.thinkMs)
      }
    }
  }
  try {
    await Promise.all(Array.from({ length: o.concurrency }, client))
  } finally {
    agent.destroy()
  }
  return samples
}

/** The workers' last heartbeats and the controller's affinity counters. */
const readCounters = async (cluster: Cluster): Promise<{ readonly workers: Array<WorkerReport>; readonly affinity: AffinityCounters | undefined }> => {
  const infos = await getJson<ReadonlyArray<WorkerInfoBody>>(cluster.port, "/api/cluster/workers")
  const workers = infos
    .filter((w) => w.status === "online")
    .sort((a, b) => (a.workerId < b.workerId ? -1 : 1))
    .map((w) => ({ workerId: w.workerId, requests: w.metrics?.requests.total ?? 0, promptCache: w.metrics?.promptCache }))
  let affinity: AffinityCounters | undefined
  try {
    affinity = parseAffinityCounters(await (await fetch(`http://127.0.0.1:${cluster.port}/metrics`)).text())
  } catch {
    affinity = undefined
  }
  return { workers, affinity }
}

/** `items` in consecutive groups of `size`. */
const waves = <A>(items: ReadonlyArray<A>, size: number): Array<ReadonlyArray<A>> => {
  const out: Array<ReadonlyArray<A>> = []
  for (let i = 0; i < items.length; i += size) out.push(items.slice(i, i + size))
  return out
}

/** One strategy's cluster: its own nats-server (clusters must not see each other's workers), controller and workers. */
interface StrategyCluster extends Cluster {
  readonly strategy: Strategy
}

/**
 * Every strategy's cluster runs the same conversations, in waves of 2 × `concurrency`
 * conversations, the strategies taking turns wave by wave (in a rotating order): on a shared
 * machine whose load changes from one minute to the next, each strategy then meets the same
 * conditions, which running them one after the other would not give.
 */
const runInterleaved = async (
  run: BenchRun,
  clusters: ReadonlyArray<StrategyCluster>,
  conversations: ReadonlyArray<Conversation>,
  o: ChatOptions
): Promise<Array<StrategyResult>> => {
  const interrupted = () => run.interrupted
  const samples = new Map<Strategy, Array<TurnSample>>(clusters.map((c) => [c.strategy, []]))
  const busyMs = new Map<Strategy, number>(clusters.map((c) => [c.strategy, 0]))
  const loads = new Map<Strategy, Array<number>>(clusters.map((c) => [c.strategy, []]))
  const groups = waves(conversations, 2 * o.concurrency)
  for (const [round, group] of groups.entries()) {
    const order = clusters.map((_, i) => clusters[(i + round) % clusters.length] as StrategyCluster)
    for (const cluster of order) {
      if (interrupted()) throw new Error("interrupted")
      const started = performance.now()
      const target = { name: cluster.strategy, host: "127.0.0.1", port: cluster.port }
      samples.get(cluster.strategy)?.push(...(await runConversations(target, group, o, interrupted)))
      busyMs.set(cluster.strategy, (busyMs.get(cluster.strategy) ?? 0) + performance.now() - started)
      loads.get(cluster.strategy)?.push(loadavg()[0] ?? Number.NaN)
      assertRunning([cluster.controller, ...cluster.workers, cluster.nats], "the run")
    }
    log(`wave ${round + 1}/${groups.length} done (${group.length} conversations on each strategy)`)
  }
  // Two heartbeats: every worker has reported its final counters.
  await sleep(2 * HEARTBEAT_MS + 200)
  const results: Array<StrategyResult> = []
  for (const cluster of clusters) {
    const { workers, affinity } = await readCounters(cluster)
    const loadList = loads.get(cluster.strategy) ?? []
    const meanLoad = loadList.reduce((a, b) => a + b, 0) / Math.max(1, loadList.length)
    const result = summariseStrategy(
      cluster.strategy,
      samples.get(cluster.strategy) ?? [],
      workers,
      affinity,
      busyMs.get(cluster.strategy) ?? 0,
      meanLoad,
      o.prefillRate
    )
    log(
      `${cluster.strategy}: ${(result.wallMs / 1000).toFixed(1)} s of load, TTFT p50 ${result.ttftP50Ms.toFixed(0)} ms, ` +
        `cache hit rate ${(100 * result.cacheTokenHitRate).toFixed(1)} %, requests per worker ${workers.map((w) => w.requests).join("/")}, ` +
        `${result.errors} errors`
    )
    results.push(result)
  }
  return results
}

/** The chat scenario, its children and folders owned by `run`. */
export const runChatScenario = async (run: BenchRun, argv: ReadonlyArray<string>): Promise<void> => {
  const parsed = parseChatOptions(argv)
  if (parsed === "help") return void process.stdout.write(CHAT_USAGE)
  const o = parsed
  const startedAt = new Date()
  const dir = run.tempDir("mlx-bench-chat-")
  const workload = {
    conversations: o.conversations,
    turns: o.turns,
    personas: 8,
    systemWords: [300, 500] as const,
    userWords: [20, 60] as const,
    seed: o.seed
  }
  const conversations = makeWorkload(workload)
  const clusters: Array<StrategyCluster> = []
  try {
    // One at a time: starting 15 processes at once on a small machine only makes each start slower.
    for (const strategy of o.strategies) {
      const settings = chatSettings(strategy, o)
      const cluster = await startCluster(run, { name: strategy, workers: o.workers, workerIdPrefix: "chat-w", settings, readyTimeoutMs: 90_000, dir })
      log(`${strategy}: cluster ready on :${cluster.port}`)
      clusters.push({ ...cluster, strategy })
    }
    log(`${o.conversations} conversations × ${o.turns} turns, ${o.concurrency} at a time, strategies taking turns`)
    const results = await runInterleaved(run, clusters, conversations, o)
    const targets = checkChatTargets(results)
    const info = {
      startedAt: startedAt.toISOString(),
      wallSeconds: (Date.now() - startedAt.getTime()) / 1000,
      machine: `${cpus().length} × ${cpus()[0]?.model ?? "unknown"}, Node ${process.version}`,
      workload:
        `${o.conversations} conversations × ${o.turns} turns, ${o.concurrency} at a time; ${workload.personas} shared system prompts of ` +
        `${workload.systemWords[0]}–${workload.systemWords[1]} words, user messages of ${workload.userWords[0]}–${workload.userWords[1]} words, ` +
        `answers of up to ${o.tokens} tokens sent back each turn${o.thinkMs > 0 ? ` after ${o.thinkMs} ms of thought` : ""} (seed ${o.seed}).`,
      cluster:
        `per strategy, its own nats-server, controller and ${o.workers} synthetic workers (prefill ${o.prefillRate} tokens/s over the ` +
        `words missing from each worker's 10-prompt cache, first token after 10 ms + prefill, ${o.decodeRate || "unlimited"} tokens/s), ` +
        `the strategies taking turns in waves of ${2 * o.concurrency} conversations; ` +
        `affinity defaults (min_prefix_tokens 64, blocks of 16 words), max_imbalance ${o.maxImbalance ?? "2 (default)"}.`
    }
    const file = run.saveResults(`chat-${info.startedAt}`, { info, options: o, workload, results, targets })
    process.stdout.write(`${formatChatResults(info, results, targets)}\n\nResults saved to ${file}\n`)
  } finally {
    for (const cluster of clusters) await stopCluster(cluster)
  }
}
