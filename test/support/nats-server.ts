import { Effect, Exit, Scope } from "effect"
import { createServer } from "node:net"
import { type RunningNatsServer, startNatsServer } from "../../src/nats/nats-server-process.js"

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
