import { spawnSync } from "node:child_process"
import { mkdtempSync, readFileSync, rmSync } from "node:fs"
import { tmpdir } from "node:os"
import { join } from "node:path"
import { Effect, Exit, Scope } from "effect"
import { connect, type NatsConnection, type NatsError } from "nats"
import { afterAll, afterEach, beforeAll, expect, it } from "vitest"
import { parse } from "yaml"
import { startNatsServer } from "../../src/nats/nats-server-process.js"
import { chat, FaultCluster, getJson, request, waitUntil, workers } from "../support/fault-cluster.js"
import { freePort } from "../support/nats-server.js"

/**
 * Issue 9.2 "done when": with the nats-server config that scripts/nats-config.ts generates, a
 * process holding worker A's credentials can neither subscribe to worker B's inference subject nor
 * to `>` (nor to the token streams or the controllers' inboxes), and registering as B gets it
 * none of B's prompts; the cluster (a controller and two workers, each with its own credentials)
 * serves requests as before.
 */

const root = join(import.meta.dirname, "..", "..")

interface Bus {
  readonly dir: string
  readonly url: string
  readonly port: number
  readonly scope: Scope.CloseableScope
  /** `cluster:` keys of a node, from the generated `NAME.yaml`. */
  readonly keys: (file: string) => Record<string, unknown>
  readonly password: (user: string) => string
}

let bus: Bus | undefined
let cluster: FaultCluster | undefined
const raw: Array<NatsConnection> = []

beforeAll(async () => {
  const port = await freePort()
  const dir = mkdtempSync(join(tmpdir(), "bus-permissions-"))
  const out = join(dir, "nats")
  const generated = spawnSync(
    process.execPath,
    ["--import", "tsx", "scripts/nats-config.ts", "--workers", "wa,wb", "--out", out, "--listen", `127.0.0.1:${port}`, "--url", `nats://127.0.0.1:${port}`],
    { cwd: root, encoding: "utf8" }
  )
  if (generated.status !== 0) throw new Error(`nats-config failed: ${generated.stderr}`)
  const scope = await Effect.runPromise(Scope.make())
  await Effect.runPromise(
    Scope.extend(startNatsServer({ host: "127.0.0.1", port, configFile: join(out, "nats-server.conf") }), scope)
  )
  const passwords = JSON.parse(readFileSync(join(out, "credentials.json"), "utf8")) as Record<string, string>
  bus = {
    dir,
    port,
    url: `nats://127.0.0.1:${port}`,
    scope,
    keys: (file) => (parse(readFileSync(join(out, file), "utf8")) as { cluster: Record<string, unknown> }).cluster,
    password: (user) => passwords[user] ?? ""
  }
})

afterEach(async () => {
  await Promise.all(raw.splice(0).map((nc) => nc.close()))
  await cluster?.cleanup()
})

afterAll(async () => {
  if (bus !== undefined) {
    await Effect.runPromise(Scope.close(bus.scope, Exit.void))
    rmSync(bus.dir, { recursive: true, force: true })
  }
})

/** Subscribes and resolves with the error the server sends back, or "ok" after `waitMs`. */
const subscribeOutcome = (nc: NatsConnection, subject: string, received: Array<string>, waitMs = 500) =>
  new Promise<string>((resolve) => {
    const timer = setTimeout(() => resolve("ok"), waitMs)
    nc.subscribe(subject, {
      callback: (err: NatsError | null, msg) => {
        if (err !== null) {
          clearTimeout(timer)
          resolve(`${err.code}: ${err.message}`)
          return
        }
        received.push(`${msg.subject}: ${new TextDecoder().decode(msg.data)}`)
      }
    })
  })

