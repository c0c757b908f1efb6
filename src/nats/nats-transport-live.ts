import {
  Duration,
  Effect,
  Either,
  FiberSet,
  Layer,
  Queue,
  Redacted,
  Schedule,
  Stream,
  type Schema
} from "effect"
import {
  connect,
  createInbox,
  credsAuthenticator,
  type ConnectionOptions,
  type NatsConnection,
  type Subscription
} from "nats"
import { readFileSync } from "node:fs"
import { ClusterConfigService } from "../config/cluster-config.js"
import type { ClusterConfig } from "../config/schema.js"
import { inboxPrefixFor } from "./bus-permissions.js"
import { decoderFor, encoderFor, plainEncoderFor } from "./codec.js"
import { type NatsCredentialFields, type NatsCredentialsError, withEffectiveNatsAuth } from "./nats-credentials.js"
import { safeUrl, serverUrls } from "./server-urls.js"
import { makeUnsubscribeBatch } from "./unsubscribe-batch.js"
import { makeWriteBatch } from "./write-batch.js"
import {
  type Incoming,
  NatsNoResponders,
  NatsPayloadTooLarge,
  NatsReplyInvalid,
  NatsRequestTimeout,
  NatsTransport,
  type NatsTransportService,
  type NatsRequestError,
  type RawMessage,
  type RequestOptions,
  type SubscribeOptions
} from "./nats-transport.js"

export interface NatsConnectOptions extends NatsCredentialFields {
  /** One NATS URL, or several separated by commas (a NATS cluster's members, tried in order). */
  readonly url: string
  /** Shown in the server's connection list, e.g. `controller@mac-studio`. */
  readonly name?: string
  readonly tls?:
    | boolean
    | {
        readonly caFile?: string | undefined
        readonly certFile?: string | undefined
        readonly keyFile?: string | undefined
      }
  /** Pause between reconnect attempts (also between first-connect attempts). */
  readonly reconnectWaitMs?: number
  /** Reply-inbox prefix (nats.js `inboxPrefix`); a worker's permissions allow only `_INBOX_<id>.>`. */
  readonly inboxPrefix?: string
}

const DEFAULT_BUFFER = 16_384
/** How long a closed listener's UNSUB may wait for the next SUB to ride with (unsubscribe-batch.ts). */
const UNSUBSCRIBE_BATCH_MS = 50

export const toConnectionOptions = (o: NatsConnectOptions): ConnectionOptions => {
  const wait = o.reconnectWaitMs ?? 250
  const tls =
    o.tls === undefined || o.tls === false
      ? {}
      : {
          tls:
            o.tls === true
              ? {}
              : {
                  ...(o.tls.caFile === undefined ? {} : { caFile: o.tls.caFile }),
                  ...(o.tls.certFile === undefined ? {} : { certFile: o.tls.certFile }),
                  ...(o.tls.keyFile === undefined ? {} : { keyFile: o.tls.keyFile })
                }
        }
  const servers = serverUrls(o.url)
  return {
    // A list (a NATS cluster, issue 14) is tried in the order given; the client fails over by itself.
    ...(servers.length === 1 ? { servers: servers[0] ?? o.url } : { servers: [...servers], noRandomize: true }),
    ...(o.name === undefined ? {} : { name: o.name }),
    ...(o.user === undefined ? {} : { user: o.user }),
    ...(o.pass === undefined ? {} : { pass: Redacted.value(o.pass) }),
    ...(o.token === undefined ? {} : { token: Redacted.value(o.token) }),
    ...(o.credsFile === undefined ? {} : { authenticator: credsAuthenticator(readFileSync(o.credsFile)) }),
    ...tls,
    ...(o.inboxPrefix === undefined ? {} : { inboxPrefix: o.inboxPrefix }),
    // A cluster must outlive NATS restarts: never give up, retry quickly.
    reconnect: true,
    maxReconnectAttempts: -1,
    reconnectTimeWait: wait,
    reconnectJitter: Math.min(100, wait),
    // Notice a dead server within seconds, not the client's default two minutes.
    pingInterval: 5_000,
    maxPingOut: 2,
    timeout: 5_000
  }
}

