import { describe, expect, it } from "@effect/vitest"
import { mkdtempSync, readFileSync } from "node:fs"
import { tmpdir } from "node:os"
import { join } from "node:path"
import { Cause, Context, Effect, Either, Exit, Fiber, Layer, Option, Redacted, Schema, Stream } from "effect"
import { ClusterConfigService } from "../../src/config/cluster-config.js"
import { type ClusterConfig, ClusterConfig as ClusterConfigSchema, defaultClusterConfig } from "../../src/config/schema.js"
import { clusterFor, EmbeddedNatsLive, embeddedServerFiles, listenAddress, routeUrl } from "../../src/nats/embedded-nats.js"
import { runsEmbeddedServer } from "../../src/nats/nats-credentials.js"
import { renderServerConfig } from "../../src/nats/nats-server-config.js"
import { NatsTransportLive, toConnectionOptions } from "../../src/nats/nats-transport-live.js"
import { NatsTransport } from "../../src/nats/nats-transport.js"
import { firstServerUrl, safeUrl, serverUrls } from "../../src/nats/server-urls.js"
import { freePort, validateWithNatsServer } from "../support/nats-server.js"

/** Issue 14: a comma-separated `nats.server_url`, and the embedded server as a NATS cluster member. */

describe("nats.server_url with several servers", () => {
  it("splits on commas, trims, keeps the order; the first is the embedded server's address; logs never show credentials", () => {
    expect(serverUrls("nats://a:4222")).toEqual(["nats://a:4222"])
    expect(serverUrls(" nats://a:4222 , nats://b:4223,, nats://c:4224 ")).toEqual(["nats://a:4222", "nats://b:4223", "nats://c:4224"])
    expect(firstServerUrl("nats://0.0.0.0:4222,nats://b:4222")).toBe("nats://0.0.0.0:4222")
    expect(safeUrl("nats://u:secret@a:4222,nats://b:4223")).toBe("nats://a:4222,nats://b:4223")
    expect(safeUrl("u:secret@a:4222")).toBe("a:4222")
    expect(safeUrl("a:4222")).toBe("a:4222")
    // With a scheme but not a URL: still nothing before the `@`.
    expect(safeUrl("nats://u:secret@[bad:4222")).toBe("[bad:4222")
  })

  it("a list becomes the client's servers, tried in the order given; one URL stays as it was", () => {
    expect(toConnectionOptions({ url: "nats://a:4222,nats://b:4222" })).toMatchObject({
      servers: ["nats://a:4222", "nats://b:4222"],
      noRandomize: true,
      reconnect: true,
      maxReconnectAttempts: -1
    })
    const single = toConnectionOptions({ url: "nats://a:4222" })
    expect(single.servers).toBe("nats://a:4222")
    expect(single).not.toHaveProperty("noRandomize")
  })

  it.effect("the embedded server listens on the first URL's host and port", () =>
    Effect.gen(function* () {
      expect(yield* listenAddress("nats://127.0.0.1:5001,nats://mac-2.local:4222")).toEqual({ host: "127.0.0.1", port: 5001 })
    })
  )
})

describe("nats.cluster: the embedded server's cluster block", () => {
  const users = { _tag: "Users", users: [{ user: "mlx-cluster", password: "p/w:x" }] } as const

  it("routes carry the bus credential, from HOST:PORT or a nats-route:// URL; a bad route is a clear error", () => {
    const auth = { user: "mlx-cluster", password: "p/w:x" }
    expect(routeUrl("mac-2.local:6222", auth)).toEqual(Either.right("nats-route://mlx-cluster:p%2Fw%3Ax@mac-2.local:6222"))
    expect(routeUrl("nats-route://10.0.0.3:6222", auth)).toEqual(Either.right("nats-route://mlx-cluster:p%2Fw%3Ax@10.0.0.3:6222"))
    expect(routeUrl("nats://old:pw@10.0.0.3:7000", undefined)).toEqual(Either.right("nats-route://10.0.0.3:7000"))
    expect(Either.isLeft(routeUrl("mac-2.local", auth))).toBe(true)
    expect(Either.isLeft(routeUrl("::::", auth))).toBe(true)
  })

  it("renders a cluster block that nats-server 2.9 accepts; a token cannot check routes", () => {
    const cluster = Either.getOrThrow(
      clusterFor({ name: "mlx-cluster", listen: "0.0.0.0:6222", routes: ["mac-2.local:6222", "mac-3.local:6222"] }, users)
    )
    expect(cluster.auth).toEqual({ user: "mlx-cluster", password: "p/w:x" })
    const text = renderServerConfig({ auth: users, cluster })
    expect(text).toContain('cluster {\n  name: "mlx-cluster"\n  listen: "0.0.0.0:6222"')
    expect(text).toContain('routes: ["nats-route://mlx-cluster:p%2Fw%3Ax@mac-2.local:6222", "nats-route://mlx-cluster:p%2Fw%3Ax@mac-3.local:6222"]')
    const checked = validateWithNatsServer(text)
    expect(checked.output).toContain("is valid")
    const token = clusterFor({ name: "c", listen: "0.0.0.0:6222", routes: [] }, { _tag: "Token", token: "t" })
    expect(Either.isLeft(token) ? token.left : "").toContain("nats.token")
  })

  it("decodes from the config with defaults; a worker-only process embeds a server only as a cluster member", () => {
    const base = defaultClusterConfig()
    expect(base.nats.cluster).toBeNull()
    const decoded = Schema.decodeUnknownSync(ClusterConfigSchema)({ nats: { cluster: { routes: ["b:6222"] } } })
    expect(decoded.nats.cluster).toEqual({ name: "mlx-cluster", listen: "0.0.0.0:6222", routes: ["b:6222"] })
    const worker: ClusterConfig = { ...base, mode: "worker" }
    expect(runsEmbeddedServer(worker)).toBe(false)
    expect(runsEmbeddedServer({ ...worker, nats: { ...worker.nats, cluster: decoded.nats.cluster } })).toBe(true)
    expect(runsEmbeddedServer({ ...worker, nats: { ...worker.nats, mode: "external", cluster: decoded.nats.cluster } })).toBe(false)
    expect(runsEmbeddedServer({ ...base, mode: "controller" })).toBe(true)
  })
})

