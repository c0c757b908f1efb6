/**
 * `npm run bench -- --scenario held`: how much memory one stream in flight holds in the controller
 * (issue 10: "a stream in flight holds no more than a few KB"). A cluster whose synthetic workers
 * send one token a second, so that streams stay open; the controller runs with
 * `--heapsnapshot-signal=SIGUSR2`. After a warm-up of short whole streams, a heap snapshot with nothing
 * in flight; then `--streams` streams are opened and each has its first token; a second snapshot.
 * Snapshots hold only live objects, so the difference per stream is what a stream really holds
 * (heap-summary.ts), apart from the garbage and the young generation that make RSS. The same is then
 * measured in the bare relay (bare-relay.ts, its workers pacing tokens alike): what node:http, a
 * NATS subscription and the SSE format hold per stream with nothing else, the baseline the
 * controller's figure is read against.
 */
import { readdirSync, readFileSync } from "node:fs"
import { Agent, request } from "node:http"
import { join } from "node:path"
import { parseFlags } from "./cli.js"
import type { Child } from "./child.js"
import { buildForBench, MODEL, sleep, startBareRelay, startCluster, stopCluster } from "./cluster.js"
import { type HeapGraph, nodeIds, type Owner, ownedPerStream } from "./heap-owners.js"
import { formatHeldPair, type HeldMeasure, perStream, summarise } from "./heap-summary.js"
import { chatBody, streamOnce } from "./load.js"
import { type BenchRun, progress } from "./run.js"

export const HELD_USAGE = `Usage: npm run bench -- --scenario held [options]
  --streams N    streams held open at the second snapshot        default 1000
  --workers N    synthetic workers (1 token a second each stream) default 2
  --runtime R    tsx (node --import tsx src/main.ts) or dist (npm run build's node dist/main.js)  default tsx
  -h, --help     this text
`

const log = progress()

/** Opens a streamed chat completion and resolves at its first chunk; the stream stays open. */
const openStream = (agent: Agent, port: number, body: Buffer): Promise<void> =>
  new Promise((resolve, reject) => {
    const req = request({ host: "127.0.0.1", port, method: "POST", path: "/v1/chat/completions", agent, headers: { "content-type": "application/json" } }, (res) => {
      if (res.statusCode !== 200) reject(new Error(`status ${res.statusCode}`))
      res.once("data", () => resolve())
      res.resume()
    })
    req.on("error", reject)
    req.end(body)
  })

/** Asks the controller for a heap snapshot (SIGUSR2) and reads it once V8 has written it whole. */
const snapshot = async (pid: number, dir: string): Promise<HeapGraph> => {
  const before = new Set(readdirSync(dir))
  process.kill(pid, "SIGUSR2")
  for (let i = 0; i < 600; i++) {
    await sleep(500)
    const file = readdirSync(dir).find((f) => !before.has(f) && f.endsWith(".heapsnapshot"))
    if (file === undefined) continue
    // V8 writes it in pieces: it parses once complete.
    try {
      return JSON.parse(readFileSync(join(dir, file), "utf8")) as HeapGraph
    } catch {
      continue
    }
  }
  throw new Error(`the controller wrote no heap snapshot to ${dir} within 5 minutes`)
}

/** A server to measure: its pid, its port, and the folder its heap snapshots go to. */
interface Measured {
  readonly pid: number
  readonly port: number
  readonly snapshots: string
}

/** What may hold a stream's memory, in the controller and in the bare relay (heap-owners.ts). */
const OWNERS: ReadonlyArray<Owner> = [
  { name: "the request's fiber (Effect)", kinds: ["object:FiberRuntime"] },
  { name: "node:http (request, response, socket, parser)", kinds: ["object:IncomingMessage", "object:ServerResponse", "object:Socket", "object:HTTPParser"] },
  { name: "the NATS subscription", kinds: ["object:SubscriptionImpl"] },
  { name: "the attempt's relay", kinds: ["object:Relay"] },
  { name: "the answer kept for a migration", kinds: ["object:StreamAnswer"] }
]

