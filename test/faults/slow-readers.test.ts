import { connect, type Socket } from "node:net"
import WebSocket from "ws"
import { expect, it } from "vitest"
import { chat, request, rssKiB, sleep, SYNTHETIC_MODEL, waitUntil } from "../support/fault-cluster.js"
import { startOnline, useFaultHarness } from "../support/fault-harness.js"

/**
 * Issue 11.4: slow readers. Clients that stop reading cost bounded memory (per stream for SSE, per
 * socket for WebSocket: `controller.api.max_buffered_bytes`), other clients are not held up, and a
 * client that resumes within the bound gets its whole stream — worker silence and client slowness
 * are different deadlines, so it never sees a false `stream_idle_timeout`.
 */

const STALLED = 200
const MAX_TOKENS = 2_000
/** Generous for 200 stalled streams of ~460 KB each plus the controller itself. */
const RSS_BOUND_MIB = 400

const harness = useFaultHarness()

/** An SSE request on a raw socket that is not read (paused) until `resume` is called. */
const stalledStream = (url: string, content: string) => {
  const { hostname, port } = new URL(url)
  const socket: Socket = connect(Number(port), hostname)
  const body = JSON.stringify(chat(content, MAX_TOKENS))
  socket.write(
    `POST /v1/chat/completions HTTP/1.1\r\nhost: ${hostname}\r\ncontent-type: application/json\r\ncontent-length: ${Buffer.byteLength(body)}\r\n\r\n${body}`
  )
  socket.pause()
  let received = ""
  return {
    socket,
    /** Reads everything until the server ends the response; the events it carried. */
    resume: () =>
      new Promise<{ readonly tokens: number; readonly done: boolean; readonly errors: ReadonlyArray<string> }>((resolve) => {
        socket.setEncoding("utf8")
        socket.on("data", (chunk: string) => {
          received += chunk
          if (received.includes("data: [DONE]") || received.includes('data: {"error"')) socket.end()
        })
        socket.on("close", () =>
          resolve({
            tokens: (received.match(/"delta":\{"content":/g) ?? []).length,
            done: received.includes("data: [DONE]"),
            errors: received.match(/data: \{"error":[^\n]*/g) ?? []
          })
        )
        socket.resume()
      })
  }
}

it(`${STALLED} SSE clients and one WebSocket with ${STALLED} requests that stop reading: bounded controller memory, other clients unaffected, a resumed client gets its whole stream`, async () => {
  const c = harness.cluster()
  const config = c.config({
    controller: { stream_idle_timeout_ms: 2_000, api: { max_buffered_bytes: 1_048_576, ws_max_requests_per_socket: 256 } },
    // Answers up to 100k tokens long: nearly every request runs to its max_tokens of 2,000.
    worker: { max_concurrent: 64, engine: { synthetic: { tokens_per_second: 0, first_token_ms: 0, max_answer_tokens: 100_000 } } }
  })
  const { controller } = await startOnline(c, config, ["slow-1", "slow-2"], 20_000)
  const stalled = Array.from({ length: STALLED }, (_, i) => stalledStream(controller.url, `stalled ${i}`))

  // One WebSocket, 200 requests, never read.
  const ws = new WebSocket(`${controller.url.replace(/^http/, "ws")}/ws`)
  await new Promise<void>((resolve, reject) => {
    ws.once("open", () => resolve())
    ws.once("error", reject)
  })
  for (let i = 0; i < STALLED; i++) {
    ws.send(JSON.stringify({ type: "inference", id: `w${i}`, data: { model: SYNTHETIC_MODEL, prompt: `ws stalled ${i}`, maxTokens: MAX_TOKENS } }))
  }
  const rawWs = (ws as unknown as { _socket: Socket })._socket
  rawWs.pause()

  // Let the workers finish every stalled request (they do not wait for readers) and the buffers fill.
  await sleep(4_000)
  const rssMiB = Math.round((rssKiB(controller.pid) ?? 0) / 1024)

  // Meanwhile other clients are served in full.
  const others = await Promise.all(
    Array.from({ length: 50 }, (_, i) =>
      request(`${controller.url}/v1/chat/completions`, chat(`reader ${i}`, 64), { signal: AbortSignal.timeout(30_000) })
    )
  )
  const status = (await (await fetch(`${controller.url}/api/cluster/status`)).json()) as { requests: { active: number } }

  // A stalled client that resumes after more than the idle timeout gets its whole stream.
  const resumed = await stalled[0]?.resume()
  console.log(
    `slow readers: controller RSS ${rssMiB} MiB with ${STALLED} stalled SSE streams and a stalled WebSocket; ` +
      `${others.filter((o) => o.done).length}/50 other clients whole; active requests after the burst ${status.requests.active}; ` +
      `the resumed client got ${resumed?.tokens} tokens, done ${resumed?.done}, errors ${resumed?.errors.length}`
  )
  expect(others.filter((o) => !o.done).slice(0, 3).map((o) => ({ status: o.status, error: o.error, thrown: o.thrown }))).toEqual([])
  expect(rssMiB).toBeLessThan(RSS_BOUND_MIB)
  expect(others.every((o) => o.status === 200 && o.done && o.error === undefined && o.tokens > 0)).toBe(true)
  expect(resumed?.errors).toEqual([])
  expect(resumed?.done).toBe(true)
  expect(resumed?.tokens).toBeGreaterThan(0)
  // The WebSocket's 200 × 2,000 tokens (~30 MB) are far past its bound: once it reads again, every
  // request has ended — whole, or with a clear slow_consumer error — none left hanging.
  const finals = new Map<string, string>()
  ws.on("message", (data) => {
    const m = JSON.parse(data.toString()) as { type: string; id: string; data?: { code?: string } }
    if (m.type === "done") finals.set(m.id, "done")
    if (m.type === "error") finals.set(m.id, m.data?.code ?? "error")
  })
  rawWs.resume()
  await waitUntil(() => finals.size === STALLED, 30_000)
  const codes = [...finals.values()]
  console.log(`the stalled WebSocket: ${codes.filter((c) => c === "done").length} done, ${codes.filter((c) => c === "slow_consumer").length} slow_consumer`)
  expect(codes.every((code) => code === "done" || code === "slow_consumer")).toBe(true)
  expect(codes).toContain("slow_consumer")
  for (const s of stalled) s.socket.destroy()
  ws.terminate()
})