const describe = (cause: unknown) => (cause instanceof Error ? cause.message : String(cause))

/** Connects, retrying with a log line per failure until it succeeds: a worker may start before NATS. */
const connectWithRetry = (options: NatsConnectOptions) =>
  Effect.tryPromise({ try: () => connect(toConnectionOptions(options)), catch: describe }).pipe(
    Effect.tapError((reason) =>
      Effect.logWarning(`cannot reach NATS at ${safeUrl(options.url)}: ${reason}; retrying`)
    ),
    Effect.retry(Schedule.exponential(Duration.millis(250), 1.5).pipe(Schedule.union(Schedule.spaced("5 seconds")))),
    Effect.orDie
  )

/**
 * The server a status event names: with a list of servers (issue 14) the one concerned (nats
 * reports `host:port`), else the configured URL, as before.
 */
const serverOf = (url: string, data: unknown): string =>
  serverUrls(url).length > 1 && typeof data === "string" && data !== "" ? safeUrl(data.includes("://") ? data : `nats://${data}`) : safeUrl(url)

/**
 * Logs the connection's status changes and tells `up` whether it is connected: a fiber in the
 * connection's scope pulling nats' status iterator (which ends when the connection closes).
 * The iterator is pulled by hand rather than through `Stream.fromAsyncIterable`: that stream's
 * finaliser calls the iterator's `return()`, which nats only settles with the next status event,
 * so closing the scope would wait for one (15 s in the shutdown test). Interrupting a pending
 * `next()` here just abandons it; closing the connection ends the iterator.
 */
const watchStatus = (nc: NatsConnection, url: string, up: (connected: boolean) => void) => {
  const events = nc.status()[Symbol.asyncIterator]()
  const report = (s: { readonly type: string; readonly data: unknown }): Effect.Effect<void> => {
    switch (s.type) {
      case "disconnect":
        up(false)
        return Effect.logWarning(`NATS disconnected from ${serverOf(url, s.data)}; reconnecting`)
      case "reconnect":
        up(true)
        return Effect.logInfo(`NATS reconnected to ${serverOf(url, s.data)}`)
      case "error":
        return Effect.logWarning(`NATS error: ${String(s.data)}`)
      default:
        return Effect.void
    }
  }
  const next: Effect.Effect<void, unknown> = Effect.tryPromise({ try: () => events.next(), catch: (cause) => cause }).pipe(
    Effect.flatMap((step) => (step.done === true ? Effect.void : Effect.zipRight(report(step.value), Effect.suspend(() => next))))
  )
  return next.pipe(
    Effect.catchAll((cause) => Effect.logWarning(`NATS status watch ended: ${describe(cause)}`)),
    Effect.forkScoped
  )
}

/**
 * Logs dropped invalid messages of one subscription: the first of each second in full, the rest
 * counted in the next line. A flood of garbage must not turn into a flood of log fibers.
 */
const invalidMessageLog = (subscription: string, run: (effect: Effect.Effect<void>) => unknown) => {
  let windowStart = 0
  let suppressed = 0
  return (subject: string, reason: string): void => {
    const now = Date.now()
    if (now - windowStart < 1_000) {
      suppressed++
      return
    }
    const more = suppressed > 0 ? ` (and ${suppressed} more invalid messages on ${subscription} in the last second)` : ""
    windowStart = now
    suppressed = 0
    run(Effect.logWarning(`dropped a message on ${subject}: ${reason}${more}`))
  }
}

