import { HttpLayerRouter, HttpServer } from "@effect/platform"
import { NodeHttpServer } from "@effect/platform-node"
import { Effect, Layer, Stream } from "effect"
import { createServer } from "node:http"
import { ClusterConfigService } from "../../../src/config/cluster-config.js"
import type { ClusterConfig } from "../../../src/config/schema.js"
import type { ClusterStatusQuery } from "../../../src/controller/cluster-status.js"
import { ControllerCoreLive } from "../../../src/controller/controller-live.js"
import { ControllerLifecycle } from "../../../src/controller/lifecycle.js"
import { Registry } from "../../../src/controller/registry.js"
import type { Router } from "../../../src/controller/router.js"
import { layer as natsLayer } from "../../../src/nats/nats-transport-live.js"
import { FakeWorker, FakeWorkerLive } from "./fake-worker.js"

export type RouteLayer = Layer.Layer<
  never,
  never,
  HttpLayerRouter.HttpRouter | Router | Registry | ClusterStatusQuery | ClusterConfigService
>

export interface TestServerOptions {
  readonly natsUrl: string
  readonly routes: RouteLayer
  readonly workerId: string
  readonly models: ReadonlyArray<string>
  readonly tokenDelayMs?: number
  readonly config?: (config: ClusterConfig) => ClusterConfig
}

/** Small token caps and a fast keep-alive; no worker goes offline during a test run. */
const testDefaults = (c: ClusterConfig): ClusterConfig => ({
  ...c,
  mode: "controller",
  discovery: { ...c.discovery, offlineTimeoutMs: 600_000, healthCheckIntervalMs: 60_000 },
  controller: {
    ...c.controller,
    api: { ...c.controller.api, wsPingIntervalMs: 150, maxTokensCeiling: 64, defaultMaxTokens: 5 }
  }
})

/**
 * A real controller end to end: the controller core on its own NATS connection to the test run's
 * nats-server, `routes` served by `HttpLayerRouter.serve` on a free port of 127.0.0.1, and a
 * `FakeWorker` on a second connection. The layer is ready once the worker is registered and the
 * controller is `ready`.
 */
export const testServerLayer = (options: TestServerOptions) => {
  const ConfigLive = ClusterConfigService.layerTest((c) => (options.config ?? ((x) => x))(testDefaults(c)))
  const CoreLive = ControllerCoreLive.pipe(
    Layer.provideMerge(natsLayer({ url: options.natsUrl, name: "test controller" })),
    Layer.provideMerge(ConfigLive)
  )
  const WorkerLive = FakeWorkerLive({
    workerId: options.workerId,
    models: options.models,
    ...(options.tokenDelayMs === undefined ? {} : { tokenDelayMs: options.tokenDelayMs })
  }).pipe(Layer.provide(natsLayer({ url: options.natsUrl, name: "test worker" })))
  const HttpLive = HttpLayerRouter.serve(options.routes, { disableLogger: true, disableListenLog: true }).pipe(
    Layer.provideMerge(NodeHttpServer.layer(createServer, { port: 0, host: "127.0.0.1" }))
  )
  const ReadyLive = Layer.effectDiscard(
    Effect.gen(function* () {
      const registry = yield* Registry
      const worker = yield* FakeWorker
      yield* registry.changes.pipe(
        Stream.filter((s) => s.workers.some((w) => w.workerId === worker.workerId && w.status === "online")),
        Stream.runHead,
        Effect.timeoutFail({ duration: "5 seconds", onTimeout: () => new Error("the fake worker never registered") }),
        Effect.orDie
      )
      const lifecycle = yield* ControllerLifecycle
      yield* lifecycle.transition("ready")
    })
  )
  return Layer.mergeAll(HttpLive, ReadyLive).pipe(Layer.provideMerge(WorkerLive), Layer.provideMerge(CoreLive))
}

/** `http://127.0.0.1:PORT` of the server under test. */
export const baseUrl = Effect.map(HttpServer.HttpServer, (server) => {
  const address = server.address
  if (address._tag !== "TcpAddress") throw new Error("expected a TCP address")
  return `http://127.0.0.1:${address.port}`
})

export const unique = (prefix: string) => `${prefix}-${Math.random().toString(36).slice(2, 8)}`
