import { Effect, Queue, Schema, type Scope, Stream } from "effect"
import { Registry } from "../../../src/controller/registry.js"
import { RequestId, WorkerId } from "../../../src/domain/ids.js"
import {
  CancelRequest,
  type FinishReason,
  InferenceReply,
  InferenceRequest,
  type RefusalReason,
  TokenMessage
} from "../../../src/domain/inference.js"
import { Subjects } from "../../../src/domain/subjects.js"
import { NatsTransport } from "../../../src/nats/nats-transport.js"
import { registration, type WorkerSpec } from "./fixtures.js"

/** The worker's own counts an ack or a refusal may carry (issue 14). */
export interface ReplyLoad {
  readonly active?: number
  readonly activeForController?: number
}

/** How a fake worker answers one inference request. */
export type Reply =
  | { readonly _tag: "ack"; readonly load?: ReplyLoad }
  | { readonly _tag: "refuse"; readonly reason: RefusalReason; readonly message: string; readonly load?: ReplyLoad }
  /** No reply at all: the controller's dispatch times out. */
  | { readonly _tag: "silence" }
  /** A reply that fails the `InferenceReply` schema. */
  | { readonly _tag: "garbage" }

export const Reply = {
  ack: { _tag: "ack" } as Reply,
  silence: { _tag: "silence" } as Reply,
  garbage: { _tag: "garbage" } as Reply,
  refuse: (reason: RefusalReason, message = `refused: ${reason}`, load?: ReplyLoad): Reply =>
    load === undefined ? { _tag: "refuse", reason, message } : { _tag: "refuse", reason, message, load },
  /** An ack with the worker's counts. */
  ackWith: (load: ReplyLoad): Reply => ({ _tag: "ack", load })
} as const

export interface WorkerScript {
  /** The reply to the worker's `n`-th request (0-based). Default: ack. */
  readonly reply?: (request: InferenceRequest, n: number) => Reply
  /** Published on `response.{requestId}` right after an ack. Default: nothing (the test emits). */
  readonly stream?: (request: InferenceRequest, n: number) => ReadonlyArray<TokenMessage>
}

/** A fake worker: a fiber subscribed to `worker.{id}.inference` and `worker.{id}.cancel`. */
export interface FakeWorker {
  readonly id: string
  /** Waits for the next inference request the worker receives (they queue up, none is lost). */
  readonly nextRequest: Effect.Effect<InferenceRequest>
  /** Every inference request received so far. */
  readonly received: Effect.Effect<ReadonlyArray<InferenceRequest>>
  /** The request ids of every cancel received so far. */
  readonly cancels: Effect.Effect<ReadonlyArray<string>>
  /** Publishes token messages on `response.{requestId}` of each message, in order. */
  readonly emit: (...messages: ReadonlyArray<TokenMessage>) => Effect.Effect<void>
}

export const tokenMsg = (requestId: string, index: number, token: string): TokenMessage => ({
  type: "token",
  requestId: RequestId.make(requestId),
  index,
  token
})

export const doneMsg = (
  requestId: string,
  completionTokens: number,
  finishReason: FinishReason = "stop",
  promptTokens = 5
): TokenMessage => ({
  type: "done",
  requestId: RequestId.make(requestId),
  finishReason,
  usage: { promptTokens, completionTokens },
  latencyMs: 42
})

export const errorMsg = (requestId: string, code: string, message: string): TokenMessage => ({
  type: "error",
  requestId: RequestId.make(requestId),
  code,
  message
})

/** A script's `stream`: each text as a token, then `done` with `completionTokens = texts.length`. */
export const streams =
  (...texts: ReadonlyArray<string>) =>
  (request: InferenceRequest): ReadonlyArray<TokenMessage> => [
    ...texts.map((t, i) => tokenMsg(request.requestId, i, t)),
    doneMsg(request.requestId, texts.length)
  ]

/**
 * Starts a fake worker in the current scope: subscribes (before registering, so that it is
 * reachable as soon as the controller knows it), answers each inference request as `script`
 * says, records requests and cancels, and registers itself with `Registry.register`.
 */
export const startWorker = (
  spec: WorkerSpec,
  script: WorkerScript = {}
): Effect.Effect<FakeWorker, never, Scope.Scope | NatsTransport | Registry> =>
  Effect.gen(function* () {
    const nats = yield* NatsTransport
    const registry = yield* Registry
    const id = spec.id
    const received: Array<InferenceRequest> = []
    const cancels: Array<string> = []
    const requestQueue = yield* Queue.unbounded<InferenceRequest>()

    const emit = (...messages: ReadonlyArray<TokenMessage>) =>
      Effect.forEach(messages, (m) => nats.publish(Subjects.response(m.requestId), TokenMessage, m), { discard: true })

    const inference = yield* nats.subscribe(Subjects.inference(id), InferenceRequest)
    const cancel = yield* nats.subscribe(Subjects.cancel(id), CancelRequest)

    yield* inference.pipe(
      Stream.runForEach(({ data: request, replyTo }) =>
        Effect.gen(function* () {
          const n = received.length
          received.push(request)
          yield* Queue.offer(requestQueue, request)
          if (replyTo === undefined) return
          const reply = script.reply?.(request, n) ?? Reply.ack
          switch (reply._tag) {
            case "ack":
              yield* nats.publish(replyTo, InferenceReply, { accepted: true, workerId: WorkerId.make(id), ...reply.load })
              yield* emit(...(script.stream?.(request, n) ?? []))
              return
            case "refuse":
              return yield* nats.publish(replyTo, InferenceReply, {
                accepted: false,
                reason: reply.reason,
                message: reply.message,
                ...reply.load
              })
            case "garbage":
              return yield* nats.publish(replyTo, Schema.Unknown, { accepted: "perhaps" })
            case "silence":
              return
          }
        })
      ),
      Effect.forkScoped
    )
    yield* cancel.pipe(
      Stream.runForEach(({ data }) =>
        Effect.sync(() => {
          cancels.push(data.requestId)
        })
      ),
      Effect.forkScoped
    )
    yield* registry.register(registration(spec))

    return {
      id,
      nextRequest: Queue.take(requestQueue),
      received: Effect.sync(() => [...received]),
      cancels: Effect.sync(() => [...cancels]),
      emit
    }
  })

/** A worker the registry lists but nobody serves: its dispatch finds no responders. */
export const registerGhost = (spec: WorkerSpec): Effect.Effect<void, never, Registry> =>
  Effect.flatMap(Registry, (registry) => registry.register(registration(spec)))
