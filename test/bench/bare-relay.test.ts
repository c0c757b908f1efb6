import { expect, inject, it } from "@effect/vitest"
import { type ChildProcess, spawn } from "node:child_process"
import { once } from "node:events"
import { Agent } from "node:http"
import { freePort } from "../../bench/cluster.js"
import { chatBody, contentOf, streamOnce } from "../../bench/load.js"
import { RequestId } from "../../src/domain/ids.js"
import { planSynthetic } from "../../src/worker/engines/synthetic-engine.js"

/**
 * The benchmark's bare relay (bench/bare-relay.ts) against the test's real nats-server: a front and
 * two workers as processes, as `npm run bench` starts them. Its figures are the reference the
 * controller is compared with, so it must relay the synthetic engine's tokens, in order, in the
 * floor's and the controller's SSE format, over more than one worker.
 */

const natsUrl = inject("natsUrl")

const start = (args: ReadonlyArray<string>, ready: RegExp): Promise<ChildProcess> => {
  const child = spawn(process.execPath, ["--import", "tsx", "bench/bare-relay.ts", "--nats-url", natsUrl, ...args], { stdio: ["ignore", "pipe", "pipe"] })
  let out = ""
  return new Promise((resolve, reject) => {
    child.stdout?.on("data", (chunk: Buffer) => {
      out += chunk.toString()
      if (ready.test(out)) resolve(child)
    })
    child.stderr?.on("data", (chunk: Buffer) => (out += chunk.toString()))
    child.once("exit", (code) => reject(new Error(`bare-relay ${args.join(" ")} exited with ${code}: ${out}`)))
  })
}

it("relays the synthetic engine's tokens in OpenAI's SSE format, through each of its workers", { timeout: 60_000 }, async () => {
  const port = await freePort()
  const children = await Promise.all([
    start(["--role", "worker", "--index", "1"], /bare worker 1 ready/),
    start(["--role", "worker", "--index", "2"], /bare worker 2 ready/),
    start(["--role", "front", "--workers", "2", "--port", String(port)], /bare relay listening/)
  ])
  try {
    const agent = new Agent({ keepAlive: true })
    const target = { name: "bare", host: "127.0.0.1", port }
    const results = []
    // Two requests: one per worker (the front takes them in turn).
    for (const tokens of [32, 40]) results.push(await streamOnce({ agent, target, body: chatBody("synthetic/demo", tokens), timeoutMs: 10_000, keepText: true }))
    agent.destroy()
    for (const [i, tokens] of [32, 40].entries()) {
      const r = results[i]
      const body = JSON.parse(chatBody("synthetic/demo", tokens).toString()) as { messages: Parameters<typeof planSynthetic>[0]["messages"] }
      const plan = planSynthetic({ requestId: RequestId.make("x"), model: "synthetic/demo", messages: body.messages, maxTokens: tokens, stream: true })
      expect(r?.error).toBeUndefined()
      expect(r?.tokens).toBe(tokens)
      expect(contentOf(r?.text ?? "")).toBe(plan.tokens.join(""))
      expect(r?.text?.trimEnd().endsWith("data: [DONE]")).toBe(true)
    }
  } finally {
    for (const child of children) child.kill("SIGTERM")
    await Promise.all(children.map((c) => (c.exitCode === null ? once(c, "exit") : undefined)))
  }
})
