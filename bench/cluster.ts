/**
 * A cluster for the benchmark, the same in every scenario: a nats-server of its own, N synthetic
 * workers and a controller, each the real CLI as a child process (`node --import tsx src/main.ts
 * ...`) on free ports, reading one config file the scenario shapes. Also the status polls the
 * scenarios wait on.
 */
import { Option } from "effect"
import { mkdirSync, writeFileSync } from "node:fs"
import { once } from "node:events"
import { type AddressInfo, createServer } from "node:net"
import { join } from "node:path"
import { stringify } from "yaml"
import { buildDist, runBuildArgs } from "../scripts/build.js"
import { findNatsServer } from "../src/nats/nats-server-process.js"
import { type Child, stopChild } from "./child.js"
import type { BenchRun } from "./run.js"

export const MODEL = "synthetic/demo"

export const sleep = (ms: number) => new Promise<void>((resolve) => setTimeout(resolve, ms))

/** A port nobody listens on right now. */
export const freePort = async (): Promise<number> => {
  const server = createServer().listen(0, "127.0.0.1")
  await once(server, "listening")
  const { port } = server.address() as AddressInfo
  await once(server.close(), "close")
  return port
}

/** The environment of every child, without the variables that would beat the config file. */
export const childEnv = (): NodeJS.ProcessEnv => {
  const env = { ...process.env }
  for (const name of ["CLUSTER_CONFIG", "CLUSTER_MODE", "CONTROLLER_PORT", "NATS_URL", "MODEL_DIR", "WORKER_ID", "NODE_OPTIONS"]) {
    delete env[name]
  }
  return env
}

/** `node --import tsx [nodeArgs] script args`: a TypeScript child of the run. */
export const spawnNode = (
  run: BenchRun,
  name: string,
  script: string,
  args: ReadonlyArray<string>,
  nodeArgs: ReadonlyArray<string> = [],
  env: NodeJS.ProcessEnv = childEnv()
): Child => run.spawn(name, process.execPath, ["--import", "tsx", ...nodeArgs, script, ...args], env)

/** The bare relay's processes (bare-relay.ts) and the front's port. */
export interface BareRelay {
  readonly front: Child
  readonly workers: ReadonlyArray<Child>
  readonly port: number
}

/**
 * Starts the bare relay on `natsUrl`: `workers` bare workers (one token every `tokenIntervalMs`
 * when given, else the engine's groups at full speed), then its front (with `frontNodeArgs`);
 * resolves when the workers are ready and the front has printed its address.
 */
export const startBareRelay = async (
  run: BenchRun,
  natsUrl: string,
  workers: number,
  options: { readonly tokenIntervalMs?: number; readonly frontNodeArgs?: ReadonlyArray<string> } = {}
): Promise<BareRelay> => {
  const port = await freePort()
  const pacing = options.tokenIntervalMs === undefined ? [] : ["--token-interval-ms", String(options.tokenIntervalMs)]
  const bareWorkers = Array.from({ length: workers }, (_, k) =>
    spawnNode(run, `bare-worker-${k + 1}`, "bench/bare-relay.ts", ["--role", "worker", "--nats-url", natsUrl, "--index", String(k + 1), ...pacing])
  )
  for (const w of bareWorkers) await w.waitFor(/bare worker \d+ ready/, 20_000)
  const frontArgs = ["--role", "front", "--nats-url", natsUrl, "--workers", String(workers), "--port", String(port)]
  const front = spawnNode(run, "bare", "bench/bare-relay.ts", frontArgs, options.frontNodeArgs ?? [])
  await front.waitFor(/bare relay listening/, 20_000)
  return { front, workers: bareWorkers, port }
}

/**
 * `--runtime dist`: src/ built (`npm run build`) into tmp/bench-dist, inside the project so that its
 * modules find node_modules. Returns the folder, for `ClusterSpec.distDir`.
 */
