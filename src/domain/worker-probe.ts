import { Schema } from "effect"
import { NonNegativeInt, WorkerId } from "./ids.js"

/**
 * extension (issue 13): a controller's liveness probe of a worker, a NATS request on
 * `worker.{workerId}.probe` (`Subjects.probe`). The worker answers straight from its NATS callback
 * — no fiber, no engine — so a worker answers however busy its engine is; a worker that does not
 * answer is gone (no responders) or hung (no answer in time).
 */
export const WorkerProbe = Schema.Struct({ workerId: WorkerId })
export type WorkerProbe = typeof WorkerProbe.Type

/** The answer: who answered, and how many requests it runs now. */
export const WorkerProbeReply = Schema.Struct({ workerId: WorkerId, active: NonNegativeInt })
export type WorkerProbeReply = typeof WorkerProbeReply.Type
