import { expect, it } from "vitest"
import { chat, type ClientResult, request, sleep, waitUntil } from "../support/fault-cluster.js"
import { startOnline, useFaultHarness } from "../support/fault-harness.js"

const STREAMS = 4
const TOKENS = 20

const harness = useFaultHarness()

it("SIGINT to the controller with streams in flight: they finish with [DONE], new requests are refused, exit code 0", async () => {
  const c = harness.cluster()
  const config = c.config({
    controller: { drain_timeout_ms: 20_000 },
    // 20 tokens at 20 tokens/s: each stream runs about a second.
    worker: { max_concurrent: STREAMS, engine: { synthetic: { tokens_per_second: 20, first_token_ms: 20 } } }
  })
  const { controller } = await startOnline(c, config, ["slow"])
  const url = `${controller.url}/v1/chat/completions`

  // Every stream has its first token before the signal.
  let started = 0
  const firstToken = new Set<number>()
  const streams = Array.from({ length: STREAMS }, (_, i) =>
    request(url, chat(`in flight ${i}`, TOKENS), {
      signal: AbortSignal.timeout(30_000),
      onEvent: (r) => {
        if (r.tokens > 0 && !firstToken.has(i)) {
          firstToken.add(i)
          started++
        }
      }
    })
  )
  await waitUntil(() => started === STREAMS, 20_000, 5)

  const signalledAt = Date.now()
  controller.cli.process.kill("SIGINT")
  await sleep(150)
  // New requests while draining: refused with 503 shutting_down (or, once the server closed, no connection).
  const refused: Array<ClientResult> = []
  for (let i = 0; i < 3; i++) {
    refused.push(await request(url, chat(`too late ${i}`, 4, i % 2 === 0), { signal: AbortSignal.timeout(5_000) }))
    await sleep(100)
  }
  const results = await Promise.all(streams)
  const lastStreamEnd = Math.max(...results.map((r) => r.endedAt)) - signalledAt
  const code = await Promise.race([controller.cli.exited, sleep(25_000).then(() => "still running after 25 s")])
  const exitedMs = Date.now() - signalledAt
  // After the exit nobody listens on the port any more.
  const afterExit = await request(url, chat("after the exit", 4), { signal: AbortSignal.timeout(5_000) })
  console.log(
    `controller SIGINT: ${results.filter((r) => r.done).length}/${STREAMS} in-flight streams finished with [DONE] ` +
      `(last ${lastStreamEnd} ms after the signal), new requests got ${refused.map((r) => r.error?.code ?? r.thrown).join(" / ")}, ` +
      `exit code ${code} ${exitedMs} ms after the signal`
  )

  for (const r of results) {
    expect(r).toMatchObject({ status: 200, thrown: undefined, done: true, error: undefined, afterEnd: 0 })
    expect(r.tokens).toBe(TOKENS)
  }
  for (const r of refused) {
    if (r.status === undefined) expect(r.thrown).toMatch(/ECONNREFUSED|other side closed|ECONNRESET|fetch failed/)
    else expect(r).toMatchObject({ status: 503, error: { code: "shutting_down" } })
  }
  expect(afterExit.status).toBeUndefined()
  expect(afterExit.thrown).toMatch(/ECONNREFUSED/)
  expect(code).toBe(0)
})
