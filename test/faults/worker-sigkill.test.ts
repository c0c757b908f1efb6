import { expect, it } from "vitest"
import {
  chat,
  type ClientResult,
  getJson,
  hasExited,
  request,
  sleep,
  waitUntil,
  workers
} from "../support/fault-cluster.js"
import { useFaultHarness } from "../support/fault-harness.js"

const OFFLINE_TIMEOUT_MS = 1_500
const HEALTH_CHECK_MS = 500
const CLIENTS = 12
const MAX_TOKENS = 60

const harness = useFaultHarness()

it("a worker SIGKILLed under steady load: requests without a token yet succeed elsewhere, cut streams end with an error chunk, the worker goes offline in time", async () => {
  const c = harness.cluster()
  const config = c.config({
    discovery: { heartbeat_interval_ms: 200, offline_timeout_ms: OFFLINE_TIMEOUT_MS, health_check_interval_ms: HEALTH_CHECK_MS },
    controller: { stream_idle_timeout_ms: 10_000, first_token_timeout_ms: 10_000 },
    worker: { max_concurrent: 4, engine: { synthetic: { tokens_per_second: 40, first_token_ms: 20 } } }
  })
  const [controller, , victim] = await Promise.all([
    c.controller(config),
    c.worker(config, "w1"),
    c.worker(config, "w2"),
    c.worker(config, "w3")
  ])
  const url = controller.url
  await waitUntil(async () => (await workers(url)).filter((w) => w.status === "online").length === 3, 10_000)

  // Steady load: 12 clients, each streaming 60-token answers (~1.5 s) back to back; 12 slots in all.
  const results: Array<ClientResult> = []
    const client = async (i: number) => {
    for (let n = 0; !harness.stopping(); n++) {
      results.push(
        await request(`${url}/v1/chat/completions`, chat(`client ${i} request ${n}`, MAX_TOKENS), {
          signal: AbortSignal.timeout(20_000)
        })
      )
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
  console.log(
    `worker SIGKILL: ${results.length} requests (${inFlightAtKill.length} in flight at the kill), ` +
      `${cut.length} cut mid-stream (codes: ${[...new Set(cut.map((r) => r.error?.code))].join(", ") || "none"}), ` +
      `last cut stream ended ${lastCutEnd} ms after the kill, w2 seen offline by a GET sent ${offlineSentMs} ms (answered ${offlineAnsweredMs} ms) after the kill ("${reason}"), ` +
      `bound ${OFFLINE_TIMEOUT_MS + HEALTH_CHECK_MS} ms`
  )

  // No request failed before its first token: every failure is a stream that had tokens.
  expect(results.filter((r) => !r.done && r.tokens === 0)).toEqual([])
  // Cut streams: HTTP 200, some tokens, one error chunk last, no [DONE], nothing after the error.
  for (const r of cut) {
    expect(r).toMatchObject({ status: 200, thrown: undefined, done: false, afterEnd: 0 })
    expect(r.tokens).toBeGreaterThan(0)
    expect(r.tokens).toBeLessThan(MAX_TOKENS)
    expect(r.error?.code).toEqual(expect.any(String))
  }
  // The killed worker had streams running: some were cut.
  expect(cut.length).toBeGreaterThan(0)
  // Completed streams ended with [DONE] and nothing after it.
  for (const r of results.filter((r) => r.done)) {
    expect(r).toMatchObject({ status: 200, thrown: undefined, error: undefined, afterEnd: 0 })
    expect(r.tokens).toBeGreaterThan(0)
  }
  // Offline within offline_timeout + health_check_interval (the design's worst case, reached when the
  // last heartbeat came just before the kill), plus 100 ms for timers running late on 2 busy cores.
  expect(offlineSentMs).toBeLessThanOrEqual(OFFLINE_TIMEOUT_MS + HEALTH_CHECK_MS + 100)
  expect(lastCutEnd).toBeLessThanOrEqual(OFFLINE_TIMEOUT_MS + HEALTH_CHECK_MS + 500)
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