const Ping = Schema.Struct({ n: Schema.Number })

/** A process's NATS as `roles.ts` builds it for `config`: the embedded server, then a connection to it. */
const memberLayer = (config: ClusterConfig) =>
  Layer.merge(NatsTransportLive, EmbeddedNatsLive).pipe(Layer.provide(ClusterConfigService.layer(config)))

const member = (dir: string, port: number, routePort: number, otherRoutePort: number, mode: ClusterConfig["mode"] = "controller"): ClusterConfig => {
  const base = defaultClusterConfig()
  return {
    ...base,
    mode,
    stateDir: dir,
    nats: {
      ...base.nats,
      mode: "embedded",
      serverUrl: `nats://127.0.0.1:${port}`,
      user: "mlx-cluster",
      pass: Redacted.make("shared-secret"),
      cluster: { name: "test-cluster", listen: `127.0.0.1:${routePort}`, routes: [`127.0.0.1:${otherRoutePort}`, `127.0.0.1:${routePort}`] }
    }
  }
}

describe("embedded servers forming one NATS cluster (real nats-servers)", () => {
  it.live("two processes' embedded servers route to each other: a message published on one reaches a subscriber on the other; a worker-only member embeds too", () =>
    Effect.gen(function* () {
      const [p1, p2, r1, r2] = yield* Effect.promise(() => Promise.all([freePort(), freePort(), freePort(), freePort()]))
      const dir1 = mkdtempSync(join(tmpdir(), "nats-member-"))
      const dir2 = mkdtempSync(join(tmpdir(), "nats-member-"))
      const a = member(dir1, p1, r1, r2)
      const b = member(dir2, p2, r2, r1, "worker")
      const got = yield* Effect.scoped(
        Effect.gen(function* () {
          const one = Context.get(yield* Layer.build(memberLayer(a)), NatsTransport)
          const two = Context.get(yield* Layer.build(memberLayer(b)), NatsTransport)
          const written = readFileSync(embeddedServerFiles(a, p1).configFile, "utf8")
          expect(written).toContain(`nats-route://mlx-cluster:shared-secret@127.0.0.1:${r2}`)
          const stream = yield* two.subscribe("cluster.test", Ping)
          yield* two.flush
          const first = yield* Effect.fork(Stream.runHead(stream))
          // Interest crosses the route shortly after the routes connect: publish until it arrives.
          for (let i = 0; i < 100 && Option.isNone(yield* Fiber.poll(first)); i++) {
            yield* one.publish("cluster.test", Ping, { n: i })
            yield* Effect.sleep("50 millis")
          }
          return yield* Fiber.join(first)
        })
      )
      expect(Option.isSome(got)).toBe(true)
    })
  )

  it.live("nats.cluster with nats.server_config is refused with a clear error", () =>
    Effect.gen(function* () {
      const [p1, r1] = yield* Effect.promise(() => Promise.all([freePort(), freePort()]))
      const config = member(mkdtempSync(join(tmpdir(), "nats-member-")), p1, r1, r1)
      const exit = yield* Effect.exit(
        Effect.scoped(Layer.build(EmbeddedNatsLive.pipe(Layer.provide(ClusterConfigService.layer({ ...config, nats: { ...config.nats, serverConfig: "/tmp/x.conf" } })))))
      )
      const error = Exit.isFailure(exit) ? Option.getOrThrow(Cause.failureOption(exit.cause)) : undefined
      expect(error?.message).toContain("nats.cluster and nats.server_config")
    })
  )
})
