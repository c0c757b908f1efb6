import { Context, Effect, Either, Layer, Option, ParseResult, Queue, Schema, Stream } from "effect"
import {
  type Incoming,
  NatsNoResponders,
  NatsReplyInvalid,
  NatsRequestTimeout,
  NatsTransport,
  type NatsTransportService,
  type RawMessage
} from "../../src/nats/nats-transport.js"

/** One message as it went over the in-memory "wire": its subject and JSON text. */
export interface WireMessage {
  readonly subject: string
  readonly payload: string
  readonly replyTo: string | undefined
}

/** The test's view of the bus. */
export interface ScriptedNatsHandle {
  /** Every message sent (publishes, requests, raw sends), in order. */
  readonly published: Effect.Effect<ReadonlyArray<WireMessage>>
  /** The JSON bodies sent on exactly `subject`, in order. */
  readonly publishedOn: (subject: string) => Effect.Effect<ReadonlyArray<unknown>>
  /** The messages sent on exactly `subject`, decoded with `schema` (a failure fails the test). */
  readonly sentOn: <A, I>(subject: string, schema: Schema.Schema<A, I>) => Effect.Effect<ReadonlyArray<A>>
  /** Delivers `data` (a JSON value, or raw text) to the subscribers of `subject`, as if it came from NATS; not recorded. */
  readonly inject: (subject: string, data: unknown, replyTo?: string) => Effect.Effect<void>
  /** Subjects (patterns) with a live subscription. */
  readonly subscriptions: Effect.Effect<ReadonlyArray<string>>
  /** `sub SUBJECT`, `unsub SUBJECT`, `pub SUBJECT` and `flush`, in the order they happened. */
  readonly timeline: Effect.Effect<ReadonlyArray<string>>
  /** Forgets what was sent so far. */
  readonly clear: Effect.Effect<void>
  /** What the transport's `connected()` says from now on (default true); delivery is not affected. */
  readonly setConnected: (connected: boolean) => Effect.Effect<void>
}

/** NATS subject matching with `*` (one token) and `>` (the rest). */
export const subjectMatches = (pattern: string, subject: string): boolean => {
  const p = pattern.split(".")
  const s = subject.split(".")
  for (let i = 0; i < p.length; i++) {
    if (p[i] === ">") return s.length > i
    if (i >= s.length || (p[i] !== "*" && p[i] !== s[i])) return false
  }
  return p.length === s.length
}

interface Subscriber {
  readonly pattern: string
  readonly deliver: (message: WireMessage) => void
}

const textEncoder = new TextEncoder()
const textDecoder = new TextDecoder()

/**
 * The one `NatsTransport` double of the test suite, with NATS's semantics that the code relies on:
 * - a message is delivered at once, in order, to every subscription alive at that moment whose
 *   pattern (`*`, `>`) matches; `publish` schema-encodes it, `subscribe` decodes it per subscriber
 *   (an invalid one is dropped for that subscriber), `listen` gets the bytes;
 * - `request` fails with `NatsNoResponders` when nothing subscribes to the subject; otherwise it
 *   sends with a fresh `_INBOX.n` reply subject and waits for the first reply, up to `timeoutMs`
 *   on the Effect `Clock` (so `TestClock.adjust` drives it) — then `NatsRequestTimeout`; a reply
 *   failing `replySchema` is `NatsReplyInvalid`.
 * Nothing here sleeps or uses real time.
 */
