import { describe, expect, inject, it } from "vitest"
import { execFileSync } from "node:child_process"
import { createServer } from "node:net"
import { mkdtempSync, writeFileSync } from "node:fs"
import { tmpdir } from "node:os"
import { join } from "node:path"
import { spawnCli, stopCli } from "../support/cli-process.js"
import { freePort } from "../support/nats-server.js"

const tmpFile = (name: string, text: string) => {
  const path = join(mkdtempSync(join(tmpdir(), "main-cli-")), name)
  writeFileSync(path, text)
  return path
}

/** PIDs of nats-server processes listening on `port` (from their command lines). */
const natsServersOn = (port: number): ReadonlyArray<string> => {
  try {
    return execFileSync("pgrep", ["-f", `nats-server -a 127.0.0.1 -p ${port}`], { encoding: "utf8" }).trim().split("\n").filter(Boolean)
  } catch {
    return []
  }
}

describe("src/main.ts, the real CLI", () => {
  it("a bad config file exits 1 before anything starts, with one line naming the key and the file", async () => {
    const file = tmpFile("bad.yaml", "cluster:\n  mode: boss\n")
    const cli = spawnCli(["--config", file])
    expect(await cli.exited).toBe(1)
    const lines = cli.output().trim().split("\n")
    expect(lines).toHaveLength(1)
    expect(lines[0]).toContain("cluster.mode")
    expect(lines[0]).toContain(file)
  }, 30_000)

  it("a negative timeout and a missing file are config errors too", async () => {
    const negative = spawnCli(["--config", tmpFile("neg.yaml", "cluster:\n  controller:\n    request_timeout_ms: -5\n")])
    expect(await negative.exited).toBe(1)
    expect(negative.output()).toContain("cluster.controller.request_timeout_ms")
    const missing = spawnCli(["--config", "/nonexistent/cluster.yaml"])
    expect(await missing.exited).toBe(1)
    expect(missing.output()).toContain("/nonexistent/cluster.yaml")
  }, 30_000)

  it("an HTTP port already in use is one clear line and exit 1", async () => {
    const blocker = createServer()
    const port = await new Promise<number>((resolve) =>
      blocker.listen(0, "0.0.0.0", () => {
        const a = blocker.address()
        resolve(typeof a === "object" && a !== null ? a.port : 0)
      })
    )
    try {
      const cli = spawnCli(["--mode", "controller", "--port", String(port), "--nats-url", `nats://127.0.0.1:${await freePort()}`])
      expect(await cli.exited).toBe(1)
      expect(cli.output()).toMatch(/EADDRINUSE|address already in use/)
    } finally {
      blocker.close()
    }
  }, 30_000)

  it("a worker id another live worker uses is one clear line and exit 1; the first worker goes on", async () => {
    const natsUrl = inject("natsUrl")
    const workerId = `twin-${Math.random().toString(36).slice(2, 8)}`
    const args = ["--mode", "worker", "--worker-id", workerId, "--nats-url", natsUrl]
    const first = spawnCli(args)
    try {
      await first.waitFor(new RegExp(`worker ${workerId} registered`))
      const second = spawnCli(args)
      expect(await second.exited).toBe(1)
      const lines = second.output().trim().split("\n")
      expect(lines.at(-1)).toMatch(new RegExp(`^error: worker id ${workerId} is taken: another worker on the bus answers worker\\.${workerId}\\.probe`))
      expect(second.output()).not.toContain(`worker ${workerId} registered`)
      expect(first.process.exitCode).toBeNull()
    } finally {
      await stopCli(first)
    }
  }, 60_000)

  it("--help prints the usage and exits 0", async () => {
    const cli = spawnCli(["--help"])
    expect(await cli.exited).toBe(0)
    expect(cli.output()).toContain("--nats-url")
  }, 30_000)

  it("mode both with embedded NATS serves a chat completion, then SIGINT drains, exits 0 and leaves no nats-server", async () => {
    const [natsPort, httpPort] = [await freePort(), await freePort()]
    const cli = spawnCli([
      "--config",
      "config/cluster.yaml",
      "--port",
      String(httpPort),
      "--nats-url",
      `nats://127.0.0.1:${natsPort}`,
      "--model-dir",
      "/nonexistent-models"
    ])
    try {
      await cli.waitFor(/controller ready on http:\/\/0\.0\.0\.0:\d+/)
      await cli.waitFor(/worker \S+ registered/)
      // The controller has applied it (the worker's line above is when it published): requests may go.
      await cli.waitFor(/worker \S+ online: registered/)
      // The shipped demo starts without a warning: the missing model folder is the built-in model's cue.
      expect(cli.output()).not.toMatch(/WARN|NotFound|ENOENT/)
      expect(cli.output()).toMatch(/INFO {2}model folder \/nonexistent-models does not exist: serving the built-in synthetic\/demo\n/)
      // One event, one line: every line starts with its time and level.
      for (const line of cli.output().trimEnd().split("\n")) expect(line).toMatch(/^\d{4}-\d\d-\d\dT\S+Z (INFO|WARN|ERROR|DEBUG) /)
      expect(natsServersOn(natsPort)).toHaveLength(1)
      const response = await fetch(`http://127.0.0.1:${httpPort}/v1/chat/completions`, {
        method: "POST",
        headers: { "content-type": "application/json" },
        body: JSON.stringify({ model: "synthetic/demo", messages: [{ role: "user", content: "hello" }], max_tokens: 3 })
      })
      expect(response.status).toBe(200)
      const body = (await response.json()) as { usage: { completion_tokens: number } }
      expect(body.usage.completion_tokens).toBe(3)
      // The request's one log line, with the fields operators filter on (docs/operations.md).
      await cli.waitFor(/INFO {2}request method=POST route=chat model="synthetic\/demo" workerId=\S+ status=200 outcome=succeeded tokens=3 /)
      const refused = await fetch(`http://127.0.0.1:${httpPort}/v1/chat/completions`, { method: "POST", body: "{not json" })
      expect(refused.status).toBe(400)
      await cli.waitFor(/INFO {2}request method=POST route=chat model="" status=400 outcome=failed code=invalid_request /)
      cli.process.kill("SIGINT")
      expect(await cli.exited).toBe(0)
      expect(natsServersOn(natsPort)).toEqual([])
    } finally {
      await stopCli(cli)
    }
  }, 60_000)

  it("log_format: json writes every line as one JSON object", async () => {
    const file = tmpFile(
      "json.yaml",
      `cluster:\n  mode: controller\n  log_format: json\n  nats: { mode: external, server_url: "nats://127.0.0.1:${await freePort()}" }\n  controller: { port: 0, bind_address: 127.0.0.1 }\n`
    )
    const cli = spawnCli(["--config", file])
    try {
      await cli.waitFor(/cannot reach NATS/)
      const lines = cli.output().trimEnd().split("\n")
      for (const line of lines) {
        expect(JSON.parse(line)).toMatchObject({ time: expect.any(String), level: expect.any(String), msg: expect.any(String) })
      }
      expect(lines.some((l) => (JSON.parse(l) as { msg: string }).msg.startsWith("cannot reach NATS"))).toBe(true)
    } finally {
      await stopCli(cli)
    }
  }, 30_000)
})
