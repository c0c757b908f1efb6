import { Context, Data, type Effect, type Schema, type Scope, type Stream } from "effect"

/** Nobody subscribes to the subject of a request (NATS 503 "no responders"). */
export class NatsNoResponders extends Data.TaggedError("NatsNoResponders")<{ readonly subject: string }> {}

/** A request got no reply within its timeout. */
export class NatsRequestTimeout extends Data.TaggedError("NatsRequestTimeout")<{
  readonly subject: string
  readonly timeoutMs: number
}> {}

/** A reply arrived but did not match its schema. */
export class NatsReplyInvalid extends Data.TaggedError("NatsReplyInvalid")<{
  readonly subject: string
  readonly reason: string
}> {}

/** The request is larger than the server accepts (its `max_payload`): it was not sent. */
export class NatsPayloadTooLarge extends Data.TaggedError("NatsPayloadTooLarge")<{
  readonly subject: string
  readonly bytes: number
  readonly maxPayload: number
}> {}

export type NatsRequestError = NatsNoResponders | NatsRequestTimeout | NatsReplyInvalid | NatsPayloadTooLarge

/** One decoded message of a subscription. */
export interface Incoming<A> {
  readonly subject: string
  readonly data: A
  /** Reply subject of a request, if the sender asked for one. */
  readonly replyTo: string | undefined
}

export interface SubscribeOptions {
  /** Queue group: each message goes to one member of the group. */
  readonly queue?: string
  /** Messages buffered between nats' callback and the consumer; beyond it they are dropped and logged. */
  readonly bufferSize?: number
}

export interface RequestOptions {
  readonly timeoutMs: number
  /**
   * The message was built field by field for its schema, which is plain (`plainEncoderFor` in
   * codec.ts): it is sent as JSON with no Schema pass (the request path's dispatch).
   */
  readonly plain?: boolean
}

/** A message as the hot path sees it: its bytes, not decoded (the caller decodes what it needs). */
export interface RawMessage {
  readonly subject: string
  readonly data: Uint8Array
  /** The reply subject of a request; empty or undefined when there is none. */
  readonly reply?: string | undefined
}

/** A subscription of `listen`; `close` unsubscribes (idempotent). */
export interface RawSubscription {
  readonly close: () => void
}

/**
 * The NATS port. Every message is schema-encoded on the way out and schema-decoded on the way in;
 * a message that fails its schema is logged with its subject and reason and dropped.
 */
export interface NatsTransportService {
  readonly publish: <A, I>(subject: string, schema: Schema.Schema<A, I>, message: A) => Effect.Effect<void>
  /**
   * Subscribes at once (the subscription exists on this connection when the effect completes) and
   * returns the stream of decoded messages. The subscription ends with the scope.
   */
  readonly subscribe: <A, I>(
    subject: string,
    schema: Schema.Schema<A, I>,
    options?: SubscribeOptions
  ) => Effect.Effect<Stream.Stream<Incoming<A>>, never, Scope.Scope>
  /** Request/reply: the reply is decoded with `replySchema`. */
  readonly request: <A, I, B, BI>(
    subject: string,
    schema: Schema.Schema<A, I>,
    message: A,
    replySchema: Schema.Schema<B, BI>,
    options: RequestOptions
  ) => Effect.Effect<B, NatsRequestError>
  /** Round trip to the server: everything published before it has reached the server. */
  readonly flush: Effect.Effect<void>
  /**
   * Hot path: subscribes now and calls `onMessage` for each message from NATS's read loop, with no
   * Effect, queue or decode per message. An exception thrown by `onMessage` is caught and logged,
   * never let into the read loop. Close it when done (the connection's end closes it too).
   */
  readonly listen: (subject: string, onMessage: (message: RawMessage) => void, options?: { readonly queue?: string }) => RawSubscription
  /** Hot path: publishes bytes now, optionally with a reply subject; never throws (a closed connection is logged). */
  readonly send: (subject: string, payload: Uint8Array, reply?: string) => void
  /** The largest message the server accepts, in bytes (its `max_payload`; 1 MiB before the first connect). */
  readonly maxPayload: () => number
  /** Messages received and sent by this connection so far. */
  readonly stats: () => { readonly inMsgs: number; readonly outMsgs: number }
  /**
   * Whether the connection is up now (false from a disconnect until the reconnect). Optional: a
   * transport without it counts as always connected. The owner watch (issue 14) takes no verdict
   * about a controller from a probe that could not reach the bus.
   */
  readonly connected?: () => boolean
}

export class NatsTransport extends Context.Tag("nats/NatsTransport")<NatsTransport, NatsTransportService>() {}
