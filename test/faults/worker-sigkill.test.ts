import { expect, it } from "vitest"
import {
  chat,
  type ClientResult,
  getJson,
  hasExited,
  request,
  sleep,
  SYNTHETIC_MODEL,
  waitUntil,
  workers
} from "../support/fault-cluster.js"
import { startOnline, useFaultHarness } from "../support/fault-harness.js"
import { RequestId } from "../../src/domain/ids.js"
import { planSynthetic } from "../../src/worker/engines/synthetic-engine.js"

const OFFLINE_TIMEOUT_MS = 1_500
const HEALTH_CHECK_MS = 500
const CLIENTS = 12
const MAX_TOKENS = 60

const harness = useFaultHarness()

// Issue 13 changed what a client sees: a stream cut by the kill continues on another worker (the
// synthetic engine continues answers), and the worker is found gone by a probe within about a
// second, long before offline_timeout_ms. test/faults/worker-migration.test.ts has the single-stream
// measurements and the migration_limit: 0 case (the error chunk).
it("a worker SIGKILLed under steady load: every request succeeds — streams it cut continue on the others — and it is offline (no responders) within ~1 s", async () => {
  const c = harness.cluster()
  const config = c.config({
    discovery: { heartbeat_interval_ms: 200, offline_timeout_ms: OFFLINE_TIMEOUT_MS, health_check_interval_ms: HEALTH_CHECK_MS },
    controller: { stream_idle_timeout_ms: 10_000, first_token_timeout_ms: 10_000 },
    worker: { max_concurrent: 4, engine: { synthetic: { tokens_per_second: 40, first_token_ms: 20 } } }
  })
  const { controller, workers: [, victim] } = await startOnline(c, config, ["w1", "w2", "w3"])
  const url = controller.url

  // Steady load: 12 clients, each streaming 60-token answers (~1.5 s) back to back; 12 slots in all.
  const results: Array<ClientResult & { readonly prompt: string }> = []
    const client = async (i: number) => {
    for (let n = 0; !harness.stopping(); n++) {
      const prompt = `client ${i} request ${n}`
      const result = await request(`${url}/v1/chat/completions`, chat(prompt, MAX_TOKENS), { signal: AbortSignal.timeout(20_000) })
      results.push({ ...result, prompt })
    }
  }
  const loops = Array.from({ length: CLIENTS }, (_, i) => client(i))
  // Kill w2 while it streams (its heartbeat says it runs requests).
  await waitUntil(async () => {
    const { body } = await getJson(`${url}/api/cluster/workers/w2`)
    return ((body as { metrics?: { requests?: { active?: number } } }).metrics?.requests?.active ?? 0) >= 3
  }, 20_000)

  const killedAt = Date.now()
  victim.process.kill("SIGKILL")
  // When the client first saw w2 offline: the send time of the first GET that answered so (its
  // answer time is at most one request later).
  let reason = ""
  let offlineSentMs = 0
  let offlineAnsweredMs = 0
  await waitUntil(async () => {
    const sent = Date.now()
    const { body } = await getJson(`${url}/api/cluster/workers/w2`)
    const info = body as { status?: string; statusReason?: string }
    if (info.status !== "offline") return false
    reason = info.statusReason ?? ""
    offlineSentMs = sent - killedAt
    offlineAnsweredMs = Date.now() - killedAt
    return true
  }, 10_000, 10)
  await sleep(1_500)
  harness.stopLoad()
  await Promise.all(loops)

  const inFlightAtKill = results.filter((r) => r.startedAt < killedAt && r.endedAt > killedAt)
  const cut = results.filter((r) => !r.done)
  const lastCutEnd = Math.max(killedAt, ...cut.map((r) => r.endedAt)) - killedAt
  const moved = (controller.cli.output().match(/continuing on another worker/g) ?? []).length
  console.log(
    `worker SIGKILL: ${results.length} requests (${inFlightAtKill.length} in flight at the kill), ${moved} streams moved to another worker, ` +
      `${cut.length} failed (codes: ${[...new Set(cut.map((r) => r.error?.code))].join(", ") || "none"}, last ended ${lastCutEnd} ms after the kill), ` +
      `w2 seen offline by a GET sent ${offlineSentMs} ms (answered ${offlineAnsweredMs} ms) after the kill ("${reason}"); ` +
      `heartbeat bound ${OFFLINE_TIMEOUT_MS + HEALTH_CHECK_MS} ms`
  )

  // Nothing failed: requests without a token yet were retried, streams with tokens moved on.
  expect(cut).toEqual([])
  // The killed worker had streams running, and they continued elsewhere.
  expect(moved).toBeGreaterThan(0)
  // Every stream: [DONE], exactly the synthetic engine's answer (moved or not), nothing after the end.
  for (const r of results) {
    expect(r).toMatchObject({ status: 200, thrown: undefined, error: undefined, done: true, afterEnd: 0 })
    const answer = planSynthetic({
      requestId: RequestId.make("any"),
      model: SYNTHETIC_MODEL,
      messages: [{ role: "user", content: r.prompt }],
      maxTokens: MAX_TOKENS,
      stream: true
    })
    expect(r.text).toBe(answer.tokens.join(""))
  }
  // Found by a probe (no responders), before the heartbeat's offline timeout could have said so; the
  // bound allows a probe after 500 ms of silence, a 100 ms tick, and timers late on 2 busy cores.
  expect(reason).toBe("no responders")
  expect(offlineSentMs).toBeLessThanOrEqual(1_200)
  // Requests after the kill were served by the others, and nothing else died.
  expect(results.filter((r) => r.startedAt > killedAt + offlineAnsweredMs && r.done).length).toBeGreaterThan(0)
  expect(c.alive().length).toBe(3)
  expect(hasExited(controller.cli)).toBe(false)
  const listed = await workers(url)
  expect(listed.map((w) => [w.workerId, w.status])).toEqual([
    ["w1", "online"],
    ["w2", "offline"],
    ["w3", "online"]
  ])
})
