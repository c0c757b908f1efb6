/**
 * Benchmark of the controller's relay (issue 6): `npm run bench` (= ensure nats-server, then
 * `tsx bench/main.ts`).
 *
 *   tsx bench/main.ts [--concurrency 1,32,256,1024] [--duration 5] [--warmup 1] [--tokens 32]
 *                        [--workers 2] [--stress 2000] [--profile] [--timeout 120]
 *
 * One run starts, on free ports: a nats-server, N synthetic workers and a controller (each the real
 * CLI as a child process: `node --import tsx src/main.ts ...`), and the *floor*: a bare node:http
 * server sending the same SSE bytes without NATS (bench/floor-server.ts). For each
 * concurrency level it runs closed-loop streaming load against the floor, then the controller, and
 * measures requests/s, time to first token, tokens/s, errors and the server process's CPU and peak
 * RSS (/proc). Then 2,000 streams at once against the controller. It prints a markdown table and
 * which targets were met, saves everything as JSON under bench/results/, and stops every child.
 *
 * `--profile` runs the controller with `--cpu-prof --cpu-prof-dir bench/profiles` and prints the
 * top self-time functions when it stops (combine with `--concurrency 256 --stress 0` to profile
 * one level). Exits non-zero only when the harness itself fails, not on a missed target.
 */
import { Option } from "effect"
import { mkdirSync, mkdtempSync, readdirSync, rmSync, writeFileSync } from "node:fs"
import { createServer } from "node:net"
import { cpus, loadavg, tmpdir, totalmem } from "node:os"
import { join, resolve } from "node:path"
import { Agent } from "node:http"
import { findNatsServer } from "../src/nats/nats-server-process.js"
import { CHAT_USAGE, ChatUsageError, runChatScenario, splitScenario } from "./chat-scenario.js"
import { chatBody, closedLoop, getLoop, oneShot, streamOnce, type Target } from "./load.js"
import { type Child, CostMeter, killAllSync, spawnChild, stopAll, stopChild } from "./processes.js"
import { type BenchResults, checkTargets, formatResults, type LevelResult, type RunStats } from "./report.js"
import { formatSummary, type ProfileSummary, summariseProfile, type Window } from "./top-functions.js"

const ROOT = resolve(import.meta.dirname, "..")
const MODEL = "synthetic/demo"

const USAGE = `Usage: tsx bench/main.ts [options]
  --concurrency LIST   concurrency levels, comma-separated     default 1,32,256,1024
  --duration S         measured seconds per level and target   default 5
  --warmup S           warm-up seconds before each measurement default 1
  --tokens T           max_tokens of every request             default 32
  --workers N          synthetic workers                        default 2
  --stress N           streams started at once (0: skip)        default 2000
  --timeout S          per-request client timeout (the controller's request_timeout_ms)  default 120
  --log-level L        the cluster's log_level (diagnosis)     default warning
  --profile            --cpu-prof the controller into bench/profiles and summarise it
  --scenario chat      the cache-aware routing scenario instead (see --scenario chat --help)
  -h, --help           this text
`

interface Options {
  readonly concurrency: ReadonlyArray<number>
  readonly durationSeconds: number
  readonly warmupSeconds: number
  readonly tokens: number
  readonly workers: number
  readonly stress: number
  readonly timeoutSeconds: number
  readonly profile: boolean
  readonly logLevel: "debug" | "info" | "warning" | "error"
}

class UsageError extends Error {}

const parseLogLevel = (value: string): Options["logLevel"] => {
  if (value === "debug" || value === "info" || value === "warning" || value === "error") return value
  throw new UsageError(`--log-level ${value}: expected debug, info, warning or error`)
}

