import { Effect, Metric } from "effect"
import * as Metrics from "./metrics.js"

/**
 * Everything worth knowing about one finished request, recorded once when it ends (never per
 * token): the Router records the requests it routed, the HTTP front door the ones it refused before
 * routing (bad JSON, a missing key, a full queue). The journal turns it into the request log line,
 * the request metrics and the dashboard's activity.
 */
export interface RequestSummary {
  /** The id of the request on the bus, in logs and in `x-request-id`. */
  readonly requestId: string
  /** Which front door: `chat`, `completions`, `ws`, `rpc`, `internal`, or the HTTP path of a refusal. */
  readonly route: string
  /** The model asked for ("" when the request never named one). */
  readonly model: string
  /** False for a model no worker has registered: never used as a metrics label. */
  readonly modelKnown: boolean
  /** The worker that served it (the last one tried), if any. */
  readonly workerId?: string | undefined
  readonly outcome: "succeeded" | "failed" | "cancelled"
  /** The HTTP status the client got (200 for a stream that failed after its first token). */
  readonly status: number
  /** The error code (OpenAI `code`) of a failed or cancelled request. */
  readonly errorCode?: string | undefined
  readonly errorMessage?: string | undefined
  /** Tokens relayed to the client. */
  readonly tokens: number
  /** Time to first token, ms, when a token was relayed. */
  readonly ttftMs?: number | undefined
  readonly durationMs: number
  /** Dispatches moved to another worker before the first token. */
  readonly retries: number
  /** Epoch ms when the request arrived. */
  readonly startedAt: number
  /** The client's address, when the front door knows it. */
  readonly client?: string | undefined
}

/** The one line of a request's log (no prompt text, no key). */
export const requestLine = (s: RequestSummary): string =>
  `${s.route} ${s.model} ${s.outcome} in ${s.durationMs} ms, ${s.tokens} tokens` +
  (s.errorMessage === undefined ? "" : `: ${s.errorMessage}`)

/** Records finished requests: the log line and the request metrics. */
export class RequestJournal extends Effect.Service<RequestJournal>()("controller/RequestJournal", {
  succeed: {
    record: (s: RequestSummary): Effect.Effect<void> =>
      Effect.gen(function* () {
        yield* Metric.update(Metrics.requestDurationMs, s.durationMs)
        if (s.ttftMs !== undefined) yield* Metric.update(Metrics.timeToFirstTokenMs, s.ttftMs)
        if (s.tokens > 0) yield* Metric.incrementBy(Metrics.tokensRelayed, s.tokens)
        yield* Metric.incrementBy(
          Metrics.requestsTotal.pipe(
            Metric.tagged("route", s.route),
            Metric.tagged("model", s.modelKnown ? s.model : "unknown"),
            Metric.tagged("outcome", s.outcome)
          ),
          1
        )
        const line = requestLine(s)
        yield* (s.outcome === "failed" ? Effect.logWarning(line) : Effect.logDebug(line)).pipe(
          Effect.annotateLogs({ requestId: s.requestId })
        )
      })
  }
}) {}
