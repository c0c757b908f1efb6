import { Effect, type Schema } from "effect"
import type { NatsTransportService } from "./nats-transport.js"

/**
 * How a liveness probe ended. `answered` includes an answer that failed its schema: someone is
 * there, if not in the expected words.
 */
export type ProbeResult = "answered" | "no_responders" | "timeout"

/**
 * A liveness probe: a NATS request whose outcome is only whether someone answered. The one rule
 * for every probe on the bus — a controller probing a worker (issue 13), a worker probing the
 * controller that owns its requests (issue 14), a starting worker probing its own id. A probe's
 * body is far below any server's `max_payload`: too large is a bug, not a verdict.
 */
export const probeLiveness = <A, I, B, BI>(
  nats: NatsTransportService,
  subject: string,
  schema: Schema.Schema<A, I>,
  message: A,
  replySchema: Schema.Schema<B, BI>,
  timeoutMs: number
): Effect.Effect<ProbeResult> =>
  nats.request(subject, schema, message, replySchema, { timeoutMs }).pipe(
    Effect.as<ProbeResult>("answered"),
    Effect.catchTags({
      NatsNoResponders: () => Effect.succeed<ProbeResult>("no_responders"),
      NatsRequestTimeout: () => Effect.succeed<ProbeResult>("timeout"),
      NatsReplyInvalid: () => Effect.succeed<ProbeResult>("answered"),
      NatsPayloadTooLarge: (e) => Effect.die(e)
    })
  )
