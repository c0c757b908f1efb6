/**
 * The chat scenario of the benchmark (issue 16): `npm run bench -- --scenario chat`.
 *
 *   tsx bench/main.ts --scenario chat [--conversations 200] [--turns 6] [--workers 4]
 *        [--concurrency 16] [--prefill-rate 2000] [--decode-rate 0] [--tokens 192]
 *        [--strategies round_robin,least_loaded,smart] [--max-imbalance N] [--think-ms 500]
 *        [--log-level warning]
 *
 * Per strategy, its own cluster: a nats-server, N synthetic workers with a prefill cost
 * (`prefill_tokens_per_second`, their own prompt cache) and a controller with that
 * `load_balancing.strategy` (every process the real CLI, as in the relay benchmark), so that every
 * strategy starts from cold caches and zero counters. The client runs the same conversations on
 * each (bench/chat-workload.ts), `--concurrency` at a time, each conversation's turns one
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
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from "node:fs"
import { Agent } from "node:http"
import { createServer } from "node:net"
import { cpus, loadavg, tmpdir } from "node:os"
import { join, resolve } from "node:path"
import { Option } from "effect"
import { findNatsServer } from "../src/nats/nats-server-process.js"
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
import { streamOnce, type Target } from "./load.js"
import { type Child, spawnChild, stopChild } from "./processes.js"

const ROOT = resolve(import.meta.dirname, "..")
const MODEL = "synthetic/demo"
const STRATEGIES = ["round_robin", "least_loaded", "smart"] as const
type Strategy = (typeof STRATEGIES)[number]

export const CHAT_USAGE = `Usage: tsx bench/main.ts --scenario chat [options]
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

export class ChatUsageError extends Error {}

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

const parseChatOptions = (argv: ReadonlyArray<string>): ChatOptions | "help" => {
  const values = new Map<string, string>()
  for (let i = 0; i < argv.length; i++) {
    const arg = argv[i] ?? ""
    if (arg === "-h" || arg === "--help") return "help"
    if (!arg.startsWith("--")) throw new ChatUsageError(`unexpected argument "${arg}"`)
    const eq = arg.indexOf("=")
    const name = eq === -1 ? arg.slice(2) : arg.slice(2, eq)
    const value = eq === -1 ? argv[++i] : arg.slice(eq + 1)
    if (value === undefined) throw new ChatUsageError(`--${name} needs a value`)
    values.set(name, value)
  }
  const known = [
    "conversations", "turns", "workers", "concurrency", "prefill-rate", "decode-rate", "tokens", "strategies", "seed", "log-level", "max-imbalance", "think-ms"
  ]
  for (const name of values.keys()) if (!known.includes(name)) throw new ChatUsageError(`unknown flag --${name}`)
  const int = (name: string, fallback: number, min: number) => {
    const raw = values.get(name)
    if (raw === undefined) return fallback
    const n = Number(raw)
    if (!Number.isInteger(n) || n < min) throw new ChatUsageError(`--${name} ${raw}: expected an integer ≥ ${min}`)
    return n
  }
  const strategies = (values.get("strategies") ?? STRATEGIES.join(",")).split(",").map((s) => s.trim())
  const unknown = strategies.filter((s) => !(STRATEGIES as ReadonlyArray<string>).includes(s))
  if (unknown.length > 0 || strategies.length === 0) {
    throw new ChatUsageError(`--strategies: unknown ${unknown.join(", ")}; expected some of ${STRATEGIES.join(", ")}`)
  }
  const logLevel = values.get("log-level") ?? "warning"
  if (!["debug", "info", "warning", "error"].includes(logLevel)) throw new ChatUsageError(`--log-level ${logLevel}`)
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
    logLevel,
    maxImbalance: values.has("max-imbalance") ? int("max-imbalance", 0, 0) : undefined,
    thinkMs: int("think-ms", 500, 0)
  }
}

const log = (line: string) => process.stderr.write(`[bench:chat] ${line}\n`)
const sleep = (ms: number) => new Promise<void>((r) => setTimeout(r, ms))

const freePort = (): Promise<number> =>
  new Promise((resolvePort, reject) => {
    const server = createServer()
    server.once("error", reject)
    server.listen(0, "127.0.0.1", () => {
      const address = server.address()
      const port = typeof address === "object" && address !== null ? address.port : 0
      server.close(() => resolvePort(port))
    })
  })

const HEARTBEAT_MS = 500

/** The config every process of one strategy's cluster reads. */
const clusterConfig = (natsUrl: string, modelDir: string, strategy: Strategy, o: ChatOptions) => `# written by bench/chat-scenario.ts
cluster:
  log_level: ${o.logLevel}
  controller:
    bind_address: "127.0.0.1"
    api: { api_keys: [], rate_limit: { enabled: false }, max_tokens_ceiling: 8192 }
    queue: { max_pending: 100000, max_wait_ms: 60000 }
    drain_timeout_ms: 2000
  nats:
    mode: external
    server_url: ${JSON.stringify(natsUrl)}
  discovery:
    heartbeat_interval_ms: ${HEARTBEAT_MS}
  load_balancing:
    strategy: ${strategy}
    affinity: { enabled: true${o.maxImbalance === undefined ? "" : `, max_imbalance: ${o.maxImbalance}`} }
  worker:
    model_dir: ${JSON.stringify(modelDir)}
    max_concurrent: 16
    drain_timeout_ms: 2000
    engine:
      type: synthetic
      synthetic:
        tokens_per_second: ${o.decodeRate}
        first_token_ms: 10
        prefill_tokens_per_second: ${o.prefillRate}
        prompt_cache_size: 10
`

