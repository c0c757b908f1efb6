/** Types for `parse-prometheus-text-format` (it ships none): the prom2json-like shape it returns. */
declare module "parse-prometheus-text-format" {
  export interface ParsedSample {
    readonly value?: string
    readonly labels?: Readonly<Record<string, string>>
    /** Histograms: `le` → cumulative count. */
    readonly buckets?: Readonly<Record<string, string>>
    /** Summaries: quantile → value. */
    readonly quantiles?: Readonly<Record<string, string>>
    readonly count?: string
    readonly sum?: string
  }

  export interface ParsedFamily {
    readonly name: string
    readonly help: string
    readonly type: "COUNTER" | "GAUGE" | "HISTOGRAM" | "SUMMARY" | "UNTYPED"
    readonly metrics: ReadonlyArray<ParsedSample>
  }

  export default function parsePrometheusTextFormat(text: string): Array<ParsedFamily>
}
