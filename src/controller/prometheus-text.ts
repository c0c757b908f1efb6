import { MetricKeyType, type MetricPair, MetricState, Option } from "effect"

/**
 * The Prometheus text exposition format (version 0.0.4), written from Effect's metric registry
 * (`Metric.snapshot`) and from values read at scrape time. Replaces the OpenTelemetry exporter,
 * which added an `otel_scope_name` label to every series, `# UNIT` lines and a `target_info`.
 *
 * Pure functions: a list of families in, text out.
 */

export type FamilyType = "counter" | "gauge" | "histogram" | "summary"

export interface Sample {
  /** Appended to the family name: `_bucket`, `_sum`, `_count`, or nothing. */
  readonly suffix?: string
  readonly labels: ReadonlyArray<readonly [string, string]>
  readonly value: number | bigint
}

export interface Family {
  readonly name: string
  readonly help: string
  readonly type: FamilyType
  readonly samples: ReadonlyArray<Sample>
}

const INVALID_NAME_CHARS = /[^a-zA-Z0-9_:]/g
const INVALID_LABEL_CHARS = /[^a-zA-Z0-9_]/g

export const metricName = (name: string): string => {
  const clean = name.replace(INVALID_NAME_CHARS, "_")
  return /^[0-9]/.test(clean) ? `_${clean}` : clean
}

export const labelName = (name: string): string => {
  const clean = name.replace(INVALID_LABEL_CHARS, "_")
  return /^[0-9]/.test(clean) ? `_${clean}` : clean
}

export const escapeLabelValue = (value: string): string =>
  value.replace(/\\/g, "\\\\").replace(/"/g, '\\"').replace(/\n/g, "\\n")

export const escapeHelp = (help: string): string => help.replace(/\\/g, "\\\\").replace(/\n/g, "\\n")

export const formatValue = (value: number | bigint): string => {
  if (typeof value === "bigint") return value.toString()
  if (Number.isNaN(value)) return "NaN"
  if (value === Number.POSITIVE_INFINITY) return "+Inf"
  if (value === Number.NEGATIVE_INFINITY) return "-Inf"
  return String(value)
}

const renderLabels = (labels: ReadonlyArray<readonly [string, string]>): string =>
  labels.length === 0 ? "" : `{${labels.map(([k, v]) => `${labelName(k)}="${escapeLabelValue(v)}"`).join(",")}}`

/** The families as exposition text: HELP, TYPE, then the samples; families sorted by name. */
export const renderFamilies = (families: ReadonlyArray<Family>): string => {
  const lines: Array<string> = []
  for (const family of [...families].sort((a, b) => (a.name < b.name ? -1 : a.name > b.name ? 1 : 0))) {
    if (family.samples.length === 0) continue
    const name = metricName(family.name)
    lines.push(`# HELP ${name} ${escapeHelp(family.help)}`)
    lines.push(`# TYPE ${name} ${family.type}`)
    for (const sample of family.samples) {
      lines.push(`${name}${sample.suffix ?? ""}${renderLabels(sample.labels)} ${formatValue(sample.value)}`)
    }
  }
  return lines.length === 0 ? "" : `${lines.join("\n")}\n`
}

/** Counters are exposed with `_total`, as Prometheus expects. */
const counterName = (name: string) => (name.endsWith("_total") ? name : `${name}_total`)

const labelKey = (labels: ReadonlyArray<readonly [string, string]>) => labels.map(([k, v]) => `${k}=${v}`).join("\u0000")

/** The samples of one registry entry, with the name of the family they belong to. */
const samplesOf = (pair: MetricPair.MetricPair.Untyped): { readonly family: Omit<Family, "samples">; readonly samples: Array<Sample> } | undefined => {
  const key = pair.metricKey
  const state: unknown = pair.metricState
  const labels = key.tags.map((t) => [t.key, t.value] as const)
  const help = Option.getOrElse(key.description, () => key.name)
  if (MetricKeyType.isCounterKey(key.keyType) && MetricState.isCounterState(state)) {
    // An Effect counter that is not `incremental` may go down (`effect_fiber_active`): a gauge to Prometheus.
    return key.keyType.incremental
      ? { family: { name: counterName(key.name), help, type: "counter" }, samples: [{ labels, value: state.count }] }
      : { family: { name: key.name, help, type: "gauge" }, samples: [{ labels, value: state.count }] }
  }
  if (MetricKeyType.isGaugeKey(key.keyType) && MetricState.isGaugeState(state)) {
    return { family: { name: key.name, help, type: "gauge" }, samples: [{ labels, value: state.value }] }
  }
  if (MetricKeyType.isHistogramKey(key.keyType) && MetricState.isHistogramState(state)) {
    // Effect's buckets are cumulative counts up to each boundary, +Inf included.
    const samples: Array<Sample> = state.buckets.map(([le, count]) => ({
      suffix: "_bucket",
      labels: [...labels, ["le", formatValue(le)] as const],
      value: count
    }))
    if (state.buckets.at(-1)?.[0] !== Number.POSITIVE_INFINITY) {
      samples.push({ suffix: "_bucket", labels: [...labels, ["le", "+Inf"] as const], value: state.count })
    }
    samples.push({ suffix: "_sum", labels, value: state.sum }, { suffix: "_count", labels, value: state.count })
    return { family: { name: key.name, help, type: "histogram" }, samples }
  }
  if (MetricKeyType.isSummaryKey(key.keyType) && MetricState.isSummaryState(state)) {
    const samples: Array<Sample> = []
    for (const [quantile, value] of state.quantiles) {
      if (Option.isSome(value)) samples.push({ labels: [...labels, ["quantile", formatValue(quantile)] as const], value: value.value })
    }
    samples.push({ suffix: "_sum", labels, value: state.sum }, { suffix: "_count", labels, value: state.count })
    return { family: { name: key.name, help, type: "summary" }, samples }
  }
  if (MetricKeyType.isFrequencyKey(key.keyType) && MetricState.isFrequencyState(state)) {
    const samples = Array.from(state.occurrences, ([word, count]): Sample => ({ labels: [...labels, ["key", word] as const], value: count }))
    return { family: { name: counterName(key.name), help, type: "counter" }, samples }
  }
  return undefined
}

/**
 * Effect's registry entries whose metric name `accept`s, grouped into families (one per name,
 * one sample set per label combination, in a stable order).
 */
export const familiesFromRegistry = (
  pairs: ReadonlyArray<MetricPair.MetricPair.Untyped>,
  accept: (name: string) => boolean
): Array<Family> => {
  const families = new Map<string, { family: Omit<Family, "samples">; series: Array<{ key: string; samples: Array<Sample> }> }>()
  for (const pair of pairs) {
    if (!accept(pair.metricKey.name)) continue
    const found = samplesOf(pair)
    if (found === undefined) continue
    const entry = families.get(found.family.name) ?? { family: found.family, series: [] }
    families.set(found.family.name, entry)
    entry.series.push({ key: labelKey(pair.metricKey.tags.map((t) => [t.key, t.value] as const)), samples: found.samples })
  }
  return Array.from(families.values(), ({ family, series }) => ({
    ...family,
    samples: series.sort((a, b) => (a.key < b.key ? -1 : a.key > b.key ? 1 : 0)).flatMap((s) => s.samples)
  }))
}
