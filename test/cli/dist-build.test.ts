import { existsSync, mkdirSync, mkdtempSync, readdirSync, rmSync } from "node:fs"
import { join } from "node:path"
import { afterAll, beforeAll, describe, expect, it } from "vitest"
import { buildDist, runBuildArgs } from "../../scripts/build.js"
import { spawnCli, stopCli } from "../support/cli-process.js"
import { freePort } from "../support/nats-server.js"

const ROOT = join(import.meta.dirname, "..", "..")
const SRC = join(ROOT, "src")

/** `npm run build`'s output, run as `node --enable-source-maps dist/main.js`: the same program as under tsx. */
describe("npm run build: src/ as JavaScript in dist/", () => {
  let dist = ""
  beforeAll(async () => {
    // Inside the project (tmp/ is ignored by git): the modules find node_modules from where they are.
    mkdirSync(join(ROOT, "tmp"), { recursive: true })
    dist = join(mkdtempSync(join(ROOT, "tmp", "dist-build-")), "dist")
    await buildDist(dist)
  }, 60_000)
  afterAll(() => rmSync(join(dist, ".."), { recursive: true, force: true }))

  it("writes one .js and .js.map per module of src/, in the same tree, with the assets beside them", () => {
    const modules = readdirSync(SRC, { recursive: true, encoding: "utf8" }).filter((file) => file.endsWith(".ts"))
    expect(modules.length).toBeGreaterThan(50)
    for (const module of modules) {
      const js = join(dist, module.replace(/\.ts$/, ".js"))
      expect(existsSync(js), js).toBe(true)
      expect(existsSync(`${js}.map`), `${js}.map`).toBe(true)
    }
    expect(existsSync(join(dist, "http", "dashboard.html"))).toBe(true)
  })

  it("node dist/main.js: mode both with embedded NATS streams a chat and serves the dashboard; SIGTERM exits 0", async () => {
    const [natsPort, httpPort] = [await freePort(), await freePort()]
    const args = ["--config", "config/cluster.yaml", "--port", String(httpPort), "--nats-url", `nats://127.0.0.1:${natsPort}`, "--model-dir", "/nonexistent-models"]
    const cli = spawnCli(args, {}, runBuildArgs(dist))
    try {
      await cli.waitFor(/worker \S+ online: registered/)
      expect(cli.output()).not.toMatch(/WARN|ERROR/)
      const response = await fetch(`http://127.0.0.1:${httpPort}/v1/chat/completions`, {
        method: "POST",
        headers: { "content-type": "application/json" },
        body: JSON.stringify({ model: "synthetic/demo", messages: [{ role: "user", content: "hello" }], max_tokens: 3, stream: true })
      })
      expect(response.status).toBe(200)
      expect(response.headers.get("content-type")).toMatch(/^text\/event-stream/)
      const events = (await response.text()).split("\n\n").filter((event) => event.startsWith("data: "))
      expect(events.at(-1)).toBe("data: [DONE]")
      const tokens = events.slice(0, -1).map((event) => JSON.parse(event.slice(6)) as { choices: Array<{ delta: { content?: string } }> })
      expect(tokens.filter((chunk) => chunk.choices[0]?.delta.content !== undefined && chunk.choices[0].delta.content !== "")).toHaveLength(3)
      // The page is read next to its module (import.meta.url): the build must have put it there.
      const page = await fetch(`http://127.0.0.1:${httpPort}/dashboard`)
      expect(page.status).toBe(200)
      expect(await page.text()).toContain("<html")
      cli.process.kill("SIGTERM")
      expect(await cli.exited).toBe(0)
    } finally {
      await stopCli(cli)
    }
  }, 60_000)
})
