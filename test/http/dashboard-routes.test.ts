import { describe, expect, inject, it } from "@effect/vitest"
import { Context, Effect, Layer, Schema } from "effect"
import { createHash } from "node:crypto"
import { ControllerLifecycle } from "../../src/controller/lifecycle.js"
import { DashboardSnapshot } from "../../src/domain/dashboard.js"
import { DEFAULT_INTERVAL_MS, eventInterval, loadDashboardPage } from "../../src/http/dashboard-routes.js"
import { startController, untilWorkerOnline, workerLayer } from "../support/cluster.js"

const natsUrl = inject("natsUrl")
const decode = Schema.decodeUnknownSync(DashboardSnapshot)

describe("eventInterval", () => {
  it("reads ?interval_ms, clamped to 250..10000, 1000 by default", () => {
    expect(eventInterval("/api/cluster/events")).toBe(DEFAULT_INTERVAL_MS)
    expect(eventInterval("/api/cluster/events?interval_ms=500")).toBe(500)
    expect(eventInterval("/api/cluster/events?interval_ms=1")).toBe(250)
    expect(eventInterval("/api/cluster/events?interval_ms=999999")).toBe(10_000)
    expect(eventInterval("/api/cluster/events?interval_ms=soon")).toBe(DEFAULT_INTERVAL_MS)
  })
})

describe("the page", () => {
  it("is self-contained, and its Content-Security-Policy lets exactly its own inline script run", () => {
    const { html, csp } = loadDashboardPage()
    const script = /<script>([\s\S]*?)<\/script>/.exec(html)?.[1] ?? ""
    expect(script.length).toBeGreaterThan(1_000)
    expect(csp).toContain(`script-src 'sha256-${createHash("sha256").update(script).digest("base64")}'`)
    expect(csp).toContain("connect-src 'self'")
    expect(html.match(/<script/g)).toHaveLength(1)
    expect(html).not.toMatch(/https?:\/\//)
    // Data reaches the DOM through textContent only.
    expect(script).not.toMatch(/innerHTML|outerHTML|insertAdjacentHTML|document\.write/)
  })
})

/** Reads `count` server-sent events from `response`, with when each arrived. */
const readEvents = async (response: Response, count: number) => {
  const reader = (response.body ?? new ReadableStream<Uint8Array>()).getReader()
  const decoder = new TextDecoder()
  const events: Array<{ readonly at: number; readonly data: unknown }> = []
  let buffer = ""
  while (events.length < count) {
    const read = await reader.read()
    if (read.done) break
    buffer += decoder.decode(read.value, { stream: true })
    for (let end = buffer.indexOf("\n\n"); end >= 0; end = buffer.indexOf("\n\n")) {
      const block = buffer.slice(0, end)
      buffer = buffer.slice(end + 2)
      expect(block).toMatch(/^data: /)
      events.push({ at: performance.now(), data: JSON.parse(block.slice("data: ".length)) })
    }
  }
  return { events, reader }
}

describe("GET /api/cluster/dashboard and /api/cluster/events on a real controller", () => {
  it.scopedLive(
    "answer the snapshot once, and as server-sent events at the asked interval that end when the controller stops",
    () =>
      Effect.gen(function* () {
        const { url, registry, context } = yield* startController(natsUrl)
        yield* Layer.build(workerLayer(natsUrl, { id: "dash-route-w1", models: ["dash/model"], tags: ["t1"] }))
        yield* untilWorkerOnline(registry, "dash-route-w1")

        const once = yield* Effect.promise(() => fetch(`${url}/api/cluster/dashboard`).then((r) => r.json()))
        const snapshot = decode(once)
        expect(snapshot.workers.find((w) => w.workerId === "dash-route-w1")).toMatchObject({
          status: "online",
          models: ["dash/model"],
          tags: ["t1"],
          maxConcurrent: 4
        })
        expect(snapshot.models.find((m) => m.model === "dash/model")?.workers).toContain("dash-route-w1")
        expect(snapshot.series.requests).toHaveLength(300)

        const response = yield* Effect.promise(() => fetch(`${url}/api/cluster/events?interval_ms=250`))
        expect(response.headers.get("content-type")).toBe("text/event-stream")
        expect(response.headers.get("cache-control")).toBe("no-cache, no-store")
        const { events, reader } = yield* Effect.promise(() => readEvents(response, 4))
        for (const event of events) decode(event.data)
        // One event per 250 ms on average (a single gap jitters with delivery on a busy machine).
        const average = ((events.at(-1)?.at ?? 0) - (events[0]?.at ?? 0)) / (events.length - 1)
        expect(average).toBeGreaterThan(200)
        expect(average).toBeLessThan(900)

        // A stopping controller ends open streams, so that the server's close does not wait for them.
        yield* Context.get(context, ControllerLifecycle).transition("stopping")
        const ended = yield* Effect.promise(async () => {
          for (;;) if ((await reader.read()).done) return true
        }).pipe(Effect.timeout("3 seconds"))
        expect(ended).toBe(true)
      }),
    30_000
  )
})
