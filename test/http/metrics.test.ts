import { afterEach, describe, expect, inject, it } from "@effect/vitest"
import { Context, Effect, Layer } from "effect"
import parsePrometheusTextFormat, { type ParsedFamily } from "parse-prometheus-text-format"
import { RequestJournal, type RequestSummary } from "../../src/controller/request-journal.js"
import { startController, untilWorkerOnline, workerLayer } from "../support/cluster.js"
import { FaultCluster, START_TIMEOUT_MS } from "../support/fault-cluster.js"

const natsUrl = inject("natsUrl")
const MODEL = "metrics-test/known-model"
/** A model no worker has: it must never become a label value. */
const TYPO = "client-typo/never-a-label-4f2a"

const scrape = (url: string) =>
  Effect.promise(async () => {
    const response = await fetch(`${url}/metrics`)
    expect(response.headers.get("content-type")).toBe("text/plain; version=0.0.4; charset=utf-8")
    return response.text()
  })

/** What the Router records at the end of a request (it will, once it calls the journal). */
const summary = (patch: Partial<RequestSummary>): RequestSummary => ({
  requestId: `req-${Math.random().toString(36).slice(2)}`,
  route: "chat",
  method: "POST",
  model: MODEL,
  modelKnown: true,
  workerId: "metrics-w1",
  outcome: "succeeded",
  status: 200,
  tokens: 12,
  ttftMs: 40,
  durationMs: 350,
  retries: 0,
  startedAt: Date.now(),
  client: "127.0.0.1",
  ...patch
})

const labelValues = (families: ReadonlyArray<ParsedFamily>) =>
  families.flatMap((f) => f.metrics.flatMap((m) => Object.values(m.labels ?? {})))

const family = (families: ReadonlyArray<ParsedFamily>, name: string) => {
  const found = families.find((f) => f.name === name)
  if (found === undefined) throw new Error(`no family ${name} in ${families.map((f) => f.name).join(", ")}`)
  return found
}