const make = (options: NatsConnectOptions) =>
  // eslint-disable-next-line no-restricted-syntax -- once per connection, not per request
  Effect.gen(function* () {
    // Acquire and release run uninterruptibly; the waits inside are made interruptible so that a
    // SIGINT can stop a process still trying to connect, and so that the drain timeout can fire.
    const nc = yield* Effect.acquireRelease(Effect.interruptible(connectWithRetry(options)), (nc) =>
      Effect.promise(() => (nc.isClosed() ? Promise.resolve() : nc.drain().catch(() => nc.close()))).pipe(
        Effect.interruptible,
        Effect.timeout("5 seconds"),
        Effect.catchAll(() => Effect.promise(() => nc.close())),
        Effect.zipRight(Effect.logDebug("NATS connection drained"))
      )
    )
    // One runtime per connection for the log lines of nats' callbacks (not one per subscription:
    // a subscription per request is on the hot path).
    const run = yield* FiberSet.makeRuntime<never>()
    let connected = true
    yield* watchStatus(nc, options.url, (up) => {
      connected = up
    })
    const listed = serverUrls(options.url).length > 1 ? ` (of ${safeUrl(options.url)})` : ""
    yield* Effect.logInfo(`connected to NATS at ${serverOf(options.url, nc.getServer())}${listed}`)

    /** The server's `max_payload`; 1 MiB before the first connect. */
    const maxPayload = () => nc.info?.max_payload ?? 1_048_576
    /**
     * The publishes and subscribes of this turn, sent in one write (write-batch.ts); what is
     * pending when the connection's scope closes goes out before it drains.
     */
    const writes = makeWriteBatch((cause) => run(Effect.logError("a NATS operation failed", cause)))
    yield* Effect.addFinalizer(() => Effect.sync(writes.flush))

    const publishBytes = (subject: string, bytes: Uint8Array): Effect.Effect<void> => Effect.sync(() => send(subject, bytes))

    const publish = <A, I>(subject: string, schema: Schema.Schema<A, I>, message: A) =>
      Either.match(encoderFor(schema)(message), {
        onLeft: (reason) => Effect.logError(`not publishing an invalid message on ${subject}: ${reason}`),
        onRight: (bytes) => publishBytes(subject, bytes)
      })

    const subscribeQueue = <A, I>(subject: string, schema: Schema.Schema<A, I>, opts: SubscribeOptions = {}) =>
      // eslint-disable-next-line no-restricted-syntax -- once per long-lived subscription (registry, heartbeats), not per request
      Effect.gen(function* () {
        const size = opts.bufferSize ?? DEFAULT_BUFFER
        const queue = yield* Effect.acquireRelease(Queue.dropping<Incoming<A>>(size), Queue.shutdown)
        const decode = decoderFor(schema)
        let dropped = 0
        const invalid = invalidMessageLog(subject, run)
        const sub = yield* Effect.acquireRelease(
          Effect.sync(() =>
            nc.subscribe(subject, {
              ...(opts.queue === undefined ? {} : { queue: opts.queue }),
              callback: (err, msg) => {
                // Nothing may escape into nats' read loop: an exception there stops it reading for good.
                try {
                  if (err !== null) {
                    run(Effect.logWarning(`NATS subscription ${subject}: ${err.message}`))
                    return
                  }
                  const decoded = decode(msg.data)
                  if (Either.isLeft(decoded)) return invalid(msg.subject, decoded.left)
                  const offered = queue.unsafeOffer({
                    subject: msg.subject,
                    data: decoded.right,
                    replyTo: msg.reply === "" ? undefined : msg.reply
                  })
                  if (!offered && dropped++ % 1000 === 0) {
                    run(Effect.logWarning(`subscription ${subject} is ${size} messages behind; dropping`))
                  }
                } catch (cause) {
                  run(Effect.logError(`subscription ${subject}: a message could not be handled`, cause))
                }
              }
            })
          ),
          (sub) => Effect.sync(() => sub.unsubscribe())
        )
        void sub
        return queue
      })

    /**
     * Request/reply over one reply subscription per connection (`<inbox>.*`), replies told apart
     * by their last token: a request costs a publish and a map entry, not nats.js's per-request
     * machinery (an Error captured for its stack, a deferred and a timer each).
     */
    type Pending = (reply: Effect.Effect<Uint8Array, NatsNoResponders | NatsReplyInvalid>) => void
    const pending = new Map<string, Pending>()
    const replyPrefix = createInbox(options.inboxPrefix)
    let replies = 0
    nc.subscribe(`${replyPrefix}.*`, {
      callback: (err, msg) => {
        if (err !== null) return
        const token = msg.subject.slice(replyPrefix.length + 1)
        const waiter = pending.get(token)
        if (waiter === undefined) return
        pending.delete(token)
        // The server answers a request nobody subscribes to with an empty 503 status message.
        const noResponders = msg.data.length === 0 && msg.headers?.code === 503
        waiter(noResponders ? Effect.fail(new NatsNoResponders({ subject: msg.subject })) : Effect.succeed(msg.data))
      }
    })

    /**
     * A request whose timeout is judged by the worker's answer, not by this process's lateness: when
     * the timer fires late (the event loop was busy), the reply may be sitting unread in the socket,
     * so the wait is extended once by the timeout; when it fires on time, the decision waits for
     * `setImmediate` — after the pending socket reads — before calling it a timeout.
     */
    const requestBytes = (subject: string, bytes: Uint8Array, timeoutMs: number) =>
      Effect.async<Uint8Array, NatsNoResponders | NatsRequestTimeout | NatsReplyInvalid>((resume) => {
        const token = String(++replies)
        let timer: ReturnType<typeof setTimeout> | undefined
        const timedOut = () => {
          if (pending.delete(token)) resume(Effect.fail(new NatsRequestTimeout({ subject, timeoutMs })))
        }
        const arm = (ms: number, extended: boolean) => {
          const due = Date.now() + ms
          timer = setTimeout(() => {
            const lateMs = Date.now() - due
            if (!extended && lateMs > Math.min(100, timeoutMs / 4)) return arm(timeoutMs, true)
            setImmediate(timedOut)
          }, ms)
        }
        pending.set(token, (reply) => {
          if (timer !== undefined) clearTimeout(timer)
          resume(reply)
        })
        arm(timeoutMs, false)
        writes.run(() => {
          // Interrupted before its turn ended: nothing to send.
          if (!pending.has(token)) return
          try {
            nc.publish(subject, bytes, { reply: `${replyPrefix}.${token}` })
          } catch (cause) {
            // Only a closed connection throws here.
            pending.delete(token)
            clearTimeout(timer)
            resume(Effect.fail(new NatsReplyInvalid({ subject, reason: describe(cause) })))
          }
        })
        return Effect.sync(() => {
          pending.delete(token)
          if (timer !== undefined) clearTimeout(timer)
        })
      })

    const request = <A, I, B, BI>(
      subject: string,
      schema: Schema.Schema<A, I>,
      message: A,
      replySchema: Schema.Schema<B, BI>,
      opts: RequestOptions
    ) =>
      // No generator here: it runs on every dispatch, and a generator function made per call costs
      // V8 an initial map in old space that keeps the caller's state alive (see controller/router.ts).
      Effect.suspend((): Effect.Effect<B, NatsRequestError> => {
        let bytes: Uint8Array
        if (opts.plain === true) {
          bytes = plainEncoderFor(schema)(message)
        } else {
          const encoded = encoderFor(schema)(message)
          if (Either.isLeft(encoded)) return Effect.die(new Error(`invalid request on ${subject}: ${encoded.left}`))
          bytes = encoded.right
        }
        const limit = maxPayload()
        if (bytes.length > limit) return Effect.fail(new NatsPayloadTooLarge({ subject, bytes: bytes.length, maxPayload: limit }))
        return Effect.flatMap(requestBytes(subject, bytes, opts.timeoutMs), (reply) =>
          Either.match(decoderFor(replySchema)(reply), {
            onLeft: (reason) => Effect.fail(new NatsReplyInvalid({ subject, reason })),
            onRight: Effect.succeed
          })
        )
      })

    const send = (subject: string, payload: Uint8Array, reply?: string): void =>
      writes.run(() => {
        try {
          nc.publish(subject, payload, reply === undefined ? undefined : { reply })
        } catch (cause) {
          // Only a closed connection throws here; the message is lost either way, so say so.
          run(Effect.logWarning(`NATS publish to ${subject} failed: ${describe(cause)}`))
        }
      })

    const unsubscribes = makeUnsubscribeBatch(UNSUBSCRIBE_BATCH_MS)
    const listen = (subject: string, onMessage: (message: RawMessage) => void, opts: { readonly queue?: string } = {}) => {
      let closed = false
      let sub: Subscription | undefined
      // With the turn's other operations, so that a request's SUB and PUB leave in one write.
      writes.run(() => {
        if (closed) return
        // The UNSUBs of listeners closed since the last SUB go out in this SUB's write.
        unsubscribes.flush()
        try {
          sub = nc.subscribe(subject, {
            ...(opts.queue === undefined ? {} : { queue: opts.queue }),
            callback: (err, msg) => {
              if (closed) return
              // Nothing may escape into nats' read loop: an exception there stops it reading for good.
              try {
                if (err !== null) run(Effect.logWarning(`NATS subscription ${subject}: ${err.message}`))
                else onMessage(msg)
              } catch (cause) {
                run(Effect.logError(`subscription ${subject}: a message could not be handled`, cause))
              }
            }
          })
        } catch (cause) {
          // Only a closed connection throws here.
          run(Effect.logWarning(`NATS subscribe to ${subject} failed: ${describe(cause)}`))
        }
      })
      return {
        close: () => {
          if (closed) return
          closed = true
          if (sub !== undefined) unsubscribes.add(sub)
        }
      }
    }

    const service: NatsTransportService = {
      publish,
      subscribe: (subject, schema, opts) => Effect.map(subscribeQueue(subject, schema, opts), (q) => Stream.fromQueue(q)),
      request,
      flush: Effect.promise(() => {
        writes.flush()
        return nc.flush()
      }).pipe(Effect.interruptible, Effect.timeout("5 seconds"), Effect.ignore),
      listen,
      send,
      maxPayload,
      stats: () => {
        const { inMsgs, outMsgs } = nc.stats()
        return { inMsgs, outMsgs }
      },
      connected: () => connected && !nc.isClosed()
    }
    return service
  })

