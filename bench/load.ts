/**
 * The load generator: streaming chat requests over `node:http` with a keep-alive Agent, each read
 * to the end of its SSE body.
 *
 * - `streamOnce`: one request; time to first token is measured from just before the request is
 *   written to the arrival of the first chunk carrying a token (`"delta":{"content":...}`; the role
 *   chunk does not count); tokens are the content chunks received; the request succeeds when the
 *   status is 200 and the body ends with `data: [DONE]`.
 * - `closedLoop`: `concurrency` virtual clients, each sending its next request as soon as the
 *   previous one ended, for a warm-up and then a measured window.
 * - `oneShot`: `count` requests started at once, each read to the end.
 */
import { Agent, request as httpRequest } from "node:http"

export interface Target {
  readonly name: string
  readonly host: string
  readonly port: number
}

export interface Sample {
  /** performance.now() when the request was sent. */
  readonly startedAt: number
  readonly endedAt: number
  readonly ttftMs: number | undefined
  readonly tokens: number
  readonly bytes: number
  /** Undefined: success. */
  readonly error: string | undefined
}

const TOKEN_MARK = '"delta":{"content":'
const DONE = "data: [DONE]\n\n"

/** Chat completion body: streaming, `max_tokens` tokens, a fixed prompt (the synthetic engine is deterministic). */
export const chatBody = (model: string, maxTokens: number): Buffer =>
  Buffer.from(
    JSON.stringify({
      model,
      stream: true,
      max_tokens: maxTokens,
      messages: [{ role: "user", content: "Benchmark: say something about the cluster." }]
    })
  )

const countTokens = (text: string): number => {
  let n = 0
  let at = text.indexOf(TOKEN_MARK)
  while (at !== -1) {
    n++
    at = text.indexOf(TOKEN_MARK, at + TOKEN_MARK.length)
  }
  return n
}

export interface StreamOptions {
  readonly agent: Agent
  readonly target: Target
  readonly body: Buffer
  readonly timeoutMs: number
  /** Keep the whole body text in the result (for the sanity check). */
  readonly keepText?: boolean
}

export interface StreamResult extends Sample {
  readonly text?: string
}

export const streamOnce = (options: StreamOptions): Promise<StreamResult> =>
  new Promise((resolve) => {
    const startedAt = performance.now()
    let ttftMs: number | undefined
    let text = ""
    let status = 0
    let settled = false
    const finish = (error: string | undefined) => {
      if (settled) return
      settled = true
      const endedAt = performance.now()
      const ok = error === undefined
      resolve({
        startedAt,
        endedAt,
        ttftMs: ok ? ttftMs : undefined,
        tokens: countTokens(text),
        bytes: text.length,
        error,
        ...(options.keepText === true ? { text } : {})
      })
    }
    const req = httpRequest(
      {
        agent: options.agent,
        host: options.target.host,
        port: options.target.port,
        method: "POST",
        path: "/v1/chat/completions",
        headers: { "content-type": "application/json", "content-length": options.body.length, accept: "text/event-stream" }
      },
      (res) => {
        status = res.statusCode ?? 0
        res.on("data", (chunk: Buffer) => {
          const before = text.length
          // latin1: one char per byte, no decoder state; the markers searched for are ASCII.
          text += chunk.toString("latin1")
          if (ttftMs === undefined && text.indexOf(TOKEN_MARK, Math.max(0, before - TOKEN_MARK.length)) !== -1) {
            ttftMs = performance.now() - startedAt
          }
        })
        res.on("end", () => {
          if (status !== 200) finish(`HTTP ${status}: ${text.slice(0, 160).replace(/\s+/g, " ")}`)
          else if (!text.endsWith(DONE)) finish(text.includes('"error"') ? `SSE error event: ${lastEvent(text)}` : "stream ended without [DONE]")
          else finish(undefined)
        })
        res.on("error", (error) => finish(`response: ${error.message}`))
        res.on("aborted", () => finish("response aborted"))
      }
    )
    req.setTimeout(options.timeoutMs, () => {
      req.destroy(new Error(`timeout after ${options.timeoutMs} ms`))
    })
    req.on("error", (error: NodeJS.ErrnoException) => finish(`request: ${error.code ?? error.message}`))
    req.end(options.body)
  })

