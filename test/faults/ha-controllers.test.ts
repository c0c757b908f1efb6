import { expect, it } from "vitest"
import { chat, type ClientResult, type Controller, type FaultCluster, request, sleep, waitUntil, workers } from "../support/fault-cluster.js"
import { useFaultHarness } from "../support/fault-harness.js"
import { counterValue, watchHeartbeats } from "../support/ha.js"

/**
 * Issue 14, several stateless controllers on one bus: they share the workers without piling onto
 * them, and one of them dying costs only the requests it owned.
 */

const WORKER_IDS = ["w1", "w2", "w3"]
const MAX_CONCURRENT = 2

const harness = useFaultHarness()

/**
 * Two controllers and the three workers (max_concurrent 2) on one config, resolved once both
 * controllers list every worker online. Load shedding (429 overloaded past 500 ms of event-loop
 * lag) is another feature: on 2 cores shared with other test runs it would fire at random and blur
 * what these tests measure, so it is off.
 */
const startTwoControllers = async (c: FaultCluster, heartbeatIntervalMs: number, tokensPerSecond: number): Promise<readonly [Controller, Controller]> => {
  const config = c.config({
    controller: { overload: { max_event_loop_lag_ms: 0 } },
    discovery: { heartbeat_interval_ms: heartbeatIntervalMs },
    worker: { max_concurrent: MAX_CONCURRENT, engine: { synthetic: { tokens_per_second: tokensPerSecond, first_token_ms: 10 } } }
  })
  const [a, b] = await Promise.all([c.controller(config), c.controller(config), ...WORKER_IDS.map((id) => c.worker(config, id))])
  await waitUntil(async () => (await allOnline(a)) && (await allOnline(b)), 15_000)
  return [a, b]
}

const allOnline = async (controller: Controller) =>
  (await workers(controller.url)).filter((w) => w.status === "online").length === WORKER_IDS.length

const ok = (r: ClientResult) => r.status === 200 && r.done && r.error === undefined && r.thrown === undefined && r.afterEnd === 0

it("two controllers, three workers (max_concurrent 2): 40 concurrent streams over both all succeed, none 503, and no worker ever runs more than 2 at once", async () => {
  const c = harness.cluster()
  const [a, b] = await startTwoControllers(c, 1_000, 60)
  const beats = await watchHeartbeats(harness.nats().url)

  // 40 streams at once, 20 per controller: each controller alone sees 6 free slots, together 6.
  const startedAt = Date.now()
  const results = await Promise.all(
    Array.from({ length: 40 }, (_, i) =>
      request(`${(i % 2 === 0 ? a : b).url}/v1/chat/completions`, chat(`ha stream ${i}`, 24), { signal: AbortSignal.timeout(45_000) })
    )
  )
  const elapsedMs = Date.now() - startedAt
  // The last heartbeats (regular ones every second) carry the last peaks and totals.
  await sleep(1_500)
  await beats.close()
  const requeued = [await counterValue(a.url, "mlx_cluster_requeues_total"), await counterValue(b.url, "mlx_cluster_requeues_total")]
  const peak = Object.fromEntries(beats.peak())
  const totals = Object.fromEntries(beats.totals())
  const firstChunk = results.map((r) => (r.firstChunkAt ?? r.endedAt) - r.startedAt).sort((x, y) => x - y)
  console.log(
    `two controllers: 40 streams in ${elapsedMs} ms, ${results.filter(ok).length} succeeded, ` +
      `statuses ${JSON.stringify([...new Set(results.map((r) => r.status))])}, busy refusals sent back to the queue: ${requeued.join(" + ")}, ` +
      `worker peaks (own heartbeats) ${JSON.stringify(peak)}, accepted per worker ${JSON.stringify(totals)}, ` +
      `first chunk p50 ${firstChunk[20]} ms / max ${firstChunk[39]} ms`
  )

  expect(results.filter((r) => !ok(r)).map((r) => ({ status: r.status, error: r.error, thrown: r.thrown }))).toEqual([])
  expect(results.every((r) => r.tokens === 24)).toBe(true)
  // From the workers' side: never more than max_concurrent at once, and the cluster was full.
  for (const id of WORKER_IDS) expect(peak[id]).toBeLessThanOrEqual(MAX_CONCURRENT)
  expect(Math.max(...Object.values(peak))).toBe(MAX_CONCURRENT)
  // Each request ran exactly once: the workers accepted 40 in all.
  expect(Object.values(totals).reduce((x, y) => x + y, 0)).toBe(40)
  expect(c.alive().length).toBe(5)
})

