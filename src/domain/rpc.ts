import * as Rpc from "@effect/rpc/Rpc"
import * as RpcGroup from "@effect/rpc/RpcGroup"
import { Schema } from "effect"
import { ClusterStatus } from "./cluster.js"
import { InferenceError, WorkerNotFound } from "./errors.js"
import { NonNegativeInt, NonNegativeNumber } from "./ids.js"
import { FinishReason, Usage } from "./inference.js"
import { SimpleInferenceFields } from "./simple-inference.js"
import { WorkerInfo } from "./worker.js"

/**
 * The typed RPC group of `/rpc` (docs/contract.md §8) for internal tools: served by the controller over
 * HTTP with NDJSON framing (a stream's items arrive as they are produced), called by
 * `src/rpc-client.ts` and `scripts/cluster.ts`.
 */

/**
 * `Generate`'s payload: the plain request shared with the WebSocket (`simple-inference.ts`). Its
 * prompt-or-messages rule is checked by the handler, so that breaking it is a typed `InvalidRequest`.
 */
export const GenerateRequest = Schema.Struct(SimpleInferenceFields)
export type GenerateRequest = typeof GenerateRequest.Type

export const GenerateToken = Schema.Struct({
  type: Schema.Literal("token"),
  index: NonNegativeInt,
  token: Schema.String
})

export const GenerateDone = Schema.Struct({
  type: Schema.Literal("done"),
  finishReason: FinishReason,
  usage: Usage,
  /** The worker's generation time. */
  latencyMs: NonNegativeNumber,
  workerId: Schema.String,
  /** extension (issue 13): times the stream moved to another worker; absent when it never did. */
  migrations: Schema.optional(NonNegativeInt)
})

/** One item of the `Generate` stream: tokens in order, then one `done`. */
export const GenerateEvent = Schema.Union(GenerateToken, GenerateDone)
export type GenerateEvent = typeof GenerateEvent.Type

export class ClusterRpcs extends RpcGroup.make(
  Rpc.make("ClusterStatus", { success: ClusterStatus }),
  Rpc.make("ListWorkers", { success: Schema.Array(WorkerInfo) }),
  Rpc.make("GetWorker", {
    payload: { workerId: Schema.String },
    success: WorkerInfo,
    error: WorkerNotFound
  }),
  Rpc.make("Generate", {
    payload: GenerateRequest,
    success: GenerateEvent,
    error: InferenceError,
    stream: true
  })
) {}
