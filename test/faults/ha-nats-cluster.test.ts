import { afterAll, beforeAll, expect, it } from "vitest"
import { chat, type ClientResult, request, sleep, waitUntil, workers } from "../support/fault-cluster.js"
import { useFaultHarness } from "../support/fault-harness.js"
import { watchHeartbeats } from "../support/ha.js"
import { startTestNatsCluster, type TestNatsCluster } from "../support/nats-cluster.js"

/**
 * Issue 14, a clustered bus: three real nats-servers with routes on loopback (A, B, C). The
 * controller connects to A, two workers to B, one to C, each with the whole list in
 * `nats.server_url` (its own node first). Node B is SIGKILLed under load.
 */

const RECONNECT_BOUND_MS = 2_000

const harness = useFaultHarness()
let bus: TestNatsCluster | undefined

beforeAll(async () => {
  bus = await startTestNatsCluster(3)
})
afterAll(async () => {
  await bus?.stop()
})

it("a 3-node NATS cluster, node B SIGKILLed under load: its workers reconnect to A or C within 2 s, requests succeed again, no stream hangs", async () => {
  if (bus === undefined) throw new Error("no NATS cluster")
  const [nodeA, nodeB, nodeC] = bus.nodes
  if (nodeA === undefined || nodeB === undefined || nodeC === undefined) throw new Error("three nodes expected")
  const c = harness.cluster()
  const common = {
    // A worker cut off for the reconnect must not be declared offline meanwhile.
    discovery: { heartbeat_interval_ms: 250, offline_timeout_ms: 4_000, health_check_interval_ms: 250 },
    controller: { first_token_timeout_ms: 3_000, stream_idle_timeout_ms: 3_000, request_timeout_ms: 15_000 },
    worker: { max_concurrent: 4, engine: { synthetic: { tokens_per_second: 50, first_token_ms: 10 } } }
  }
  const onA = c.config({ ...common, nats: { server_url: bus.serverUrlFor(0) } })
  const onB = c.config({ ...common, nats: { server_url: bus.serverUrlFor(1) } })
  const onC = c.config({ ...common, nats: { server_url: bus.serverUrlFor(2) } })
  const [controller, b1, b2, c1] = await Promise.all([c.controller(onA), c.worker(onB, "b1"), c.worker(onB, "b2"), c.worker(onC, "c1")])
  for (const w of [b1, b2]) expect(w.output()).toContain(`connected to NATS at ${nodeB.url} (of `)
  expect(c1.output()).toContain(`connected to NATS at ${nodeC.url} (of `)
  expect(controller.cli.output()).toContain(`connected to NATS at ${nodeA.url} (of `)
  await waitUntil(async () => (await workers(controller.url)).filter((w) => w.status === "online").length === 3, 15_000)
  const beats = await watchHeartbeats([nodeA.url, nodeC.url])

  // Load: 8 clients streaming 40-token answers (~0.8 s) back to back through the controller on A.
  const results: Array<ClientResult> = []
  const client = async (i: number) => {
    for (let n = 0; !harness.stopping(); n++) {
      results.push(await request(`${controller.url}/v1/chat/completions`, chat(`client ${i} request ${n}`, 40), { signal: AbortSignal.timeout(20_000) }))
    }
  }
  const loops = Array.from({ length: 8 }, (_, i) => client(i))
  await waitUntil(() => results.filter((r) => r.done).length >= 8, 20_000)
  await waitUntil(() => (beats.totals().get("b1") ?? 0) > 0 && (beats.totals().get("b2") ?? 0) > 0, 10_000)
  const totalsAtKill = new Map(beats.totals())

  const killedAt = Date.now()
  process.kill(nodeB.pid() ?? -1, "SIGKILL")
  const reconnected = await Promise.all(
    [b1, b2].map(async (w) => {
      await w.waitFor(new RegExp(`NATS reconnected to (${nodeA.url}|${nodeC.url})`), 10_000)
      return Date.now() - killedAt
    })
  )
  // The B workers serve again once their accepted counts grow past what they were at the kill.
  const servedAgainMs = await waitUntil(
    () => ["b1", "b2"].every((id) => (beats.totals().get(id) ?? 0) > (totalsAtKill.get(id) ?? 0)),
    10_000,
    10
  )
  await sleep(2_000)
  harness.stopLoad()
  await Promise.all(loops)
  await beats.close()

  const afterKill = results.filter((r) => r.startedAt > killedAt)
  const failed = results.filter((r) => !r.done)
  const firstOkAfterKill = afterKill.filter((r) => r.done).map((r) => r.endedAt - killedAt).sort((x, y) => x - y)[0]
  const inFlightAtKill = results.filter((r) => r.startedAt < killedAt && r.endedAt > killedAt)
  console.log(
    `NATS node B SIGKILL: ${results.length} requests (${inFlightAtKill.length} in flight at the kill: ` +
      `${inFlightAtKill.filter((r) => r.done).length} finished, ${inFlightAtKill.filter((r) => !r.done).length} ended with an error); ` +
      `B's workers reconnected to A or C after ${reconnected.join(" and ")} ms (bound ${RECONNECT_BOUND_MS} ms) and served again within ${servedAgainMs} ms; ` +
      `${failed.length} requests failed in all (codes: ${[...new Set(failed.map((r) => r.error?.code ?? r.thrown ?? r.status))].join(", ") || "none"}); ` +
      `${afterKill.filter((r) => r.done).length}/${afterKill.length} requests started after the kill succeeded, the first ${firstOkAfterKill ?? "never"} ms after it`
  )

  for (const ms of reconnected) expect(ms).toBeLessThanOrEqual(RECONNECT_BOUND_MS)
  // None hangs: every request ended with an answer — [DONE], an error chunk or an error status — not by the client's timeout.
  expect(results.filter((r) => r.thrown !== undefined).map((r) => r.thrown)).toEqual([])
  for (const r of failed) expect(r.error?.code).toEqual(expect.any(String))
  expect(afterKill.filter((r) => r.done).length).toBeGreaterThan(0)
  expect((await workers(controller.url)).map((w) => [w.workerId, w.status])).toEqual([
    ["b1", "online"],
    ["b2", "online"],
    ["c1", "online"]
  ])
  expect(c.alive().length).toBe(4)
})
