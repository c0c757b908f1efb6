import type { InferenceReply } from "../domain/inference.js"
import type { WorkerMetrics } from "../domain/worker.js"

/**
 * A worker's own view of its load, as several controllers balance on it (issue 14). Each controller
 * counts its own dispatches at once (`InFlight.own`); what the *other* controllers run on a worker it
 * learns only from the worker: its heartbeats (`activeByController`, every `heartbeat_interval_ms`),
 * and the ack or `busy` refusal of each of its own dispatches (`active`, `activeForController`).
 * `InFlight.reported(workerId, active, ownAtWorker)` keeps `others = active − ownAtWorker`, so that
 * `load = own + others` counts every request once, and two controllers do not pile onto one worker.
 *
 * Pure: what a message says, as the numbers `InFlight.reported` takes.
 */

/** What one message of a worker says about its load. */
export interface WorkerReport {
  /** Requests holding a slot on the worker. */
  readonly active: number
  /** Of them, this controller's; undefined when the worker did not say (an older worker). */
  readonly ownAtWorker: number | undefined
  /** The worker's own `max_concurrent`, when it said. */
  readonly maxConcurrent?: number | undefined
}

/** A heartbeat's metrics, read by controller `controllerId`. */
export const fromHeartbeat = (metrics: WorkerMetrics, controllerId: string): WorkerReport => ({
  active: metrics.requests.active,
  // A worker that reports per controller and does not name us runs none of ours.
  ownAtWorker: metrics.activeByController === undefined ? undefined : (metrics.activeByController[controllerId] ?? 0),
  maxConcurrent: metrics.maxConcurrent
})

/** An ack: undefined when it carries no counts (an older worker). */
export const fromAck = (reply: Extract<InferenceReply, { accepted: true }>): WorkerReport | undefined =>
  reply.active === undefined ? undefined : { active: reply.active, ownAtWorker: reply.activeForController }

/**
 * A `busy` refusal: the worker is full by its own count, whatever the counts say (it may be
 * draining with nothing running, its `max_concurrent` may be lower than this controller believes,
 * or it may still run requests this controller already gave up on, waiting for their cancel). So
 * the others' share is reported as at least what fills the worker up once the refused request's
 * slot is given back: the load this controller gives it stays at `capacity` or more until a
 * heartbeat or an ack says otherwise, and a request sent back to the admission queue waits for a
 * slot that is really free instead of bouncing off the same worker in a loop. `ownNow` is this
 * controller's count there, the refused request's slot included (it is given back after this report).
 */
export const fromBusy = (reply: Extract<InferenceReply, { accepted: false }>, capacity: number, ownNow: number): WorkerReport => {
  const ownAfter = Math.max(0, ownNow - 1)
  const reportedOthers = (reply.active ?? 0) - (reply.activeForController ?? ownAfter)
  const others = Math.max(reportedOthers, capacity - ownAfter, 0)
  return { active: others + ownAfter, ownAtWorker: ownAfter }
}

/**
 * The `active` to give `InFlight.reported` for `report` on a worker this controller gives
 * `capacity` slots: a worker whose own `max_concurrent` is lower (an operator override that
 * believes in more slots than the worker has) is counted as running the difference too, so that it
 * is never sent more than it accepts.
 */
export const reportedActive = (report: WorkerReport, capacity: number): number =>
  report.active + (report.maxConcurrent === undefined ? 0 : Math.max(0, capacity - report.maxConcurrent))
