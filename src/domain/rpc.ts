import * as Rpc from "@effect/rpc/Rpc"
import * as RpcGroup from "@effect/rpc/RpcGroup"
import { Either, ParseResult, Schema } from "effect"
import { ClusterStatus } from "./cluster.js"
import { formatIssue, guardedDecoder } from "./decode.js"
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

/**
 * An RPC payload schema as the server reads it off the wire: through the guarded decoder, so that
 * a bad payload fails with one line naming the field. @effect/rpc turns a payload that fails its
 * schema into a defect holding Effect's tree-formatted error, and that formatter recurses into
 * the value: JSON nested 100,000 deep overflowed the stack (an empty 500), and a merely bad one
 * echoed the whole value back.
 */
const guardedPayload = <A, I>(name: string, schema: Schema.Schema<A, I, never>) => {
  const decode = guardedDecoder(schema)
  return Schema.transformOrFail(Schema.Unknown, Schema.typeSchema(schema), {
    strict: true,
    decode: (input, _options, ast) =>
      Either.match(decode(input), {
        onLeft: (issue) => ParseResult.fail(new ParseResult.Type(ast, input, `invalid ${name} request: ${formatIssue(issue)}`)),
        onRight: ParseResult.succeed
      }),
    encode: ParseResult.encodeUnknown(schema)
  }).annotations({ identifier: `${name}Request` })
}

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
    payload: guardedPayload("GetWorker", Schema.Struct({ workerId: Schema.String })),
    success: WorkerInfo,
    error: WorkerNotFound
  }),
  Rpc.make("Generate", {
    payload: guardedPayload("Generate", GenerateRequest),
    success: GenerateEvent,
    error: InferenceError,
    stream: true
  })
) {}
