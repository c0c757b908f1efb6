import { mkdirSync, rmSync, writeFileSync } from "node:fs"
import { dirname, join } from "node:path"
import { Effect, Either, Layer, Redacted } from "effect"
import { ClusterConfigService } from "../config/cluster-config.js"
import type { ClusterConfig } from "../config/schema.js"
import { type EffectiveNatsAuth, effectiveNatsAuth, NatsCredentialsError, withNatsAuth } from "./nats-credentials.js"
import { NatsServerError, startNatsServer } from "./nats-server-process.js"
import { renderServerConfig, type ServerAuth, type ServerCluster } from "./nats-server-config.js"
import { firstServerUrl } from "./server-urls.js"

/** Host and port of `nats.server_url` (its first URL, when it lists several), the address the embedded server listens on. */
export const listenAddress = (serverUrl: string): Effect.Effect<{ host: string; port: number }, NatsServerError> =>
  Effect.try({
    try: () => {
      const url = new URL(firstServerUrl(serverUrl))
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

/**
 * One route of `nats.cluster.routes` (`HOST:PORT`, `nats-route://HOST:PORT` or `nats://HOST:PORT`)
 * as nats-server wants it, carrying the credential the other members require: ours (every member
 * of the cluster shares the bus credential).
 */
export const routeUrl = (route: string, auth: ServerCluster["auth"]): Either.Either<string, string> => {
  let url: URL
  try {
    url = new URL(/^[a-z][a-z0-9+.-]*:\/\//i.test(route) ? route : `nats-route://${route}`)
  } catch {
    return Either.left(`nats.cluster.routes: ${route} is not HOST:PORT or a nats-route:// URL`)
  }
  if (url.hostname === "" || url.port === "") return Either.left(`nats.cluster.routes: ${route} needs a host and a port (e.g. mac-2.local:6222)`)
  const credential = auth === undefined ? "" : `${encodeURIComponent(auth.user)}:${encodeURIComponent(auth.password)}@`
  return Either.right(`nats-route://${credential}${url.host}`)
}

/**
 * The cluster block of the embedded server (issue 14): routes are checked with this process's user
 * and password, the same on every member. A token cannot do it: nats-server checks routes with a
 * user and password only.
 */
export const clusterFor = (cluster: NonNullable<ClusterConfig["nats"]["cluster"]>, auth: ServerAuth): Either.Either<ServerCluster, string> => {
  if (auth._tag === "Token") {
    return Either.left("nats.cluster needs nats.user and nats.pass (or the generated credential), not nats.token: nats-server routes cannot check a token")
  }
  const first = auth._tag === "Users" ? auth.users[0] : undefined
  const routeAuth = first === undefined ? undefined : { user: first.user, password: first.password }
  return Either.map(
    Either.all(cluster.routes.map((route) => routeUrl(route, routeAuth))),
    (routes): ServerCluster => ({ name: cluster.name, listen: cluster.listen, routes, ...(routeAuth === undefined ? {} : { auth: routeAuth }) })
  )
}

/** `<state_dir>/nats-server-PORT.conf` and `.pid`: one embedded server per port. */
export const embeddedServerFiles = (config: ClusterConfig, port: number) => ({
  configFile: join(config.stateDir, `nats-server-${port}.conf`),
  pidFile: join(config.stateDir, `nats-server-${port}.pid`)
})

/** Writes the generated server config (mode 0600; rewritten on every start, removed on stop). */
const writeServerConfig = (path: string, auth: ServerAuth, cluster: ServerCluster | undefined) =>
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
            auth,
            ...(cluster === undefined ? {} : { cluster })
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
      if (configFile !== null && config.nats.cluster !== null) {
        return yield* new NatsServerError({
          message: "nats.cluster and nats.server_config cannot both be set: put the cluster block in your nats-server config"
        })
      }
      if (configFile === null) {
        const serverAuth = serverAuthFor(auth)
        if (Either.isLeft(serverAuth)) return yield* new NatsCredentialsError({ message: serverAuth.left })
        const cluster = config.nats.cluster === null ? Either.right(undefined) : clusterFor(config.nats.cluster, serverAuth.right)
        if (Either.isLeft(cluster)) return yield* new NatsServerError({ message: cluster.left })
        configFile = yield* writeServerConfig(files.configFile, serverAuth.right, cluster.right)
      }
      if (auth.source === "generated") {
        yield* Effect.logInfo(
          `generated a NATS credential in ${auth.file} (mode 600): workers on other machines need it (docs/cluster-setup.md, "Securing the bus")`
        )
        if (config.nats.cluster !== null) {
          yield* Effect.logWarning(
            `nats.cluster: copy ${auth.file} to every other member of the NATS cluster before it starts; with a credential of its own it cannot join`
          )
        }
      }
      const server = yield* startNatsServer({ ...address, configFile, pidFile: files.pidFile })
      const member = config.nats.cluster === null ? "" : ` (NATS cluster ${config.nats.cluster.name}, routes on ${config.nats.cluster.listen})`
      yield* Effect.logInfo(`embedded nats-server ${server.pid} listening on ${server.url}${member}`)
      yield* Effect.addFinalizer(() => Effect.logInfo("embedded nats-server stopped"))
      return withNatsAuth(config, auth)
    })
  )
