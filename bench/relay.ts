/**
 * The relay benchmark (issues 6, 10, 11; `npm run bench`): the controller against the *floor*, a
 * bare node:http server sending the same SSE bytes without NATS (floor-server.ts).
 *
 * One run starts, on free ports, a cluster (nats-server, N synthetic workers at full speed and a
 * controller, each the real CLI), the floor, and the *bare relay* (bare-relay.ts: the controller's
 * job in plain JavaScript over the same nats-server, with N bare workers); measures them idle;
 * checks that one request to each gives the same tokens; gives each `--jit-warmup` seconds of
 * unmeasured load (V8 compiles the request path meanwhile: their start-up figures); then for each
 * concurrency level runs closed-loop streaming load against the floor, the bare relay and the
 * controller, measuring requests/s, time to first token, tokens/s, errors and every process's CPU
 * and peak RSS (process-cost.ts); then GET /health on the floor and the controller (the HTTP stack
 * alone), then `--stress` streams at once against the controller. It prints a markdown table and
 * the targets (targets.ts), saves everything as JSON under bench/results/, and stops every child.
 * `--profile` adds a CPU profile of the controller (profile.ts). Exits non-zero only when the
 * harness itself fails, not on a missed target.
 */
import { mkdirSync } from "node:fs"
import { Agent } from "node:http"
import { cpus, loadavg, totalmem } from "node:os"
import { join } from "node:path"
import { assertRunning, type Child, stopChild } from "./child.js"
import { buildForBench, type Cluster, freePort, MODEL, sleep, spawnNode, startBareRelay, startCluster, waitSettled } from "./cluster.js"
import { chatBody, closedLoop, type ClosedLoopOptions, contentOf, getLoop, type LoadStats, oneShot, streamOnce, type Target } from "./load.js"
import { CostMeter, sampleProcesses, type WindowCost } from "./process-cost.js"
import { collectProfile, monotonicUs, profiledController, type ProfileInfo, type Window } from "./profile.js"
import { parseRelayOptions, RELAY_USAGE, type RelayOptions } from "./relay-options.js"
import { type BenchResults, formatResults, type HttpBaseline, type Idle, type LevelResult, type RunStats, type Sanity, type Startup, type StressResult } from "./relay-report.js"
import { type BenchRun, progress } from "./run.js"
import { checkTargets } from "./targets.js"

const log = progress()

/** What every step works on: the processes, the two targets and the request they are sent. */
interface Setup {
  readonly run: BenchRun
  readonly options: RelayOptions
  readonly cluster: Cluster
  readonly floor: Child
  /** The bare relay's front and workers. */
  readonly bare: { readonly front: Child; readonly workers: ReadonlyArray<Child> }
  readonly floorTarget: Target
  readonly bareTarget: Target
  readonly controllerTarget: Target
  /** Every process measured, by name: floor, bare, bare-worker-N, controller, worker-N, nats. */
  readonly pids: ReadonlyMap<string, number>
  readonly body: Buffer
  readonly timeoutMs: number
  readonly profiling: { readonly dir: string; readonly mapsFile: string } | undefined
  /** Notes for the report, added as the run goes (a level that started before the cluster settled). */
  readonly notes: Array<string>
}

const settle = async (s: Setup, before: string) => {
  if (!(await waitSettled(s.cluster, 20_000))) {
    s.notes.push(`before ${before}: the controller still had active requests or offline workers after 20 s`)
  }
}

