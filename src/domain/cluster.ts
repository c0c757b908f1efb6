import { Schema } from "effect"
import { NonNegativeInt, NonNegativeNumber } from "./ids.js"

/** The controller lifecycle of docs/contract.md §5.6. */
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
    /** Ended because the client went away; `total` = `active` + `succeeded` + `failed` + `cancelled`. Absent (0) from older controllers. */
    cancelled: Schema.optionalWith(NonNegativeInt, { default: () => 0 }),
    /** Fraction 0..1 of finished requests that succeeded (1 before any finished). */
    successRate: NonNegativeNumber
  })
})
export type ClusterStatus = typeof ClusterStatus.Type