/** Variables that would beat the config file. */
const childEnv = (): NodeJS.ProcessEnv => {
  const env = { ...process.env }
  for (const name of ["CLUSTER_CONFIG", "CLUSTER_MODE", "CONTROLLER_PORT", "NATS_URL", "MODEL_DIR", "WORKER_ID", "NODE_OPTIONS"]) delete env[name]
  return env
}

interface WorkerInfoBody {
  readonly workerId: string
  readonly status: string
  readonly metrics?: {
    readonly requests: { readonly total: number; readonly active: number }
    readonly promptCache?: WorkerReport["promptCache"]
  }
}

const getJson = async <A>(port: number, path: string): Promise<A> => (await (await fetch(`http://127.0.0.1:${port}${path}`)).json()) as A

const waitReady = async (port: number, workers: number, controller: Child, timeoutMs: number) => {
  const deadline = Date.now() + timeoutMs
  let last = "no answer"
  while (Date.now() < deadline) {
    if (!controller.isRunning()) throw new Error(`the controller exited during startup; output:\n${controller.output()}`)
    try {
      const body = await getJson<{ controller?: { state?: string }; workers?: { online?: number } }>(port, "/api/cluster/status")
      last = `state ${body.controller?.state ?? "?"}, ${body.workers?.online ?? 0} workers online`
      if (body.controller?.state === "ready" && body.workers?.online === workers) return
    } catch (error) {
      last = error instanceof Error ? error.message : String(error)
    }
    await sleep(100)
  }
  throw new Error(`the cluster was not ready within ${timeoutMs} ms (${last}); controller output:\n${controller.output()}`)
}

