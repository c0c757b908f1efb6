import { Context, Effect, identity, Layer, Option, PubSub, Ref, Schema, Stream } from "effect"
import {
  type Incoming,
  NatsNoResponders,
  NatsTransport,
  type NatsTransportService
} from "../../../src/nats/nats-transport.js"
import { subscribeQueueVia } from "../../support/queue-subscription.js"

/** One message as it went over the in-memory "wire": its subject and JSON text. */
export interface WireMessage {
  readonly subject: string
  readonly payload: string
  readonly replyTo: string | undefined
}

/** The test's view of the bus: every message published so far, in order. */
export interface InMemoryNatsHandle {
  readonly published: Effect.Effect<ReadonlyArray<WireMessage>>
  readonly publishedOn: (subject: string) => Effect.Effect<ReadonlyArray<unknown>>
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

const decodeText = (payload: string | Uint8Array): string =>
  typeof payload === "string" ? payload : new TextDecoder().decode(payload)

/**
 * A NatsTransport test double: one in-process bus with the port's semantics that the controller
 * relies on. Messages are schema-encoded and JSON-serialised on publish, parsed and decoded on
 * delivery (a failure is logged with its subject and dropped), delivered in order to every matching
 * subscription that existed when they were published. Requests have no responders.
 */
export const makeInMemoryNats = Effect.gen(function* () {
  const bus = yield* PubSub.unbounded<WireMessage>()
  const log = yield* Ref.make<ReadonlyArray<WireMessage>>([])

  const send = (message: WireMessage) =>
    Ref.update(log, (all) => [...all, message]).pipe(Effect.zipRight(PubSub.publish(bus, message)), Effect.asVoid)

  const publishEncoded = <A, I>(subject: string, schema: Schema.Schema<A, I>, message: A, replyTo?: string) =>
    Schema.encode(schema)(message).pipe(
      Effect.orDie,
      Effect.flatMap((encoded) => send({ subject, payload: JSON.stringify(encoded), replyTo }))
    )

  const service: NatsTransportService = {
    subscribeQueue: subscribeQueueVia(() => service),
    publish: (subject, schema, message) => publishEncoded(subject, schema, message),
    publishRaw: (subject, payload) => send({ subject, payload: decodeText(payload), replyTo: undefined }),
    subscribe: <A, I>(subject: string, schema: Schema.Schema<A, I>) =>
      PubSub.subscribe(bus).pipe(
        Effect.map((queue) =>
          Stream.fromQueue(queue).pipe(
            Stream.filter((m) => subjectMatches(subject, m.subject)),
            Stream.mapEffect((m) =>
              Effect.try(() => JSON.parse(m.payload) as unknown).pipe(
                Effect.flatMap((json) => Schema.decodeUnknown(schema)(json)),
                Effect.map((data): Option.Option<Incoming<A>> => Option.some({ subject: m.subject, data, replyTo: m.replyTo })),
                Effect.catchAll((error) =>
                  Effect.logWarning(`dropped invalid message on ${m.subject}: ${String(error)}`).pipe(
                    Effect.as(Option.none<Incoming<A>>())
                  )
                )
              )
            ),
            Stream.filterMap(identity)
          )
        )
      ),
    request: (subject) => Effect.fail(new NatsNoResponders({ subject })),
    respond: (replyTo, schema, message) => publishEncoded(replyTo, schema, message),
    flush: Effect.void
  }

  const handle: InMemoryNatsHandle = {
    published: Ref.get(log),
    publishedOn: (subject) =>
      Effect.map(Ref.get(log), (all) => all.filter((m) => m.subject === subject).map((m) => JSON.parse(m.payload) as unknown))
  }
  return { service, handle } as const
})

/** The bus handle of `InMemoryNats.layer`, for assertions. */
export class InMemoryNats extends Context.Tag("test/InMemoryNats")<InMemoryNats, InMemoryNatsHandle>() {
  /** Provides both the NatsTransport double and its handle; one bus per build of the layer. */
  static readonly layer: Layer.Layer<NatsTransport | InMemoryNats> = Layer.effectContext(
    Effect.map(makeInMemoryNats, ({ handle, service }) =>
      Context.make(NatsTransport, service).pipe(Context.add(InMemoryNats, handle))
    )
  )
}
