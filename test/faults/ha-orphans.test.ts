import { expect, it } from "vitest"
import { chat, type ClientResult, request, waitUntil, workers } from "../support/fault-cluster.js"
import { useFaultHarness } from "../support/fault-harness.js"
import { loggedAt } from "../support/ha.js"
import { freePort } from "../support/nats-server.js"

/**
 * Issue 14, no work outlives its controller. Measured before: after a controller SIGKILL mid-stream
 * the worker generated all 254 tokens for nobody, and with `max_concurrent: 1` the restarted
 * controller's next request waited 16.6 s for the orphan.
 */

const STOP_BOUND_MS = 5_000

const harness = useFaultHarness()

it("SIGKILL the controller while a worker (max_concurrent 1) streams for it: the worker stops within 5 s and a restarted controller's next request is served at once", async () => {
  const c = harness.cluster()
  const port = await freePort()
  const config = c.config({
    controller: { port },
    discovery: { heartbeat_interval_ms: 500 },
    // 600 tokens at 50 tokens/s: the orphan would run 12 s.
    worker: { max_concurrent: 1, engine: { synthetic: { tokens_per_second: 50, first_token_ms: 10 } } }
  })
  const [first, worker] = await Promise.all([c.controller(config), c.worker(config, "solo")])
  await waitUntil(async () => (await workers(first.url)).some((w) => w.status === "online"), 15_000)

  let tokensAtKill = 0
  const inFlight = request(`${first.url}/v1/chat/completions`, chat("a long answer for a controller about to die", 600), {
    signal: AbortSignal.timeout(30_000),
    onEvent: (r) => {
      tokensAtKill = r.tokens
    }
  })
  await waitUntil(() => tokensAtKill >= 20, 15_000)
  const killedAt = Date.now()
  first.cli.process.kill("SIGKILL")
  const cut: ClientResult = await inFlight
  await first.cli.exited

  // The worker notices through its probe of the controller that owns the request.
  await worker.waitFor(/controller \S+ is gone \(no responders\): stopping its 1 request\(s\)/, STOP_BOUND_MS + 2_000)
  const stoppedAt = loggedAt(worker.output(), /is gone \(no responders\)/) ?? Date.now()

  const secondCli = c.spawn(["--config", config, "--mode", "controller"])
  const second = await c.ready(secondCli)
  await waitUntil(async () => (await workers(second.url)).some((w) => w.status === "online"), 10_000)
  const next = await request(`${second.url}/v1/chat/completions`, chat("the next request", 20), { signal: AbortSignal.timeout(30_000) })
  const ttftMs = (next.firstChunkAt ?? next.endedAt) - next.startedAt
  console.log(
    `orphaned work: the client's stream was cut after ${cut.tokens} tokens (${cut.thrown ?? cut.error?.code ?? "ended"}); ` +
      `the worker stopped the orphan ${stoppedAt - killedAt} ms after the controller's SIGKILL (bound ${STOP_BOUND_MS} ms; ` +
      `it would have run ${Math.round((600 - cut.tokens) / 50)} s more); the restarted controller's next request: first token in ${ttftMs} ms, ` +
      `whole in ${next.endedAt - next.startedAt} ms`
  )

  expect(cut.done).toBe(false)
  expect(stoppedAt - killedAt).toBeLessThanOrEqual(STOP_BOUND_MS)
  expect(next).toMatchObject({ status: 200, done: true, error: undefined })
  // Served at once: no orphan holds the one slot (it would for about 11 s).
  expect(ttftMs).toBeLessThan(2_000)
  expect(worker.output()).not.toMatch(/request failed/)
  expect(c.alive().length).toBe(2)
})
