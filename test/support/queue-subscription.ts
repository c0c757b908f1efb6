import { Effect, Queue, type Schema, Stream } from "effect"
import type { Incoming, NatsTransportService, SubscribeOptions } from "../../src/nats/nats-transport.js"

/**
 * `subscribeQueue` for a test double that implements `subscribe`: the same messages, pumped into a
 * queue owned by the caller's scope.
 */
export const subscribeQueueVia =
  (service: () => NatsTransportService): NatsTransportService["subscribeQueue"] =>
  <A, I>(subject: string, schema: Schema.Schema<A, I>, options?: SubscribeOptions) =>
    Effect.gen(function* () {
      const stream = yield* service().subscribe(subject, schema, options)
      const queue = yield* Effect.acquireRelease(Queue.unbounded<Incoming<A>>(), Queue.shutdown)
      yield* Stream.runForEachChunk(stream, (chunk) => queue.offerAll(chunk)).pipe(Effect.forkScoped)
      return queue
    })
