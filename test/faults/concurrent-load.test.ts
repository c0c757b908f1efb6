import { expect, it } from "vitest"
import { chat, type ClientResult, request, sampleRss } from "../support/fault-cluster.js"
import { startOnline, useFaultHarness } from "../support/fault-harness.js"

const REQUESTS = 1_000
const PROMPTS = 50
const MAX_TOKENS = 32

const harness = useFaultHarness()

it("1,000 concurrent streaming requests over 3 workers: every stream whole and in order, no errors; peak controller RSS reported", async () => {
  const c = harness.cluster()
  const config = c.config({
    worker: { max_concurrent: 400, engine: { synthetic: { tokens_per_second: 0, first_token_ms: 0 } } }
  })
  const { controller } = await startOnline(c, config, ["w1", "w2", "w3"])
  const url = `${controller.url}/v1/chat/completions`

  // The synthetic engine is deterministic: the non-streamed text of each prompt is what its streams must carry.
  const prompt = (i: number) => `load prompt ${i % PROMPTS}`
  const expected = await Promise.all(
    Array.from({ length: PROMPTS }, (_, i) => request(url, chat(prompt(i), MAX_TOKENS, false), { signal: AbortSignal.timeout(30_000) }))
  )
  for (const e of expected) expect(e).toMatchObject({ status: 200, done: true })

  const idleKiB = sampleRss(controller.pid).stop()
  const rss = sampleRss(controller.pid, 50)
  const startedAt = Date.now()
  const results: Array<ClientResult> = await Promise.all(
    Array.from({ length: REQUESTS }, (_, i) => request(url, chat(prompt(i), MAX_TOKENS), { signal: AbortSignal.timeout(90_000) }))
  )
  const elapsedMs = Date.now() - startedAt
  const peakKiB = rss.stop()
  const firstChunk = results.map((r) => (r.firstChunkAt ?? r.endedAt) - r.startedAt).sort((a, b) => a - b)
  const tokens = results.reduce((n, r) => n + r.tokens, 0)
  console.log(
    `peak controller RSS: ${Math.round(peakKiB / 1024)} MiB (idle before the burst ${Math.round(idleKiB / 1024)} MiB); ` +
      `${REQUESTS} concurrent streams, ${tokens} tokens in ${elapsedMs} ms, ` +
      `first chunk p50 ${firstChunk[Math.floor(REQUESTS / 2)]} ms / max ${firstChunk[REQUESTS - 1]} ms`
  )

  const bad = results
    .map((r, i) => ({ i, r }))
    .filter(({ r, i }) => !(r.status === 200 && r.done && r.error === undefined && r.afterEnd === 0 && r.thrown === undefined && r.text === expected[i % PROMPTS]?.text))
  expect(bad.slice(0, 5).map(({ i, r }) => ({ i, status: r.status, done: r.done, error: r.error, thrown: r.thrown, tokens: r.tokens, ms: r.endedAt - r.startedAt }))).toEqual([])
  // The synthetic answers are at least 32 tokens long: every stream carries exactly max_tokens chunks.
  expect(results.every((r) => r.tokens === MAX_TOKENS)).toBe(true)
  expect(c.alive().length).toBe(4)
})
