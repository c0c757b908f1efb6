import { Effect, Layer, Option } from "effect"
import type { ClusterConfig } from "../../../src/config/schema.js"
import { Registry } from "../../../src/controller/registry.js"
import { controllerLayer } from "../../support/cluster.js"
import { eventually } from "../../support/eventually.js"
import { FakeWorker, FakeWorkerLive } from "../../support/fake-worker.js"

export { baseUrl } from "../../support/cluster.js"

export interface TestServerOptions {
  readonly natsUrl: string
  readonly workerId: string
  readonly models: ReadonlyArray<string>
  readonly tokenDelayMs?: number
  readonly config?: (config: ClusterConfig) => ClusterConfig
}

/** A config patch of `controller.api` only (keys, limits, CORS): what the front-door tests vary. */
export const apiConfig =
  (patch: Partial<ClusterConfig["controller"]["api"]>) =>
  (c: ClusterConfig): ClusterConfig => ({ ...c, controller: { ...c.controller, api: { ...c.controller.api, ...patch } } })

/** Small token caps and a fast keep-alive; no worker goes offline during a test run. */
const testDefaults = (c: ClusterConfig): ClusterConfig => ({
  ...c,
  discovery: { ...c.discovery, offlineTimeoutMs: 600_000, healthCheckIntervalMs: 60_000 },
  controller: {
    ...c.controller,
    api: { ...c.controller.api, wsPingIntervalMs: 150, maxTokensCeiling: 64 }
  }
})

/**
 * A real controller end to end — the production `ControllerLive` (front door, every route) on its
 * own NATS connection to the test run's nats-server — and a `FakeWorker` on a second connection.
 * The layer is ready once the controller lists the worker online.
 */
export const testServerLayer = (options: TestServerOptions) => {
  const WorkerLive = FakeWorkerLive(options.natsUrl, {
    id: options.workerId,
    models: options.models,
    maxConcurrent: 16,
    ...(options.tokenDelayMs === undefined ? {} : { tokenDelayMs: options.tokenDelayMs })
  })
  const WorkerOnline = Layer.effectDiscard(
    Effect.gen(function* () {
      const registry = yield* Registry
      const worker = yield* FakeWorker
      yield* eventually(Effect.map(registry.get(worker.workerId), Option.exists((w) => w.status === "online"))).pipe(Effect.orDie)
    })
  )
  const ControllerLive = controllerLayer(options.natsUrl, (c) => (options.config ?? ((x) => x))(testDefaults(c)))
  return WorkerOnline.pipe(Layer.provideMerge(WorkerLive), Layer.provideMerge(ControllerLive))
}

export const unique = (prefix: string) => `${prefix}-${Math.random().toString(36).slice(2, 8)}`