export const buildForBench = async (run: BenchRun): Promise<string> => {
  const dir = join(run.root, "tmp", "bench-dist")
  await buildDist(dir)
  return dir
}

/** The cluster's CLI: `src/main.ts` under tsx, or with `distDir` the build's `node dist/main.js`. */
const spawnMain = (
  run: BenchRun,
  name: string,
  args: ReadonlyArray<string>,
  nodeArgs: ReadonlyArray<string> = [],
  env: NodeJS.ProcessEnv,
  distDir: string | undefined
): Child =>
  distDir === undefined
    ? spawnNode(run, name, "src/main.ts", args, nodeArgs, env)
    : run.spawn(name, process.execPath, [...runBuildArgs(distDir, nodeArgs), ...args], env)

/** What a scenario decides about its cluster's config; the rest is the same everywhere. */
export interface ClusterSettings {
  readonly logLevel: string
  /** The worker's `max_concurrent`. */
  readonly maxConcurrent: number
  /** The worker's `engine.synthetic` block. */
  readonly synthetic: Record<string, number>
  /** Added to `controller.api`. */
  readonly api?: Record<string, unknown>
  /** More top-level keys under `cluster` (`discovery`, `load_balancing`). */
  readonly extra?: Record<string, unknown>
}

/** The YAML every process of one cluster reads: a local controller without keys or rate limits, NATS external. */
export const clusterConfig = (natsUrl: string, modelDir: string, s: ClusterSettings): string =>
  `# written by bench/cluster.ts\n${stringify({
    cluster: {
      log_level: s.logLevel,
      controller: {
        bind_address: "127.0.0.1",
        api: { api_keys: [], rate_limit: { enabled: false }, ...s.api },
        queue: { max_pending: 100_000, max_wait_ms: 60_000 },
        drain_timeout_ms: 2_000
      },
      nats: { mode: "external", server_url: natsUrl },
      ...s.extra,
      worker: {
        model_dir: modelDir,
        max_concurrent: s.maxConcurrent,
        drain_timeout_ms: 2_000,
        engine: { type: "synthetic", synthetic: s.synthetic }
      }
    }
  })}`

export interface ClusterSpec {
  /** Prefix of the children's names ("" for none): `NAME-controller`, `NAME-worker-1`, `NAME-nats`. */
  readonly name: string
  readonly workers: number
  readonly workerIdPrefix: string
  readonly settings: ClusterSettings
  /** Node flags and environment of the controller only (profiling). */
  readonly controllerExtras?: { readonly nodeArgs: ReadonlyArray<string>; readonly env: NodeJS.ProcessEnv }
  /** Node flags and environment of every worker (tracing). */
  readonly workerExtras?: { readonly nodeArgs: ReadonlyArray<string>; readonly env: NodeJS.ProcessEnv }
  readonly readyTimeoutMs: number
  /** A build of src/ (scripts/build.ts) that every process of the cluster runs; absent: tsx. */
  readonly distDir?: string
  /** Where the config file and the (empty) model folder go. */
  readonly dir: string
  /** nats-server's largest message, in bytes (its default, 1 MiB, when absent). */
  readonly natsMaxPayload?: number
}

export interface Cluster {
  readonly name: string
  readonly natsUrl: string
  readonly port: number
  readonly nats: Child
  readonly controller: Child
  readonly workers: ReadonlyArray<Child>
}

const findNatsBinary = (): string => {
  const binary = Option.getOrUndefined(findNatsServer())
  if (binary === undefined) throw new Error("nats-server was not found on PATH or in /usr/sbin: run scripts/ensure-nats-server.sh")
  return binary
}

