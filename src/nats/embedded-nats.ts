import { mkdirSync, rmSync, writeFileSync } from "node:fs"
import { dirname, join } from "node:path"
import { Effect, Either, Layer, Redacted } from "effect"
import { ClusterConfigService } from "../config/cluster-config.js"
import type { ClusterConfig } from "../config/schema.js"
import { type EffectiveNatsAuth, effectiveNatsAuth, NatsCredentialsError, withNatsAuth } from "./nats-credentials.js"
import { NatsServerError, startNatsServer } from "./nats-server-process.js"
import { renderServerConfig, type ServerAuth } from "./nats-server-config.js"

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
 * What the embedded server requires of its clients: the same credentials this process's clients
 * use (the config's `nats.user`/`pass` or `nats.token`, else the generated credential), so that
 * binding it to 0.0.0.0 for remote workers never leaves an open bus. NATS JWT credentials
 * (`creds_file`) cannot be checked by a server without an operator: that needs `nats.server_config`.
 */
export const serverAuthFor = (auth: EffectiveNatsAuth): Either.Either<ServerAuth, string> => {
  if (auth.token !== undefined) return Either.right({ _tag: "Token", token: Redacted.value(auth.token) })
  if (auth.user !== undefined) {
    const password = auth.pass === undefined ? "" : Redacted.value(auth.pass)
    return Either.right({ _tag: "Users", users: [{ user: auth.user, password }] })
  }
  if (auth.credsFile !== undefined) {
    return Either.left(
      "the embedded nats-server cannot check nats.creds_file (NATS JWT) credentials: set nats.server_config to a " +
        "nats-server config that trusts your operator, or run nats-server yourself and use nats.mode: external"
    )
  }
  return Either.right({ _tag: "None" })
}

/** `<state_dir>/nats-server-PORT.conf` and `.pid`: one embedded server per port. */
export const embeddedServerFiles = (config: ClusterConfig, port: number) => ({
  configFile: join(config.stateDir, `nats-server-${port}.conf`),
  pidFile: join(config.stateDir, `nats-server-${port}.pid`)
})

/** Writes the generated server config (mode 0600; rewritten on every start, removed on stop). */
const writeServerConfig = (path: string, auth: ServerAuth) =>
  Effect.acquireRelease(
    Effect.try({
      try: () => {
        mkdirSync(dirname(path), { recursive: true, mode: 0o700 })
        // Removed first: writeFileSync keeps the mode of a file that exists.
        rmSync(path, { force: true })
        writeFileSync(
          path,
          renderServerConfig({
            header: ["Written by mlx-serving cluster for its embedded nats-server on every start; do not edit."],
            auth
          }),
          { mode: 0o600 }
        )
        return path
      },
      catch: (cause) =>
        new NatsServerError({
          message: `cannot write the embedded nats-server config ${path}: ${cause instanceof Error ? cause.message : String(cause)}`
        })
    }),
    (file) => Effect.sync(() => rmSync(file, { force: true }))
  )

/**
 * `nats.mode: embedded`: this process starts and owns a real nats-server on `nats.server_url`'s
 * host and port, and stops it when the layer's scope closes (runMain closes it on SIGINT/SIGTERM;
 * the orphan guard stops it when the process dies any other way).
 *
 * The server requires credentials (see `serverAuthFor`), read from a 0600 config file passed with
 * `-c`, or runs with `nats.server_config` as it is. The layer provides the config this process's
 * NATS clients must use: the input config with the effective credentials in `nats.user`/`pass`
 * (so `NatsTransportLive.pipe(Layer.provide(EmbeddedNatsLive))` connects with them).
 */
export const EmbeddedNatsLive: Layer.Layer<ClusterConfigService, NatsServerError | NatsCredentialsError, ClusterConfigService> =
  Layer.scoped(
    ClusterConfigService,
    Effect.gen(function* () {
      const config = yield* ClusterConfigService
      const address = yield* listenAddress(config.nats.serverUrl)
      const auth = yield* effectiveNatsAuth(config)
      const files = embeddedServerFiles(config, address.port)
      let configFile = config.nats.serverConfig
      if (configFile === null) {
        const serverAuth = serverAuthFor(auth)
        if (Either.isLeft(serverAuth)) return yield* new NatsCredentialsError({ message: serverAuth.left })
        configFile = yield* writeServerConfig(files.configFile, serverAuth.right)
      }
      if (auth.source === "generated") {
        yield* Effect.logInfo(
          `generated a NATS credential in ${auth.file} (mode 600): workers on other machines need it (docs/cluster-setup.md, "Securing the bus")`
        )
      }
      const server = yield* startNatsServer({ ...address, configFile, pidFile: files.pidFile })
      yield* Effect.logInfo(`embedded nats-server ${server.pid} listening on ${server.url}`)
      yield* Effect.addFinalizer(() => Effect.logInfo("embedded nats-server stopped"))
      return withNatsAuth(config, auth)
    })
  )