/** Step 1: the cluster (the controller profiled with `--profile`) and the floor. */
const start = async (run: BenchRun, options: RelayOptions): Promise<Setup> => {
  const profiling = options.profile ? { dir: join(run.root, "bench", "profiles"), mapsFile: join(run.tempDir("mlx-bench-maps-"), "source-maps.json") } : undefined
  if (profiling !== undefined) mkdirSync(profiling.dir, { recursive: true })
  log(`cluster: nats-server, ${options.workers} workers and a controller${profiling === undefined ? "" : ` (profiling into ${profiling.dir})`}`)
  const cluster = await startCluster(run, {
    name: "",
    workers: options.workers,
    workerIdPrefix: "bench-w",
    settings: {
      logLevel: options.logLevel,
      // A worker takes at most this many requests at once; the controller queues the rest (its job).
      // Thousands at once on one synthetic worker starve its event loop: acks and heartbeats stall.
      maxConcurrent: 64,
      synthetic: { tokens_per_second: 0, first_token_ms: 0 }
    },
    ...(profiling === undefined ? {} : { controllerExtras: profiledController(profiling.dir, profiling.mapsFile) }),
    ...(options.runtime === "dist" ? { distDir: await buildForBench(run) } : {}),
    readyTimeoutMs: 60_000,
    dir: run.tempDir("mlx-bench-")
  })
  const floorPort = await freePort()
  const floor = spawnNode(run, "floor", "bench/floor-server.ts", ["--port", String(floorPort)])
  const [bare] = await Promise.all([startBareRelay(run, cluster.natsUrl, options.workers), floor.waitFor(/floor listening/, 20_000)])
  log(`ready: controller on :${cluster.port}, floor on :${floorPort}, bare relay on :${bare.port}`)
  const clusterProcesses = [cluster.controller, ...cluster.workers, cluster.nats]
  return {
    run,
    options,
    cluster,
    floor,
    bare: { front: bare.front, workers: bare.workers },
    floorTarget: { name: "floor", host: "127.0.0.1", port: floorPort },
    bareTarget: { name: "bare", host: "127.0.0.1", port: bare.port },
    controllerTarget: { name: "controller", host: "127.0.0.1", port: cluster.port },
    pids: new Map([floor, bare.front, ...bare.workers, ...clusterProcesses].map((c) => [c.name, c.pid])),
    body: chatBody(MODEL, options.tokens),
    timeoutMs: options.timeoutSeconds * 1000,
    profiling,
    notes: []
  }
}

/** Step 2: RSS right after start-up, then CPU over 2 s of idling. */
const measureIdle = async (s: Setup): Promise<Idle> => {
  const samples = await sampleProcesses([...s.pids.values()])
  const rssMiB = Object.fromEntries([...s.pids].map(([name, pid]) => [name, samples.get(pid)?.rssMiB ?? Number.NaN]))
  const meter = new CostMeter(s.pids)
  await meter.start()
  await sleep(2_000)
  const cost = await meter.stop()
  const idle = {
    loadAverage: loadavg(),
    cpuPercent: Object.fromEntries(Object.entries(cost.perProcess).map(([name, c]) => [name, c.cpuPercent])),
    rssMiB
  }
  log(`idle: ${Object.entries(idle.cpuPercent).map(([n, c]) => `${n} ${c.toFixed(1)} % ${(rssMiB[n] ?? Number.NaN).toFixed(0)} MiB`).join(", ")}`)
  return idle
}

/** Step 3: one request each; the same tokens and (ids aside) the same bytes. */
const checkSanity = async (s: Setup): Promise<Sanity> => {
  const agent = new Agent({ keepAlive: false })
  const one = (target: Target) => streamOnce({ agent, target, body: s.body, timeoutMs: s.timeoutMs, keepText: true })
  const floor = await one(s.floorTarget)
  const bare = await one(s.bareTarget)
  const controller = await one(s.controllerTarget)
  agent.destroy()
  if (floor.error !== undefined) throw new Error(`the floor failed a single request: ${floor.error}`)
  if (bare.error !== undefined) throw new Error(`the bare relay failed a single request: ${bare.error}`)
  if (controller.error !== undefined) throw new Error(`the controller failed a single request: ${controller.error}`)
  log(`sanity: floor ${floor.tokens} tokens/${floor.bytes} B, bare relay ${bare.tokens} tokens/${bare.bytes} B, controller ${controller.tokens} tokens/${controller.bytes} B`)
  const text = contentOf(floor.text ?? "")
  return {
    floorBytes: floor.bytes,
    bareBytes: bare.bytes,
    controllerBytes: controller.bytes,
    floorTokens: floor.tokens,
    bareTokens: bare.tokens,
    controllerTokens: controller.tokens,
    sameTokenText: text === contentOf(controller.text ?? "") && text === contentOf(bare.text ?? "")
  }
}