/** Warms `target` up, then the two snapshots: nothing in flight, then `streams` streams open. */
const measure = async (name: string, target: Measured, streams: number): Promise<HeldMeasure> => {
  const agent = new Agent({ keepAlive: true, maxSockets: streams })
  try {
    // The request path, warmed: 200 whole streams of 2 tokens.
    const short = chatBody(MODEL, 2)
    const warm = await Promise.all(
      Array.from({ length: 200 }, () => streamOnce({ agent, target: { name, host: "127.0.0.1", port: target.port }, body: short, timeoutMs: 30_000 }))
    )
    const failed = warm.find((r) => r.error !== undefined)
    if (failed !== undefined) throw new Error(`a warm-up request to the ${name} failed: ${failed.error}`)
    log(`${name}: heap snapshot with nothing in flight`)
    const idle = await snapshot(target.pid, target.snapshots)
    const base = summarise(idle)
    const baseIds = nodeIds(idle)
    // 32 tokens at 1 a second: every stream is still open at the second snapshot.
    const long = chatBody(MODEL, 32)
    log(`${name}: opening ${streams} streams`)
    await Promise.all(Array.from({ length: streams }, () => openStream(agent, target.port, long)))
    log(`${name}: heap snapshot with ${streams} streams in flight`)
    const graph = await snapshot(target.pid, target.snapshots)
    const held = summarise(graph)
    return { base, held, per: perStream(base, held, streams), owned: ownedPerStream(baseIds, graph, OWNERS, streams) }
  } finally {
    agent.destroy()
  }
}

const pidOf = (child: Child): number => {
  if (child.process.pid === undefined) throw new Error(`the ${child.name} has no pid`)
  return child.process.pid
}

export const runHeldScenario = async (run: BenchRun, argv: ReadonlyArray<string>): Promise<void> => {
  const flags = parseFlags(argv, { values: ["streams", "workers", "runtime"], booleans: [] })
  if (flags === "help") return void process.stdout.write(HELD_USAGE)
  const streams = flags.number("streams", 1000, 1, true)
  const workers = flags.number("workers", 2, 1, true)
  const runtime = flags.runtime()
  const snapshots = run.tempDir("mlx-bench-heap-")
  const heapArgs = (dir: string) => ["--heapsnapshot-signal=SIGUSR2", `--diagnostic-dir=${dir}`]
  log(`cluster: nats-server, ${workers} workers at 1 token a second, a controller that writes heap snapshots on SIGUSR2`)
  const cluster = await startCluster(run, {
    name: "",
    workers,
    workerIdPrefix: "held-w",
    settings: { logLevel: "warning", maxConcurrent: streams, synthetic: { tokens_per_second: 1, first_token_ms: 0 } },
    controllerExtras: { nodeArgs: heapArgs(snapshots), env: {} },
    ...(runtime === "dist" ? { distDir: await buildForBench(run) } : {}),
    readyTimeoutMs: 60_000,
    dir: run.tempDir("mlx-bench-")
  })
  try {
    const controller = await measure("controller", { pid: pidOf(cluster.controller), port: cluster.port, snapshots }, streams)
    // The baseline: the bare relay (under tsx) on the same nats-server, its workers pacing tokens alike.
    log(`bare relay: ${workers} bare workers at 1 token a second, a front that writes heap snapshots on SIGUSR2`)
    const bareSnapshots = run.tempDir("mlx-bench-heap-bare-")
    const relay = await startBareRelay(run, cluster.natsUrl, workers, { tokenIntervalMs: 1000, frontNodeArgs: heapArgs(bareSnapshots) })
    const bare = await measure("bare relay", { pid: pidOf(relay.front), port: relay.port, snapshots: bareSnapshots }, streams)
    const startedAt = new Date().toISOString()
    const file = run.saveResults(`held-${startedAt}`, {
      startedAt,
      options: { streams, workers, runtime },
      idleBytes: controller.base.bytes,
      heldBytes: controller.held.bytes,
      perStream: { bytes: controller.per.bytes, objects: controller.per.objects, kinds: controller.per.kinds.slice(0, 40), owned: controller.owned },
      bare: {
        idleBytes: bare.base.bytes,
        heldBytes: bare.held.bytes,
        perStream: { bytes: bare.per.bytes, objects: bare.per.objects, kinds: bare.per.kinds.slice(0, 40), owned: bare.owned }
      }
    })
    const title = `## Memory held per stream in flight (${startedAt}; the controller runs ${runtime === "dist" ? "the build, node dist/main.js" : "under tsx"}, the bare relay under tsx)`
    process.stdout.write(`${title}\n\n${formatHeldPair(controller, bare)}\n\nResults saved to ${file}\n`)
  } finally {
    await stopCluster(cluster)
  }
}
