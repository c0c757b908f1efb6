import { Context, Effect, Either, Layer, Option, ParseResult, Queue, Schema, Stream } from "effect"
import {
  type Incoming,
  NatsNoResponders,
  NatsReplyInvalid,
  NatsRequestTimeout,
  NatsTransport,
  type NatsTransportService
} from "../../../src/nats/nats-transport.js"
import { subjectMatches, type WireMessage } from "./in-memory-nats.js"
import { subscribeQueueVia } from "../../support/queue-subscription.js"

/** The test's view of the scripted bus. */
export interface ScriptedNatsHandle {
  /** Every message published (requests, replies, publishes), in order. */
  readonly published: Effect.Effect<ReadonlyArray<WireMessage>>
  /** The JSON bodies published on exactly `subject`, in order. */
  readonly publishedOn: (subject: string) => Effect.Effect<ReadonlyArray<unknown>>
  /** Subjects (patterns) with a live subscription. */
  readonly subscriptions: Effect.Effect<ReadonlyArray<string>>
}

interface Subscriber {
  readonly pattern: string
  readonly deliver: (message: WireMessage) => void
}

/**
 * A `NatsTransport` double with request/reply, for the Router's tests. Like NATS:
 * - `publish` delivers at once, in order, to every subscription alive at that moment whose pattern
 *   (`*`, `>`) matches; the message is schema-encoded and JSON-serialised, and decoded per
 *   subscriber (an invalid one is dropped for that subscriber);
 * - `request` fails with `NatsNoResponders` when nothing subscribes to the subject; otherwise it
 *   publishes with a fresh `_INBOX.n` reply subject and waits for the first reply, up to
 *   `timeoutMs` on the Effect `Clock` (so `TestClock.adjust` drives it) — then
 *   `NatsRequestTimeout`; a reply failing `replySchema` is `NatsReplyInvalid`.
 * Nothing here sleeps or uses real time.
 */
export const makeScriptedNats = Effect.sync(() => {
  const log: Array<WireMessage> = []
  const subscribers = new Set<Subscriber>()
  let inboxes = 0

  const send = (message: WireMessage) =>
    Effect.sync(() => {
      log.push(message)
      for (const s of [...subscribers]) if (subjectMatches(s.pattern, message.subject)) s.deliver(message)
    })

  const encode = <A, I>(subject: string, schema: Schema.Schema<A, I>, message: A) =>
    Schema.encode(schema)(message).pipe(
      Effect.map((encoded) => JSON.stringify(encoded)),
      Effect.orDieWith((e) => new Error(`cannot encode a message for ${subject}: ${ParseResult.TreeFormatter.formatErrorSync(e)}`))
    )

  const publishWith = <A, I>(subject: string, schema: Schema.Schema<A, I>, message: A, replyTo: string | undefined) =>
    encode(subject, schema, message).pipe(Effect.flatMap((payload) => send({ subject, payload, replyTo })))

  /** A raw subscription: the messages as they went over the wire. */
  const subscribeRaw = (pattern: string) =>
    Effect.gen(function* () {
      const queue = yield* Effect.acquireRelease(Queue.unbounded<WireMessage>(), Queue.shutdown)
      const subscriber: Subscriber = { pattern, deliver: (m) => void queue.unsafeOffer(m) }
      yield* Effect.acquireRelease(
        Effect.sync(() => subscribers.add(subscriber)),
        () => Effect.sync(() => subscribers.delete(subscriber))
      )
      return queue
    })

  const decodeWire = <A, I>(schema: Schema.Schema<A, I>, m: WireMessage): Either.Either<A, string> =>
    Either.try(() => JSON.parse(m.payload) as unknown).pipe(
      Either.mapLeft(String),
      Either.flatMap((json) =>
        Schema.decodeUnknownEither(schema)(json).pipe(Either.mapLeft((e) => ParseResult.TreeFormatter.formatErrorSync(e)))
      )
    )

  const service: NatsTransportService = {
    subscribeQueue: subscribeQueueVia(() => service),
    publish: (subject, schema, message) => publishWith(subject, schema, message, undefined),
    publishRaw: (subject, payload) =>
      send({ subject, payload: typeof payload === "string" ? payload : new TextDecoder().decode(payload), replyTo: undefined }),
    subscribe: <A, I>(subject: string, schema: Schema.Schema<A, I>) =>
      Effect.map(subscribeRaw(subject), (queue) =>
        Stream.fromQueue(queue).pipe(
          Stream.filterMap((m): Option.Option<Incoming<A>> =>
            Either.match(decodeWire(schema, m), {
              onLeft: () => Option.none(),
              onRight: (data) => Option.some({ subject: m.subject, data, replyTo: m.replyTo })
            })
          )
        )
      ),
    request: (subject, schema, message, replySchema, options) =>
      Effect.scoped(
        Effect.gen(function* () {
          if (![...subscribers].some((s) => subjectMatches(s.pattern, subject))) {
            return yield* new NatsNoResponders({ subject })
          }
          const inbox = `_INBOX.${++inboxes}`
          const replies = yield* subscribeRaw(inbox)
          yield* publishWith(subject, schema, message, inbox)
          const reply = yield* Queue.take(replies).pipe(
            Effect.timeoutFail({
              duration: options.timeoutMs,
              onTimeout: () => new NatsRequestTimeout({ subject, timeoutMs: options.timeoutMs })
            })
          )
          return yield* Either.match(decodeWire(replySchema, reply), {
            onLeft: (reason) => Effect.fail(new NatsReplyInvalid({ subject, reason })),
            onRight: Effect.succeed
          })
        })
      ),
    respond: (replyTo, schema, message) => publishWith(replyTo, schema, message, undefined),
    flush: Effect.void
  }

  const handle: ScriptedNatsHandle = {
    published: Effect.sync(() => [...log]),
    publishedOn: (subject) =>
      Effect.sync(() => log.filter((m) => m.subject === subject).map((m) => JSON.parse(m.payload) as unknown)),
    subscriptions: Effect.sync(() => [...subscribers].map((s) => s.pattern))
  }
  return { service, handle } as const
})

/** The bus handle of `ScriptedNats.layer`, for assertions. */
export class ScriptedNats extends Context.Tag("test/ScriptedNats")<ScriptedNats, ScriptedNatsHandle>() {
  /** The NatsTransport double and its handle; one bus per build of the layer. */
  static readonly layer: Layer.Layer<NatsTransport | ScriptedNats> = Layer.effectContext(
    Effect.map(makeScriptedNats, ({ handle, service }) =>
      Context.make(NatsTransport, service).pipe(Context.add(ScriptedNats, handle))
    )
  )
}
