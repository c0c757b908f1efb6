/**
 * Loaded into the cluster's processes by `--scenario tail` (`node --import tsx --import
 * ./bench/hop-trace.ts src/main.ts ...`): notes when each request passes the points a time to
 * first token is made of, and every garbage collection, on one clock shared by every process of
 * the machine (`performance.timeOrigin + performance.now()`, epoch ms with sub-ms precision), and
 * writes them to `$HOP_TRACE_DIR/ROLE-PID.json` as the process exits. Diagnosis only: it patches
 * `net.Socket` and `http.ServerResponse`, and costs a little on every socket write.
 *
 * Points: the controller's `request` (a response is given its socket: the request's headers were
 * read) and `respond` (the response's head, written with the first tokens); in every process,
 * `busIn` (bytes arrive from nats-server) and `busOut` (bytes written to it), the latter tagged
 * `dispatch` (a PUB to `worker.*.inference`) or `tokens` (a PUB to `response.*`).
 *
 * Imported anywhere else (the scenario itself), it only lends `observeGc`: without
 * `HOP_TRACE_DIR` and a cluster role it patches nothing.
 */
import { writeFileSync } from "node:fs"
import http from "node:http"
import net from "node:net"
import { join } from "node:path"
import { PerformanceObserver } from "node:perf_hooks"
import type { HopKind, HopTrace } from "./tail-report.js"

const dir = process.env["HOP_TRACE_DIR"]
const argv = process.argv.join(" ")
const role = argv.includes("--mode controller") ? "controller" : argv.includes("--mode worker") ? "worker" : undefined
const natsPort = Number(/--nats-url nats:\/\/[^:]+:(\d+)/.exec(argv)?.[1] ?? Number.NaN)

/** Notes every garbage collection of this process into `into` (start, on the shared clock, and duration); returns the observer. */
export const observeGc = (into: Array<readonly [number, number]>): PerformanceObserver => {
  const observer = new PerformanceObserver((list) => {
    for (const e of list.getEntries()) into.push([performance.timeOrigin + e.startTime, e.duration])
  })
  observer.observe({ entryTypes: ["gc"] })
  return observer
}

/** Runs `before` ahead of every call of `proto[name]`, then the method as it was. */
const wrap = <T extends object>(proto: T, name: keyof T & string, before: (self: T, args: ReadonlyArray<unknown>) => void) => {
  const original = proto[name] as unknown as (...args: Array<unknown>) => unknown
  Object.defineProperty(proto, name, {
    configurable: true,
    writable: true,
    value: function (this: T, ...args: Array<unknown>) {
      before(this, args)
      return Reflect.apply(original, this, args)
    }
  })
}

if (dir !== undefined && role !== undefined) {
  const now = () => performance.timeOrigin + performance.now()
  const trace: { hops: Array<[HopKind, number]>; gc: Array<[number, number]> } = { hops: [], gc: [] }
  observeGc(trace.gc)

  if (role === "controller") {
    wrap(http.ServerResponse.prototype, "assignSocket", () => trace.hops.push(["request", now()]))
    wrap(http.ServerResponse.prototype, "writeHead", () => trace.hops.push(["respond", now()]))
  }
  wrap(net.Socket.prototype, "emit", (socket, [event]) => {
    if (event === "data" && socket.remotePort === natsPort) trace.hops.push(["busIn", now()])
  })
  wrap(net.Socket.prototype, "write", (socket, [chunk]) => {
    if (socket.remotePort !== natsPort || !(chunk instanceof Uint8Array)) return
    const head = Buffer.from(chunk.buffer, chunk.byteOffset, Math.min(chunk.byteLength, 4096)).toString("latin1")
    trace.hops.push([/PUB response\./.test(head) ? "tokens" : /PUB worker\.[^ ]+\.inference/.test(head) ? "dispatch" : "busOut", now()])
  })
  process.once("exit", () => writeFileSync(join(dir, `${role}-${process.pid}.json`), JSON.stringify({ role, ...trace } satisfies HopTrace)))
}
