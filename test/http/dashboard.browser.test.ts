import { Effect, Layer, Logger, LogLevel, ManagedRuntime, Redacted } from "effect"
import { randomUUID } from "node:crypto"
import { existsSync, mkdirSync } from "node:fs"
import { tmpdir } from "node:os"
import { join } from "node:path"
import type { Page } from "puppeteer-core"
import { afterAll, beforeAll, describe, expect, it } from "vitest"
import { ClusterConfigService } from "../../src/config/cluster-config.js"
import type { ClusterConfig } from "../../src/config/schema.js"
import { RequestJournal, type RequestSummary } from "../../src/controller/request-journal.js"
import { layer as natsLayer } from "../../src/nats/nats-transport-live.js"
import { WorkerLive } from "../../src/worker/worker-live.js"
import { launchBrowser, type TestBrowser } from "../support/browser.js"
import type { CliProcess } from "../support/cli-process.js"
import { baseUrl, controllerLayer, makeModelDir, workerConfig } from "../support/cluster.js"
import { FaultCluster, START_TIMEOUT_MS } from "../support/fault-cluster.js"
import { startTestNatsServer, type TestNatsServer } from "../support/nats-server.js"

/**
 * `/dashboard` in headless Chromium against a real controller (in this process) and two real
 * workers: one in this process, one a separate `src/main.ts` process that the test SIGKILLs.
 * Everything asserted is read from the rendered DOM. The screenshots in docs/img/ come from here:
 * `UPDATE_SCREENSHOTS=1 npx vitest run test/http/dashboard.browser.test.ts` writes them again.
 */

const HEARTBEAT_MS = 250
const OFFLINE_TIMEOUT_MS = 1_500
const HEALTH_CHECK_MS = 250
/** The page asks for a snapshot every 250 ms; rendering and a busy machine take the rest. */
const MARGIN_MS = 1_000
const API_KEY = "dash-secret-key"

const STUDIO = "mac-studio"
const LAPTOP = "macbook-pro"
const STUDIO_MODELS = ["mlx-community/Llama-3.3-70B-Instruct-4bit", "mlx-community/Qwen2.5-32B-Instruct-4bit"]
const LAPTOP_MODELS = ["mlx-community/Llama-3.2-3B-Instruct-4bit", "mlx-community/Qwen2.5-32B-Instruct-4bit"]

const fastDiscovery = (c: ClusterConfig): ClusterConfig => ({
  ...c,
  discovery: { ...c.discovery, heartbeatIntervalMs: HEARTBEAT_MS, offlineTimeoutMs: OFFLINE_TIMEOUT_MS, healthCheckIntervalMs: HEALTH_CHECK_MS }
})

/** A worker in this process that looks like a Mac Studio (hardware overrides). */
const studioWorker = (natsUrl: string) => {
  const base = workerConfig(natsUrl, { id: STUDIO, models: STUDIO_MODELS, tokensPerSecond: 400, firstTokenMs: 25, tags: ["studio"], maxConcurrent: 8 })
  const config: ClusterConfig = fastDiscovery({
    ...base,
    worker: { ...base.worker, hardware: { chip: "Apple M2 Ultra", cpuCores: 24, gpuCores: 76, gpuMemoryGB: 144, totalMemoryGB: 192 } }
  })
  return Layer.fresh(
    WorkerLive.pipe(
      Layer.provide(natsLayer({ url: natsUrl, name: "dashboard test studio" })),
      Layer.provide(ClusterConfigService.layer(config)),
      Layer.provide(Logger.minimumLogLevel(LogLevel.Warning))
    )
  )
}

const controller = (natsUrl: string, patch: (c: ClusterConfig) => ClusterConfig = (c) => c) =>
  ManagedRuntime.make(controllerLayer(natsUrl, (c) => patch(fastDiscovery(c))))

interface Streamed {
  readonly status: number
  readonly startedAt: number
  readonly ttftMs: number | undefined
  readonly durationMs: number
  readonly tokens: number
  readonly code: string | undefined
}

