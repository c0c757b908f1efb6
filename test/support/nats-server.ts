import { Effect, Exit, Option, Scope } from "effect"
import { spawnSync } from "node:child_process"
import { mkdtempSync, writeFileSync } from "node:fs"
import { createServer } from "node:net"
import { tmpdir } from "node:os"
import { join } from "node:path"
import { findNatsServer, type RunningNatsServer, startNatsServer } from "../../src/nats/nats-server-process.js"

/** A port nobody listens on right now. */
export const freePort = (): Promise<number> =>
  new Promise((resolve, reject) => {
    const server = createServer()
    server.once("error", reject)
    server.listen(0, "127.0.0.1", () => {
      const address = server.address()
      const port = typeof address === "object" && address !== null ? address.port : 0
      server.close(() => resolve(port))
    })
  })

/** A real nats-server the test controls: stop it, start it again on the same port. */
export interface TestNatsServer {
  readonly url: string
  readonly port: number
  readonly stop: () => Promise<void>
  readonly start: () => Promise<void>
  readonly running: () => RunningNatsServer | undefined
}

export const startTestNatsServer = async (port?: number): Promise<TestNatsServer> => {
  const chosen = port ?? (await freePort())
  let scope: Scope.CloseableScope | undefined
  let current: RunningNatsServer | undefined
  const start = async () => {
    if (scope !== undefined) return
    const s = await Effect.runPromise(Scope.make())
    current = await Effect.runPromise(Scope.extend(startNatsServer({ host: "127.0.0.1", port: chosen }), s))
    scope = s
  }
  const stop = async () => {
    const s = scope
    scope = undefined
    current = undefined
    if (s !== undefined) await Effect.runPromise(Scope.close(s, Exit.void))
  }
  await start()
  return { url: `nats://127.0.0.1:${chosen}`, port: chosen, stop, start, running: () => current }
}

/** `nats-server -t -c FILE`: does nats-server itself accept the config text? Its verdict and what it printed. */
export const validateWithNatsServer = (text: string) => {
  const file = join(mkdtempSync(join(tmpdir(), "nats-conf-")), "server.conf")
  writeFileSync(file, text)
  const result = spawnSync(Option.getOrThrow(findNatsServer()), ["-t", "-c", file], { encoding: "utf8" })
  return { ok: result.status === 0, output: `${result.stdout}${result.stderr}` }
}
