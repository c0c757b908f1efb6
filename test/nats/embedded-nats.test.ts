import { describe, expect, it } from "@effect/vitest"
import { Cause, Effect, Exit, Layer, Option, Redacted } from "effect"
import { createServer } from "node:net"
import { ClusterConfigService } from "../../src/config/cluster-config.js"
import { credentialArgs, EmbeddedNatsLive, listenAddress } from "../../src/nats/embedded-nats.js"
import { NatsTransportLive } from "../../src/nats/nats-transport-live.js"
import { NatsTransport } from "../../src/nats/nats-transport.js"
import { findNatsServer, NatsServerError, startNatsServer } from "../../src/nats/nats-server-process.js"
import { freePort } from "../support/nats-server.js"

const configAt = (url: string) =>
  ClusterConfigService.layerTest((c) => ({ ...c, nats: { ...c.nats, mode: "embedded", serverUrl: url } }))


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

describe("embedded nats-server", () => {
  it.live("starts a server on the configured port and stops it with the scope", () =>
    Effect.gen(function* () {
      const port = yield* Effect.promise(freePort)
      yield* Effect.scoped(
        Effect.gen(function* () {
          yield* Layer.build(Layer.provide(EmbeddedNatsLive, configAt(`nats://127.0.0.1:${port}`)))
          expect(yield* canConnect(port)).toBe(true)
        })
      )
      expect(yield* canConnect(port)).toBe(false)
    })
  )

  it.live("requires the configured credentials, which the configured clients then use", () =>
    Effect.gen(function* () {
      const port = yield* Effect.promise(freePort)
      const config = ClusterConfigService.layerTest((c) => ({
        ...c,
        nats: { ...c.nats, mode: "embedded", serverUrl: `nats://127.0.0.1:${port}`, user: "cluster", pass: Redacted.make("pw") }
      }))
      const flushed = yield* Effect.scoped(
        Effect.gen(function* () {
          const context = yield* Layer.build(NatsTransportLive.pipe(Layer.provide(EmbeddedNatsLive), Layer.provide(config)))
          const nats = yield* Effect.provide(NatsTransport, context)
          yield* nats.flush
          return true
        })
      )
      expect(flushed).toBe(true)
    })
  )

  it.effect("turns nats.user/pass or nats.token into nats-server arguments", () =>
    Effect.gen(function* () {
      const config = yield* ClusterConfigService
      expect(credentialArgs(config)).toEqual([])
      expect(credentialArgs({ ...config, nats: { ...config.nats, user: "u", pass: Redacted.make("p") } })).toEqual([
        "--user",
        "u",
        "--pass",
        "p"
      ])
      expect(credentialArgs({ ...config, nats: { ...config.nats, token: Redacted.make("t") } })).toEqual(["--auth", "t"])
    }).pipe(Effect.provide(ClusterConfigService.layerTest()))
  )

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