const parseOptions = (argv: ReadonlyArray<string>): Options | "help" => {
  const values = new Map<string, string>()
  let profile = false
  for (let i = 0; i < argv.length; i++) {
    const arg = argv[i] ?? ""
    if (arg === "-h" || arg === "--help") return "help"
    if (arg === "--profile") {
      profile = true
      continue
    }
    if (!arg.startsWith("--")) throw new UsageError(`unexpected argument "${arg}"`)
    const eq = arg.indexOf("=")
    const name = eq === -1 ? arg.slice(2) : arg.slice(2, eq)
    const value = eq === -1 ? argv[++i] : arg.slice(eq + 1)
    if (value === undefined) throw new UsageError(`--${name} needs a value`)
    values.set(name, value)
  }
  const known = new Set(["concurrency", "duration", "warmup", "tokens", "workers", "stress", "timeout", "log-level"])
  for (const name of values.keys()) if (!known.has(name)) throw new UsageError(`unknown flag --${name}`)
  const number = (name: string, fallback: number, min: number, integer: boolean) => {
    const raw = values.get(name)
    if (raw === undefined) return fallback
    const n = Number(raw)
    if (!Number.isFinite(n) || n < min || (integer && !Number.isInteger(n))) throw new UsageError(`--${name} ${raw}: expected a number ≥ ${min}`)
    return n
  }
  const concurrency = (values.get("concurrency") ?? "1,32,256,1024").split(",").map((s) => Number(s.trim()))
  if (concurrency.length === 0 || concurrency.some((c) => !Number.isInteger(c) || c < 1)) {
    throw new UsageError(`--concurrency ${values.get("concurrency") ?? ""}: expected positive integers, comma-separated`)
  }
  return {
    concurrency,
    durationSeconds: number("duration", 5, 0.5, false),
    warmupSeconds: number("warmup", 1, 0, false),
    tokens: number("tokens", 32, 1, true),
    workers: number("workers", 2, 1, true),
    stress: number("stress", 2000, 0, true),
    timeoutSeconds: number("timeout", 120, 1, false),
    profile,
    logLevel: parseLogLevel(values.get("log-level") ?? "warning")
  }
}

const log = (line: string) => process.stderr.write(`[bench] ${line}\n`)

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

/** CLOCK_MONOTONIC in microseconds: the clock of V8's CPU profiles, in every process. */
const monotonicUs = () => Number(process.hrtime.bigint() / 1000n)

const sleep = (ms: number) => new Promise<void>((r) => setTimeout(r, ms))

/** The config every cluster process of the benchmark reads. */
const clusterConfig = (natsUrl: string, modelDir: string, logLevel: string) => `# written by bench/main.ts
cluster:
  log_level: ${logLevel}
  controller:
    bind_address: "127.0.0.1"
    api:
      api_keys: []
      rate_limit: { enabled: false }
    queue: { max_pending: 100000, max_wait_ms: 60000 }
    drain_timeout_ms: 2000
  nats:
    mode: external
    server_url: ${JSON.stringify(natsUrl)}
  worker:
    model_dir: ${JSON.stringify(modelDir)}
    # A worker takes at most this many requests at once; the controller queues the rest (its job).
    # Thousands at once on one synthetic worker starve its event loop: acks and heartbeats stall.
    max_concurrent: 64
    drain_timeout_ms: 2000
    engine:
      type: synthetic
      synthetic: { tokens_per_second: 0, first_token_ms: 0 }
`

/** Variables that would beat the config file for settings the benchmark fixes. */
const childEnv = (): NodeJS.ProcessEnv => {
  const env = { ...process.env }
  for (const name of ["CLUSTER_CONFIG", "CLUSTER_MODE", "CONTROLLER_PORT", "NATS_URL", "MODEL_DIR", "WORKER_ID", "NODE_OPTIONS"]) {
    delete env[name]
  }
  return env
}

interface ClusterStatusBody {
  readonly controller?: { readonly state?: string }
  readonly workers?: { readonly online?: number }
  readonly requests?: { readonly active?: number }
}

/**
 * Waits until the controller has no active request and every worker is online again (after an
 * overloaded level, work can still drain): returns false, without failing, after `timeoutMs`.
 */
const waitSettled = async (port: number, workers: number, timeoutMs: number): Promise<boolean> => {
  const deadline = Date.now() + timeoutMs
  while (Date.now() < deadline) {
    try {
      const body = (await (await fetch(`http://127.0.0.1:${port}/api/cluster/status`)).json()) as ClusterStatusBody
      if (body.requests?.active === 0 && body.workers?.online === workers) return true
    } catch {
      // try again
    }
    await sleep(200)
  }
  return false
}

