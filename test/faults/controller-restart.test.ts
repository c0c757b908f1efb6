import { expect, it } from "vitest"
import { chat, hasExited, request, waitUntil, workers } from "../support/fault-cluster.js"
import { freePort } from "../support/nats-server.js"
import { useFaultHarness } from "../support/fault-harness.js"

const RELIST_BOUND_MS = 1_000
const WORKER_IDS = ["w1", "w2", "w3"]

const harness = useFaultHarness()

it("the controller SIGKILLed and restarted: every worker is listed again within 1 s of the ready line, and requests succeed", async () => {
  const c = harness.cluster()
  const port = await freePort()
  const config = c.config({
    // Heartbeats far apart: only the re-registration on `controller.announce` can list the workers in time.
    discovery: { heartbeat_interval_ms: 10_000, offline_timeout_ms: 30_000, health_check_interval_ms: 1_000 },
    controller: { port },
    worker: { engine: { synthetic: { tokens_per_second: 0, first_token_ms: 0 } } }
  })
  const [first] = await Promise.all([c.controller(config), ...WORKER_IDS.map((id) => c.worker(config, id))])
  const onlineIds = async (url: string) =>
    (await workers(url))
      .filter((w) => w.status === "online")
      .map((w) => w.workerId)
      .join(",")
  await waitUntil(async () => (await onlineIds(first.url)) === WORKER_IDS.join(","), 10_000)
  const before = await request(`${first.url}/v1/chat/completions`, chat("before the crash", 12, false))
  expect(before).toMatchObject({ status: 200, done: true })

  first.cli.process.kill("SIGKILL")
  await first.cli.exited

  const secondCli = c.spawn(["--config", config, "--mode", "controller"])
  const second = await c.ready(secondCli)
  const relistedMs = await waitUntil(async () => (await onlineIds(second.url)) === WORKER_IDS.join(","), 10_000, 10)

  const after = await request(`${second.url}/v1/chat/completions`, chat("before the crash", 12, false), {
    signal: AbortSignal.timeout(10_000)
  })
  const stream = await request(`${second.url}/v1/chat/completions`, chat("after the restart", 12), { signal: AbortSignal.timeout(10_000) })
  console.log(
    `controller restart: ${WORKER_IDS.length} workers listed again ${relistedMs} ms after the new controller's ready line ` +
      `(bound ${RELIST_BOUND_MS} ms; heartbeats every 10 s); request after restart ${after.endedAt - after.startedAt} ms`
  )

  expect(second.url).toBe(first.url)
  expect(relistedMs).toBeLessThanOrEqual(RELIST_BOUND_MS)
  expect(after).toMatchObject({ status: 200, done: true, error: undefined, text: before.text })
  expect(stream).toMatchObject({ status: 200, done: true, error: undefined, afterEnd: 0 })
  expect(stream.tokens).toBeGreaterThan(0)
  // The workers never noticed anything worth dying for.
  expect(c.alive().length).toBe(WORKER_IDS.length + 1)
  expect(hasExited(secondCli)).toBe(false)
})
