import * as HttpLayerRouter from "@effect/platform/HttpLayerRouter"
import * as HttpServerRequest from "@effect/platform/HttpServerRequest"
import * as HttpServerResponse from "@effect/platform/HttpServerResponse"
import { Effect, Schedule, Schema, Stream } from "effect"
import { createHash } from "node:crypto"
import { readFileSync } from "node:fs"
import { ClusterDashboard } from "../controller/cluster-dashboard.js"
import { ControllerLifecycle } from "../controller/lifecycle.js"
import type { ControllerState } from "../domain/cluster.js"
import { DashboardSnapshot } from "../domain/dashboard.js"

/**
 * The dashboard: `GET /dashboard` serves one static page (inline CSS and script, nothing loaded
 * from elsewhere), `GET /` redirects to it, and `GET /api/cluster/events` streams the page's data
 * as server-sent events, one `DashboardSnapshot` per second. `/dashboard` and `/` need no key:
 * the page asks for one when `/api/cluster/events` answers 401 (the server's middleware guards
 * `/api/*`), and sends it as a bearer header, which `EventSource` could not.
 */

/** The page, read once; its script's hash goes into the Content-Security-Policy. */
export const loadDashboardPage = (): { readonly html: string; readonly csp: string } => {
  const html = readFileSync(new URL("./dashboard.html", import.meta.url), "utf8")
  const script = /<script>([\s\S]*?)<\/script>/.exec(html)?.[1] ?? ""
  const hash = createHash("sha256").update(script, "utf8").digest("base64")
  // Only this page's own script runs; data comes from this origin only; no framing.
  const csp = [
    "default-src 'none'",
    `script-src 'sha256-${hash}'`,
    "style-src 'unsafe-inline'",
    "connect-src 'self'",
    "img-src 'self' data:",
    "base-uri 'none'",
    "form-action 'none'",
    "frame-ancestors 'none'"
  ].join("; ")
  return { html, csp }
}

export const DEFAULT_INTERVAL_MS = 1_000
const MIN_INTERVAL_MS = 250
const MAX_INTERVAL_MS = 10_000
/** A stream ends after this long and the page reconnects: no response lives forever. */
const STREAM_LIFETIME_MS = 10 * 60_000

/** `?interval_ms=N` of the events URL, clamped to 250..10000; 1000 without it. */
export const eventInterval = (url: string): number => {
  const query = url.indexOf("?")
  const raw = query < 0 ? null : new URLSearchParams(url.slice(query + 1)).get("interval_ms")
  const n = raw === null ? Number.NaN : Number(raw)
  return Number.isFinite(n) ? Math.min(MAX_INTERVAL_MS, Math.max(MIN_INTERVAL_MS, Math.round(n))) : DEFAULT_INTERVAL_MS
}

/** States in which open streams end, so that the server's close does not wait for them. */
const ending: ReadonlySet<ControllerState> = new Set(["stopping", "stopped"])

const encodeSnapshot = Schema.encodeSync(DashboardSnapshot)
const encoder = new TextEncoder()

export const DashboardRoutesLive = HttpLayerRouter.use((router) =>
  Effect.gen(function* () {
    const page = loadDashboardPage()
    const dashboard = yield* ClusterDashboard
    const lifecycle = yield* ControllerLifecycle

    const pageResponse = HttpServerResponse.text(page.html, {
      contentType: "text/html; charset=utf-8",
      headers: {
        "cache-control": "no-cache",
        "content-security-policy": page.csp,
        "x-content-type-options": "nosniff",
        "referrer-policy": "no-referrer"
      }
    })

    const events = Effect.gen(function* () {
      const request = yield* HttpServerRequest.HttpServerRequest
      const interval = eventInterval(request.url)
      const stop = lifecycle.changes.pipe(
        Stream.filter((state) => ending.has(state)),
        Stream.runHead
      )
      const body = Stream.repeatEffectWithSchedule(dashboard.snapshot, Schedule.spaced(interval)).pipe(
        Stream.map((snapshot) => encoder.encode(`data: ${JSON.stringify(encodeSnapshot(snapshot))}\n\n`)),
        Stream.take(Math.ceil(STREAM_LIFETIME_MS / interval)),
        Stream.interruptWhen(stop)
      )
      return HttpServerResponse.stream(body, {
        contentType: "text/event-stream",
        headers: { "cache-control": "no-cache, no-store", "x-accel-buffering": "no" }
      })
    })

    yield* router.add("GET", "/", HttpServerResponse.redirect("/dashboard", { status: 302 }))
    yield* router.add("GET", "/dashboard", Effect.succeed(pageResponse))
    yield* router.add("GET", "/api/cluster/events", events)
  })
)
