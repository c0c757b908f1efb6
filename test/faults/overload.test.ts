import { type ChildProcess, spawn } from "node:child_process"
import { expect, it } from "vitest"
import { chat, type ClientResult, request, sampleRss, workers } from "../support/fault-cluster.js"
import { startOnline, useFaultHarness } from "../support/fault-harness.js"

/**
 * Issue 11: busy is not broken. With far more requests than slots, every answer is a whole stream
 * or a 429 — never a 5xx — and healthy workers stay online, also while a CPU hog competes for the
 * machine.
 */

const REQUESTS = 1_000
const MAX_TOKENS = 20

const harness = useFaultHarness()

/** Polls the registry every 100 ms and remembers any worker ever seen not online. */
const watchOnline = (controllerUrl: string, expected: number) => {
  const notOnline = new Set<string>()
  let polls = 0
  let stopped = false
  const loop = (async () => {
    while (!stopped) {
      try {
        const all = await workers(controllerUrl)
        polls++
        for (const w of all) if (w.status !== "online") notOnline.add(`${w.workerId}: ${w.status}`)
        if (all.length < expected) notOnline.add(`only ${all.length} workers listed`)
      } catch {
        // A poll that times out under load says nothing about the workers.
      }
      await new Promise((r) => setTimeout(r, 100))
    }
  })()
  return {
    stop: async () => {
      stopped = true
      await loop
      return { notOnline: [...notOnline], polls }
    }
  }
}

const flood = async (url: string) => {
  const results: Array<ClientResult> = await Promise.all(
    Array.from({ length: REQUESTS }, (_, i) =>
      request(url, chat(`overload prompt ${i % 40}`, MAX_TOKENS), { signal: AbortSignal.timeout(110_000) })
    )
  )
  const whole = results.filter((r) => r.status === 200 && r.done && r.error === undefined && r.tokens === MAX_TOKENS)
  const shed = results.filter((r) => r.status === 429)
  const other = results.filter((r) => !whole.includes(r) && !shed.includes(r))
  return { whole, shed, other }
}

const describeOther = (other: ReadonlyArray<ClientResult>) =>
  other.slice(0, 5).map((r) => ({ status: r.status, code: r.error?.code, message: r.error?.message, thrown: r.thrown, tokens: r.tokens }))

const startCluster = async () => {
  const c = harness.cluster()
  const config = c.config({
    discovery: { heartbeat_interval_ms: 1_000, offline_timeout_ms: 5_000, health_check_interval_ms: 1_000 },
    controller: { queue: { max_pending: 300, max_wait_ms: 60_000 } },
    worker: { max_concurrent: 8, engine: { synthetic: { tokens_per_second: 400, first_token_ms: 5 } } }
  })
  const { controller } = await startOnline(c, config, ["ov-1", "ov-2"], 20_000)
  return controller
}

it("1,000 concurrent streams over 2 workers × 8 slots and a queue of 300: whole streams or 429s, no 5xx, workers online throughout", async () => {
  const controller = await startCluster()
  const watch = watchOnline(controller.url, 2)
  const rss = sampleRss(controller.pid)
  const started = Date.now()
  const { whole, shed, other } = await flood(`${controller.url}/v1/chat/completions`)
  const elapsed = Date.now() - started
  const online = await watch.stop()
  console.log(
    `overload: ${whole.length} whole streams, ${shed.length} × 429 (${[...new Set(shed.map((r) => r.error?.code))].join(", ")}), ` +
      `${other.length} other, in ${elapsed} ms; ${online.polls} registry polls, peak controller RSS ${Math.round(rss.stop() / 1024)} MiB`
  )
  expect(describeOther(other)).toEqual([])
  expect(shed.every((r) => Number(r.retryAfter) > 0)).toBe(true)
  // The queue took what it could: at least its 300 places and the 16 slots were served.
  expect(whole.length).toBeGreaterThanOrEqual(316)
  expect(online.notOnline).toEqual([])
})

it("the same while a CPU hog saturates a core: no 5xx, workers online throughout", async () => {
  const controller = await startCluster()
  const hog: ChildProcess = spawn(process.execPath, ["-e", "for (;;) {}"], { stdio: "ignore" })
  try {
    const watch = watchOnline(controller.url, 2)
    const { whole, shed, other } = await flood(`${controller.url}/v1/chat/completions`)
    const online = await watch.stop()
    console.log(`overload + CPU hog: ${whole.length} whole streams, ${shed.length} × 429, ${other.length} other`)
    expect(describeOther(other)).toEqual([])
    expect(whole.length).toBeGreaterThan(0)
    expect(online.notOnline).toEqual([])
  } finally {
    hog.kill("SIGKILL")
  }
})
