import { mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs"
import { tmpdir } from "node:os"
import { join } from "node:path"
import { afterEach, expect, it } from "vitest"
import { stringify } from "yaml"
import { isProcessAlive } from "../../src/process/pid-file.js"
import { type CliProcess, spawnCli, stopCli } from "../support/cli-process.js"
import { request, START_TIMEOUT_MS, waitUntil } from "../support/fault-cluster.js"
import { untilOnline } from "../support/fault-harness.js"
import { freePort } from "../support/nats-server.js"

/**
 * Issue 11.6 "done when": a `mode: both` process with an embedded nats-server is SIGKILLed (no
 * finalizer runs); within 2 s neither its nats-server nor its mlx_lm.server child is left
 * (asserted by pid, read from their pid files), and a restart on the same NATS port works.
 */

const root = join(import.meta.dirname, "..", "..")
const FIXTURES = join(root, "test", "fixtures")
const MODEL = "test-org/fake-model"

const dirs: Array<string> = []
const processes: Array<CliProcess> = []

afterEach(async () => {
  await Promise.all(processes.splice(0).map((cli) => stopCli(cli, 5_000)))
  for (const dir of dirs.splice(0)) rmSync(dir, { recursive: true, force: true })
})

const pidIn = (file: string): number => (JSON.parse(readFileSync(file, "utf8")) as { pid: number }).pid

const start = async (config: string): Promise<{ cli: CliProcess; url: string }> => {
  const cli = spawnCli(["--config", config], { PYTHONPATH: FIXTURES })
  processes.push(cli)
  const ready = /controller ready on (http:\/\/[\w.]+:\d+)/
  await cli.waitFor(ready, START_TIMEOUT_MS)
  const url = ready.exec(cli.output())?.[1] ?? ""
  // The worker's "registered" line is when it published; the controller may not have applied it
  // yet (a request then is a 404 model_not_found, as CI saw once). Wait until it lists it.
  await untilOnline(url, 1, START_TIMEOUT_MS)
  return { cli, url }
}

it("SIGKILL of a mode-both process: its embedded nats-server and its mlx_lm.server are gone within 2 s; a restart on the same port works", async () => {
  const dir = mkdtempSync(join(tmpdir(), "no-orphans-"))
  dirs.push(dir)
  const modelDir = join(dir, "models")
  mkdirSync(join(modelDir, MODEL), { recursive: true })
  writeFileSync(join(modelDir, MODEL, "config.json"), "{}")
  writeFileSync(join(modelDir, MODEL, "model.safetensors"), "weights")
  const natsPort = await freePort()
  const stateDir = join(dir, "state")
  // Below Linux's ephemeral range (32768–60999), where outgoing connections take their ports.
  const mlxBasePort = 20_000 + Math.floor(Math.random() * 12_000)
  const config = join(dir, "cluster.yaml")
  writeFileSync(
    config,
    stringify({
      cluster: {
        mode: "both",
        state_dir: stateDir,
        nats: { mode: "embedded", server_url: `nats://127.0.0.1:${natsPort}` },
        controller: { bind_address: "127.0.0.1", port: 0 },
        worker: {
          id: "orphan-test",
          model_dir: modelDir,
          engine: {
            type: "mlx-lm",
            mlx_lm: { python: "python3", module: "fake_mlx_lm.server", base_port: mlxBasePort, startup_timeout_ms: 30_000 }
          }
        }
      }
    })
  )

  const first = await start(config)
  // The first request starts the model's mlx_lm.server.
  const answer = await request(
    `${first.url}/v1/chat/completions`,
    { model: MODEL, messages: [{ role: "user", content: "hi" }], max_tokens: 8, stream: true },
    { signal: AbortSignal.timeout(40_000) }
  )
  expect(answer).toMatchObject({ status: 200, done: true, text: "fake mlx says hello to you" })
  const natsPid = pidIn(join(stateDir, `nats-server-${natsPort}.pid`))
  const mlxPidFile = /starting mlx-lm server for \S+ on port (\d+) \(pid (\d+)\)/.exec(first.cli.output())
  const mlxPid = Number(mlxPidFile?.[2])
  expect(pidIn(join(stateDir, `mlx-lm-${mlxPidFile?.[1]}.pid`))).toBe(mlxPid)
  expect([isProcessAlive(natsPid), isProcessAlive(mlxPid)]).toEqual([true, true])

  const killedAt = Date.now()
  first.cli.process.kill("SIGKILL")
  await first.cli.exited
  let natsGoneMs = -1
  let mlxGoneMs = -1
  await waitUntil(
    () => {
      if (natsGoneMs < 0 && !isProcessAlive(natsPid)) natsGoneMs = Date.now() - killedAt
      if (mlxGoneMs < 0 && !isProcessAlive(mlxPid)) mlxGoneMs = Date.now() - killedAt
      return natsGoneMs >= 0 && mlxGoneMs >= 0
    },
    5_000,
    10
  ).catch(() => undefined)

  // A restart on the same NATS port works (and finds no leftover to stop).
  const restartedAt = Date.now()
  const second = await start(config)
  const restartMs = Date.now() - restartedAt
  const again = await request(
    `${second.url}/v1/chat/completions`,
    { model: MODEL, messages: [{ role: "user", content: "again" }], max_tokens: 8, stream: false },
    { signal: AbortSignal.timeout(40_000) }
  )
  console.log(
    `no orphans: after SIGKILL, nats-server ${natsPid} gone in ${natsGoneMs} ms, mlx_lm.server ${mlxPid} gone in ${mlxGoneMs} ms; ` +
      `restart on port ${natsPort} ready in ${restartMs} ms, answered ${again.status}`
  )

  expect(natsGoneMs).toBeGreaterThanOrEqual(0)
  expect(natsGoneMs).toBeLessThanOrEqual(2_000)
  expect(mlxGoneMs).toBeGreaterThanOrEqual(0)
  expect(mlxGoneMs).toBeLessThanOrEqual(2_000)
  expect(again).toMatchObject({ status: 200, done: true, text: "fake mlx says hello to you" })
  expect(second.cli.output()).not.toMatch(/left running by a previous run/)
})