describe("/metrics of a real controller, parsed as Prometheus text", () => {
  it.scopedLive(
    "names end in _total and _seconds, the model and code labels are there, and nothing else: no otel_scope_name, no runtime metrics, no unknown model",
    () =>
      Effect.gen(function* () {
        const { url, registry, context } = yield* startController(natsUrl)
        const journal = Context.get(context, RequestJournal)
        yield* Layer.build(workerLayer(natsUrl, { id: "metrics-w1", models: [MODEL] }))
        yield* untilWorkerOnline(registry, "metrics-w1")

        // Real requests through the front door: one that works, one for a model nobody has.
        const ok = yield* Effect.promise(() =>
          fetch(`${url}/v1/chat/completions`, {
            method: "POST",
            headers: { "content-type": "application/json" },
            body: JSON.stringify({ model: MODEL, messages: [{ role: "user", content: "hi" }], max_tokens: 3, stream: true })
          }).then((r) => r.text())
        )
        expect(ok).toContain("data: [DONE]")
        const typo = yield* Effect.promise(() =>
          fetch(`${url}/v1/chat/completions`, {
            method: "POST",
            headers: { "content-type": "application/json" },
            body: JSON.stringify({ model: TYPO, messages: [{ role: "user", content: "hi" }], max_tokens: 3 })
          })
        )
        expect(typo.status).toBeGreaterThanOrEqual(400)
        // And what the Router and the front door record into the journal.
        yield* journal.record(summary({}))
        yield* journal.record(summary({ model: TYPO, modelKnown: false, workerId: undefined, outcome: "failed", status: 404, errorCode: "model_not_found", tokens: 0, ttftMs: undefined }))
        yield* journal.record(summary({ outcome: "failed", status: 200, errorCode: "worker_lost", tokens: 4 }))
        yield* journal.record(summary({ route: "/v1/chat/completions", model: "", modelKnown: false, workerId: undefined, outcome: "failed", status: 401, errorCode: "invalid_api_key", tokens: 0, ttftMs: undefined }))

        const text = yield* scrape(url)
        const families = parsePrometheusTextFormat(text)

        expect(text).not.toContain("otel_scope_name")
        expect(text).not.toContain("target_info")
        expect(text).not.toMatch(/^# UNIT/m)
        expect(text).not.toContain("effect_fiber_")
        expect(text).not.toContain(TYPO)
        expect(labelValues(families)).not.toContain(TYPO)
        for (const f of families) {
          expect(f.name).toMatch(/^mlx_cluster_[a-z_]+$/)
          expect(f.name).not.toMatch(/_ms(_|$)/)
          if (f.type === "COUNTER") expect(f.name).toMatch(/_total$/)
          if (f.type === "HISTOGRAM") {
            expect(f.name).toMatch(/_seconds$/)
            for (const m of f.metrics) expect(Object.keys(m.buckets ?? {})).toEqual(expect.arrayContaining(["0.005", "1", "300", "+Inf"]))
          }
          expect(f.help).not.toMatch(/description missing/i)
        }

        // Model label on TTFT, duration and tokens. The parser folds every series of a histogram
        // into one (it only understands unlabelled histograms), so their labels are read from the
        // `_count`/`_sum` lines themselves.
        // 3 relayed by the real request, 12 + 4 recorded by hand.
        expect(family(families, "mlx_cluster_tokens_relayed_total").metrics).toContainEqual({ labels: { model: MODEL }, value: "19" })
        for (const name of ["mlx_cluster_time_to_first_token_seconds", "mlx_cluster_request_duration_seconds"]) {
          expect(family(families, name).type).toBe("HISTOGRAM")
          expect(text).toMatch(new RegExp(`^${name}_count\\{model="${MODEL}"\\} \\d+$`, "m"))
          expect(text).toMatch(new RegExp(`^${name}_bucket\\{model="${MODEL}",le="\\+Inf"\\} \\d+$`, "m"))
        }
        // 40 ms and 40 ms recorded by hand, in seconds, plus the real request's own (well under a second).
        const ttftSum = Number(new RegExp(`^mlx_cluster_time_to_first_token_seconds_sum\\{model="${MODEL}"\\} (\\S+)$`, "m").exec(text)?.[1])
        expect(ttftSum).toBeGreaterThan(0.08)
        expect(ttftSum).toBeLessThan(1.08)
        expect(family(families, "mlx_cluster_requests_total").metrics).toContainEqual({
          labels: { route: "chat", model: "unknown", outcome: "failed" },
          value: expect.any(String)
        })
        // Failures by error code.
        const failures = family(families, "mlx_cluster_request_failures_total").metrics.map((m) => m.labels)
        expect(failures).toContainEqual({ route: "chat", model: "unknown", code: "model_not_found" })
        expect(failures).toContainEqual({ route: "chat", model: MODEL, code: "worker_lost" })
        expect(failures).toContainEqual({ route: "chat", model: "unknown", code: "invalid_api_key" })

        // Gauges: workers by status, in flight, queue depth, per-worker slots.
        expect(family(families, "mlx_cluster_workers").metrics.map((m) => m.labels?.["status"])).toEqual(["online", "offline", "degraded"])
        expect(family(families, "mlx_cluster_requests_in_flight")).toMatchObject({ type: "GAUGE", metrics: [{ value: "0" }] })
        expect(family(families, "mlx_cluster_queue_depth")).toMatchObject({ type: "GAUGE", metrics: [{ value: "0" }] })
        expect(family(families, "mlx_cluster_worker_active_requests").metrics).toContainEqual({ labels: { worker: "metrics-w1" }, value: "0" })
        expect(family(families, "mlx_cluster_worker_max_concurrent").metrics).toContainEqual({ labels: { worker: "metrics-w1" }, value: "4" })
      }),
    60_000
  )
})

describe("runtime fiber metrics, in a real CLI process", () => {
  let cluster: FaultCluster | undefined
  afterEach(async () => {
    await cluster?.cleanup()
  })

  it(
    "are off by default and on with metrics.runtime: true",
    async () => {
      cluster = new FaultCluster(natsUrl)
      const [plain, runtime] = await Promise.all([
        cluster.controller(cluster.config()),
        cluster.controller(cluster.config({ metrics: { runtime: true } }))
      ])
      const [plainText, runtimeText] = await Promise.all([
        fetch(`${plain.url}/metrics`).then((r) => r.text()),
        fetch(`${runtime.url}/metrics`).then((r) => r.text())
      ])
      expect(plainText).not.toContain("effect_")
      const runtimeFamilies = parsePrometheusTextFormat(runtimeText).map((f) => f.name)
      expect(runtimeFamilies).toContain("effect_fiber_started_total")
      expect(runtimeFamilies).toContain("effect_fiber_active")
    },
    START_TIMEOUT_MS + 30_000
  )
})