export const makeScriptedNats = (options: { readonly maxPayload?: number } = {}) =>
  Effect.sync(() => {
    const log: Array<WireMessage> = []
    const timeline: Array<string> = []
    const subscribers = new Set<Subscriber>()
    let inboxes = 0
    let delivered = 0
    let connected = true

    const deliver = (message: WireMessage) => {
      for (const s of [...subscribers]) {
        if (subscribers.has(s) && subjectMatches(s.pattern, message.subject)) {
          delivered++
          s.deliver(message)
        }
      }
    }
    const send = (message: WireMessage) => {
      log.push(message)
      timeline.push(`pub ${message.subject}`)
      deliver(message)
    }

    const encode = <A, I>(subject: string, schema: Schema.Schema<A, I>, message: A) =>
      Schema.encode(schema)(message).pipe(
        Effect.map((encoded) => JSON.stringify(encoded)),
        Effect.orDieWith((e) => new Error(`cannot encode a message for ${subject}: ${ParseResult.TreeFormatter.formatErrorSync(e)}`))
      )

    const subscribeWith = (pattern: string, deliverTo: (message: WireMessage) => void) => {
      const subscriber: Subscriber = { pattern, deliver: deliverTo }
      subscribers.add(subscriber)
      timeline.push(`sub ${pattern}`)
      return () => {
        if (subscribers.delete(subscriber)) timeline.push(`unsub ${pattern}`)
      }
    }

    /** The messages of `pattern` as they went over the wire, in a queue owned by the scope. */
    const wireQueue = (pattern: string) =>
      Effect.gen(function* () {
        const queue = yield* Effect.acquireRelease(Queue.unbounded<WireMessage>(), Queue.shutdown)
        yield* Effect.acquireRelease(
          Effect.sync(() => subscribeWith(pattern, (m) => void queue.unsafeOffer(m))),
          (unsubscribe) => Effect.sync(unsubscribe)
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
      publish: (subject, schema, message) =>
        encode(subject, schema, message).pipe(Effect.map((payload) => send({ subject, payload, replyTo: undefined }))),
      subscribe: <A, I>(subject: string, schema: Schema.Schema<A, I>) =>
        Effect.map(wireQueue(subject), (queue) =>
          Stream.fromQueue(queue).pipe(
            Stream.filterMap((m): Option.Option<Incoming<A>> =>
              Either.match(decodeWire(schema, m), {
                onLeft: () => Option.none(),
                onRight: (data) => Option.some({ subject: m.subject, data, replyTo: m.replyTo })
              })
            )
          )
        ),
      request: (subject, schema, message, replySchema, requestOptions) =>
        Effect.scoped(
          Effect.gen(function* () {
            if (![...subscribers].some((s) => subjectMatches(s.pattern, subject))) {
              return yield* new NatsNoResponders({ subject })
            }
            const inbox = `_INBOX.${++inboxes}`
            const replies = yield* wireQueue(inbox)
            send({ subject, payload: yield* encode(subject, schema, message), replyTo: inbox })
            const reply = yield* Queue.take(replies).pipe(
              Effect.timeoutFail({
                duration: requestOptions.timeoutMs,
                onTimeout: () => new NatsRequestTimeout({ subject, timeoutMs: requestOptions.timeoutMs })
              })
            )
            return yield* Either.match(decodeWire(replySchema, reply), {
              onLeft: (reason) => Effect.fail(new NatsReplyInvalid({ subject, reason })),
              onRight: Effect.succeed
            })
          })
        ),
      flush: Effect.sync(() => {
        timeline.push("flush")
      }),
      listen: (subject, onMessage: (message: RawMessage) => void) => {
        const unsubscribe = subscribeWith(subject, (m) =>
          onMessage({ subject: m.subject, data: textEncoder.encode(m.payload), reply: m.replyTo })
        )
        return { close: unsubscribe }
      },
      send: (subject, payload, reply) => send({ subject, payload: textDecoder.decode(payload), replyTo: reply }),
      maxPayload: () => options.maxPayload ?? 1_048_576,
      stats: () => ({ inMsgs: delivered, outMsgs: log.length }),
      connected: () => connected
    }

    const handle: ScriptedNatsHandle = {
      published: Effect.sync(() => [...log]),
      publishedOn: (subject) =>
        Effect.sync(() => log.filter((m) => m.subject === subject).map((m) => JSON.parse(m.payload) as unknown)),
      sentOn: (subject, schema) =>
        Effect.sync(() => log.filter((m) => m.subject === subject).map((m) => Schema.decodeUnknownSync(schema)(JSON.parse(m.payload)))),
      inject: (subject, data, replyTo) =>
        Effect.sync(() => deliver({ subject, payload: typeof data === "string" ? data : JSON.stringify(data), replyTo })),
      subscriptions: Effect.sync(() => [...subscribers].map((s) => s.pattern)),
      timeline: Effect.sync(() => [...timeline]),
      clear: Effect.sync(() => {
        log.length = 0
        timeline.length = 0
      }),
      setConnected: (value) =>
        Effect.sync(() => {
          connected = value
        })
    }
    return { service, handle } as const
  })

/** The bus handle of `ScriptedNats.layer`, for assertions. */
export class ScriptedNats extends Context.Tag("test/ScriptedNats")<ScriptedNats, ScriptedNatsHandle>() {
  /** The NatsTransport double and its handle; one bus per build of the layer. */
  static readonly layer: Layer.Layer<NatsTransport | ScriptedNats> = Layer.effectContext(
    Effect.map(makeScriptedNats(), ({ handle, service }) =>
      Context.make(NatsTransport, service).pipe(Context.add(ScriptedNats, handle))
    )
  )
}