/** The content of an SSE chat stream's chunks, joined. */
export const contentOf = (sse: string): string => {
  const parts: Array<string> = []
  for (const m of sse.matchAll(/"delta":\{"content":("(?:[^"\\]|\\.)*")\}/g)) {
    const literal = m[1]
    if (literal !== undefined) parts.push(JSON.parse(literal) as string)
  }
  return parts.join("")
}

const lastEvent = (text: string) => {
  const events = text.trimEnd().split("\n\n")
  return (events[events.length - 1] ?? "").slice(0, 200)
}

/** Nearest-rank percentile of an ascending array; NaN when empty. */
export const percentile = (sorted: ReadonlyArray<number>, p: number): number => {
  if (sorted.length === 0) return Number.NaN
  const rank = Math.ceil((p / 100) * sorted.length)
  return sorted[Math.min(sorted.length - 1, Math.max(0, rank - 1))] ?? Number.NaN
}

export interface LoadStats {
  /** Successful requests that ended inside the measured window. */
  readonly requests: number
  readonly windowSeconds: number
  readonly reqPerSecond: number
  readonly tokensPerSecond: number
  readonly bytesPerSecond: number
  /**
   * TTFT over the successful requests that started inside the window too: one started in the
   * warm-up may have waited for its connection (a closed loop opens all its connections at
   * once, and at concurrency 1,024 some of its SYNs are lost and sent again after 1 and 3 s).
   */
  readonly ttftP50Ms: number
  readonly ttftP90Ms: number
  readonly ttftP99Ms: number
  readonly ttftMeanMs: number
  readonly ttftMaxMs: number
  /** Mean time from sending to the end of the body, successful requests of the window. */
  readonly durationMeanMs: number
  /** Failed requests over the whole run (warm-up and tail included). */
  readonly errors: number
  readonly errorKinds: Record<string, number>
  /** Every request sent, warm-up and tail included. */
  readonly sent: number
}

export const summarise = (samples: ReadonlyArray<Sample>, windowStart: number, windowEnd: number, sent: number): LoadStats => {
  const windowSeconds = (windowEnd - windowStart) / 1000
  const inWindow = samples.filter((s) => s.error === undefined && s.endedAt >= windowStart && s.endedAt <= windowEnd)
  const ttfts = inWindow.flatMap((s) => (s.ttftMs === undefined || s.startedAt < windowStart ? [] : [s.ttftMs])).sort((a, b) => a - b)
  const errorKinds: Record<string, number> = {}
  let errors = 0
  for (const s of samples) {
    if (s.error === undefined) continue
    errors++
    errorKinds[s.error] = (errorKinds[s.error] ?? 0) + 1
  }
  const tokens = inWindow.reduce((n, s) => n + s.tokens, 0)
  const bytes = inWindow.reduce((n, s) => n + s.bytes, 0)
  const durations = inWindow.reduce((n, s) => n + (s.endedAt - s.startedAt), 0)
  return {
    requests: inWindow.length,
    windowSeconds,
    reqPerSecond: inWindow.length / windowSeconds,
    tokensPerSecond: tokens / windowSeconds,
    bytesPerSecond: bytes / windowSeconds,
    ttftP50Ms: percentile(ttfts, 50),
    ttftP90Ms: percentile(ttfts, 90),
    ttftP99Ms: percentile(ttfts, 99),
    ttftMeanMs: ttfts.length === 0 ? Number.NaN : ttfts.reduce((a, b) => a + b, 0) / ttfts.length,
    ttftMaxMs: ttfts.length === 0 ? Number.NaN : (ttfts[ttfts.length - 1] ?? Number.NaN),
    durationMeanMs: inWindow.length === 0 ? Number.NaN : durations / inWindow.length,
    errors,
    errorKinds,
    sent
  }
}

export interface ClosedLoopOptions {
  readonly target: Target
  readonly concurrency: number
  readonly warmupMs: number
  readonly durationMs: number
  readonly body: Buffer
  readonly timeoutMs: number
  /** Called when the measured window opens and closes (to start and stop the CPU/RSS meter). */
  readonly onWindowStart: () => void
  readonly onWindowEnd: () => void
  /** Checked between requests: true stops the clients early. */
  readonly aborted: () => boolean
}

const sleep = (ms: number) => new Promise<void>((resolve) => setTimeout(resolve, ms))

/** Closed-loop load: every client sends its next request when the previous one ended. */
export const closedLoop = async (options: ClosedLoopOptions): Promise<LoadStats> => {
  const agent = new Agent({ keepAlive: true, maxSockets: options.concurrency, maxFreeSockets: options.concurrency })
  const samples: Array<Sample> = []
  let sent = 0
  const start = performance.now()
  const windowStart = start + options.warmupMs
  const windowEnd = windowStart + options.durationMs
  let windowClosed = false
  const closeWindow = () => {
    windowClosed = true
    options.onWindowEnd()
  }
  const windowTimers = [setTimeout(options.onWindowStart, options.warmupMs), setTimeout(closeWindow, options.warmupMs + options.durationMs)]
  const client = async () => {
    while (performance.now() < windowEnd && !options.aborted()) {
      sent++
      const sample = await streamOnce({ agent, target: options.target, body: options.body, timeoutMs: options.timeoutMs })
      samples.push(sample)
      // A failing target answers at once: don't spin on it.
      if (sample.error !== undefined) await sleep(10)
    }
  }
  try {
    await Promise.all(Array.from({ length: options.concurrency }, client))
  } finally {
    for (const timer of windowTimers) clearTimeout(timer)
    agent.destroy()
  }
  // The clients stop at the window's end, which can come before its timer fires (one client ends
  // its last request just past it): close the window here then, or the profile's window has no end.
  if (!windowClosed && !options.aborted()) closeWindow()
  return summarise(samples, windowStart, windowEnd, sent)
}

export interface OneShotStats extends LoadStats {
  readonly count: number
  /** From the first request sent to the last body ended. */
  readonly wallMs: number
  readonly succeeded: number
}

/** `count` streaming requests started at once on fresh connections; each is read to its end. */
export const oneShot = async (target: Target, count: number, body: Buffer, timeoutMs: number): Promise<OneShotStats> => {
  const agent = new Agent({ keepAlive: true, maxSockets: count, maxFreeSockets: count })
  const start = performance.now()
  try {
    const samples = await Promise.all(Array.from({ length: count }, () => streamOnce({ agent, target, body, timeoutMs })))
    const end = Math.max(start, ...samples.map((s) => s.endedAt))
    const stats = summarise(samples, start, end, count)
    return { ...stats, count, wallMs: end - start, succeeded: count - stats.errors }
  } finally {
    agent.destroy()
  }
}

/** Closed-loop plain GETs (the HTTP stack alone, for comparison): requests/s and errors. */
export const getLoop = async (
  target: Target,
  path: string,
  concurrency: number,
  durationMs: number,
  timeoutMs: number
): Promise<{ readonly reqPerSecond: number; readonly p50Ms: number; readonly p99Ms: number; readonly errors: number }> => {
  const agent = new Agent({ keepAlive: true, maxSockets: concurrency, maxFreeSockets: concurrency })
  const latencies: Array<number> = []
  let errors = 0
  const end = performance.now() + durationMs
  const once = () =>
    new Promise<void>((resolve) => {
      const started = performance.now()
      const req = httpRequest({ agent, host: target.host, port: target.port, method: "GET", path }, (res) => {
        res.resume()
        res.on("end", () => {
          if (res.statusCode === 200) latencies.push(performance.now() - started)
          else errors++
          resolve()
        })
        res.on("error", () => {
          errors++
          resolve()
        })
      })
      req.setTimeout(timeoutMs, () => req.destroy(new Error("timeout")))
      req.on("error", () => {
        errors++
        resolve()
      })
      req.end()
    })
  const client = async () => {
    while (performance.now() < end) await once()
  }
  const start = performance.now()
  try {
    await Promise.all(Array.from({ length: concurrency }, client))
  } finally {
    agent.destroy()
  }
  const sorted = latencies.sort((a, b) => a - b)
  return {
    reqPerSecond: latencies.length / ((performance.now() - start) / 1000),
    p50Ms: percentile(sorted, 50),
    p99Ms: percentile(sorted, 99),
    errors
  }
}