/** A real streamed chat completion, read to its end, timed like the Router times it. */
const streamChat = async (url: string, model: string, maxTokens: number, headers: Record<string, string> = {}): Promise<Streamed> => {
  const startedAt = Date.now()
  const started = performance.now()
  const response = await fetch(`${url}/v1/chat/completions`, {
    method: "POST",
    headers: { "content-type": "application/json", ...headers },
    body: JSON.stringify({
      model,
      stream: true,
      stream_options: { include_usage: true },
      max_tokens: maxTokens,
      messages: [{ role: "user", content: "Say something about Apple Silicon." }]
    })
  })
  if (!response.ok || response.body === null) {
    const body = (await response.json()) as { error?: { code?: string } }
    return { status: response.status, startedAt, ttftMs: undefined, durationMs: performance.now() - started, tokens: 0, code: body.error?.code }
  }
  let ttftMs: number | undefined
  let text = ""
  const decoder = new TextDecoder()
  const reader = response.body.getReader()
  for (let read = await reader.read(); !read.done; read = await reader.read()) {
    text += decoder.decode(read.value, { stream: true })
    if (ttftMs === undefined && text.includes('"content"')) ttftMs = performance.now() - started
  }
  const usage = /"completion_tokens":(\d+)/.exec(text)
  return { status: response.status, startedAt, ttftMs, durationMs: performance.now() - started, tokens: Number(usage?.[1] ?? 0), code: undefined }
}

/** What the Router records for a request it routed (until it calls the journal itself, the test does). */
const summaryOf = (model: string, known: boolean, r: Streamed): RequestSummary => ({
  requestId: `req-${randomUUID()}`,
  route: "chat",
  method: "POST",
  model,
  modelKnown: known,
  outcome: r.code === undefined ? "succeeded" : "failed",
  status: r.status,
  errorCode: r.code,
  tokens: r.tokens,
  ttftMs: r.ttftMs,
  durationMs: r.durationMs,
  retries: 0,
  startedAt: r.startedAt,
  client: "127.0.0.1"
})

const textOf = (page: Page, selector: string) => page.$eval(selector, (node) => node.textContent ?? "")

/** The row of a worker as the page shows it. */
const workerRow = (page: Page, id: string) =>
  page.$eval(`#workers tr[data-worker-id="${id}"]`, (row) => ({
    status: row.getAttribute("data-status"),
    statusText: row.querySelector('[data-field="status"]')?.textContent ?? "",
    reason: row.querySelector('[data-field="reason"]')?.textContent ?? "",
    models: Array.from(row.querySelectorAll('[data-field="models"] .chip'), (chip) => chip.textContent ?? ""),
    slots: row.querySelector('[data-field="slots"]')?.textContent ?? "",
    tags: Array.from(row.querySelectorAll('[data-field="tags"] .chip'), (chip) => chip.textContent ?? ""),
    offlineClass: row.classList.contains("offline")
  }))

const screenshotPath = (name: string) => {
  const docs = join(import.meta.dirname, "..", "..", "docs", "img")
  const target = join(docs, name)
  // Committed screenshots change only when asked to: a test run leaves the working tree clean.
  if (process.env["UPDATE_SCREENSHOTS"] === "1" || !existsSync(target)) {
    mkdirSync(docs, { recursive: true })
    return target
  }
  return join(tmpdir(), `mlx-cluster-${name}`)
}

