import { Context, Effect, Either, Exit, Layer, Queue, Schema, Stream } from "effect"
import { type Incoming, NatsTransport, type NatsTransportService } from "../../../src/nats/nats-transport.js"
import { subscribeQueueVia } from "../../support/queue-subscription.js"

/** One message the code under test sent: its subject and its JSON-encoded body. */
export interface Sent {
  readonly subject: string
  readonly body: unknown
}

interface Subscriber {
  readonly subject: string
  readonly deliver: (data: unknown, replyTo: string | undefined) => void
}

export interface TestTransportControl {
  /** Everything published or responded so far, in order. */
  readonly sent: Effect.Effect<ReadonlyArray<Sent>>
  /** Messages sent on one subject, decoded with `schema`. */
  readonly sentOn: <A, I>(subject: string, schema: Schema.Schema<A, I>) => Effect.Effect<ReadonlyArray<A>>
  /** Delivers `data` (a JSON value) to the subscribers of `subject`, as if it came from NATS. */
  readonly inject: (subject: string, data: unknown, replyTo?: string) => Effect.Effect<void>
  /** Subjects with a live subscription. */
  readonly subscriptions: Effect.Effect<ReadonlyArray<string>>
  /** `sub SUBJECT`, `unsub SUBJECT`, `pub SUBJECT` and `flush` in the order they happened. */
  readonly timeline: Effect.Effect<ReadonlyArray<string>>
  readonly clear: Effect.Effect<void>
}

/** The control side of the in-memory transport. */
export class TestTransport extends Context.Tag("test/TestTransport")<TestTransport, TestTransportControl>() {}

/**
 * An in-memory `NatsTransport`: records what is published (schema-encoded, like the real one) and
 * delivers what a test injects to subscribers (schema-decoded; invalid messages are dropped, like the
 * real one). Subjects match exactly (no wildcards). Published messages also reach local subscribers.
 */
export const makeTestTransport = Effect.sync(() => {
  const sent: Array<Sent> = []
  const timeline: Array<string> = []
  const subscribers = new Set<Subscriber>()

  const deliver = (subject: string, data: unknown, replyTo: string | undefined) => {
    for (const s of subscribers) if (s.subject === subject) s.deliver(data, replyTo)
  }

  const record = <A, I>(subject: string, schema: Schema.Schema<A, I>, message: A) =>
    Effect.sync(() => {
      const encoded = Schema.encodeEither(schema)(message)
      if (Either.isLeft(encoded)) throw new Error(`invalid message on ${subject}: ${encoded.left.message}`)
      const body: unknown = JSON.parse(JSON.stringify(encoded.right))
      sent.push({ subject, body })
      timeline.push(`pub ${subject}`)
      deliver(subject, body, undefined)
    })

  const service: NatsTransportService = {
    subscribeQueue: subscribeQueueVia(() => service),
    publish: record,
    publishRaw: (subject, payload) =>
      Effect.sync(() => {
        sent.push({ subject, body: typeof payload === "string" ? payload : new TextDecoder().decode(payload) })
      }),
    subscribe: <A, I>(subject: string, schema: Schema.Schema<A, I>) =>
      Effect.gen(function* () {
        const queue = yield* Effect.acquireRelease(Queue.unbounded<Incoming<A>>(), Queue.shutdown)
        const decode = Schema.decodeUnknownEither(schema)
        const subscriber: Subscriber = {
          subject,
          deliver: (data, replyTo) => {
            const decoded = decode(data)
            if (Either.isRight(decoded)) queue.unsafeOffer({ subject, data: decoded.right, replyTo })
          }
        }
        yield* Effect.acquireRelease(
          Effect.sync(() => {
            subscribers.add(subscriber)
            timeline.push(`sub ${subject}`)
          }),
          () =>
            Effect.sync(() => {
              subscribers.delete(subscriber)
              timeline.push(`unsub ${subject}`)
            })
        )
        return Stream.fromQueue(queue)
      }),
    request: () => Effect.die(new Error("TestTransport.request is not supported")),
    respond: record,
    flush: Effect.sync(() => {
      timeline.push("flush")
    })
  }

  const control: TestTransportControl = {
    sent: Effect.sync(() => [...sent]),
    sentOn: (subject, schema) =>
      Effect.sync(() => sent.filter((s) => s.subject === subject).map((s) => Schema.decodeUnknownSync(schema)(s.body))),
    inject: (subject, data, replyTo) => Effect.sync(() => deliver(subject, data, replyTo)),
    subscriptions: Effect.sync(() => [...subscribers].map((s) => s.subject)),
    timeline: Effect.sync(() => [...timeline]),
    clear: Effect.sync(() => {
      sent.length = 0
      timeline.length = 0
    })
  }
  return { service, control }
})

/** `NatsTransport` and its `TestTransport` control, sharing one in-memory bus. */
export const TestTransportLayer: Layer.Layer<NatsTransport | TestTransport> = Layer.effectContext(
  Effect.map(makeTestTransport, ({ control, service }) =>
    Context.make(NatsTransport, service).pipe(Context.add(TestTransport, control))
  )
)

/**
 * Runs `check` until it succeeds (failures and thrown assertions retry) or `timeoutMs` of wall-clock
 * time passed. Usable in TestClock tests too: it does not sleep on the Effect clock.
 */
export const eventually = <A, E, R>(
  check: Effect.Effect<A, E, R>,
  options: { readonly timeoutMs?: number; readonly intervalMs?: number } = {}
): Effect.Effect<A, E, R> =>
  Effect.gen(function* () {
    const deadline = Date.now() + (options.timeoutMs ?? 5_000)
    for (;;) {
      const result = yield* Effect.exit(check)
      if (Exit.isSuccess(result)) return result.value
      if (Date.now() > deadline) return yield* result
      yield* realSleep(options.intervalMs ?? 10)
    }
  })

/** Waits `ms` of wall-clock time whatever clock the test runs on. */
export const realSleep = (ms: number): Effect.Effect<void> =>
  Effect.async<void>((resume) => {
    const handle = setTimeout(() => resume(Effect.void), ms)
    return Effect.sync(() => clearTimeout(handle))
  })
