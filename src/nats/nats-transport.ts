import { Context, Data, type Effect, type Queue, type Schema, type Scope, type Stream } from "effect"

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

export type NatsRequestError = NatsNoResponders | NatsRequestTimeout | NatsReplyInvalid

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
}

/**
 * The NATS port. Every message is schema-encoded on the way out and schema-decoded on the way in;
 * a message that fails its schema is logged with its subject and reason and dropped.
 */
export interface NatsTransportService {
  readonly publish: <A, I>(subject: string, schema: Schema.Schema<A, I>, message: A) => Effect.Effect<void>
  /** Publishes bytes as they are: for fault tests that need to send garbage. */
  readonly publishRaw: (subject: string, payload: string | Uint8Array) => Effect.Effect<void>
  /**
   * Subscribes at once (the subscription exists on this connection when the effect completes) and
   * returns the stream of decoded messages. The subscription ends with the scope.
   */
  readonly subscribe: <A, I>(
    subject: string,
    schema: Schema.Schema<A, I>,
    options?: SubscribeOptions
  ) => Effect.Effect<Stream.Stream<Incoming<A>>, never, Scope.Scope>
  /**
   * The same subscription as `subscribe`, as the queue it fills: for a hot path that reads it
   * directly (one take per batch) and may offer markers of its own into it.
   */
  readonly subscribeQueue: <A, I>(
    subject: string,
    schema: Schema.Schema<A, I>,
    options?: SubscribeOptions
  ) => Effect.Effect<Queue.Queue<Incoming<A>>, never, Scope.Scope>
  /** Request/reply: the reply is decoded with `replySchema`. */
  readonly request: <A, I, B, BI>(
    subject: string,
    schema: Schema.Schema<A, I>,
    message: A,
    replySchema: Schema.Schema<B, BI>,
    options: RequestOptions
  ) => Effect.Effect<B, NatsRequestError>
  /** Answers a request received with `subscribe`. */
  readonly respond: <B, BI>(replyTo: string, schema: Schema.Schema<B, BI>, message: B) => Effect.Effect<void>
  /** Round trip to the server: everything published before it has reached the server. */
  readonly flush: Effect.Effect<void>
}

export class NatsTransport extends Context.Tag("nats/NatsTransport")<NatsTransport, NatsTransportService>() {}