/** Starts the cluster and waits until its controller is ready with every worker online. */
export const startCluster = async (run: BenchRun, spec: ClusterSpec): Promise<Cluster> => {
  const named = (base: string) => (spec.name === "" ? base : `${spec.name}-${base}`)
  const env = childEnv()
  const natsPort = await freePort()
  const natsUrl = `nats://127.0.0.1:${natsPort}`
  let natsConfig: Array<string> = []
  if (spec.natsMaxPayload !== undefined) {
    const file = join(spec.dir, `${named("nats")}.conf`)
    writeFileSync(file, `# written by bench/cluster.ts\nmax_payload: ${spec.natsMaxPayload}\n`)
    natsConfig = ["-c", file]
  }
  const nats = run.spawn(named("nats"), findNatsBinary(), [...natsConfig, "-a", "127.0.0.1", "-p", String(natsPort)], env)
  await nats.waitFor(/Server is ready/, 10_000)
  const modelDir = join(spec.dir, "models")
  mkdirSync(modelDir, { recursive: true })
  const configFile = join(spec.dir, `${named("cluster")}.yaml`)
  writeFileSync(configFile, clusterConfig(natsUrl, modelDir, spec.settings))
  const common = ["--nats-url", natsUrl, "--config", configFile]
  const port = await freePort()
  const workers = Array.from({ length: spec.workers }, (_, k) =>
    spawnMain(
      run,
      named(`worker-${k + 1}`),
      ["--mode", "worker", "--worker-id", `${spec.workerIdPrefix}${k + 1}`, ...common],
      spec.workerExtras?.nodeArgs,
      { ...env, ...spec.workerExtras?.env },
      spec.distDir
    )
  )
  const controller = spawnMain(
    run,
    named("controller"),
    ["--mode", "controller", "--port", String(port), ...common],
    spec.controllerExtras?.nodeArgs,
    { ...env, ...spec.controllerExtras?.env },
    spec.distDir
  )
  const cluster = { name: spec.name, natsUrl, port, nats, controller, workers }
  try {
    await waitReady(cluster, spec.readyTimeoutMs)
  } catch (error) {
    await stopCluster(cluster)
    throw error
  }
  return cluster
}

/** Controller first (it drains), then the workers, then NATS. */
export const stopCluster = async (cluster: Cluster, graceMs = 10_000): Promise<void> => {
  for (const child of [cluster.controller, ...cluster.workers, cluster.nats]) await stopChild(child, graceMs)
}

export const getJson = async <A>(port: number, path: string): Promise<A> =>
  (await (await fetch(`http://127.0.0.1:${port}${path}`)).json()) as A

interface ClusterStatusBody {
  readonly controller?: { readonly state?: string }
  readonly workers?: { readonly online?: number }
  readonly requests?: { readonly active?: number }
}

/** Polls /api/cluster/status until the controller is ready with every worker online. */
const waitReady = async (cluster: Cluster, timeoutMs: number): Promise<void> => {
  const deadline = Date.now() + timeoutMs
  let last = "no answer"
  while (Date.now() < deadline) {
    if (!cluster.controller.isRunning()) throw new Error(`the controller exited during startup; output:\n${cluster.controller.output()}`)
    try {
      const body = await getJson<ClusterStatusBody>(cluster.port, "/api/cluster/status")
      last = `state ${body.controller?.state ?? "?"}, ${body.workers?.online ?? 0} workers online`
      if (body.controller?.state === "ready" && body.workers?.online === cluster.workers.length) return
    } catch (error) {
      last = error instanceof Error ? error.message : String(error)
    }
    await sleep(100)
  }
  throw new Error(`the cluster was not ready within ${timeoutMs} ms (${last}); controller output:\n${cluster.controller.output()}`)
}

/**
 * Waits until the controller has no active request and every worker is online again (after an
 * overloaded level, work can still drain): false, without failing, after `timeoutMs`.
 */
export const waitSettled = async (cluster: Cluster, timeoutMs: number): Promise<boolean> => {
  const deadline = Date.now() + timeoutMs
  while (Date.now() < deadline) {
    try {
      const body = await getJson<ClusterStatusBody>(cluster.port, "/api/cluster/status")
      if (body.requests?.active === 0 && body.workers?.online === cluster.workers.length) return true
    } catch {
      // try again
    }
    await sleep(200)
  }
  return false
}