/** One closed-loop run against `target`, with the cost of every process over its measured window. */
/** Closed-loop load on `target` with the run's request and timeout; throws when the run was interrupted. */
const loadOn = async (
  s: Setup,
  target: Target,
  concurrency: number,
  window: Pick<ClosedLoopOptions, "warmupMs" | "durationMs" | "onWindowStart" | "onWindowEnd">
): Promise<LoadStats> => {
  const stats = await closedLoop({ ...window, target, concurrency, body: s.body, timeoutMs: s.timeoutMs, aborted: () => s.run.interrupted })
  if (s.run.interrupted) throw new Error("interrupted")
  return stats
}

const measure = async (s: Setup, target: Target, concurrency: number): Promise<{ readonly stats: RunStats; readonly window: Window }> => {
  const meter = new CostMeter(s.pids)
  let stopped: Promise<WindowCost> | undefined
  let fromUs = 0
  let toUs = 0
  const stats = await loadOn(s, target, concurrency, {
    warmupMs: s.options.warmupSeconds * 1000,
    durationMs: s.options.durationSeconds * 1000,
    onWindowStart: () => {
      fromUs = monotonicUs()
      void meter.start()
    },
    onWindowEnd: () => {
      toUs = monotonicUs()
      stopped = meter.stop()
    }
  })
  assertRunning([s.floor, s.bare.front, ...s.bare.workers, s.cluster.controller, ...s.cluster.workers, s.cluster.nats], `the c=${concurrency} run`)
  const cost = await (stopped ?? meter.stop())
  const workers = (target === s.bareTarget ? s.bare.workers : target === s.controllerTarget ? s.cluster.workers : []).map((w) => w.name)
  const serving = target === s.floorTarget ? ["floor"] : [target.name, "nats", ...workers]
  const cpuOf = (names: ReadonlyArray<string>) => names.reduce((n, name) => n + (cost.perProcess[name]?.cpuPercent ?? Number.NaN), 0)
  /** % of one core over the window → ms of CPU per request. */
  const perRequest = (cpuPercent: number) => (stats.requests === 0 ? Number.NaN : (cpuPercent * 10 * stats.windowSeconds) / stats.requests)
  const main = cost.perProcess[target.name]
  const ours = Object.values(cost.perProcess).reduce((n, p) => n + p.cpuPercent, cost.selfCpuPercent)
  return {
    stats: {
      ...stats,
      cpuPercent: main?.cpuPercent ?? Number.NaN,
      peakRssMiB: main?.peakRssMiB ?? Number.NaN,
      cpuMsPerRequest: perRequest(main?.cpuPercent ?? Number.NaN),
      workersCpuMsPerRequest: workers.length === 0 ? Number.NaN : perRequest(cpuOf(workers)),
      servingCpuMsPerRequest: perRequest(cpuOf(serving)),
      processes: cost.perProcess,
      loadGeneratorCpuPercent: cost.selfCpuPercent,
      machineBusyPercent: cost.machineBusyPercent,
      otherCpuPercent: Math.max(0, cost.machineBusyPercent * cpus().length - ours)
    },
    window: { label: `c=${concurrency}`, fromUs, toUs }
  }
}

/**
 * Step 4: each target's first load, not measured as a level. V8 compiles a process's request path
 * over its first thousands of requests: the controller's TTFT p99 at c=1 fell from about 6 ms to
 * 1.8 ms over its first 12 s of load, and its requests/s doubled. A level measured in those seconds
 * measures start-up, not the relay, and the floor and the bare relay, being smaller, warm up
 * sooner. So each target serves `--jit-warmup` seconds at the first level's concurrency first, and
 * those seconds' figures are kept as its start-up figures.
 */
