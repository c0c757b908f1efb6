import { NodeRuntime } from "@effect/platform-node"
import { Cause, Console, Effect, Layer, Logger, LogLevel } from "effect"
import { ClusterConfigService } from "./config/cluster-config.js"
import { loadConfig } from "./config/load-config.js"
import type { ClusterConfig } from "./config/schema.js"
import { ControllerCoreLive, ControllerReadyLive } from "./controller/controller-live.js"
import { HttpServerLive } from "./http/server.js"
import { EmbeddedNatsLive } from "./nats/embedded-nats.js"
import { NatsTransportLive } from "./nats/nats-transport-live.js"
import { WorkerLive } from "./worker/worker-live.js"

const logLevels = {
  debug: LogLevel.Debug,
  info: LogLevel.Info,
  warning: LogLevel.Warning,
  error: LogLevel.Error
} as const

/** NATS as the config says: a connection, after starting our own nats-server when embedded. */
const natsFor = (config: ClusterConfig) =>
  config.nats.mode === "embedded" ? NatsTransportLive.pipe(Layer.provide(EmbeddedNatsLive)) : NatsTransportLive

/**
 * The controller, built core → HTTP server → ready, so that it stops in the opposite order:
 * drain first (the server still streams what is in flight), then the server, then the core.
 */
const ControllerLive = ControllerReadyLive.pipe(Layer.provideMerge(HttpServerLive), Layer.provideMerge(ControllerCoreLive))

/** The layers of one process for its mode. In `both`, the worker starts first and stops last. */
export const mainLayer = (config: ClusterConfig) => {
  const roles =
    config.mode === "controller"
      ? Layer.discard(ControllerLive)
      : config.mode === "worker"
        ? Layer.discard(WorkerLive)
        : Layer.discard(ControllerLive.pipe(Layer.provideMerge(WorkerLive)))
  return roles.pipe(
    Layer.provide(natsFor(config)),
    Layer.provide(ClusterConfigService.layer(config)),
    Layer.provide(Logger.minimumLogLevel(logLevels[config.logLevel]))
  )
}

const program = Effect.gen(function* () {
  const loaded = yield* loadConfig(process.argv.slice(2), process.env)
  if (loaded._tag === "Help") return yield* Console.log(loaded.text)
  if (loaded.file === undefined) yield* Effect.logInfo("no config file found: using the defaults of CONTRACT §2")
  for (const warning of loaded.warnings) yield* Effect.logWarning(warning)
  return yield* Layer.launch(mainLayer(loaded.config))
}).pipe(
  Effect.catchTag("ConfigError", (error) =>
    // One line naming the key and the file, and a non-zero exit, before anything starts.
    Console.error(`config error: ${error.message}`).pipe(Effect.zipRight(Effect.fail(error)))
  ),
  Effect.tapErrorCause((cause) =>
    Cause.isInterruptedOnly(cause) || Cause.failureOption(cause).pipe((o) => o._tag === "Some" && o.value._tag === "ConfigError")
      ? Effect.void
      : Effect.logError("stopped by an error", cause)
  )
)

NodeRuntime.runMain(program, { disableErrorReporting: true })
