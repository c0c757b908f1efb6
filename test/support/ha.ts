import { connect, type NatsConnection } from "nats"

/**
 * What the fault tests of issue 14 (several controllers, a clustered bus) observe beyond the
 * clients: every worker's heartbeats, read off the bus (the worker's own view of its load), and
 * counters of the controllers' `/metrics`.
 */

export interface HeartbeatLog {
  /** Per worker, the most requests it ran at once (`peakActive` of any heartbeat, else `active`). */
  readonly peak: () => ReadonlyMap<string, number>
  /** Per worker, the last reported `requests.total`. */
  readonly totals: () => ReadonlyMap<string, number>
  /** Heartbeats seen per worker. */
  readonly count: (workerId: string) => number
  readonly close: () => Promise<void>
}

interface HeartbeatWire {
  readonly workerId?: string
  readonly metrics?: { readonly peakActive?: number; readonly requests?: { readonly active?: number; readonly total?: number } }
}

/** Subscribes to `worker.heartbeat` on `servers` (a raw client of the test's own). */
export const watchHeartbeats = async (servers: string | Array<string>): Promise<HeartbeatLog> => {
  const nc: NatsConnection = await connect({ servers, name: "fault test heartbeat watch" })
  const peak = new Map<string, number>()
  const totals = new Map<string, number>()
  const counts = new Map<string, number>()
  nc.subscribe("worker.heartbeat", {
    callback: (err, msg) => {
      if (err !== null) return
      const hb = JSON.parse(new TextDecoder().decode(msg.data)) as HeartbeatWire
      const id = hb.workerId
      if (id === undefined) return
      const seen = Math.max(hb.metrics?.peakActive ?? 0, hb.metrics?.requests?.active ?? 0)
      peak.set(id, Math.max(peak.get(id) ?? 0, seen))
      totals.set(id, hb.metrics?.requests?.total ?? 0)
      counts.set(id, (counts.get(id) ?? 0) + 1)
    }
  })
  await nc.flush()
  return { peak: () => peak, totals: () => totals, count: (id) => counts.get(id) ?? 0, close: () => nc.close() }
}

/** The value of an unlabelled counter at a controller's `/metrics` (0 before its first event). */
export const counterValue = async (controllerUrl: string, name: string): Promise<number> => {
  const text = await (await fetch(`${controllerUrl}/metrics`, { signal: AbortSignal.timeout(5_000) })).text()
  const line = text.split("\n").find((l) => l.startsWith(`${name} `))
  return line === undefined ? 0 : Number(line.split(" ")[1])
}

/** The millisecond an output line matching `pattern` was printed, if it was: the pretty log's leading time. */
export const loggedAt = (output: string, pattern: RegExp): number | undefined => {
  const line = output.split("\n").find((l) => pattern.test(l))
  const stamp = line === undefined ? undefined : /^(\S+)/.exec(line)?.[1]
  const at = stamp === undefined ? NaN : Date.parse(stamp)
  return Number.isNaN(at) ? undefined : at
}