/** Polls /api/cluster/status until the controller is ready with `workers` online workers. */
const waitReady = async (port: number, workers: number, controller: Child, timeoutMs: number) => {
  const deadline = Date.now() + timeoutMs
  let last = "no answer"
  while (Date.now() < deadline) {
    if (!controller.isRunning()) throw new Error(`the controller exited during startup; output:\n${controller.output()}`)
    try {
      const response = await fetch(`http://127.0.0.1:${port}/api/cluster/status`)
      const body = (await response.json()) as ClusterStatusBody
      last = `state ${body.controller?.state ?? "?"}, ${body.workers?.online ?? 0} workers online`
      if (body.controller?.state === "ready" && body.workers?.online === workers) return
    } catch (error) {
      last = error instanceof Error ? error.message : String(error)
    }
    await sleep(100)
  }
  throw new Error(`the cluster was not ready within ${timeoutMs} ms (${last}); controller output:\n${controller.output()}`)
}

const tokenText = (sse: string): string => {
  const parts: Array<string> = []
  for (const m of sse.matchAll(/"delta":\{"content":("(?:[^"\\]|\\.)*")\}/g)) {
    const literal = m[1]
    if (literal !== undefined) parts.push(JSON.parse(literal) as string)
  }
  return parts.join("")
}

let interrupted = false
/** The run's temporary folder (config, empty model folder): removed on every way out. */
let tmpDir: string | undefined

const main = async (): Promise<void> => {
  const { scenario, argv } = splitScenario(process.argv.slice(2))
  if (scenario === "chat") return runChatScenario(argv, () => interrupted)
  if (scenario !== "relay") throw new UsageError(`--scenario ${scenario}: expected relay (the default) or chat`)
  const parsed = parseOptions(argv)
  if (parsed === "help") {
    process.stdout.write(USAGE)
    return
  }
  const options = parsed
  const startedAt = new Date()
  const nodeArgs = (profileDir: string | undefined) => [
    "--import",
    "tsx",
    ...(profileDir === undefined ? [] : ["--cpu-prof", "--cpu-prof-dir", profileDir])
  ]

  const natsBinary = Option.getOrUndefined(findNatsServer())
  if (natsBinary === undefined) throw new Error("nats-server was not found on PATH or in /usr/sbin: run scripts/ensure-nats-server.sh")

  const tmp = mkdtempSync(join(tmpdir(), "mlx-bench-"))
  tmpDir = tmp
  const modelDir = join(tmp, "models")
  mkdirSync(modelDir)
  const [natsPort, controllerPort, floorPort] = [await freePort(), await freePort(), await freePort()]
  const natsUrl = `nats://127.0.0.1:${natsPort}`
  const configFile = join(tmp, "bench.yaml")
  writeFileSync(configFile, clusterConfig(natsUrl, modelDir, options.logLevel))
  const profileDir = options.profile ? join(ROOT, "bench", "profiles") : undefined
  if (profileDir !== undefined) mkdirSync(profileDir, { recursive: true })
  const env = childEnv()

  try {
    log(`nats-server on ${natsUrl}`)
    const nats = spawnChild("nats", natsBinary, ["-a", "127.0.0.1", "-p", String(natsPort)], { cwd: ROOT, env })
    await nats.waitFor(/Server is ready/, 10_000)

    log(`floor on :${floorPort}`)
    const floor = spawnChild("floor", process.execPath, [...nodeArgs(undefined), "bench/floor-server.ts", "--port", String(floorPort)], {
      cwd: ROOT,
      env
    })
    await floor.waitFor(/floor listening/, 20_000)

    const common = ["--nats-url", natsUrl, "--config", configFile]
    const workers: Array<Child> = []
    for (let k = 1; k <= options.workers; k++) {
      workers.push(
        spawnChild(`worker-${k}`, process.execPath, [...nodeArgs(undefined), "src/main.ts", "--mode", "worker", "--worker-id", `bench-w${k}`, ...common], {
          cwd: ROOT,
          env
        })
      )
    }
    log(`controller on :${controllerPort} with ${options.workers} workers${profileDir === undefined ? "" : ` (profiling into ${profileDir})`}`)
    const controller = spawnChild(
      "controller",
      process.execPath,
      [...nodeArgs(profileDir), "src/main.ts", "--mode", "controller", "--port", String(controllerPort), ...common],
      { cwd: ROOT, env }
    )
    await waitReady(controllerPort, options.workers, controller, 60_000)
    log("cluster ready")

    const floorTarget: Target = { name: "floor", host: "127.0.0.1", port: floorPort }
    const controllerTarget: Target = { name: "controller", host: "127.0.0.1", port: controllerPort }
    const body = chatBody(MODEL, options.tokens)
    const timeoutMs = options.timeoutSeconds * 1000

    // Sanity: one request each, same tokens and (ids aside) the same bytes.
    const sanityAgent = new Agent({ keepAlive: false })
    const floorOne = await streamOnce({ agent: sanityAgent, target: floorTarget, body, timeoutMs, keepText: true })
    const controllerOne = await streamOnce({ agent: sanityAgent, target: controllerTarget, body, timeoutMs, keepText: true })
    sanityAgent.destroy()
    if (floorOne.error !== undefined) throw new Error(`the floor failed a single request: ${floorOne.error}`)
    if (controllerOne.error !== undefined) throw new Error(`the controller failed a single request: ${controllerOne.error}`)
    const sanity = {
      floorBytes: floorOne.bytes,
      controllerBytes: controllerOne.bytes,
      floorTokens: floorOne.tokens,
      controllerTokens: controllerOne.tokens,
      sameTokenText: tokenText(floorOne.text ?? "") === tokenText(controllerOne.text ?? "")
    }
    log(`sanity: floor ${sanity.floorTokens} tokens/${sanity.floorBytes} B, controller ${sanity.controllerTokens} tokens/${sanity.controllerBytes} B`)

    const clusterPids = new Map<string, number>([["controller", controller.pid], ...workers.map((w): [string, number] => [w.name, w.pid]), ["nats", nats.pid]])
    const allPids = new Map<string, number>([["floor", floor.pid], ...clusterPids])

    const idleMeter = new CostMeter(allPids)
    idleMeter.start()
    await sleep(2_000)
    const idle = idleMeter.stop()
    const before = {
      loadAverage: loadavg(),
      idleCpuPercent: Object.fromEntries(Object.entries(idle.perProcess).map(([name, cost]) => [name, cost.cpuPercent]))
    }
    log(`idle: ${Object.entries(before.idleCpuPercent).map(([n, c]) => `${n} ${c.toFixed(1)} %`).join(", ")}; load average ${before.loadAverage.map((l) => l.toFixed(1)).join(" ")}`)

    /** Measured windows of the controller, per concurrency level (to cut the CPU profile). */
    const controllerWindows = new Map<number, Window>()
    const run = async (target: Target, concurrency: number, serving: ReadonlyArray<string>): Promise<RunStats> => {
      const main = serving[0] ?? ""
      const meter = new CostMeter(allPids)
      let cost: ReturnType<CostMeter["stop"]> | undefined
      let fromUs = 0
      const stats = await closedLoop({
        target,
        concurrency,
        warmupMs: options.warmupSeconds * 1000,
        durationMs: options.durationSeconds * 1000,
        body,
        timeoutMs,
        onWindowStart: () => {
          fromUs = monotonicUs()
          meter.start()
        },
        onWindowEnd: () => {
          cost = meter.stop()
          if (target === controllerTarget) controllerWindows.set(concurrency, { fromUs, toUs: monotonicUs() })
        },
        aborted: () => interrupted
      })
      if (interrupted) throw new Error("interrupted")
      for (const child of [nats, floor, controller, ...workers]) {
        if (!child.isRunning()) throw new Error(`${child.name} exited during the run; output:\n${child.output()}`)
      }
      const c = cost ?? meter.stop()
      const mainCost = c.perProcess[main]
      const servingCpu = serving.reduce((n, name) => n + (c.perProcess[name]?.cpuPercent ?? 0), 0)
      const oursCpu = Object.values(c.perProcess).reduce((n, p) => n + p.cpuPercent, c.selfCpuPercent)
      /** % of one core over the window → ms of CPU per request. */
      const perRequest = (cpuPercent: number) => (stats.requests === 0 ? Number.NaN : (cpuPercent * 10 * stats.windowSeconds) / stats.requests)
      return {
        ...stats,
        cpuPercent: mainCost?.cpuPercent ?? Number.NaN,
        peakRssMiB: mainCost?.peakRssMiB ?? Number.NaN,
        cpuMsPerRequest: perRequest(mainCost?.cpuPercent ?? Number.NaN),
        servingCpuMsPerRequest: perRequest(servingCpu),
        processes: c.perProcess,
        loadGeneratorCpuPercent: c.selfCpuPercent,
        machineBusyPercent: c.machineBusyPercent,
        otherCpuPercent: Math.max(0, (c.machineBusyPercent * cpus().length) - oursCpu)
      }
    }

    const levels: Array<LevelResult> = []
    const unsettled: Array<string> = []
    for (const concurrency of options.concurrency) {
      log(`concurrency ${concurrency}: floor`)
      const floorStats = await run(floorTarget, concurrency, ["floor"])
      await sleep(300)
      if (!(await waitSettled(controllerPort, options.workers, 20_000))) {
        unsettled.push(`before concurrency ${concurrency}: the controller still had active requests or offline workers after 20 s`)
      }
      log(`concurrency ${concurrency}: controller`)
      const controllerStats = await run(controllerTarget, concurrency, [...clusterPids.keys()])
      await sleep(300)
      levels.push({ concurrency, floor: floorStats, controller: controllerStats })
      log(
        `  c=${concurrency}: floor ${floorStats.reqPerSecond.toFixed(0)} req/s, controller ${controllerStats.reqPerSecond.toFixed(0)} req/s ` +
          `(errors ${floorStats.errors}/${controllerStats.errors})`
      )
    }

    // The HTTP stack alone: GET /health on both, no NATS, no worker.
    const baselineConcurrency = 32
    const baselineMs = Math.max(1000, Math.min(3000, options.durationSeconds * 1000))
    log(`HTTP baseline: GET /health, concurrency ${baselineConcurrency}`)
    const floorGet = await getLoop(floorTarget, "/health", baselineConcurrency, baselineMs, timeoutMs)
    const controllerMeter = new CostMeter(new Map([["controller", controller.pid]]))
    controllerMeter.start()
    const controllerGet = await getLoop(controllerTarget, "/health", baselineConcurrency, baselineMs, timeoutMs)
    const controllerGetCpu = controllerMeter.stop().perProcess["controller"]?.cpuPercent ?? Number.NaN
    const httpBaseline = {
      concurrency: baselineConcurrency,
      floor: floorGet,
      controller: { ...controllerGet, cpuMsPerRequest: controllerGet.reqPerSecond > 0 ? (controllerGetCpu * 10) / controllerGet.reqPerSecond : Number.NaN }
    }

    let stress: BenchResults["stress"]
    if (options.stress > 0) {
      if (!(await waitSettled(controllerPort, options.workers, 20_000))) {
        unsettled.push("before the stress run: the controller still had active requests or offline workers after 20 s")
      }
      log(`stress: ${options.stress} streams at once against the controller`)
      const meter = new CostMeter(new Map([["controller", controller.pid]]), 100)
      meter.start()
      const shot = await oneShot(controllerTarget, options.stress, body, timeoutMs)
      const cost = meter.stop()
      stress = {
        ...shot,
        controllerPeakRssMiB: cost.perProcess["controller"]?.peakRssMiB ?? Number.NaN,
        controllerCpuPercent: cost.perProcess["controller"]?.cpuPercent ?? Number.NaN
      }
      log(`  ${shot.succeeded}/${shot.count} completed in ${shot.wallMs.toFixed(0)} ms, ${shot.errors} errors`)
      if (!controller.isRunning()) throw new Error(`the controller exited during the stress run; output:\n${controller.output()}`)
    }

    // Stop the cluster now: the controller writes its CPU profile when it exits.
    log("stopping the children")
    const controllerExit = await stopChild(controller, 15_000)
    await stopAll()
    const childLogs = Object.fromEntries(
      [controller, ...workers, nats].map((child) => [child.name, child.lines()] as const)
    )
    let profile: ProfileSummary | undefined
    const profileByLevel: Record<string, ProfileSummary> = {}
    if (profileDir !== undefined) {
      const file = readdirSync(profileDir)
        // CPU.DATE.TIME.PID.THREAD.SEQ.cpuprofile: thread 0 is the main thread (1 is tsx's loader thread).
        .filter((name) => name.endsWith(".cpuprofile") && name.includes(`.${controller.pid}.0.`))
        .sort()
        .pop()
      if (file === undefined) log(`no CPU profile of the controller (pid ${controller.pid}) in ${profileDir}; it exited with ${controllerExit}`)
      else {
        profile = summariseProfile(join(profileDir, file), 30, [...controllerWindows.values()])
        for (const [concurrency, window] of controllerWindows) {
          profileByLevel[String(concurrency)] = summariseProfile(join(profileDir, file), 15, [window])
        }
      }
    }

    const one = levels.find((l) => l.concurrency === 1)
    const addedTtft =
      one === undefined
        ? undefined
        : { p50Ms: one.controller.ttftP50Ms - one.floor.ttftP50Ms, p99Ms: one.controller.ttftP99Ms - one.floor.ttftP99Ms }
    const notes = [
      "TTFT: from writing the request to the first chunk carrying a token (the role chunk does not count); " +
        "req/s, tokens/s and TTFT count successful requests that ended inside the measured window; errors count the whole run.",
      "the floor answers with the synthetic engine's tokens in the same chunk format, in groups of 32 tokens per write (as the engine yields), " +
        "with no NATS hop, no worker and no Effect runtime: it is an upper bound for this machine, not a target to match.",
      ...unsettled
    ]
    const results: BenchResults = {
      startedAt: startedAt.toISOString(),
      finishedAt: new Date().toISOString(),
      machine: {
        cpus: cpus().length,
        cpuModel: cpus()[0]?.model ?? "unknown",
        memoryGiB: totalmem() / 2 ** 30,
        node: process.version,
        platform: `${process.platform}-${process.arch}`
      },
      options: {
        concurrency: options.concurrency,
        durationSeconds: options.durationSeconds,
        warmupSeconds: options.warmupSeconds,
        tokens: options.tokens,
        workers: options.workers,
        stress: options.stress,
        profile: options.profile,
        logLevel: options.logLevel
      },
      before,
      sanity,
      levels,
      addedTtftAtConcurrency1: addedTtft,
      httpBaseline,
      stress,
      targets: checkTargets(levels, addedTtft, stress),
      profile,
      profileByLevel,
      childLogs,
      notes
    }
    const resultsDir = join(ROOT, "bench", "results")
    mkdirSync(resultsDir, { recursive: true })
    const resultsFile = join(resultsDir, `${startedAt.toISOString().replace(/:/g, "-")}.json`)
    writeFileSync(resultsFile, `${JSON.stringify(results, null, 2)}\n`)

    process.stdout.write(`${formatResults(results)}\n`)
    if (profile !== undefined) {
      process.stdout.write(`\n${formatSummary(profile)}\n`)
      process.stdout.write("\nPer level (controller's busy time; top self time and areas):\n\n")
      for (const [concurrency, summary] of Object.entries(profileByLevel)) {
        const areas = summary.areas.slice(0, 5).map((a) => `${a.area} ${a.percent.toFixed(0)} %`).join(", ")
        const top = summary.topFunctions.slice(0, 5).map((f) => `${f.name} (${f.location || "native"}) ${f.percent.toFixed(1)} %`).join("; ")
        process.stdout.write(`- c=${concurrency}: busy ${summary.busyMs.toFixed(0)} of ${summary.totalMs.toFixed(0)} ms, GC ${summary.gcMs.toFixed(0)} ms; ${areas}\n  top: ${top}\n`)
      }
    }
    process.stdout.write(`\nResults saved to ${resultsFile}\n`)
  } finally {
    await stopAll()
    rmSync(tmp, { recursive: true, force: true })
  }
}

process.on("exit", () => {
  killAllSync()
  if (tmpDir !== undefined) rmSync(tmpDir, { recursive: true, force: true })
})
let signals = 0
const onSignal = (signal: NodeJS.Signals) => {
  signals++
  interrupted = true
  if (signals > 1) {
    killAllSync()
    process.exit(130)
  }
  log(`${signal}: stopping every child process`)
  void stopAll(3_000).finally(() => process.exit(130))
}
process.on("SIGINT", onSignal)
process.on("SIGTERM", onSignal)

main().then(
  () => process.exit(0),
  async (error: unknown) => {
    if (error instanceof UsageError || error instanceof ChatUsageError) {
      process.stderr.write(`bench: ${error.message}\n${error instanceof ChatUsageError ? CHAT_USAGE : USAGE}`)
    } else if (!interrupted) {
      process.stderr.write(`bench: harness failure: ${error instanceof Error ? (error.stack ?? error.message) : String(error)}\n`)
    }
    await stopAll(3_000)
    process.exit(interrupted ? 130 : 1)
  }
)
