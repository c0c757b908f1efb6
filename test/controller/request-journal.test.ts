import { describe, expect, it } from "@effect/vitest"
import { Cause, Effect, HashMap, Layer, Logger, LogLevel, Metric, TestClock } from "effect"
import { ActivityWindow, ClusterActivity } from "../../src/controller/cluster-activity.js"
import * as Metrics from "../../src/controller/metrics.js"
import { recordMetrics, RequestJournal, requestLogFields, type RequestSummary } from "../../src/controller/request-journal.js"
import { jsonLine, LogFields, messageText, prettyLine } from "../../src/logging.js"

const summary = (patch: Partial<RequestSummary> = {}): RequestSummary => ({
  requestId: "req-7f3a",
  route: "chat",
  method: "POST",
  model: "mlx-community/Llama-3.2-3B-Instruct-4bit",
  modelKnown: true,
  workerId: "mac-studio",
  outcome: "succeeded",
  status: 200,
  tokens: 42,
  ttftMs: 83.27,
  durationMs: 912.4,
  retries: 0,
  startedAt: 1_000,
  client: "192.168.1.20",
  ...patch
})

const count = (metric: Metric.Metric.Counter<number>) => Metric.value(metric).pipe(Effect.map((s) => s.count))
const histogram = (metric: Metric.Metric<Metric.Metric.Histogram<number>["keyType"], number, unknown>) =>
  Metric.value(metric as Metric.Metric.Histogram<number>)

interface Logged {
  readonly level: string
  readonly message: string
  readonly fields: Readonly<Record<string, unknown>>
}

/** The journal with its own activity, and the log lines it writes (message text and `LogFields`). */
const withJournal = <A, E>(f: (journal: RequestJournal, activity: ClusterActivity) => Effect.Effect<A, E>) => {
  const lines: Array<Logged> = []
  const logger = Logger.make(({ logLevel, message }) => {
    const parts: ReadonlyArray<unknown> = Array.isArray(message) ? message : [message]
    const fields = parts.find((p): p is LogFields => p instanceof LogFields)?.fields ?? {}
    lines.push({ level: logLevel.label, message: messageText(message), fields })
  })
  return Effect.gen(function* () {
    const journal = yield* RequestJournal
    const activity = yield* ClusterActivity
    const result = yield* f(journal, activity)
    return { result, lines }
  }).pipe(
    Effect.provide(RequestJournal.DefaultWithoutDependencies.pipe(Layer.provideMerge(ClusterActivity.Default))),
    Effect.provide(Logger.replace(Logger.defaultLogger, logger))
  )
}

describe("requestLogFields", () => {
  it("hold the method, route, model, worker, status, outcome, tokens, TTFT, duration, request id and client, nothing else", () => {
    expect(requestLogFields(summary())).toEqual({
      method: "POST",
      route: "chat",
      model: "mlx-community/Llama-3.2-3B-Instruct-4bit",
      workerId: "mac-studio",
      status: 200,
      outcome: "succeeded",
      tokens: 42,
      ttftMs: 83.3,
      durationMs: 912.4,
      requestId: "req-7f3a",
      client: "192.168.1.20"
    })
  })

  it("add the error code and a cut message for failures, retries when there were some, and cut what a client chose", () => {
    const fields = requestLogFields(
      summary({
        outcome: "failed",
        status: 503,
        errorCode: "workers_unavailable",
        errorMessage: "x".repeat(1_000),
        retries: 2,
        model: "m".repeat(1_000),
        route: "/v1/" + "p".repeat(1_000),
        workerId: undefined,
        ttftMs: undefined,
        tokens: 0
      })
    )
    expect(fields).toMatchObject({ code: "workers_unavailable", retries: 2, status: 503, outcome: "failed" })
    expect(String(fields["error"])).toHaveLength(200)
    expect(String(fields["model"])).toHaveLength(128)
    expect(String(fields["route"])).toHaveLength(128)
    expect(fields).not.toHaveProperty("workerId")
    expect(fields).not.toHaveProperty("ttftMs")
  })

  it("add migrations after retries when the stream moved to another worker (issue 13)", () => {
    const fields = requestLogFields(summary({ migrations: 2, retries: 1 }))
    const keys = Object.keys(fields)
    expect(keys.indexOf("migrations")).toBe(keys.indexOf("retries") + 1)
    expect(Object.entries(fields).filter(([k]) => k === "retries" || k === "migrations")).toEqual([
      ["retries", 1],
      ["migrations", 2]
    ])
    expect(requestLogFields(summary({ migrations: 0 }))).not.toHaveProperty("migrations")
  })
})

