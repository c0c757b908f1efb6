import { afterAll, afterEach, beforeAll } from "vitest"
import type { CliProcess } from "./cli-process.js"
import { type Controller, FaultCluster, waitUntil, workers } from "./fault-cluster.js"
import { startTestNatsServer, type TestNatsServer } from "./nats-server.js"

/**
 * What every fault test file sets up: a nats-server of its own (a test may stop and restart it),
 * and the processes of the running test, cleaned up after it even when it fails half-way.
 */
export interface FaultHarness {
  readonly nats: () => TestNatsServer
  /** A new cluster for this test: its processes are stopped after the test. */
  readonly cluster: () => FaultCluster
  /** Whether load loops should end: after `stopLoad` or once the test is over. */
  readonly stopping: () => boolean
  readonly stopLoad: () => void
}

export const useFaultHarness = (): FaultHarness => {
  let nats: TestNatsServer | undefined
  let cluster: FaultCluster | undefined
  let stopping = false
  beforeAll(async () => {
    nats = await startTestNatsServer()
  })
  afterEach(async () => {
    stopping = true
    await cluster?.cleanup()
    cluster = undefined
  })
  afterAll(async () => {
    await nats?.stop()
  })
  const server = () => {
    if (nats === undefined) throw new Error("the fault harness's nats-server is not started yet")
    return nats
  }
  return {
    nats: server,
    cluster: () => {
      stopping = false
      cluster = new FaultCluster(server().url)
      return cluster
    },
    stopping: () => stopping,
    stopLoad: () => {
      stopping = true
    }
  }
}

/** Waits until the controller at `controllerUrl` lists `count` workers online. */
export const untilOnline = (controllerUrl: string, count: number, timeoutMs: number): Promise<number> =>
  waitUntil(async () => (await workers(controllerUrl)).filter((w) => w.status === "online").length === count, timeoutMs)

/**
 * Starts a controller and the workers `workerIds` on one config file, all at once, and resolves
 * once the controller lists every worker online: where most fault tests start.
 */
export const startOnline = async <const Ids extends ReadonlyArray<string>>(
  c: FaultCluster,
  config: string,
  workerIds: Ids,
  timeoutMs = 10_000
): Promise<{ readonly controller: Controller; readonly workers: { readonly [K in keyof Ids]: CliProcess } }> => {
  const [controller, ...started] = await Promise.all([c.controller(config), ...workerIds.map((id) => c.worker(config, id))])
  await untilOnline(controller.url, workerIds.length, timeoutMs)
  // One process per id, in the order of the ids.
  return { controller, workers: started as { readonly [K in keyof Ids]: CliProcess } }
}
