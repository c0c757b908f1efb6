import { Schema } from "effect"

/**
 * Longest worker or request id. Ids are NATS subject tokens, registry keys and parts of log lines:
 * bounded so that a forged 8 MB id is refused at the door, not logged once a second.
 */
export const MAX_ID_LENGTH = 128

/**
 * The characters of an id: letters, digits, `-` and `_`. Safe as a NATS subject token (no `.`, `*`,
 * `>` or whitespace), in a NATS user name and permission (`worker.<id>.>`, `_INBOX_<id>.>`), in a
 * file name and in a log line (no control characters).
 */
export const ID_PATTERN = /^[A-Za-z0-9_-]+$/

const idString = (what: string) =>
  Schema.String.pipe(
    Schema.minLength(1, { message: () => `${what} must not be empty` }),
    Schema.maxLength(MAX_ID_LENGTH, { message: (issue) => `${what} is longer than ${MAX_ID_LENGTH} characters (${String(issue.actual).length})` }),
    Schema.pattern(ID_PATTERN, { message: () => `${what} may hold only letters, digits, "-" and "_"` })
  )

/** The plain-string form of a worker id (the config's `worker.id` uses it). */
export const WorkerIdString = idString("a worker id")

/** A worker's identity on the wire; also the `{workerId}` part of its NATS subjects. */
export const WorkerId = WorkerIdString.pipe(Schema.brand("WorkerId"))
export type WorkerId = typeof WorkerId.Type

/**
 * A controller's identity on the wire (issue 14): the `{controllerId}` of `controller.{controllerId}.probe`,
 * carried by the inference requests it owns and keyed in a worker's `activeByController`.
 */
export const ControllerId = idString("a controller id")

/** One inference request end to end; the `{requestId}` of `response.{requestId}`. */
export const RequestId = idString("a request id").pipe(Schema.brand("RequestId"))
export type RequestId = typeof RequestId.Type

/** Epoch milliseconds, as every timestamp of docs/contract.md §4.1. */
export const EpochMillis = Schema.Number.pipe(Schema.nonNegative(), Schema.finite())

export const NonNegativeInt = Schema.Number.pipe(Schema.int(), Schema.nonNegative())
export const NonNegativeNumber = Schema.Number.pipe(Schema.nonNegative(), Schema.finite())
