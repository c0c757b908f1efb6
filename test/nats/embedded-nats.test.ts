import { describe, expect, it } from "@effect/vitest"
import { Cause, Context, Effect, Exit, Layer, Option, Redacted, Schedule } from "effect"
import { spawn, spawnSync } from "node:child_process"
import { existsSync, mkdtempSync, readFileSync, statSync, writeFileSync } from "node:fs"
import { createServer } from "node:net"
import { tmpdir } from "node:os"
import { join } from "node:path"
import { connect } from "nats"
import { ClusterConfigService } from "../../src/config/cluster-config.js"
import type { ClusterConfig } from "../../src/config/schema.js"
import { EmbeddedNatsLive, embeddedServerFiles, listenAddress, serverAuthFor } from "../../src/nats/embedded-nats.js"
import { NatsTransportLive } from "../../src/nats/nats-transport-live.js"
import { NatsTransport } from "../../src/nats/nats-transport.js"
import { findNatsServer, NatsServerError, startNatsServer } from "../../src/nats/nats-server-process.js"
import { commandLineOf, isProcessAlive, writePidFile } from "../../src/process/pid-file.js"
import { freePort } from "../support/nats-server.js"

const stateDir = () => mkdtempSync(join(tmpdir(), "embedded-nats-"))

const embeddedConfig = (port: number, dir: string, patch: (c: ClusterConfig) => ClusterConfig = (c) => c) =>
  ClusterConfigService.layerTest((c) =>
    patch({ ...c, stateDir: dir, nats: { ...c.nats, mode: "embedded", serverUrl: `nats://127.0.0.1:${port}` } })
  )

const canConnect = (port: number) =>
  Effect.promise(
    () =>
      new Promise<boolean>((resolve) => {
        import("node:net").then(({ connect }) => {
          const socket = connect({ host: "127.0.0.1", port })
          socket.once("connect", () => {
            socket.destroy()
            resolve(true)
          })
          socket.once("error", () => resolve(false))
        }, () => resolve(false))
      })
  )

/** What a raw NATS client gets from the server: "ok" or the error code. */
const tryConnect = (port: number, auth: { user?: string; pass?: string; token?: string } = {}) =>
  Effect.promise(async () => {
    try {
      const nc = await connect({ servers: `127.0.0.1:${port}`, reconnect: false, ...auth })
      await nc.close()
      return "ok"
    } catch (cause) {
      return (cause as { code?: string }).code ?? String(cause)
    }
  })

/** Builds the embedded server with `config` and runs `body` with the config it provides. */
const withEmbedded = <A>(config: Layer.Layer<ClusterConfigService>, body: (provided: ClusterConfig) => Effect.Effect<A>) =>
  Effect.scoped(
    Effect.gen(function* () {
      const context = yield* Layer.build(Layer.provide(EmbeddedNatsLive, config))
      return yield* body(Context.get(context, ClusterConfigService))
    })
  )