const warmUp = async (s: Setup): Promise<Startup | undefined> => {
  const seconds = s.options.jitWarmupSeconds
  const concurrency = s.options.concurrency[0]
  if (seconds === 0 || concurrency === undefined) return undefined
  const firstLoad = async (target: Target) => {
    log(`start-up: ${seconds} s of load on the ${target === s.bareTarget ? "bare relay" : target.name} at concurrency ${concurrency}, not measured as a level`)
    const stats = await loadOn(s, target, concurrency, { warmupMs: 0, durationMs: seconds * 1000, onWindowStart: () => undefined, onWindowEnd: () => undefined })
    await sleep(300)
    return stats
  }
  const floor = await firstLoad(s.floorTarget)
  const bare = await firstLoad(s.bareTarget)
  await settle(s, "the controller's start-up load")
  const controller = await firstLoad(s.controllerTarget)
  return { seconds, concurrency, floor, bare, controller }
}

/** Step 5: each level, the floor, the bare relay, then the controller; the controller's measured windows (to find them in a profile). */
const runLevels = async (s: Setup): Promise<{ readonly levels: Array<LevelResult>; readonly windows: Array<Window> }> => {
  const levels: Array<LevelResult> = []
  const windows: Array<Window> = []
  for (const concurrency of s.options.concurrency) {
    log(`concurrency ${concurrency}: floor`)
    const floor = (await measure(s, s.floorTarget, concurrency)).stats
    await sleep(300)
    log(`concurrency ${concurrency}: bare relay`)
    const bare = (await measure(s, s.bareTarget, concurrency)).stats
    await sleep(300)
    await settle(s, `concurrency ${concurrency}`)
    log(`concurrency ${concurrency}: controller`)
    const controller = await measure(s, s.controllerTarget, concurrency)
    await sleep(300)
    levels.push({ concurrency, floor, bare, controller: controller.stats })
    windows.push(controller.window)
    log(
      `  c=${concurrency}: floor ${floor.reqPerSecond.toFixed(0)} req/s, bare relay ${bare.reqPerSecond.toFixed(0)} req/s, ` +
        `controller ${controller.stats.reqPerSecond.toFixed(0)} req/s (errors ${floor.errors}/${bare.errors}/${controller.stats.errors})`
    )
  }
  return { levels, windows }
}

/** Step 6: the HTTP stack alone, GET /health on both, no NATS, no worker. */
const measureHttpBaseline = async (s: Setup): Promise<HttpBaseline> => {
  const concurrency = 32
  const ms = Math.max(1000, Math.min(3000, s.options.durationSeconds * 1000))
  log(`HTTP baseline: GET /health, concurrency ${concurrency}`)
  const floor = await getLoop(s.floorTarget, "/health", concurrency, ms, s.timeoutMs)
  const meter = new CostMeter(new Map([["controller", s.cluster.controller.pid]]))
  await meter.start()
  const controller = await getLoop(s.controllerTarget, "/health", concurrency, ms, s.timeoutMs)
  const cpu = (await meter.stop()).perProcess["controller"]?.cpuPercent ?? Number.NaN
  return {
    concurrency,
    floor,
    controller: { ...controller, cpuMsPerRequest: controller.reqPerSecond > 0 ? (cpu * 10) / controller.reqPerSecond : Number.NaN }
  }
}

/** Step 7: `--stress` streams at once against the controller, its RSS sampled every 100 ms. */
const runStress = async (s: Setup): Promise<StressResult | undefined> => {
  if (s.options.stress === 0) return undefined
  await settle(s, "the stress run")
  log(`stress: ${s.options.stress} streams at once against the controller`)
  const meter = new CostMeter(new Map([["controller", s.cluster.controller.pid]]), 100)
  await meter.start()
  const shot = await oneShot(s.controllerTarget, s.options.stress, s.body, s.timeoutMs)
  const cost = (await meter.stop()).perProcess["controller"]
  log(`  ${shot.succeeded}/${shot.count} completed in ${shot.wallMs.toFixed(0)} ms, ${shot.errors} errors`)
  assertRunning([s.cluster.controller], "the stress run")
  return { ...shot, controllerPeakRssMiB: cost?.peakRssMiB ?? Number.NaN, controllerCpuPercent: cost?.cpuPercent ?? Number.NaN }
}