it("with the generated config, worker A's credentials cannot read B's prompts, `>`, token streams or inboxes; the cluster serves normally", async () => {
  if (bus === undefined) throw new Error("no bus")
  const c = (cluster = new FaultCluster(bus.url))
  const discovery = { heartbeat_interval_ms: 200, offline_timeout_ms: 3_000, health_check_interval_ms: 500 }
  const controllerConfig = c.config({ ...bus.keys("controller-main.yaml"), discovery })
  const [controller, wa, wb] = await Promise.all([
    c.controller(controllerConfig),
    c.worker(c.config({ ...bus.keys("worker-wa.yaml"), discovery }), "wa"),
    c.worker(c.config({ ...bus.keys("worker-wb.yaml"), discovery }), "wb")
  ])
  await waitUntil(async () => (await workers(controller.url)).filter((w) => w.status === "online").length === 2, 15_000)

  // The cluster serves with every node on its own restricted credentials; both workers take requests.
  const chatUrl = `${controller.url}/v1/chat/completions`
  const before = []
  for (let i = 0; i < 6; i++) before.push(await request(chatUrl, chat(`warm-up ${i}`, 8), { signal: AbortSignal.timeout(20_000) }))
  await waitUntil(async () => {
    const all = (await getJson(`${controller.url}/api/cluster/workers`)).body as ReadonlyArray<{ metrics?: { requests: { total: number } } }>
    return all.filter((w) => (w.metrics?.requests.total ?? 0) > 0).length === 2
  }, 10_000)

  // A process with worker A's credentials.
  const rogue = await connect({ servers: bus.url, user: "worker-wa", pass: bus.password("worker-wa"), reconnect: false })
  raw.push(rogue)
  const leaked: Array<string> = []
  const outcomes = {
    otherWorkersPrompts: await subscribeOutcome(rogue, "worker.wb.inference", leaked),
    everything: await subscribeOutcome(rogue, ">", leaked),
    tokenStreams: await subscribeOutcome(rogue, "response.>", leaked),
    controllerInboxes: await subscribeOutcome(rogue, "_INBOX.>", leaked),
    registrations: await subscribeOutcome(rogue, "worker.register", leaked)
  }

  // Nor may it publish where only controllers do: cancel B's requests, send B prompts, or announce.
  const publishErrors: Array<string> = []
  void (async () => {
    for await (const status of rogue.status()) if (status.type === "error") publishErrors.push(String(status.data))
  })()
  for (const subject of ["worker.wb.cancel", "worker.wb.inference", "controller.announce"]) rogue.publish(subject, new TextEncoder().encode("{}"))
  await rogue.flush()
  await waitUntil(() => publishErrors.length >= 3, 5_000)

  // It registers as B (claiming a huge GPU and priority 1e300) and as a new id C: the server lets
  // the publish through (workers may register), but B's prompts still go to `worker.wb.inference`,
  // which only B may read, and C is not in the controller's allowed_workers.
  const { body: wbInfo } = await getJson(`${controller.url}/api/cluster/workers/wb`)
  const forged: Record<string, unknown> = {
    ...(wbInfo as Record<string, unknown>),
    hardware: { platform: "darwin", arch: "arm64", cpuCores: 8, gpuMemoryGB: 1e9, totalMemoryGB: 1e9 },
    priority: 1e300,
    timestamp: Date.now()
  }
  for (const key of ["status", "statusReason", "metrics", "lastHeartbeat", "registeredAt"]) delete forged[key]
  const encode = (value: unknown) => new TextEncoder().encode(JSON.stringify(value))
  rogue.publish("worker.register", encode(forged))
  rogue.publish("worker.register", encode({ ...forged, workerId: "wc" }))
  await rogue.flush()
  await waitUntil(async () => ((await getJson(`${controller.url}/api/cluster/workers/wb`)).body as { priority?: number }).priority === 1000, 5_000)

  const prompts = Array.from({ length: 10 }, (_, i) => `secret prompt ${i}`)
  const results = []
  for (const prompt of prompts) results.push(await request(chatUrl, chat(prompt, 8), { signal: AbortSignal.timeout(20_000) }))
  const listed = await workers(controller.url)
  const { body: wbAfter } = await getJson(`${controller.url}/api/cluster/workers/wb`)
  const logs = `${controller.cli.output()}${wa.output()}${wb.output()}`
  console.log(
    `bus permissions: rogue subscriptions: ${JSON.stringify(outcomes)}; ${results.filter((r) => r.done).length}/${prompts.length} requests done; ` +
      `${before.filter((r) => r.done).length}/${before.length} before the forgery; forged wb priority seen as ${(wbAfter as { priority?: number }).priority}, gpuMemoryGB ${(wbAfter as { hardware: { gpuMemoryGB: number } }).hardware.gpuMemoryGB}; workers listed: ${listed.map((w) => w.workerId).join(", ")}`
  )

  for (const outcome of Object.values(outcomes)) expect(outcome).toMatch(/^PERMISSIONS_VIOLATION: .*Permissions Violation for Subscription to/)
  expect(outcomes.otherWorkersPrompts).toContain('"worker.wb.inference"')
  expect(outcomes.everything).toContain('">"')
  expect(leaked).toEqual([])
  expect(publishErrors.filter((e) => e === "PERMISSIONS_VIOLATION").length).toBeGreaterThanOrEqual(3)
  for (const r of [...before, ...results]) expect(r).toMatchObject({ status: 200, done: true, error: undefined })
  // The forged registration is bounded, and the unlisted id is ignored.
  expect((wbAfter as { priority?: number }).priority).toBeLessThanOrEqual(1000)
  expect(listed.map((w) => w.workerId).sort()).toEqual(["wa", "wb"])
  expect(controller.cli.output()).toMatch(/ignoring worker.register: worker "wc" is not in controller.allowed_workers/)
  // The nodes themselves never ran into a permission: their own traffic is within their role.
  expect(logs).not.toMatch(/Permissions Violation/i)
})