describe("embedded nats-server", () => {
  it.live("starts a server on the configured port and stops it with the scope", () =>
    Effect.gen(function* () {
      const port = yield* Effect.promise(freePort)
      yield* withEmbedded(embeddedConfig(port, stateDir()), () =>
        Effect.gen(function* () {
          expect(yield* canConnect(port)).toBe(true)
        })
      )
      expect(yield* canConnect(port)).toBe(false)
    })
  )

  it.live("secure by default: generates a credential in a 0600 file, requires it, never puts it on the command line, and reuses it", () =>
    Effect.gen(function* () {
      const port = yield* Effect.promise(freePort)
      const dir = stateDir()
      const file = join(dir, "nats-credentials.json")
      const first = yield* withEmbedded(embeddedConfig(port, dir), (provided) =>
        Effect.gen(function* () {
          expect(statSync(file).mode & 0o777).toBe(0o600)
          expect(statSync(dir).mode & 0o777).toBe(0o700)
          const stored = JSON.parse(readFileSync(file, "utf8")) as { user: string; password: string }
          expect(stored.user).toBe("mlx-cluster")
          expect(stored.password).toHaveLength(32)
          // The clients of this process get it through the provided config.
          expect(provided.nats.user).toBe("mlx-cluster")
          expect(provided.nats.pass === undefined ? undefined : Redacted.value(provided.nats.pass)).toBe(stored.password)
          expect(yield* tryConnect(port)).toBe("AUTHORIZATION_VIOLATION")
          expect(yield* tryConnect(port, { user: stored.user, pass: "wrong" })).toBe("AUTHORIZATION_VIOLATION")
          expect(yield* tryConnect(port, { user: stored.user, pass: stored.password })).toBe("ok")
          // `ps` shows no secret: the server reads it from its 0600 config file.
          const { configFile, pidFile } = embeddedServerFiles(provided, port)
          const pid = (JSON.parse(readFileSync(pidFile, "utf8")) as { pid: number }).pid
          const commandLine = commandLineOf(pid) ?? ""
          expect(commandLine).toContain(`-c ${configFile}`)
          expect(commandLine).not.toContain(stored.password)
          expect(statSync(configFile).mode & 0o777).toBe(0o600)
          return stored.password
        })
      )
      // The generated server config goes with the server.
      expect(existsSync(join(dir, `nats-server-${port}.conf`))).toBe(false)
      const second = yield* withEmbedded(embeddedConfig(port, dir), (provided) =>
        Effect.succeed(provided.nats.pass === undefined ? "" : Redacted.value(provided.nats.pass))
      )
      expect(second).toBe(first)
    })
  )

  it.live("the process's own NATS clients connect with the generated credential", () =>
    Effect.gen(function* () {
      const port = yield* Effect.promise(freePort)
      const flushed = yield* Effect.scoped(
        Effect.gen(function* () {
          const context = yield* Layer.build(
            NatsTransportLive.pipe(Layer.provide(EmbeddedNatsLive), Layer.provide(embeddedConfig(port, stateDir())))
          )
          yield* Context.get(context, NatsTransport).flush
          return true
        })
      ).pipe(Effect.timeout("10 seconds"))
      expect(flushed).toBe(true)
    })
  )

  it.live("requires the configured user/pass or token instead, when the config names them", () =>
    Effect.gen(function* () {
      const port = yield* Effect.promise(freePort)
      const dir = stateDir()
      yield* withEmbedded(
        embeddedConfig(port, dir, (c) => ({ ...c, nats: { ...c.nats, user: "cluster", pass: Redacted.make('p"w$x') } })),
        () =>
          Effect.gen(function* () {
            expect(yield* tryConnect(port, { user: "cluster", pass: 'p"w$x' })).toBe("ok")
            expect(yield* tryConnect(port)).toBe("AUTHORIZATION_VIOLATION")
          })
      )
      yield* withEmbedded(embeddedConfig(port, dir, (c) => ({ ...c, nats: { ...c.nats, token: Redacted.make("t0k") } })), () =>
        Effect.gen(function* () {
          expect(yield* tryConnect(port, { token: "t0k" })).toBe("ok")
          expect(yield* tryConnect(port, { token: "nope" })).toBe("AUTHORIZATION_VIOLATION")
        })
      )
      expect(existsSync(join(dir, "nats-credentials.json"))).toBe(false)
    })
  )

  it.live("runs nats.server_config as it is when set", () =>
    Effect.gen(function* () {
      const port = yield* Effect.promise(freePort)
      const dir = stateDir()
      const serverConfig = join(dir, "own.conf")
      writeFileSync(serverConfig, 'authorization { token: "from-own-config" }\n', { mode: 0o600 })
      yield* withEmbedded(embeddedConfig(port, dir, (c) => ({ ...c, nats: { ...c.nats, serverConfig } })), () =>
        Effect.gen(function* () {
          expect(yield* tryConnect(port, { token: "from-own-config" })).toBe("ok")
        })
      )
    })
  )

  it.live("refuses creds_file alone: the embedded server could not check it", () =>
    Effect.gen(function* () {
      const port = yield* Effect.promise(freePort)
      const exit = yield* Effect.exit(
        withEmbedded(embeddedConfig(port, stateDir(), (c) => ({ ...c, nats: { ...c.nats, credsFile: "/x.creds" } })), () => Effect.void)
      )
      const error = Exit.isFailure(exit) ? Option.getOrThrow(Cause.failureOption(exit.cause)) : undefined
      expect(error?.message).toContain("nats.server_config")
    })
  )

  it.live("stops a nats-server that a dead previous run left on its port, then starts", () =>
    Effect.gen(function* () {
      const port = yield* Effect.promise(freePort)
      const dir = stateDir()
      const binary = Option.getOrThrow(findNatsServer())
      // The previous run's server, unguarded, its owner gone.
      const leftover = spawn(binary, ["-a", "127.0.0.1", "-p", String(port)], { detached: true, stdio: "ignore" })
      yield* canConnect(port).pipe(Effect.repeat({ until: (up) => up, schedule: Schedule.spaced("20 millis") }))
      const deadOwner = spawnSync("true").pid ?? 999_999
      const { pidFile } = embeddedServerFiles({ stateDir: dir } as ClusterConfig, port)
      yield* writePidFile(pidFile, { pid: leftover.pid ?? -1, ownerPid: deadOwner, marker: "nats-server", startedAt: 0 })
      yield* withEmbedded(embeddedConfig(port, dir), () =>
        Effect.sync(() => {
          expect(isProcessAlive(leftover.pid ?? -1)).toBe(false)
        })
      )
    })
  )

  it("serverAuthFor: a token, else user and password, else nothing; creds_file alone is refused", () => {
    expect(serverAuthFor({ source: "config", token: Redacted.make("t") })).toMatchObject({ right: { _tag: "Token", token: "t" } })
    expect(serverAuthFor({ source: "file", user: "u", pass: Redacted.make("p") })).toMatchObject({
      right: { _tag: "Users", users: [{ user: "u", password: "p" }] }
    })
    expect(serverAuthFor({ source: "none" })).toMatchObject({ right: { _tag: "None" } })
    expect(serverAuthFor({ source: "config", credsFile: "/x" })._tag).toBe("Left")
  })

  it.live("a taken port is a clear error", () =>
    Effect.gen(function* () {
      const blocker = createServer()
      const port = yield* Effect.promise(
        () =>
          new Promise<number>((resolve) =>
            blocker.listen(0, "127.0.0.1", () => {
              const a = blocker.address()
              resolve(typeof a === "object" && a !== null ? a.port : 0)
            })
          )
      )
      const exit = yield* Effect.exit(Effect.scoped(startNatsServer({ host: "127.0.0.1", port })))
      blocker.close()
      const error = Exit.isFailure(exit) ? Option.getOrThrow(Cause.failureOption(exit.cause)) : undefined
      expect(error).toBeInstanceOf(NatsServerError)
      expect(error?.message).toContain(`port ${port}`)
      expect(error?.message).toContain("already taken")
    })
  )

  it.live("a missing binary is a clear error naming how to install it", () =>
    Effect.gen(function* () {
      const exit = yield* Effect.exit(
        Effect.scoped(startNatsServer({ host: "127.0.0.1", port: 1, binary: "/nonexistent/nats-server" }))
      )
      const error = Exit.isFailure(exit) ? Option.getOrThrow(Cause.failureOption(exit.cause)) : undefined
      expect(error?.message).toContain("apt-get install nats-server")
      expect(error?.message).toContain("brew install nats-server")
    })
  )

  it("finds nats-server in /usr/sbin when PATH lacks it, and reports absence", () => {
    expect(Option.isSome(findNatsServer({ PATH: "" }))).toBe(Option.isSome(findNatsServer()))
    expect(findNatsServer({ PATH: "/nonexistent" }).pipe(Option.map((p) => p.endsWith("nats-server")))).not.toEqual(
      Option.some(false)
    )
  })

  it.effect("reads host and port from nats.server_url, defaulting the port to 4222", () =>
    Effect.gen(function* () {
      expect(yield* listenAddress("nats://0.0.0.0:5222")).toEqual({ host: "0.0.0.0", port: 5222 })
      expect(yield* listenAddress("nats://example.local")).toEqual({ host: "example.local", port: 4222 })
      const bad = yield* Effect.flip(listenAddress("not a url"))
      expect(bad.message).toContain("nats.server_url")
    })
  )
})