describe("RequestJournal.record", () => {
  it.effect("writes one info line per request with its fields; the cluster's failures are warnings, a 4xx refusal an info line", () =>
    Effect.gen(function* () {
      const { lines } = yield* withJournal((journal) =>
        Effect.all([
          journal.record(summary()),
          journal.record(summary({ requestId: "req-2", outcome: "failed", status: 503, errorCode: "no_skilled_worker", errorMessage: "No online worker can serve model", tokens: 0, ttftMs: undefined })),
          journal.record(
            summary({ requestId: "req-3", route: "/v1/chat/completions", model: "", modelKnown: false, workerId: undefined, outcome: "failed", status: 401, errorCode: "invalid_api_key", tokens: 0, ttftMs: undefined, durationMs: 0.4 })
          ),
          journal.record(summary({ requestId: "req-4", outcome: "cancelled", status: 200, errorCode: "cancelled", tokens: 3 })),
          journal.record(summary({ requestId: "req-5", outcome: "failed", status: 200, errorCode: "worker_lost", tokens: 9 }))
        ])
      )
      expect(lines.map((l) => [l.level, l.message, l.fields["requestId"], l.fields["status"]])).toEqual([
        ["INFO", "request", "req-7f3a", 200],
        ["WARN", "request", "req-2", 503],
        ["INFO", "request", "req-3", 401],
        ["INFO", "request", "req-4", 200],
        // A stream that broke after its 200 is the cluster's failure.
        ["WARN", "request", "req-5", 200]
      ])
      expect(lines[0]?.fields).toEqual(requestLogFields(summary()))
      expect(lines[1]?.fields).toMatchObject({ code: "no_skilled_worker", error: "No online worker can serve model" })
    })
  )

  it.effect("updates the request metrics in seconds, with the model label only for known models and the code on failures", () =>
    Effect.gen(function* () {
      const model = "journal-test/model"
      const before = {
        ok: yield* count(Metrics.requestsChild("chat", model, "succeeded")),
        unknown: yield* count(Metrics.requestsChild("chat", "unknown", "failed")),
        failures: yield* count(Metrics.failuresChild("chat", "unknown", "model_not_found")),
        other: yield* count(Metrics.failuresChild("ws", model, "other")),
        tokens: yield* count(Metrics.tokensChild(model)),
        ttft: (yield* histogram(Metrics.ttftChild(model))).count
      }
      recordMetrics(summary({ model, tokens: 42, ttftMs: 250, durationMs: 1_500 }))
      recordMetrics(summary({ model: "client-typo", modelKnown: false, outcome: "failed", status: 404, errorCode: "model_not_found", tokens: 0, ttftMs: undefined }))
      recordMetrics(summary({ route: "ws", model, outcome: "failed", status: 502, errorCode: "made-up-by-a-worker", tokens: 0, ttftMs: undefined }))
      expect(yield* count(Metrics.requestsChild("chat", model, "succeeded"))).toBe(before.ok + 1)
      expect(yield* count(Metrics.requestsChild("chat", "unknown", "failed"))).toBe(before.unknown + 1)
      expect(yield* count(Metrics.failuresChild("chat", "unknown", "model_not_found"))).toBe(before.failures + 1)
      expect(yield* count(Metrics.failuresChild("ws", model, "other"))).toBe(before.other + 1)
      expect(yield* count(Metrics.tokensChild(model))).toBe(before.tokens + 42)
      const ttft = yield* histogram(Metrics.ttftChild(model))
      expect(ttft.count).toBe(before.ttft + 1)
      expect(ttft.max).toBe(0.25)
      expect((yield* histogram(Metrics.durationChild(model))).max).toBe(1.5)
      // The typo never became a label.
      const labels = (yield* Metric.snapshot).flatMap((p) => p.metricKey.tags.map((t) => t.value))
      expect(labels).not.toContain("client-typo")
    })
  )

  it.effect("feeds the dashboard's activity at the Clock's time", () =>
    Effect.gen(function* () {
      yield* TestClock.setTime(50_000_000)
      const { result } = yield* withJournal((journal, activity) =>
        Effect.gen(function* () {
          yield* journal.record(summary({ retries: 1 }))
          yield* journal.record(summary({ requestId: "req-bad", outcome: "failed", status: 504, errorCode: "first_token_timeout", tokens: 0, ttftMs: undefined }))
          yield* TestClock.adjust("1 second")
          return yield* activity.snapshot
        })
      )
      expect(result.series.requests.at(-1)).toBe(2)
      expect(result.retries).toBe(1)
      expect(result.failures.map((f) => [f.requestId, f.code])).toEqual([["req-bad", "first_token_timeout"]])
      expect(result.ttftSamples).toBe(1)
    })
  )

  it("prints as one pretty line and one JSON line per request", () => {
    const fields = new LogFields(requestLogFields(summary({ model: 'evil"\nmodel' })))
    const input = { date: new Date(0), logLevel: LogLevel.Info, message: ["request", fields], annotations: HashMap.empty(), cause: Cause.empty }
    const pretty = prettyLine(input)
    expect(pretty.split("\n")).toHaveLength(1)
    expect(pretty).toBe(
      '1970-01-01T00:00:00.000Z INFO  request method=POST route=chat model="evil\\"\\nmodel" workerId=mac-studio status=200 outcome=succeeded tokens=42 ttftMs=83.3 durationMs=912.4 requestId=req-7f3a client=192.168.1.20'
    )
    expect(JSON.parse(jsonLine(input))).toMatchObject({ msg: "request", model: 'evil"\nmodel' })
  })

  it("costs a few microseconds per request before the log call (metrics and activity)", () => {
    const activity = new ActivityWindow()
    const s = summary()
    const rounds = 20_000
    const started = performance.now()
    for (let i = 0; i < rounds; i++) {
      recordMetrics(s)
      activity.record(s, 1_000_000 + i)
    }
    const perCall = ((performance.now() - started) * 1000) / rounds
    // About 1 µs on the 2-core test machine; the bound leaves room for a busy one.
    expect(perCall).toBeLessThan(20)
  })
})
