import { build } from "esbuild"
import type OpenAISdk from "openai"
import { Effect, Layer, ManagedRuntime, Redacted } from "effect"
import { createServer, type Server } from "node:http"
import type { AddressInfo } from "node:net"
import { join } from "node:path"
import { afterAll, beforeAll, describe, expect, inject, it } from "vitest"
import { launchBrowser, type TestBrowser } from "../support/browser.js"
import { baseUrl, controllerLayer, workerLayer } from "../support/cluster.js"
import { eventually } from "../support/eventually.js"

/**
 * Issue 12, browsers: the official `openai` SDK running inside headless Chromium (bundled from
 * node_modules with esbuild at test time, served from a page on another origin) completes a
 * streamed chat against a real controller with CORS on, explicit `cors_origins` and an API key.
 * The SDK sends its `x-stainless-*` headers, `OpenAI-Organization` and `Authorization`: the
 * preflight must allow what it asks for. With explicit origins, `credentials: "include"` works too.
 */

const natsUrl = inject("natsUrl")
const MODEL = "browser/model"
const API_KEY = "sk-browser-test"

/** The SDK as one ES module for the page: `window.OpenAI`. */
const bundleSdk = async (): Promise<string> => {
  const result = await build({
    stdin: { contents: 'import OpenAI from "openai"; window.OpenAI = OpenAI', resolveDir: join(import.meta.dirname, "..", ".."), loader: "js" },
    bundle: true,
    format: "iife",
    platform: "browser",
    write: false,
    logLevel: "silent"
  })
  return result.outputFiles[0]?.text ?? ""
}

/** A page origin of its own: `/` (an empty page) and `/openai.js` (the bundle). */
const startPageServer = (bundle: string): Promise<{ server: Server; origin: string }> =>
  new Promise((resolve) => {
    const server = createServer((req, res) => {
      if (req.url === "/openai.js") {
        res.writeHead(200, { "content-type": "text/javascript" })
        res.end(bundle)
        return
      }
      res.writeHead(200, { "content-type": "text/html" })
      res.end('<!doctype html><html><head><script src="/openai.js"></script></head><body>sdk</body></html>')
    })
    server.listen(0, "127.0.0.1", () => resolve({ server, origin: `http://127.0.0.1:${(server.address() as AddressInfo).port}` }))
  })

interface BrowserResult {
  readonly text: string
  readonly chunks: number
  readonly requestId: string | null
  readonly error?: string
}

describe("the official openai SDK in headless Chromium", () => {
  let browser: TestBrowser
  let page: { server: Server; origin: string }
  let runtime: ManagedRuntime.ManagedRuntime<unknown, never>
  let controllerUrl: string

  beforeAll(async () => {
    const [bundle] = await Promise.all([bundleSdk()])
    page = await startPageServer(bundle)
    const cluster = workerLayer(natsUrl, { id: "browser-w1", models: [MODEL], tokensPerSecond: 200 }).pipe(
      Layer.provideMerge(
        controllerLayer(natsUrl, (c) => ({
          ...c,
          controller: {
            ...c.controller,
            api: { ...c.controller.api, corsEnabled: true, corsOrigins: [page.origin], apiKeys: [Redacted.make(API_KEY)] }
          }
        }))
      )
    )
    runtime = ManagedRuntime.make(cluster) as ManagedRuntime.ManagedRuntime<unknown, never>
    controllerUrl = await runtime.runPromise(baseUrl as Effect.Effect<string>)
    await runtime.runPromise(
      eventually(
        Effect.promise(() =>
          fetch(`${controllerUrl}/api/cluster/workers/browser-w1`, { headers: { authorization: `Bearer ${API_KEY}` } }).then((r) => r.status === 200)
        )
      )
    )
    browser = await launchBrowser()
  }, 600_000)

  afterAll(async () => {
    await browser?.close()
    await runtime?.dispose()
    await new Promise((resolve) => page?.server.close(resolve))
  })

  it("streams a chat completion from another origin: preflight with x-stainless-*, OpenAI-Organization and Authorization", async () => {
    const tab = await browser.browser.newPage()
    await tab.goto(page.origin)
    const result = await tab.evaluate(
      async (url: string, key: string, model: string): Promise<BrowserResult> => {
        const OpenAI = (window as unknown as { OpenAI: typeof OpenAISdk }).OpenAI
        const client = new OpenAI({ baseURL: `${url}/v1`, apiKey: key, organization: "org-browser", dangerouslyAllowBrowser: true, maxRetries: 0 })
        try {
          const { data: stream, response } = await client.chat.completions
            .create({ model, messages: [{ role: "user", content: "Hello from a browser" }], max_tokens: 8, stream: true })
            .withResponse()
          let text = ""
          let chunks = 0
          for await (const chunk of stream) {
            chunks++
            text += chunk.choices[0]?.delta?.content ?? ""
          }
          return { text, chunks, requestId: response.headers.get("x-request-id") }
        } catch (error) {
          return { text: "", chunks: 0, requestId: null, error: String(error) }
        }
      },
      controllerUrl,
      API_KEY,
      MODEL
    )
    expect(result.error).toBeUndefined()
    // The role chunk, 8 tokens, the finish chunk.
    expect(result.chunks).toBe(10)
    expect(result.text.split(" ").filter((w) => w.length > 0).length).toBeGreaterThan(3)
    // Exposed to scripts by `access-control-expose-headers`.
    expect(result.requestId).toMatch(/^req-/)
    await tab.close()
  })

  it("credentials: \"include\" works with explicit origins; another origin is refused by the browser", async () => {
    const tab = await browser.browser.newPage()
    await tab.goto(page.origin)
    const included = await tab.evaluate(
      async (url: string, key: string) => {
        const response = await fetch(`${url}/v1/models`, { credentials: "include", headers: { authorization: `Bearer ${key}`, "x-stainless-lang": "js" } })
        return { status: response.status, body: (await response.json()) as { data: ReadonlyArray<{ id: string }> } }
      },
      controllerUrl,
      API_KEY
    )
    expect(included.status).toBe(200)
    expect(included.body.data.map((m) => m.id)).toEqual([MODEL])
    // A page served from an origin that is not listed: the browser blocks the answer.
    const other = page.origin.replace("127.0.0.1", "localhost")
    await tab.goto(other)
    const blocked = await tab.evaluate(async (url: string, key: string) => {
      try {
        await fetch(`${url}/v1/models`, { headers: { authorization: `Bearer ${key}` } })
        return "allowed"
      } catch {
        return "blocked"
      }
    }, controllerUrl, API_KEY)
    expect(blocked).toBe("blocked")
    await tab.close()
  })
})
