import { Schema } from "effect"

/** A worker's identity on the wire; also the `{workerId}` part of its NATS subjects. */
export const WorkerId = Schema.String.pipe(
  Schema.minLength(1),
  // NATS subject tokens must not contain separators, wildcards or whitespace.
  Schema.pattern(/^[^.*>\s]+$/),
  Schema.brand("WorkerId")
)
export type WorkerId = typeof WorkerId.Type

/** One inference request end to end; the `{requestId}` of `response.{requestId}`. */
export const RequestId = Schema.String.pipe(
  Schema.minLength(1),
  Schema.pattern(/^[^.*>\s]+$/),
  Schema.brand("RequestId")
)
export type RequestId = typeof RequestId.Type

/** Epoch milliseconds, as every timestamp of CONTRACT §4. */
export const EpochMillis = Schema.Number.pipe(Schema.nonNegative(), Schema.finite())

export const NonNegativeInt = Schema.Number.pipe(Schema.int(), Schema.nonNegative())
export const NonNegativeNumber = Schema.Number.pipe(Schema.nonNegative(), Schema.finite())
