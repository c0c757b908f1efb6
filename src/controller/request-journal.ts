import { Effect, type MetricLabel } from "effect"
import { LogFields } from "../logging.js"
import { clip } from "../domain/log-text.js"
import { ClusterActivity } from "./cluster-activity.js"
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
  /** The HTTP method (`POST`, `GET`), or `WS` for a WebSocket request; not logged when absent. */
  readonly method?: string | undefined
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
  /** extension (issue 13): times the stream moved to another worker after its worker was lost mid-stream. */
  readonly migrations?: number | undefined
  /** Epoch ms when the request arrived. */
  readonly startedAt: number
  /** The client's address, when the front door knows it. */
  readonly client?: string | undefined
}

/** Longest client-chosen text written (model names, paths). */
const TEXT_CHARS = 128
/** Longest error message written. */
const ERROR_CHARS = 200

const ms = (n: number) => Math.round(n * 10) / 10

/**
 * The fields of a request's log line, in the order they are written. No prompt text and no key
 * ever reach a summary; the texts a client chooses (model, path) are cut here, and the logger
 * quotes and escapes them.
 */
export const requestLogFields = (s: RequestSummary): Record<string, string | number> => {
  const fields: Record<string, string | number> = {}
  if (s.method !== undefined) fields["method"] = s.method
  fields["route"] = clip(s.route, TEXT_CHARS)
  fields["model"] = clip(s.model, TEXT_CHARS)
  if (s.workerId !== undefined) fields["workerId"] = s.workerId
  fields["status"] = s.status
  fields["outcome"] = s.outcome
  if (s.errorCode !== undefined) fields["code"] = s.errorCode
  fields["tokens"] = s.tokens
  if (s.ttftMs !== undefined) fields["ttftMs"] = ms(s.ttftMs)
  fields["durationMs"] = ms(s.durationMs)
  if (s.retries > 0) fields["retries"] = s.retries
  if (s.migrations !== undefined && s.migrations > 0) fields["migrations"] = s.migrations
  fields["requestId"] = s.requestId
  if (s.client !== undefined) fields["client"] = s.client
  if (s.errorMessage !== undefined && s.outcome !== "succeeded") fields["error"] = clip(s.errorMessage, ERROR_CHARS)
  return fields
}

const NO_LABELS: ReadonlyArray<MetricLabel.MetricLabel> = []

/** The request metrics of one summary (bounded labels, seconds). */
export const recordMetrics = (s: RequestSummary): void => {
  const model = Metrics.modelLabel(s.model, s.modelKnown)
  const route = Metrics.routeLabel(s.route)
  Metrics.requestsChild(route, model, s.outcome).unsafeUpdate(1, NO_LABELS)
  if (s.outcome === "failed") Metrics.failuresChild(route, model, Metrics.codeLabel(s.errorCode)).unsafeUpdate(1, NO_LABELS)
  Metrics.durationChild(model).unsafeUpdate(s.durationMs / 1000, NO_LABELS)
  if (s.ttftMs !== undefined) Metrics.ttftChild(model).unsafeUpdate(s.ttftMs / 1000, NO_LABELS)
  if (s.tokens > 0) Metrics.tokensChild(model).unsafeUpdate(s.tokens, NO_LABELS)
}

/**
 * A failure that is the cluster's, not the client's: a 5xx, or a stream that broke after its 200
 * (a 4xx is the client's request or key, and is logged at info).
 */
export const clusterFailure = (s: RequestSummary): boolean => s.outcome === "failed" && !(s.status >= 400 && s.status < 500)

/**
 * Records finished requests: one log line each (`request method=… route=… …`; info, warning for a
 * failure the cluster caused), the request metrics, and the dashboard's activity.
 * Runs once per request on the hot path: a few map lookups and array writes, then the log call.
 */
export class RequestJournal extends Effect.Service<RequestJournal>()("controller/RequestJournal", {
  effect: Effect.gen(function* () {
    const activity = yield* ClusterActivity
    const record = (s: RequestSummary): Effect.Effect<void> =>
      Effect.clockWith((clock) =>
        Effect.suspend(() => {
          recordMetrics(s)
          activity.unsafeRecord(s, clock.unsafeCurrentTimeMillis())
          // The fields travel with the message (`LogFields`), not as annotations: ten times cheaper.
          const fields = new LogFields(requestLogFields(s))
          return clusterFailure(s) ? Effect.logWarning("request", fields) : Effect.logInfo("request", fields)
        })
      )
    return { record } as const
  }),
  dependencies: [ClusterActivity.Default]
}) {}