/** Step 8: stop the children (the controller writes its CPU profile as it exits); what they logged and the profile. */
const stop = async (s: Setup, windows: ReadonlyArray<Window>) => {
  log("stopping the children")
  const controllerExit = await stopChild(s.cluster.controller, 15_000)
  let profile: ProfileInfo | undefined
  if (s.profiling !== undefined) {
    const found = collectProfile(s.profiling.dir, s.cluster.controller.pid, s.profiling.mapsFile, windows)
    if (typeof found === "string") s.notes.push(`${found}; the controller exited with ${controllerExit}`)
    else profile = found
  }
  await s.run.stop()
  const childLogs = Object.fromEntries([s.cluster.controller, ...s.cluster.workers, s.cluster.nats].map((c) => [c.name, c.lines()]))
  return { childLogs, profile }
}

export const runRelay = async (run: BenchRun, argv: ReadonlyArray<string>): Promise<void> => {
  const options = parseRelayOptions(argv)
  if (options === "help") return void process.stdout.write(RELAY_USAGE)
  const startedAt = new Date().toISOString()
  const s = await start(run, options)
  const idle = await measureIdle(s)
  const sanity = await checkSanity(s)
  const startup = await warmUp(s)
  const { levels, windows } = await runLevels(s)
  const httpBaseline = await measureHttpBaseline(s)
  const stress = await runStress(s)
  const { childLogs, profile } = await stop(s, windows)
  const one = levels.find((l) => l.concurrency === 1)
  const added = (over: LoadStats, base: LoadStats) => ({ p50Ms: over.ttftP50Ms - base.ttftP50Ms, p99Ms: over.ttftP99Ms - base.ttftP99Ms })
  const addedTtft = one === undefined ? undefined : added(one.controller, one.floor)
  const bareAddedTtft = one === undefined ? undefined : added(one.bare, one.floor)
  const startupAddedTtft = startup === undefined || startup.concurrency !== 1 ? undefined : added(startup.controller, startup.floor)
  const results: BenchResults = {
    startedAt,
    finishedAt: new Date().toISOString(),
    machine: { cpus: cpus().length, cpuModel: cpus()[0]?.model ?? "unknown", memoryGiB: totalmem() / 2 ** 30, node: process.version, platform: `${process.platform}-${process.arch}` },
    options,
    idle,
    sanity,
    startup,
    levels,
    addedTtftAtConcurrency1: addedTtft,
    bareAddedTtftAtConcurrency1: bareAddedTtft,
    httpBaseline,
    stress,
    targets: checkTargets({ tokens: options.tokens, levels, addedTtft, bareAddedTtft, startupAddedTtft, stress }),
    profile,
    childLogs,
    notes: [
      "TTFT: from writing the request to the first chunk carrying a token (the role chunk does not count); " +
        "req/s and tokens/s count successful requests that ended inside the measured window, TTFT those that also started in it " +
        "(a request started in the warm-up may have waited for its connection: a closed loop opens its connections all at once, and at " +
        "concurrency 1,024 some of the SYNs are lost and sent again after 1 and 3 s); errors count the whole run.",
      "the floor answers with the synthetic engine's tokens in the same chunk format, in groups of 32 tokens per write (as the engine yields), " +
        "with no NATS hop, no worker and no Effect runtime: it is an upper bound for this machine, not a target to match.",
      "the bare relay (bench/bare-relay.ts) does the controller's job in plain JavaScript over the same nats-server, with bare workers sending " +
        "the same tokens as one message per group of 32: what the extra processes and hops of this architecture cost on this machine, " +
        "with no retries, deadlines, queue, validation, metrics or logs.",
      ...s.notes
    ]
  }
  const file = run.saveResults(startedAt, results)
  process.stdout.write(`${formatResults(results)}\n\nResults saved to ${file}\n`)
}