describe("/dashboard in headless Chromium", () => {
  let nats: TestNatsServer
  let runtime: ReturnType<typeof controller>
  let studio: ManagedRuntime.ManagedRuntime<never, unknown>
  let url: string
  let cluster: FaultCluster
  let laptop: CliProcess
  let browser: TestBrowser
  let page: Page
  const pageErrors: Array<string> = []

  const record = (summary: RequestSummary) => runtime.runPromise(Effect.flatMap(RequestJournal, (j) => j.record(summary)))

  beforeAll(async () => {
    nats = await startTestNatsServer()
    runtime = controller(nats.url)
    url = await runtime.runPromise(baseUrl)
    studio = ManagedRuntime.make(studioWorker(nats.url))
    await studio.runtime()
    cluster = new FaultCluster(nats.url)
    const config = cluster.config({
      discovery: { heartbeat_interval_ms: HEARTBEAT_MS },
      worker: {
        model_dir: makeModelDir(LAPTOP_MODELS),
        tags: ["laptop", "battery"],
        max_concurrent: 2,
        hardware: { chip: "Apple M3 Max", cpu_cores: 16, gpu_cores: 40, gpu_memory_gb: 36, total_memory_gb: 48 },
        engine: { synthetic: { tokens_per_second: 150, first_token_ms: 40 } }
      }
    })
    ;[laptop, browser] = await Promise.all([cluster.worker(config, LAPTOP), launchBrowser()])
    page = await browser.browser.newPage()
    page.on("pageerror", (error) => pageErrors.push(String(error)))
    page.on("console", (message) => {
      if (message.type() === "error") pageErrors.push(message.text())
    })
    await page.setViewport({ width: 1280, height: 800 })
  }, START_TIMEOUT_MS + 120_000)

  afterAll(async () => {
    // The controller stops while the page still listens: its event stream must not hold the shutdown.
    const stopping = Date.now()
    await runtime?.dispose()
    expect(Date.now() - stopping).toBeLessThan(5_000)
    await browser?.close()
    await studio?.dispose()
    await cluster?.cleanup()
    await nats?.stop()
  }, 60_000)

  it("GET / redirects to the page, which is served without a key and loads nothing from elsewhere", async () => {
    const root = await fetch(`${url}/`, { redirect: "manual" })
    expect(root.status).toBe(302)
    expect(root.headers.get("location")).toBe("/dashboard")
    const response = await page.goto(`${url}/?interval_ms=250`)
    expect(page.url()).toBe(`${url}/dashboard`)
    expect(response?.status()).toBe(200)
    expect(response?.headers()["content-security-policy"]).toContain("default-src 'none'")
    const html = await (await fetch(`${url}/dashboard`)).text()
    expect(html).not.toMatch(/<script[^>]+src=|<link[^>]+href="(?!data:)|https?:\/\//)
  })

  it("lists both workers online with their models, tags and slots", async () => {
    await page.goto(`${url}/dashboard?interval_ms=250`)
    await page.waitForFunction(
      (ids: ReadonlyArray<string>) => ids.every((id) => document.querySelector(`#workers tr[data-worker-id="${id}"][data-status="online"]`) !== null),
      { timeout: 10_000 },
      [STUDIO, LAPTOP]
    )
    const studioRow = await workerRow(page, STUDIO)
    expect(studioRow).toMatchObject({ status: "online", statusText: "online", models: STUDIO_MODELS, tags: ["studio"], offlineClass: false })
    expect(studioRow.slots).toMatch(/^\d+ \/ 8$/)
    const laptopRow = await workerRow(page, LAPTOP)
    expect(laptopRow).toMatchObject({ status: "online", models: LAPTOP_MODELS, tags: ["laptop", "battery"] })
    expect(await page.$eval(`#workers tr[data-worker-id="${STUDIO}"] [data-field="hardware"]`, (n) => n.textContent)).toContain("Apple M2 Ultra")
    // The shared model is served by both.
    const shared = await page.$eval(`#models tr[data-model="${LAPTOP_MODELS[1]}"] [data-field="workers"]`, (n) => n.textContent)
    expect(shared).toContain(STUDIO)
    expect(shared).toContain(LAPTOP)
    expect(await textOf(page, "#stat-workers")).toBe("2 / 2")
    expect(await textOf(page, "#connection")).toBe("live")
  })

  it("a streamed request moves the requests counter", async () => {
    const before = Number((await textOf(page, "#stat-requests-total")).replace(/,/g, ""))
    const result = await streamChat(url, STUDIO_MODELS[0] ?? "", 12)
    expect(result.status).toBe(200)
    expect(result.tokens).toBe(12)
    await page.waitForFunction(
      (n: number) =>
        Number((document.getElementById("stat-requests-total")?.textContent ?? "").replace(/,/g, "")) === n + 1 &&
        document.getElementById("stat-requests-detail")?.textContent?.endsWith(" 0 active") === true,
      { timeout: 5_000 },
      before
    )
    expect(await textOf(page, "#stat-requests-detail")).toBe(`${before + 1} ok · 0 failed · 0 cancelled · 0 active`)
  })

  it("shows the prefix-cache hit rate of affinity routing: a conversation sent again is a hit", async () => {
    // 200 words: past min_prefix_tokens (64) in whole blocks of 16, so the second send finds its prefix.
    const system = Array.from({ length: 200 }, (_, i) => `rule${i}`).join(" ")
    const send = () =>
      fetch(`${url}/v1/chat/completions`, {
        method: "POST",
        headers: { "content-type": "application/json" },
        body: JSON.stringify({
          model: STUDIO_MODELS[1],
          max_tokens: 2,
          messages: [
            { role: "system", content: system },
            { role: "user", content: "Which Mac holds this conversation?" }
          ]
        })
      }).then((r) => r.status)
    expect(await send()).toBe(200)
    expect(await send()).toBe(200)
    await page.waitForFunction(() => /^[1-9]\d* hits · /.test(document.getElementById("stat-affinity-detail")?.textContent ?? ""), { timeout: 5_000 })
    const api = (await (await fetch(`${url}/api/cluster/dashboard`)).json()) as {
      controller: { affinity: { hits: number; displaced: number; misses: number; hitRate: number } }
    }
    const a = api.controller.affinity
    expect(a.hits).toBeGreaterThanOrEqual(1)
    expect(a.misses).toBeGreaterThanOrEqual(1)
    await page.waitForFunction(
      (detail: string) => document.getElementById("stat-affinity-detail")?.textContent === detail,
      { timeout: 5_000 },
      `${a.hits} hits · ${a.displaced} displaced · ${a.misses} new prompts (not in the rate)`
    )
    expect(await textOf(page, "#stat-affinity")).toMatch(/^\d+(\.\d+)? ?%$/)
  })

  it("shows the traffic the journal records: rates, TTFT, the plot and the last failures with code and request id", async () => {
    // Ten seconds of real streamed traffic that grows and shrinks (one client, then three, then
    // two); each request is recorded as the Router will record it.
    const start = Date.now()
    const client = async (model: string, tokens: number, fromMs: number, toMs: number) => {
      while (Date.now() < start + fromMs) await new Promise((resolve) => setTimeout(resolve, 50))
      while (Date.now() < start + toMs) await record(summaryOf(model, true, await streamChat(url, model, tokens)))
    }
    await Promise.all([
      client(STUDIO_MODELS[0] ?? "", 40, 0, 10_000),
      client(STUDIO_MODELS[1] ?? "", 24, 3_000, 10_000),
      client(LAPTOP_MODELS[0] ?? "", 16, 3_000, 7_000)
    ])
    // A real request for a model nobody serves: the front door's answer, recorded as a failure.
    const typo = "mlx-community/DeepSeek-R1-671B-4bit"
    const failed = await streamChat(url, typo, 8)
    expect(failed.status).toBeGreaterThanOrEqual(400)
    const failure = summaryOf(typo, false, failed)
    await record(failure)

    await page.waitForSelector(`#failures tr[data-request-id="${failure.requestId}"]`, { timeout: 5_000 })
    const row = await page.$eval(`#failures tr[data-request-id="${failure.requestId}"]`, (r) => ({
      code: r.querySelector('[data-field="code"]')?.textContent,
      status: r.querySelector('[data-field="status"]')?.textContent,
      model: r.querySelector('[data-field="model"]')?.textContent,
      requestId: r.querySelector('[data-field="request-id"]')?.textContent
    }))
    expect(row).toEqual({ code: failed.code, status: String(failed.status), model: typo, requestId: failure.requestId })
    expect(Number(await textOf(page, "#stat-rps"))).toBeGreaterThan(0)
    expect(await textOf(page, "#stat-ttft")).toMatch(/^\d+ \/ \d+ ms$/)
    const plotted = await page.$eval("#chart-requests path.line", (p) => p.getAttribute("d") ?? "")
    expect(plotted.split("L")).toHaveLength(300)
    expect(plotted).toMatch(/L\d+,(?!98\.00)\d/) // some second above zero
    const modelRate = await textOf(page, `#models tr[data-model="${STUDIO_MODELS[0]}"] [data-field="tps"]`)
    expect(Number(modelRate.replace(/,/g, ""))).toBeGreaterThan(0)
  }, 30_000)

  it(`shows a SIGKILLed worker offline with its reason within offline_timeout + health_check (+${MARGIN_MS} ms), greyed, without load`, async () => {
    const killedAt = Date.now()
    laptop.process.kill("SIGKILL")
    await page.waitForSelector(`#workers tr[data-worker-id="${LAPTOP}"][data-status="offline"]`, {
      timeout: OFFLINE_TIMEOUT_MS + HEALTH_CHECK_MS + MARGIN_MS
    })
    const elapsed = Date.now() - killedAt
    expect(elapsed).toBeLessThanOrEqual(OFFLINE_TIMEOUT_MS + HEALTH_CHECK_MS + MARGIN_MS)
    const row = await workerRow(page, LAPTOP)
    expect(row).toMatchObject({ status: "offline", offlineClass: true })
    expect(row.reason).toMatch(/^no heartbeat for \d+(\.\d)? s$/)
    expect(row.slots).toBe("– / 2")
    expect(await textOf(page, `#workers tr[data-worker-id="${LAPTOP}"] [data-field="tokens"]`)).toBe("–")
    expect(await textOf(page, "#stat-workers")).toBe("1 / 2")
    // The model only the laptop held has no online worker left.
    expect(await textOf(page, `#models tr[data-model="${LAPTOP_MODELS[0]}"] [data-field="workers"]`)).toBe("no online worker")
  })

  it("looks right at 1280×800 and 390×844 (no sideways scrolling on a phone); screenshots go to docs/img/", async () => {
    await page.setViewport({ width: 1280, height: 800 })
    await page.screenshot({ path: screenshotPath("dashboard-desktop.png") })
    await page.setViewport({ width: 390, height: 844, deviceScaleFactor: 2, isMobile: true, hasTouch: true })
    await page.waitForFunction(() => document.documentElement.scrollWidth <= window.innerWidth, { timeout: 2_000 })
    // On a phone the tables become cards: every cell carries its column's name.
    const label = await page.$eval(`#workers tr[data-worker-id="${STUDIO}"] [data-field="models"]`, (td) => getComputedStyle(td, "::before").content)
    expect(label).toBe('"Models"')
    await page.screenshot({ path: screenshotPath("dashboard-phone.png") })
    expect(pageErrors).toEqual([])
  })

  it("with api_keys set, the page asks for the key once, keeps it for the session, and then shows the workers", async () => {
    const keyed = controller(nats.url, (c) => ({
      ...c,
      controller: { ...c.controller, api: { ...c.controller.api, apiKeys: [Redacted.make(API_KEY)] } }
    }))
    const keyedPage = await browser.browser.newPage()
    try {
      const keyedUrl = await keyed.runPromise(baseUrl)
      expect((await fetch(`${keyedUrl}/api/cluster/events`)).status).toBe(401)
      expect((await fetch(`${keyedUrl}/dashboard`)).status).toBe(200)

      await keyedPage.goto(`${keyedUrl}/dashboard?interval_ms=250`)
      await keyedPage.waitForSelector("#key-form:not([hidden])", { timeout: 5_000 })
      expect(await textOf(keyedPage, "#connection")).toBe("API key needed")
      expect(await keyedPage.$$("#workers tbody tr")).toHaveLength(0)

      await keyedPage.type("#api-key", "wrong-key")
      await keyedPage.click("#key-form button")
      await keyedPage.waitForFunction(() => document.getElementById("key-message")?.textContent?.includes("refused") === true, { timeout: 5_000 })

      await keyedPage.type("#api-key", API_KEY)
      await keyedPage.click("#key-form button")
      await keyedPage.waitForSelector(`#workers tr[data-worker-id="${STUDIO}"][data-status="online"]`, { timeout: 10_000 })
      expect(await keyedPage.$eval("#key-form", (f) => (f as HTMLFormElement).hidden)).toBe(true)
      expect(await keyedPage.evaluate(() => sessionStorage.getItem("mlx-cluster-api-key"))).toBe(API_KEY)

      // Asked once: a reload in the same tab goes straight to the data.
      await keyedPage.reload()
      await keyedPage.waitForSelector(`#workers tr[data-worker-id="${STUDIO}"]`, { timeout: 10_000 })
      expect(await keyedPage.$eval("#key-form", (f) => (f as HTMLFormElement).hidden)).toBe(true)
    } finally {
      await keyedPage.close()
      await keyed.dispose()
    }
  }, 30_000)
})