it("SIGKILL one of two controllers under load: the other keeps serving with no failed request of its own; clients that retry on it succeed", async () => {
  const c = harness.cluster()
  const [victim, survivor] = await startTwoControllers(c, 500, 40)

  // 8 clients, half on each controller, each streaming 30-token answers (~0.75 s) back to back; a
  // client whose controller fails it (connection refused or cut) retries the request once on the other.
  interface Outcome {
    readonly controller: "victim" | "survivor"
    readonly result: ClientResult
    readonly retry?: ClientResult
  }
  const outcomes: Array<Outcome> = []
  const client = async (i: number) => {
    const home = i % 2 === 0 ? victim : survivor
    for (let n = 0; !harness.stopping(); n++) {
      const body = chat(`client ${i} request ${n}`, 30)
      const result = await request(`${home.url}/v1/chat/completions`, body, { signal: AbortSignal.timeout(20_000) })
      if (ok(result) || home === survivor) {
        outcomes.push({ controller: home === victim ? "victim" : "survivor", result })
        continue
      }
      const retry = await request(`${survivor.url}/v1/chat/completions`, body, { signal: AbortSignal.timeout(20_000) })
      outcomes.push({ controller: "victim", result, retry })
    }
  }
  const loops = Array.from({ length: 8 }, (_, i) => client(i))
  await waitUntil(() => outcomes.filter((o) => o.controller === "victim" && ok(o.result)).length >= 4, 20_000)

  const killedAt = Date.now()
  victim.cli.process.kill("SIGKILL")
  await victim.cli.exited
  // Let the survivor serve everyone for a while, the orphans of the dead controller included.
  await sleep(4_000)
  harness.stopLoad()
  await Promise.all(loops)

  const survivorOwned = outcomes.filter((o) => o.controller === "survivor")
  const failedOnSurvivor = survivorOwned.filter((o) => !ok(o.result))
  const cut = outcomes.filter((o) => o.controller === "victim" && !ok(o.result))
  const retried = cut.filter((o) => o.retry !== undefined)
  const afterKill = survivorOwned.filter((o) => o.result.startedAt > killedAt)
  const beforeKill = cut.filter((o) => o.result.endedAt < killedAt)
  const firstRetryOk = retried
    .filter((o) => o.result.endedAt >= killedAt && o.retry !== undefined && ok(o.retry))
    .map((o) => (o.retry?.endedAt ?? 0) - killedAt)
    .sort((x, y) => x - y)[0]
  console.log(
    `controller SIGKILL: ${outcomes.length} requests; the survivor owned ${survivorOwned.length} (${afterKill.length} after the kill), ` +
      `${failedOnSurvivor.length} of them failed; the dead controller's clients saw ${cut.length} failures ` +
      `(${cut.filter((o) => o.result.tokens > 0).length} cut mid-stream, the rest refused; ${beforeKill.length} before the kill: ` +
      `${JSON.stringify(beforeKill.map((o) => o.result.error?.code ?? o.result.thrown ?? o.result.status))}), ` +
      `${retried.filter((o) => o.retry !== undefined && ok(o.retry)).length}/${retried.length} retries on the survivor succeeded, ` +
      `the first ${firstRetryOk ?? "never"} ms after the kill`
  )

  expect(failedOnSurvivor.map((o) => ({ status: o.result.status, error: o.result.error, thrown: o.result.thrown }))).toEqual([])
  expect(afterKill.length).toBeGreaterThan(0)
  expect(cut.length).toBeGreaterThan(0)
  expect(retried.every((o) => o.retry !== undefined && ok(o.retry))).toBe(true)
  expect(c.alive().length).toBe(4)
})
