import { describe, expect, it } from "@effect/vitest"
import { Effect, Metric, MetricBoundaries } from "effect"
import parsePrometheusTextFormat from "parse-prometheus-text-format"
import {
  escapeHelp,
  escapeLabelValue,
  familiesFromRegistry,
  formatValue,
  labelName,
  metricName,
  renderFamilies
} from "../../src/controller/prometheus-text.js"

describe("renderFamilies", () => {
  it("writes HELP, TYPE and samples, families sorted by name, labels escaped", () => {
    const text = renderFamilies([
      { name: "b_gauge", help: "A gauge\nover two lines", type: "gauge", samples: [{ labels: [["worker", 'w"1\\x\ny']], value: 2.5 }] },
      { name: "a_total", help: "A counter", type: "counter", samples: [{ labels: [], value: 3 }] },
      { name: "empty", help: "no samples: not written", type: "gauge", samples: [] }
    ])
    expect(text).toBe(
      [
        "# HELP a_total A counter",
        "# TYPE a_total counter",
        "a_total 3",
        "# HELP b_gauge A gauge\\nover two lines",
        "# TYPE b_gauge gauge",
        'b_gauge{worker="w\\"1\\\\x\\ny"} 2.5',
        ""
      ].join("\n")
    )
    const parsed = parsePrometheusTextFormat(text)
    expect(parsed.find((f) => f.name === "b_gauge")?.metrics[0]?.labels).toEqual({ worker: 'w"1\\x\ny' })
  })

  it("formats special values and cleans names", () => {
    expect([formatValue(Number.POSITIVE_INFINITY), formatValue(Number.NEGATIVE_INFINITY), formatValue(Number.NaN)]).toEqual(["+Inf", "-Inf", "NaN"])
    expect(formatValue(10n)).toBe("10")
    expect(formatValue(0.005)).toBe("0.005")
    expect(metricName("effect.fiber-started")).toBe("effect_fiber_started")
    expect(metricName("9lives")).toBe("_9lives")
    expect(labelName("time:unit")).toBe("time_unit")
    expect(escapeLabelValue("a\\b")).toBe("a\\\\b")
    expect(escapeHelp("a\\b")).toBe("a\\\\b")
    expect(renderFamilies([])).toBe("")
  })
})

describe("familiesFromRegistry", () => {
  it.effect("turns Effect counters, gauges, histograms, summaries and frequencies into families", () =>
    Effect.gen(function* () {
      const counter = Metric.counter("ptt_requests", { description: "requests", incremental: true })
      yield* Metric.increment(Metric.tagged(counter, "route", "chat"))
      yield* Metric.incrementBy(Metric.tagged(counter, "route", "ws"), 2)
      yield* Metric.set(Metric.gauge("ptt_depth"), 4)
      // A counter that may go down (not `incremental`) is a gauge.
      yield* Metric.incrementBy(Metric.counter("ptt_active"), 5)
      yield* Metric.incrementBy(Metric.counter("ptt_active"), -2)
      const histogram = Metric.histogram("ptt_seconds", MetricBoundaries.fromIterable([0.1, 1]), "latency")
      yield* Metric.update(histogram, 0.05)
      yield* Metric.update(histogram, 0.5)
      yield* Metric.update(histogram, 7)
      const summary = Metric.summary({ name: "ptt_summary", maxAge: "1 minute", maxSize: 10, error: 0.01, quantiles: [0.5] })
      yield* Metric.update(summary, 3)
      yield* Metric.update(Metric.frequency("ptt_words"), "hello")
      yield* Metric.increment(Metric.counter("other_prefix_total"))

      const families = familiesFromRegistry(yield* Metric.snapshot, (name) => name.startsWith("ptt_"))
      const text = renderFamilies(families)
      expect(text).not.toContain("other_prefix")
      const byName = new Map(parsePrometheusTextFormat(text).map((f) => [f.name, f]))
      // Counters get `_total`.
      expect(byName.get("ptt_requests_total")).toMatchObject({
        type: "COUNTER",
        help: "requests",
        metrics: [{ labels: { route: "chat" }, value: "1" }, { labels: { route: "ws" }, value: "2" }]
      })
      expect(byName.get("ptt_depth")).toMatchObject({ type: "GAUGE", metrics: [{ value: "4" }] })
      expect(byName.get("ptt_active")).toMatchObject({ type: "GAUGE", metrics: [{ value: "3" }] })
      // Histograms: cumulative buckets with +Inf, sum and count.
      expect(byName.get("ptt_seconds")).toMatchObject({
        type: "HISTOGRAM",
        metrics: [{ buckets: { "0.1": "1", "1": "2", "+Inf": "3" }, count: "3", sum: "7.55" }]
      })
      expect(byName.get("ptt_summary")).toMatchObject({ type: "SUMMARY", metrics: [{ count: "1", quantiles: { "0.5": "3" } }] })
      expect(byName.get("ptt_words_total")).toMatchObject({ type: "COUNTER", metrics: [{ labels: { key: "hello" }, value: "1" }] })
    })
  )
})
