import { Schema } from "effect"
import { NonNegativeInt, NonNegativeNumber } from "./ids.js"

/** The controller lifecycle of PRD "Controller Lifecycle". */
export const ControllerState = Schema.Literal(
  "idle",
  "connecting",
  "registering",
  "starting",
  "ready",
  "draining",
  "stopping",
  "stopped"
)
export type ControllerState = typeof ControllerState.Type

export const ClusterMode = Schema.Literal("controller", "worker", "both")
export type ClusterMode = typeof ClusterMode.Type

export const ClusterStatus = Schema.Struct({
  controller: Schema.Struct({
    version: Schema.String,
    /** Milliseconds since the controller started. */
    uptime: NonNegativeNumber,
    mode: ClusterMode,
    state: ControllerState
  }),
  workers: Schema.Struct({ total: NonNegativeInt, online: NonNegativeInt, offline: NonNegativeInt }),
  requests: Schema.Struct({
    active: NonNegativeInt,
    total: NonNegativeInt,
    succeeded: NonNegativeInt,
    failed: NonNegativeInt,
    /** Fraction 0..1 of finished requests that succeeded (1 before any finished). */
    successRate: NonNegativeNumber
  })
})
export type ClusterStatus = typeof ClusterStatus.Type
