import { Effect, Layer, RuntimeFlags, RuntimeFlagsPatch } from "effect"
import { ClusterConfigService } from "./config/cluster-config.js"
import type { ClusterConfig } from "./config/schema.js"
import { ControllerCoreLive, ControllerReadyLive } from "./controller/controller-live.js"
import { HttpServerLive } from "./http/server.js"
import { EmbeddedNatsLive } from "./nats/embedded-nats.js"
import { runsEmbeddedServer } from "./nats/nats-credentials.js"
import { NatsTransportLive } from "./nats/nats-transport-live.js"
import { WorkerLive } from "./worker/worker-live.js"

/**
 * The controller role, built core → HTTP server → ready, so that it stops in the opposite order:
 * drain first (the server still streams what is in flight), then the server, then the core.
 * Needs a NATS connection and the config.
 */
export const ControllerLive = ControllerReadyLive.pipe(
  Layer.provideMerge(HttpServerLive),
  Layer.provideMerge(ControllerCoreLive)
)

/**
 * NATS as the config says: a connection, after starting our own nats-server when embedded. A
 * worker-only process embeds one only as a member of a NATS cluster (`nats.cluster`, issue 14);
 * otherwise the server belongs with the controller, and a worker reaches it at `nats.server_url`.
 */
export const natsFor = (config: ClusterConfig) =>
  runsEmbeddedServer(config) ? NatsTransportLive.pipe(Layer.provide(EmbeddedNatsLive)) : NatsTransportLive

/**
 * Every layer of one process for its mode. In `both`, the worker starts first and stops last.
 * Logging (`LoggingLive`) is provided around it by `src/main.ts`, so that the lines logged before
 * the layers start are written the same way.
 */
export const mainLayer = (config: ClusterConfig) => {
  const roles =
    config.mode === "controller"
      ? Layer.discard(ControllerLive)
      : config.mode === "worker"
        ? Layer.discard(WorkerLive)
        : Layer.discard(ControllerLive.pipe(Layer.provideMerge(WorkerLive)))
  return roles.pipe(
    Layer.provide(natsFor(config)),
    Layer.provide(ClusterConfigService.layer(config))
  )
}

/**
 * Effect's runtime fiber metrics (`effect_fiber_*`) update five metrics for every fiber, on the
 * hot path of every request; they run only with `metrics.runtime: true`. Applied to the main
 * effect, so that every fiber it forks inherits the flag.
 */
export const withRuntimeMetrics =
  (config: Pick<ClusterConfig, "metrics">) =>
  <A, E, R>(effect: Effect.Effect<A, E, R>): Effect.Effect<A, E, R> =>
    Effect.withRuntimeFlagsPatch(
      effect,
      (config.metrics.runtime ? RuntimeFlagsPatch.enable : RuntimeFlagsPatch.disable)(RuntimeFlags.RuntimeMetrics)
    )
