import { HttpServer } from "@effect/platform"
import { Context, Effect, Layer, Logger, LogLevel } from "effect"
import { mkdirSync, mkdtempSync, writeFileSync } from "node:fs"
import { tmpdir } from "node:os"
import { join } from "node:path"
import { ClusterConfigService } from "../../src/config/cluster-config.js"
import { type ClusterConfig, defaultClusterConfig } from "../../src/config/schema.js"
import { Registry } from "../../src/controller/registry.js"
import { layer as natsLayer } from "../../src/nats/nats-transport-live.js"
import { ControllerLive } from "../../src/roles.js"
import { WorkerLive } from "../../src/worker/worker-live.js"
import { eventually } from "./eventually.js"

/** A model folder holding `models` (config.json + a small *.safetensors each), for real workers. */
export const makeModelDir = (models: ReadonlyArray<string>): string => {
  const root = mkdtempSync(join(tmpdir(), "cluster-models-"))
  for (const model of models) {
    const dir = join(root, ...model.split("/"))
    mkdirSync(dir, { recursive: true })
    writeFileSync(join(dir, "config.json"), JSON.stringify({ model_type: "llama" }))
    writeFileSync(join(dir, "model.safetensors"), Buffer.alloc(1024))
  }
  return root
}

export interface WorkerSpec {
  readonly id: string
  readonly models: ReadonlyArray<string>
  readonly maxConcurrent?: number
  readonly tokensPerSecond?: number
  readonly firstTokenMs?: number
  readonly tags?: ReadonlyArray<string>
  /** Last changes to the worker's config (another engine, its features). */
  readonly patch?: (config: ClusterConfig) => ClusterConfig
}

/** A test config: quiet logs, fast heartbeats, everything else the contract's defaults. */
export const testConfig = (natsUrl: string, patch: (c: ClusterConfig) => ClusterConfig = (c) => c): ClusterConfig => {
  const base = defaultClusterConfig()
  return patch({
    ...base,
    logLevel: "warning",
    nats: { ...base.nats, mode: "external", serverUrl: natsUrl },
    controller: { ...base.controller, port: 0, bindAddress: "127.0.0.1" },
    discovery: { ...base.discovery, heartbeatIntervalMs: 500 }
  })
}

export const workerConfig = (natsUrl: string, spec: WorkerSpec): ClusterConfig =>
  testConfig(natsUrl, (c) => (spec.patch ?? ((x: ClusterConfig) => x))({
    ...c,
    mode: "worker",
    worker: {
      ...c.worker,
      id: spec.id,
      modelDir: makeModelDir(spec.models),
      maxConcurrent: spec.maxConcurrent ?? c.worker.maxConcurrent,
      tags: spec.tags ?? [],
      drainTimeoutMs: 2_000,
      engine: {
        ...c.worker.engine,
        type: "synthetic",
        synthetic: { ...c.worker.engine.synthetic, tokensPerSecond: spec.tokensPerSecond ?? 0, firstTokenMs: spec.firstTokenMs ?? 0 }
      }
    }
  }))

const quiet = (config: ClusterConfig) => Logger.minimumLogLevel(config.logLevel === "debug" ? LogLevel.Debug : LogLevel.Warning)

/** A real worker (synthetic engine) on its own NATS connection. */
export const workerLayer = (natsUrl: string, spec: WorkerSpec) => {
  const config = workerConfig(natsUrl, spec)
  // Fresh: layers are shared by reference within one build, and several workers in one test graph
  // must each get their own WorkerLive (and config).
  return Layer.fresh(
    WorkerLive.pipe(
      Layer.provide(natsLayer({ url: natsUrl, name: `test worker ${spec.id}` })),
      Layer.provide(ClusterConfigService.layer(config)),
      Layer.provide(quiet(config))
    )
  )
}

/** A real controller with its HTTP server on a free port, on its own NATS connection. */
export const controllerLayer = (natsUrl: string, patch: (c: ClusterConfig) => ClusterConfig = (c) => c) => {
  const config = testConfig(natsUrl, (c) => patch({ ...c, mode: "controller" }))
  return Layer.fresh(
    ControllerLive.pipe(
      Layer.provideMerge(ClusterConfigService.layer(config)),
      Layer.provideMerge(natsLayer({ url: natsUrl, name: "test controller" })),
      Layer.provide(quiet(config))
    )
  )
}

/** `http://127.0.0.1:PORT` of the controller's server. */
export const baseUrl = Effect.map(HttpServer.HttpServer, (server) =>
  server.address._tag === "TcpAddress" ? `http://127.0.0.1:${server.address.port}` : "http://invalid"
)

/**
 * A real controller (`controllerLayer`) built in the current scope: its URL, its registry and its
 * other services (`context`), for tests that look into the controller while it runs.
 */
export const startController = (natsUrl: string, patch?: (c: ClusterConfig) => ClusterConfig) =>
  Effect.gen(function* () {
    const context = yield* Layer.build(controllerLayer(natsUrl, patch))
    return { url: yield* Effect.provide(baseUrl, context), registry: Context.get(context, Registry), context }
  })

/** Waits until `registry` lists the worker `workerId` online (`eventually`'s 5 s unless `timeoutMs`). */
export const untilWorkerOnline = (registry: Registry, workerId: string, timeoutMs?: number) =>
  eventually(
    Effect.map(registry.online, (ws) => ws.some((w) => w.workerId === workerId)),
    timeoutMs === undefined ? {} : { timeoutMs }
  )
