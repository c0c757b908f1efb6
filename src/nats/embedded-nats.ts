import { Effect, Layer, Redacted } from "effect"
import { ClusterConfigService } from "../config/cluster-config.js"
import type { ClusterConfig } from "../config/schema.js"
import { NatsServerError, startNatsServer } from "./nats-server-process.js"

/** Host and port of `nats.server_url`, the address the embedded server listens on. */
export const listenAddress = (serverUrl: string): Effect.Effect<{ host: string; port: number }, NatsServerError> =>
  Effect.try({
    try: () => {
      const url = new URL(serverUrl)
      return { host: url.hostname === "" ? "127.0.0.1" : url.hostname, port: url.port === "" ? 4222 : Number(url.port) }
    },
    catch: () => new NatsServerError({ message: `nats.server_url is not a URL: ${serverUrl}` })
  })

/**
 * The embedded server requires the credentials the config gives its clients (`nats.user`/`pass` or
 * `nats.token`), so that binding it to 0.0.0.0 for remote workers does not leave an open bus.
 */
export const credentialArgs = (config: ClusterConfig): ReadonlyArray<string> => {
  const { user, pass, token } = config.nats
  if (token !== undefined) return ["--auth", Redacted.value(token)]
  if (user !== undefined) return ["--user", user, "--pass", pass === undefined ? "" : Redacted.value(pass)]
  return []
}

/**
 * `nats.mode: embedded`: this process starts and owns a real nats-server on `nats.server_url`'s
 * host and port, and stops it when the layer's scope closes (runMain closes it on SIGINT/SIGTERM).
 */
export const EmbeddedNatsLive: Layer.Layer<never, NatsServerError, ClusterConfigService> = Layer.scopedDiscard(
  Effect.gen(function* () {
    const config = yield* ClusterConfigService
    const address = yield* listenAddress(config.nats.serverUrl)
    const server = yield* startNatsServer({ ...address, args: credentialArgs(config) })
    yield* Effect.logInfo(`embedded nats-server ${server.pid} listening on ${server.url}`)
    yield* Effect.addFinalizer(() => Effect.logInfo("embedded nats-server stopped"))
  })
)