/** The content of an SSE chat stream's chunks, joined. */
export const contentOf = (sse: string): string => {
  const parts: Array<string> = []
  for (const m of sse.matchAll(/"delta":\{"content":("(?:[^"\\]|\\.)*")\}/g)) {
    const literal = m[1]
    if (literal !== undefined) parts.push(JSON.parse(literal) as string)
  }
  return parts.join("")
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

/** One strategy's cluster: its own nats-server (clusters must not see each other's workers), controller and workers. */
interface Cluster {
  readonly strategy: Strategy
  readonly port: number
  readonly children: ReadonlyArray<Child>
}

const startCluster = async (strategy: Strategy, o: ChatOptions, natsBinary: string, tmp: string): Promise<Cluster> => {
  const env = childEnv()
  const natsPort = await freePort()
  const natsUrl = `nats://127.0.0.1:${natsPort}`
  const nats = spawnChild(`${strategy}-nats`, natsBinary, ["-a", "127.0.0.1", "-p", String(natsPort)], { cwd: ROOT, env })
  await nats.waitFor(/Server is ready/, 10_000)
  const modelDir = join(tmp, "models")
  mkdirSync(modelDir, { recursive: true })
  const configFile = join(tmp, `chat-${strategy}.yaml`)
  writeFileSync(configFile, clusterConfig(natsUrl, modelDir, strategy, o))
  const common = ["--nats-url", natsUrl, "--config", configFile]
  const port = await freePort()
  const node = (args: ReadonlyArray<string>, name: string) =>
    spawnChild(name, process.execPath, ["--import", "tsx", "src/main.ts", ...args, ...common], { cwd: ROOT, env })
  const workers = Array.from({ length: o.workers }, (_, k) => node(["--mode", "worker", "--worker-id", `chat-w${k + 1}`], `${strategy}-worker-${k + 1}`))
  const controller = node(["--mode", "controller", "--port", String(port)], `${strategy}-controller`)
  const cluster = { strategy, port, children: [controller, ...workers, nats] }
  try {
    await waitReady(port, o.workers, controller, 90_000)
  } catch (error) {
    await stopCluster(cluster)
    throw error
  }
  log(`${strategy}: cluster ready on :${port}`)
  return cluster
}

/** Controller first (it drains), then the workers, then NATS. */
const stopCluster = async (cluster: Cluster) => {
  for (const child of cluster.children) await stopChild(child, 10_000)
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

/**
 * Every strategy's cluster runs the same conversations, in waves of 2 × `concurrency`
 * conversations, the strategies taking turns wave by wave (in a rotating order): on a shared
 * machine whose load changes from one minute to the next, each strategy then meets the same
 * conditions, which running them one after the other would not give.
 */
const runInterleaved = async (
  clusters: ReadonlyArray<Cluster>,
  conversations: ReadonlyArray<Conversation>,
  o: ChatOptions,
  interrupted: () => boolean
): Promise<Array<StrategyResult>> => {
  const samples = new Map<Strategy, Array<TurnSample>>(clusters.map((c) => [c.strategy, []]))
  const busyMs = new Map<Strategy, number>(clusters.map((c) => [c.strategy, 0]))
  const loads = new Map<Strategy, Array<number>>(clusters.map((c) => [c.strategy, []]))
  const groups = waves(conversations, 2 * o.concurrency)
  for (const [round, group] of groups.entries()) {
    const order = clusters.map((_, i) => clusters[(i + round) % clusters.length] as Cluster)
    for (const cluster of order) {
      if (interrupted()) throw new Error("interrupted")
      const started = performance.now()
      const target = { name: cluster.strategy, host: "127.0.0.1", port: cluster.port }
      samples.get(cluster.strategy)?.push(...(await runConversations(target, group, o, interrupted)))
      busyMs.set(cluster.strategy, (busyMs.get(cluster.strategy) ?? 0) + performance.now() - started)
      loads.get(cluster.strategy)?.push(loadavg()[0] ?? Number.NaN)
      for (const child of cluster.children) {
        if (!child.isRunning()) throw new Error(`${child.name} exited during the run; output:\n${child.output()}`)
      }
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

/** The chat scenario; `interrupted` is the driver's SIGINT flag. */
export const runChatScenario = async (argv: ReadonlyArray<string>, interrupted: () => boolean): Promise<void> => {
  const parsed = parseChatOptions(argv)
  if (parsed === "help") {
    process.stdout.write(CHAT_USAGE)
    return
  }
  const o = parsed
  const startedAt = new Date()
  const natsBinary = Option.getOrUndefined(findNatsServer())
  if (natsBinary === undefined) throw new Error("nats-server was not found on PATH or in /usr/sbin: run scripts/ensure-nats-server.sh")
  const tmp = mkdtempSync(join(tmpdir(), "mlx-bench-chat-"))
  const workload = {
    conversations: o.conversations,
    turns: o.turns,
    personas: 8,
    systemWords: [300, 500] as const,
    userWords: [20, 60] as const,
    seed: o.seed
  }
  const conversations = makeWorkload(workload)
  const clusters: Array<Cluster> = []
  try {
    // One at a time: starting 15 processes at once on a small machine only makes each start slower.
    for (const strategy of o.strategies) clusters.push(await startCluster(strategy, o, natsBinary, tmp))
    log(`${o.conversations} conversations × ${o.turns} turns, ${o.concurrency} at a time, strategies taking turns`)
    const results = await runInterleaved(clusters, conversations, o, interrupted)
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
    const resultsDir = join(ROOT, "bench", "results")
    mkdirSync(resultsDir, { recursive: true })
    const file = join(resultsDir, `chat-${startedAt.toISOString().replace(/:/g, "-")}.json`)
    writeFileSync(file, `${JSON.stringify({ info, options: o, workload, results, targets }, null, 2)}\n`)
    process.stdout.write(`${formatChatResults(info, results, targets)}\n\nResults saved to ${file}\n`)
  } finally {
    for (const cluster of clusters) await stopCluster(cluster)
    rmSync(tmp, { recursive: true, force: true })
  }
}
