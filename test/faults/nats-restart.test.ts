import { expect, it } from "vitest"
import { chat, type ClientResult, hasExited, request, sleep, workers } from "../support/fault-cluster.js"
import { startOnline, useFaultHarness } from "../support/fault-harness.js"

const OUTAGE_MS = 2_000
const RECOVERY_BOUND_MS = 2_000

const harness = useFaultHarness()

it("the nats-server restarted under load: every process reconnects by itself and requests succeed again within 2 s", async () => {
  const c = harness.cluster()
  const config = c.config({
    // Short enough that the outage marks the workers offline: coming back needs their heartbeats.
    discovery: { heartbeat_interval_ms: 200, offline_timeout_ms: 1_500, health_check_interval_ms: 250 },
    controller: { first_token_timeout_ms: 3_000, stream_idle_timeout_ms: 3_000, request_timeout_ms: 10_000 },
    worker: { max_concurrent: 8, engine: { synthetic: { tokens_per_second: 100, first_token_ms: 10 } } }
  })
  const { controller } = await startOnline(c, config, ["w1", "w2"])
  const url = `${controller.url}/v1/chat/completions`

  // Load: 4 clients alternating streaming and non-streaming requests, each bounded in time.
  const results: Array<ClientResult> = []
    const client = async (i: number) => {
    for (let n = 0; !harness.stopping(); n++) {
      const r = await request(url, chat(`client ${i} request ${n}`, 20, n % 2 === 0), { signal: AbortSignal.timeout(15_000) })
      results.push(r)
      if (!r.done) await sleep(50)
    }
  }
  const loops = Array.from({ length: 4 }, (_, i) => client(i))
  await sleep(1_500)
  const beforeOutage = results.filter((r) => r.done).length

  const stoppedAt = Date.now()
  await harness.nats().stop()
  await sleep(OUTAGE_MS)
  await harness.nats().start()
  const backAt = Date.now()

  // Probes, one every 50 ms, each on its own: the first whole answer after the server's return.
  const probes: Array<Promise<ClientResult>> = []
  let firstOkMs: number | undefined
  while (firstOkMs === undefined && Date.now() - backAt < 10_000) {
    probes.push(
      request(url, chat("probe after the restart", 16, false), { signal: AbortSignal.timeout(10_000) }).then((r) => {
        if (r.status === 200 && r.done && r.text.length > 0) firstOkMs = Math.min(firstOkMs ?? Infinity, r.endedAt - backAt)
        return r
      })
    )
    await sleep(50)
  }
  await sleep(1_000)
  harness.stopLoad()
  await Promise.all([...loops, ...probes])

  const afterRecovery = results.filter((r) => r.startedAt > backAt + (firstOkMs ?? 0))
  const failedDuringOutage = results.filter((r) => !r.done && r.endedAt >= stoppedAt).length
  console.log(
    `nats restart: ${beforeOutage} requests served before, outage ${backAt - stoppedAt} ms, ${failedDuringOutage} failed meanwhile, ` +
      `first whole answer ${firstOkMs ?? "never"} ms after the server's return (bound ${RECOVERY_BOUND_MS} ms), ` +
      `${afterRecovery.filter((r) => r.done).length}/${afterRecovery.length} load requests succeeded after it`
  )

  expect(beforeOutage).toBeGreaterThan(0)
  expect(firstOkMs).toBeDefined()
  expect(firstOkMs).toBeLessThanOrEqual(RECOVERY_BOUND_MS)
  // Nothing hung: every request ended by an answer, not by the client's timeout.
  expect(results.filter((r) => r.thrown !== undefined)).toEqual([])
  // The load is served again, and nobody crashed.
  expect(afterRecovery.filter((r) => r.done).length).toBeGreaterThan(0)
  expect(c.alive().length).toBe(3)
  expect(hasExited(controller.cli)).toBe(false)
  expect((await workers(controller.url)).map((w) => [w.workerId, w.status])).toEqual([
    ["w1", "online"],
    ["w2", "online"]
  ])
  expect(controller.cli.output()).toMatch(/NATS reconnected/)
})
