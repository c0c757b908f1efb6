import { describe, expect, inject, it } from "@effect/vitest"
import { Chunk, Effect, Either, Exit, Fiber, Layer, Logger, Option, Schema, Stream, TestClock } from "effect"
import { NatsNoResponders, NatsReplyInvalid, NatsRequestTimeout, NatsTransport } from "../../src/nats/nats-transport.js"
import { layer as natsLayer } from "../../src/nats/nats-transport-live.js"
import { eventually } from "../support/eventually.js"
import { startTestNatsServer } from "../support/nats-server.js"

const Ping = Schema.Struct({ n: Schema.Number.pipe(Schema.int()) })
const Pong = Schema.Struct({ doubled: Schema.Number })

const natsUrl = inject("natsUrl")
const unique = (prefix: string) => `${prefix}.${Math.random().toString(36).slice(2)}`

const bytes = (text: string) => new TextEncoder().encode(text)
/** What a listener heard, as text, in order. */
const textOf = (heard: Array<string>) => (m: { readonly data: Uint8Array }) => void heard.push(new TextDecoder().decode(m.data))

const withNats = <A, E, R>(effect: Effect.Effect<A, E, R>, url = natsUrl) =>
  Effect.provide(effect, natsLayer({ url }))

describe("NatsTransport (real nats-server)", () => {
  it.scopedLive("round-trips a schema-encoded message through publish/subscribe", () =>
    withNats(
      Effect.gen(function* () {
        const nats = yield* NatsTransport
        const subject = unique("test.pubsub")
        const stream = yield* nats.subscribe(subject, Ping)
        const received = yield* Effect.fork(Stream.runCollect(Stream.take(stream, 2)))
        yield* nats.publish(subject, Ping, { n: 1 })
        yield* nats.publish(subject, Ping, { n: 2 })
        const items = Chunk.toReadonlyArray(yield* Fiber.join(received))
        expect(items.map((i) => i.data.n)).toEqual([1, 2])
        expect(items[0]?.subject).toBe(subject)
      })
    )
  )

  it.scopedLive("drops schema-invalid and non-JSON messages without ending the subscription", () =>
    withNats(
      Effect.gen(function* () {
        const nats = yield* NatsTransport
        const subject = unique("test.garbage")
        const stream = yield* nats.subscribe(subject, Ping)
        const received = yield* Effect.fork(Stream.runCollect(Stream.take(stream, 1)))
        const raw = (text: string | Uint8Array) => nats.send(subject, typeof text === "string" ? bytes(text) : text)
        raw("{ not json")
        raw(JSON.stringify({ n: "one" }))
        raw(new Uint8Array([0xff, 0x00, 0x12]))
        // Nested deep enough to exhaust the stack while checked: must be dropped, not stop nats' reader.
        raw("[".repeat(50_000) + "]".repeat(50_000))
        raw(`{"n":${"[".repeat(20_000)}${"]".repeat(20_000)}}`)
        yield* nats.publish(subject, Ping, { n: 7 })
        const items = Chunk.toReadonlyArray(yield* Fiber.join(received))
        expect(items.map((i) => i.data)).toEqual([{ n: 7 }])
      })
    )
  )

  it.scopedLive("refuses to publish a message that does not match its own schema", () =>
    withNats(
      Effect.gen(function* () {
        const nats = yield* NatsTransport
        const subject = unique("test.invalid-out")
        const stream = yield* nats.subscribe(subject, Schema.Unknown)
        const first = yield* Effect.fork(Stream.runHead(stream))
        yield* nats.publish(subject, Ping, { n: 1.5 })
        yield* nats.publish(subject, Ping, { n: 2 })
        expect(Option.getOrThrow(yield* Fiber.join(first)).data).toEqual({ n: 2 })
      })
    )
  )

  it.scopedLive("request/reply decodes the reply", () =>
    withNats(
      Effect.gen(function* () {
        const nats = yield* NatsTransport
        const subject = unique("test.rpc")
        const requests = yield* nats.subscribe(subject, Ping)
        yield* Effect.forkScoped(
          Stream.runForEach(requests, (m) =>
            m.replyTo === undefined ? Effect.void : nats.publish(m.replyTo, Pong, { doubled: m.data.n * 2 })
          )
        )
        const reply = yield* nats.request(subject, Ping, { n: 21 }, Pong, { timeoutMs: 2_000 })
        expect(reply).toEqual({ doubled: 42 })
      })
    )
  )

  it.scopedLive("a closed listener hears nothing more; its UNSUB goes out with the next SUB (one write, not two)", () =>
    withNats(
      Effect.gen(function* () {
        const nats = yield* NatsTransport
        const subject = unique("test.listen")
        const heard: Array<string> = []
        const listener = nats.listen(subject, textOf(heard))
        yield* nats.flush
        nats.send(subject, bytes("one"))
        yield* eventually(Effect.sync(() => expect(heard).toEqual(["one"])))
        listener.close()
        // Still subscribed on the server (the UNSUB waits), but nothing reaches the closed listener.
        nats.send(subject, bytes("two"))
        yield* nats.flush
        const pending = yield* Effect.either(nats.request(subject, Ping, { n: 1 }, Pong, { timeoutMs: 200 }))
        expect(Either.getLeft(pending).pipe(Option.getOrThrow)).toBeInstanceOf(NatsRequestTimeout)
        expect(heard).toEqual(["one"])
        // The next SUB carries the UNSUB: the server then knows nobody listens on the subject.
        const next = nats.listen(unique("test.listen-next"), () => {})
        yield* nats.flush
        next.close()
        const gone = yield* Effect.either(nats.request(subject, Ping, { n: 1 }, Pong, { timeoutMs: 5_000 }))
        expect(Either.getLeft(gone).pipe(Option.getOrThrow)).toBeInstanceOf(NatsNoResponders)
      })
    )
  )

  it.scopedLive("hands a turn's publishes and subscribes to the connection at the turn's end, in order (one write)", () =>
    withNats(
      Effect.gen(function* () {
        const nats = yield* NatsTransport
        const subject = unique("test.turn")
        const heard: Array<string> = []
                const before = nats.stats().outMsgs
        // One turn: a SUB and five PUBs to it, as a request's dispatch makes them.
        const duringTurn = yield* Effect.sync(() => {
          nats.listen(subject, textOf(heard))
          for (let n = 1; n <= 5; n++) nats.send(subject, bytes(String(n)))
          return nats.stats().outMsgs
        })
        expect(duringTurn).toBe(before)
        // The SUB went first: every message is heard, in order.
        yield* eventually(Effect.sync(() => expect(heard).toEqual(["1", "2", "3", "4", "5"])))
        expect(nats.stats().outMsgs - before).toBe(5)
        // A listener closed within the turn it was made never subscribes: nothing more is heard by
        // anyone, and the request finds no responder.
        const gone = unique("test.turn-closed")
        nats.listen(gone, () => void heard.push("closed listener")).close()
        const asked = yield* Effect.either(nats.request(gone, Ping, { n: 1 }, Pong, { timeoutMs: 5_000 }))
        expect(Either.getLeft(asked).pipe(Option.getOrThrow)).toBeInstanceOf(NatsNoResponders)
        expect(heard).toHaveLength(5)
      })
    )
  )

  it.scopedLive("flush, and the end of the connection's scope, send what the turn still holds", () =>
    Effect.gen(function* () {
      const subject = unique("test.turn-flush")
      const heard: Array<string> = []
      yield* withNats(
        Effect.gen(function* () {
          const listener = yield* NatsTransport
          listener.listen(subject, textOf(heard))
          yield* listener.flush
          yield* withNats(
            Effect.gen(function* () {
              const nats = yield* NatsTransport
              const before = nats.stats().outMsgs
              nats.send(subject, bytes("flushed"))
              yield* nats.flush
              expect(nats.stats().outMsgs - before).toBe(1)
            })
          )
          // Published in the same turn as the connection's scope closes: drained, not lost.
          yield* Effect.scoped(
            Effect.provide(
              Effect.flatMap(NatsTransport, (nats) => Effect.sync(() => nats.send(subject, bytes("at close")))),
              natsLayer({ url: natsUrl })
            )
          )
          yield* eventually(Effect.sync(() => expect(heard).toEqual(["flushed", "at close"])))
        })
      )
    })
  )

  it.scopedLive("a request nobody listens to fails at once with NatsNoResponders", () =>
    withNats(
      Effect.gen(function* () {
        const nats = yield* NatsTransport
        const started = Date.now()
        const result = yield* Effect.either(
          nats.request(unique("test.nobody"), Ping, { n: 1 }, Pong, { timeoutMs: 5_000 })
        )
        expect(Either.getLeft(result).pipe(Option.getOrThrow)).toBeInstanceOf(NatsNoResponders)
        expect(Date.now() - started).toBeLessThan(1_000)
      })
    )
  )

  it.scopedLive("a request to a silent subscriber times out with NatsRequestTimeout", () =>
    withNats(
      Effect.gen(function* () {
        const nats = yield* NatsTransport
        const subject = unique("test.silent")
        yield* nats.subscribe(subject, Ping)
        const result = yield* Effect.either(nats.request(subject, Ping, { n: 1 }, Pong, { timeoutMs: 200 }))
        const error = Option.getOrThrow(Either.getLeft(result))
        expect(error).toBeInstanceOf(NatsRequestTimeout)
        expect(error).toMatchObject({ subject, timeoutMs: 200 })
      })
    )
  )

  it.scopedLive("a reply that fails its schema is NatsReplyInvalid", () =>
    withNats(
      Effect.gen(function* () {
        const nats = yield* NatsTransport
        const subject = unique("test.badreply")
        const requests = yield* nats.subscribe(subject, Ping)
        yield* Effect.forkScoped(
          Stream.runForEach(requests, (m) => Effect.sync(() => m.replyTo !== undefined && nats.send(m.replyTo, bytes("{}"))))
        )
        const result = yield* Effect.either(nats.request(subject, Ping, { n: 1 }, Pong, { timeoutMs: 2_000 }))
        expect(Option.getOrThrow(Either.getLeft(result))).toBeInstanceOf(NatsReplyInvalid)
      })
    )
  )

  it.scopedLive("queue groups deliver each message to one member", () =>
    withNats(
      Effect.gen(function* () {
        const nats = yield* NatsTransport
        const subject = unique("test.queue")
        const a = yield* nats.subscribe(subject, Ping, { queue: "q" })
        const b = yield* nats.subscribe(subject, Ping, { queue: "q" })
        const all = yield* Effect.fork(Stream.runCollect(Stream.take(Stream.merge(a, b), 10)))
        for (let n = 0; n < 10; n++) yield* nats.publish(subject, Ping, { n })
        const items = Chunk.toReadonlyArray(yield* Fiber.join(all)).map((i) => i.data.n)
        expect([...items].sort((x, y) => x - y)).toEqual([0, 1, 2, 3, 4, 5, 6, 7, 8, 9])
      })
    )
  )

  it.live("survives a server restart: the subscription receives again after reconnect", () =>
    Effect.gen(function* () {
      const server = yield* Effect.promise(() => startTestNatsServer())
      const program = Effect.gen(function* () {
        const nats = yield* NatsTransport
        const subject = "test.restart"
        const stream = yield* nats.subscribe(subject, Ping)
        const got = yield* Effect.fork(Stream.runHead(Stream.filter(stream, (m) => m.data.n === 2)))
        yield* nats.publish(subject, Ping, { n: 1 })
        yield* nats.flush
        yield* Effect.promise(() => server.stop())
        yield* Effect.promise(() => server.start())
        // Publish until the reconnected subscription sees one: reconnects take ~250 ms here.
        const sender = yield* Effect.fork(
          nats.publish(subject, Ping, { n: 2 }).pipe(Effect.zipRight(Effect.sleep("100 millis")), Effect.forever)
        )
        const first = yield* Fiber.join(got).pipe(Effect.timeout("5 seconds"))
        yield* Fiber.interrupt(sender)
        expect(Option.getOrThrow(first).data.n).toBe(2)
      })
      const exit = yield* Effect.exit(Effect.scoped(Effect.provide(program, natsLayer({ url: server.url }))))
      yield* Effect.promise(() => server.stop())
      expect(Exit.isSuccess(exit)).toBe(true)
    })
  )

  it.scoped("waits for a server that is not up yet, retrying on the Effect clock, then connects", () =>
    Effect.gen(function* () {
      const server = yield* Effect.promise(() => startTestNatsServer())
      yield* Effect.promise(() => server.stop())
      const warnings: Array<string> = []
      const capture = Logger.make(({ message }) => {
        warnings.push((Array.isArray(message) ? message : [message]).map(String).join(" "))
      })
      const connected = yield* Effect.fork(
        Effect.scoped(Layer.build(natsLayer({ url: server.url, reconnectWaitMs: 50 }))).pipe(
          Effect.provide(Logger.replace(Logger.defaultLogger, capture))
        )
      )
      yield* eventually(Effect.sync(() => warnings.some((w) => w.includes("cannot reach NATS"))))
      expect(connected.unsafePoll()).toBeNull()
      yield* Effect.promise(() => server.start())
      // The next attempt is due 250 ms later on the Effect clock: nothing happens until it moves.
      yield* TestClock.adjust("250 millis")
      yield* eventually(Effect.sync(() => connected.unsafePoll() !== null))
      const exit = yield* Fiber.await(connected)
      yield* Effect.promise(() => server.stop())
      expect(Exit.isSuccess(exit)).toBe(true)
    })
  )
})
