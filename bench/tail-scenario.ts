/**
 * `npm run bench -- --scenario tail`: where the tail of the time to first token comes from. A
 * cluster (nats-server, N synthetic workers at full speed, a controller) whose controller and
 * workers load bench/hop-trace.ts; one client streams requests one after another (concurrency 1,
 * as the TTFT target is measured) for `--duration` seconds after a warm-up; then the children stop
 * and write their traces, and tail-report.ts splits every request's TTFT into its hops and finds,
 * for the slow ones, the hop that grew and the garbage collections that overlapped them.
 */
import { readdirSync, readFileSync } from "node:fs"
import { Agent } from "node:http"
import { join } from "node:path"
import { parseFlags } from "./cli.js"
import { MODEL, sleep, startCluster, stopCluster } from "./cluster.js"
import { chatBody, streamOnce, type Target } from "./load.js"
import { observeGc } from "./hop-trace.js"
import { type BenchRun, progress } from "./run.js"
import { analyseTail, formatTail, type HopTrace, type TimedRequest } from "./tail-report.js"

export const TAIL_USAGE = `Usage: npm run bench -- --scenario tail [options]
  --duration S   measured seconds                               default 10
  --warmup S     warm-up seconds (V8 compiles the request path)  default 10
  --slow-ms MS   a request slower than this (TTFT) is "slow"    default 3
  --gap-ms MS    pause between one request's end and the next   default 0
  --tokens T     max_tokens of every request                    default 32
  --workers N    synthetic workers                              default 2
  -h, --help     this text
`

const log = progress()

/** Requests one after another, `gapMs` apart, until `ms` have passed; each with its start as epoch ms. */
const sequential = async (target: Target, body: Buffer, ms: number, gapMs: number): Promise<Array<TimedRequest>> => {
  const agent = new Agent({ keepAlive: true, maxSockets: 1 })
  const out: Array<TimedRequest> = []
  const until = performance.now() + ms
  while (performance.now() < until) {
    const r = await streamOnce({ agent, target, body, timeoutMs: 10_000 })
    if (r.error !== undefined) throw new Error(`a request failed: ${r.error}`)
    if (r.ttftMs !== undefined) out.push({ startedAt: performance.timeOrigin + r.startedAt, ttftMs: r.ttftMs })
    if (gapMs > 0) await sleep(gapMs)
  }
  agent.destroy()
  return out
}

export const runTailScenario = async (run: BenchRun, argv: ReadonlyArray<string>): Promise<void> => {
  const flags = parseFlags(argv, { values: ["duration", "warmup", "slow-ms", "gap-ms", "tokens", "workers"], booleans: [] })
  if (flags === "help") return void process.stdout.write(TAIL_USAGE)
  const durationMs = flags.number("duration", 10, 1) * 1000
  const warmupMs = flags.number("warmup", 10, 0) * 1000
  const slowMs = flags.number("slow-ms", 3, 0)
  const gapMs = flags.number("gap-ms", 0, 0)
  const tokens = flags.number("tokens", 32, 1, true)
  const workers = flags.number("workers", 2, 1, true)
  const traceDir = run.tempDir("mlx-bench-trace-")
  const tracing = { nodeArgs: ["--import", "./bench/hop-trace.ts"], env: { HOP_TRACE_DIR: traceDir } }
  const ownGc: Array<readonly [number, number]> = []
  const observer = observeGc(ownGc)
  log(`cluster: nats-server, ${workers} workers and a controller, traced`)
  const cluster = await startCluster(run, {
    name: "",
    workers,
    workerIdPrefix: "tail-w",
    settings: { logLevel: "warning", maxConcurrent: 64, synthetic: { tokens_per_second: 0, first_token_ms: 0 } },
    controllerExtras: tracing,
    workerExtras: tracing,
    readyTimeoutMs: 60_000,
    dir: run.tempDir("mlx-bench-")
  })
  const target = { name: "controller", host: "127.0.0.1", port: cluster.port }
  const body = chatBody(MODEL, tokens)
  log(`warm-up ${warmupMs / 1000} s, then ${durationMs / 1000} s measured, concurrency 1`)
  await sequential(target, body, warmupMs, gapMs)
  const requests = await sequential(target, body, durationMs, gapMs)
  observer.disconnect()
  log("stopping the cluster (its processes write their traces as they exit)")
  await stopCluster(cluster)
  const traces = readdirSync(traceDir)
    .sort()
    .map((file) => JSON.parse(readFileSync(join(traceDir, file), "utf8")) as HopTrace)
  const controller = traces.filter((t) => t.role === "controller")
  const workerTraces = traces.filter((t) => t.role === "worker")
  if (controller.length !== 1 || workerTraces.length !== workers) {
    throw new Error(`expected traces of 1 controller and ${workers} workers in ${traceDir}, found ${controller.length} and ${workerTraces.length}`)
  }
  const gcs = [
    { process: "controller", gc: controller[0]?.gc ?? [] },
    ...workerTraces.map((t, i) => ({ process: `worker-${i + 1}`, gc: t.gc })),
    { process: "load generator", gc: ownGc }
  ]
  const analysis = analyseTail(requests, controller, workerTraces, gcs, slowMs)
  const startedAt = new Date().toISOString()
  const file = run.saveResults(`tail-${startedAt}`, { startedAt, options: { durationMs, warmupMs, slowMs, gapMs, tokens, workers }, analysis })
  process.stdout.write(`## Where the TTFT tail comes from (${startedAt})\n\n${formatTail(analysis)}\n\nResults saved to ${file}\n`)
}
