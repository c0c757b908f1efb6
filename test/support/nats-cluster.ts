import { Effect, Exit, Scope } from "effect"
import { mkdtempSync, rmSync, writeFileSync } from "node:fs"
import { tmpdir } from "node:os"
import { join } from "node:path"
import { type RunningNatsServer, startNatsServer } from "../../src/nats/nats-server-process.js"
import { renderServerConfig } from "../../src/nats/nats-server-config.js"
import { freePort } from "./nats-server.js"

/** One member of a test NATS cluster: a real nats-server with routes to the others. */
export interface ClusterNode {
  readonly name: string
  readonly url: string
  /** The server's pid while it runs (SIGKILL it to kill the node). */
  readonly pid: () => number | undefined
  readonly stop: () => Promise<void>
}

export interface TestNatsCluster {
  readonly nodes: ReadonlyArray<ClusterNode>
  /** `nats.server_url` for a process that should prefer `first`: that node's URL, then the others'. */
  readonly serverUrlFor: (first: number) => string
  readonly stop: () => Promise<void>
}

/**
 * `size` real nats-servers on loopback that form one NATS cluster (issue 14): each listens for
 * clients on a free port and for routes on another, with routes to every member (its own is
 * ignored by nats-server). Resolves once every server is ready and has a route to each other one.
 */
export const startTestNatsCluster = async (size: number, name = "test-cluster"): Promise<TestNatsCluster> => {
  const dir = mkdtempSync(join(tmpdir(), "nats-cluster-"))
  const ports = await Promise.all(Array.from({ length: size }, () => freePort()))
  const routePorts = await Promise.all(Array.from({ length: size }, () => freePort()))
  const routes = routePorts.map((p) => `nats-route://127.0.0.1:${p}`)
  const running: Array<{ scope: Scope.CloseableScope | undefined; server: RunningNatsServer | undefined }> = []
  for (let i = 0; i < size; i++) {
    const configFile = join(dir, `node-${i}.conf`)
    writeFileSync(
      configFile,
      renderServerConfig({ auth: { _tag: "None" }, cluster: { name, listen: `127.0.0.1:${routePorts[i] ?? 0}`, routes } })
    )
    const scope = await Effect.runPromise(Scope.make())
    const server = await Effect.runPromise(
      Scope.extend(startNatsServer({ host: "127.0.0.1", port: ports[i] ?? 0, configFile, stopGraceMs: 2_000 }), scope)
    )
    running.push({ scope, server })
  }
  // Routes connect within a second or so: wait until each server lists all the others.
  await waitForRoutes(ports, size - 1)
  const stopNode = async (i: number) => {
    const r = running[i]
    const scope = r?.scope
    if (r === undefined || scope === undefined) return
    r.scope = undefined
    r.server = undefined
    await Effect.runPromise(Scope.close(scope, Exit.void))
  }
  const nodes: Array<ClusterNode> = ports.map((port, i) => ({
    name: String.fromCharCode(65 + i),
    url: `nats://127.0.0.1:${port}`,
    pid: () => running[i]?.server?.pid,
    stop: () => stopNode(i)
  }))
  return {
    nodes,
    serverUrlFor: (first) => [nodes[first], ...nodes.filter((_, i) => i !== first)].map((n) => n?.url ?? "").join(","),
    stop: async () => {
      await Promise.all(nodes.map((_, i) => stopNode(i)))
      rmSync(dir, { recursive: true, force: true })
    }
  }
}

/** Waits until every server reports `routes` routes, by asking each with a raw client's INFO. */
const waitForRoutes = async (ports: ReadonlyArray<number>, routes: number) => {
  const { connect } = await import("nats")
  const end = Date.now() + 15_000
  for (const port of ports) {
    while (true) {
      const nc = await connect({ servers: `127.0.0.1:${port}` })
      // The INFO a client gets lists the cluster's client URLs once the routes are up.
      const urls = nc.info?.connect_urls ?? []
      await nc.close()
      if (urls.length >= routes + 1) break
      if (Date.now() > end) throw new Error(`nats-server on ${port} has ${urls.length - 1} routes, expected ${routes}`)
      await new Promise((resolve) => setTimeout(resolve, 100))
    }
  }
}
