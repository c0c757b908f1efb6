import { describe, expect, it } from "@effect/vitest"
import { Effect, Exit, Fiber, Layer, Redacted, Schema, Stream } from "effect"
import { defaultClusterConfig } from "../../src/config/schema.js"
import { NatsTransport } from "../../src/nats/nats-transport.js"
import { connectOptionsFromConfig, layer as natsLayer, toConnectionOptions } from "../../src/nats/nats-transport-live.js"
import { startNatsServer } from "../../src/nats/nats-server-process.js"
import { freePort } from "../support/nats-server.js"

describe("NATS connection options", () => {
  it("maps the config's credentials and TLS without leaking Redacted wrappers", () => {
    const base = defaultClusterConfig()
    const options = connectOptionsFromConfig({
      ...base,
      mode: "worker",
      nats: {
        ...base.nats,
        serverUrl: "nats://10.0.0.5:4222",
        user: "alice",
        pass: Redacted.make("s3cret"),
        token: Redacted.make("tok"),
        tls: { caFile: "/etc/ca.pem" }
      }
    })
    expect(options.name).toBe("mlx-cluster worker")
    const connection = toConnectionOptions(options)
    expect(connection).toMatchObject({
      servers: "nats://10.0.0.5:4222",
      user: "alice",
      pass: "s3cret",
      token: "tok",
      tls: { caFile: "/etc/ca.pem" },
      reconnect: true,
      maxReconnectAttempts: -1
    })
    expect(toConnectionOptions({ url: "nats://h:1", tls: true }).tls).toEqual({})
    expect(toConnectionOptions({ url: "nats://h:1" })).not.toHaveProperty("tls")
    expect(toConnectionOptions({ url: "nats://h:1", reconnectWaitMs: 1000 })).toMatchObject({
      reconnectTimeWait: 1000,
      reconnectJitter: 100
    })
  })

  it.live("connects to a server that requires a user and password, and works", () =>
    Effect.gen(function* () {
      const port = yield* Effect.promise(freePort)
      yield* startNatsServer({ host: "127.0.0.1", port, args: ["--user", "cluster", "--pass", "pw"] })
      const url = `nats://127.0.0.1:${port}`
      const Ping = Schema.Struct({ n: Schema.Number })
      const got = yield* Effect.gen(function* () {
        const nats = yield* NatsTransport
        const stream = yield* nats.subscribe("auth.test", Ping)
        const first = yield* Effect.fork(Stream.runHead(stream))
        yield* nats.publish("auth.test", Ping, { n: 1 })
        return yield* Fiber.join(first)
      }).pipe(Effect.provide(natsLayer({ url, user: "cluster", pass: Redacted.make("pw") })))
      expect(got._tag).toBe("Some")
      // Wrong credentials never connect: the connect loop keeps retrying, so bound it.
      const wrong = yield* Effect.exit(
        Effect.scoped(Layer.build(natsLayer({ url, user: "cluster", pass: Redacted.make("nope"), reconnectWaitMs: 50 }))).pipe(
          Effect.timeout("700 millis")
        )
      )
      expect(Exit.isFailure(wrong)).toBe(true)
    }).pipe(Effect.scoped)
  )
})