/** A NATS connection owned by the layer's scope: connect on acquire, drain on release. */
export const layer = (options: NatsConnectOptions): Layer.Layer<NatsTransport> =>
  Layer.scoped(NatsTransport, make(options))

/** The connection options the config describes (`nats.server_url` and credentials). */
export const connectOptionsFromConfig = (config: ClusterConfig): NatsConnectOptions => {
  const inboxPrefix = inboxPrefixFor(config)
  return {
  url: config.nats.serverUrl,
  ...(inboxPrefix === undefined ? {} : { inboxPrefix }),
  name: `mlx-cluster ${config.mode}`,
  ...(config.nats.user === undefined ? {} : { user: config.nats.user }),
  ...(config.nats.pass === undefined ? {} : { pass: config.nats.pass }),
  ...(config.nats.token === undefined ? {} : { token: config.nats.token }),
  ...(config.nats.credsFile === undefined ? {} : { credsFile: config.nats.credsFile }),
  ...(config.nats.tls === undefined ? {} : { tls: config.nats.tls })
  }
}

/**
 * The connection the config describes, with the credentials that apply to this process (the
 * configured ones, else the generated credential of the embedded server's `credentials_file`).
 */
export const NatsTransportLive: Layer.Layer<NatsTransport, NatsCredentialsError, ClusterConfigService> = Layer.unwrapEffect(
  ClusterConfigService.pipe(
    Effect.flatMap(withEffectiveNatsAuth),
    Effect.map((config) => layer(connectOptionsFromConfig(config)))
  )
)
