import { type ContinuationKind, continuationKindOf, continues } from "../domain/continuation.js"
import type { InferenceError } from "../domain/errors.js"
import { countPromptTokens, type InferenceRequest, type MessageContent } from "../domain/inference.js"
import type { DoneEvent, RelayEvent, RelaySink } from "../domain/route.js"
import type { WorkerInfo } from "../domain/worker.js"

/**
 * Request migration (issue 13): a stream whose worker is lost or hung after tokens were relayed
 * goes on on another worker that serves the model and can continue it, at most
 * `controller.migration_limit` times. The client sees one stream: token indexes go on where they
 * stopped, one `done`, usage counting every token, and `migrations` on the final event.
 *
 * How (see src/domain/continuation.ts for the wire rules):
 * - the Router keeps what the client got so far — the relayed token arrays, one reference per bus
 *   message, joined only when a migration needs the text (`StreamAnswer`);
 * - the next attempt is the same request plus `continuation: { text, completionTokens }`, with
 *   `maxTokens` reduced by what was sent, to a worker not tried yet whose registration lists the
 *   request's kind in `capabilities.continuation`;
 * - its worker numbers tokens from 0; the attempt's sink adds the offset to each index and to the
 *   `done`'s completion tokens (`StreamAnswer.sinkFor`, `continuedDone`);
 * - the lost worker gets a cancel for its attempt (the Router's cancel-on-exit), so a hung worker
 *   that wakes up stops generating.
 *
 * With no worker left to continue it (none serves the model, none can continue, every one tried,
 * the limit reached) the stream ends as before: with the lost worker's `worker_lost` error.
 */

/** An attempt whose worker was lost after tokens were relayed: the request may move on. */
export interface Migrate {
  readonly _tag: "Migrate"
  /** The lost worker's offline reason (`no responders`, `unresponsive`, `no heartbeat for …`). */
  readonly reason: string
  /** How the stream ends if it cannot move on. */
  readonly error: InferenceError
}

/** The final event of a continued stream: usage counts the tokens relayed before, and `migrations` is set. */
export const continuedDone = (done: DoneEvent, relayedBefore: number, migrations: number): DoneEvent => ({
  ...done,
  usage: { promptTokens: done.usage.promptTokens, completionTokens: done.usage.completionTokens + relayedBefore },
  ...(migrations > 0 ? { migrations } : {})
})

/** Tokens still allowed after `relayed` were sent: undefined without a limit, 0 when none is left. */
export const remainingTokens = (maxTokens: number | undefined, relayed: number): number | undefined =>
  maxTokens === undefined ? undefined : Math.max(0, maxTokens - relayed)

/** The request of a continued attempt: the same request, the answer so far, what is left of `maxTokens`. */
export const continuedRequest = (wire: InferenceRequest, text: string, completionTokens: number): InferenceRequest => {
  const left = remainingTokens(wire.maxTokens, completionTokens)
  const { maxTokens: _limit, ...rest } = wire
  return { ...rest, ...(left === undefined ? {} : { maxTokens: Math.max(1, left) }), continuation: { text, completionTokens } }
}

/** Whether `worker` can continue a request of `kind` (its registration's `capabilities.continuation`). */
export const continuesKind =
  (kind: ContinuationKind) =>
  (worker: WorkerInfo): boolean =>
    continues(worker.capabilities, kind)

/**
 * The `done` of a stream whose worker was lost after sending all `maxTokens` tokens but before its
 * own `done`: nothing is left to generate, so the answer is complete (`length`). Its prompt tokens
 * are unknown (the worker never said): counted as words, as engines without a tokenizer do.
 */
export const completedDone = (
  request: { readonly messages?: ReadonlyArray<{ readonly content?: MessageContent | undefined }> | undefined; readonly prompt?: string | undefined },
  relayed: number,
  workerId: string,
  migrations: number
): DoneEvent => ({
  type: "done",
  finishReason: "length",
  usage: {
    promptTokens: countPromptTokens(request),
    completionTokens: relayed
  },
  latencyMs: 0,
  workerId,
  ...(migrations > 0 ? { migrations } : {})
})

/**
 * What one request's client has received so far, kept while migration is on: the token arrays as
 * relayed (references, no copy per token), joined into text only when a migration needs it.
 */
export class StreamAnswer {
  private readonly chunks: Array<ReadonlyArray<string>> = []
  /** Migrations so far. */
  migrations = 0

  constructor(readonly kind: ContinuationKind) {}

  static of(request: { readonly endpoint?: string | undefined }): StreamAnswer {
    return new StreamAnswer(continuationKindOf(request))
  }

  /** The text relayed so far. */
  text(): string {
    let out = ""
    for (const chunk of this.chunks) for (const token of chunk) out += token
    return out
  }

  /**
   * The final event of an attempt whose tokens follow `relayedBefore` earlier ones: `done` itself
   * on a stream that never moved, else completed by `continuedDone`. The one rule for both the
   * event the client gets (`sinkFor`) and the attempt's outcome (the Router).
   */
  doneAfter(done: DoneEvent, relayedBefore: number): DoneEvent {
    return relayedBefore === 0 && this.migrations === 0 ? done : continuedDone(done, relayedBefore, this.migrations)
  }

  /**
   * The sink of one attempt whose tokens follow `relayedBefore` earlier ones: records each batch,
   * shifts its indexes by `relayedBefore`, and completes the `done` (`doneAfter`).
   */
  sinkFor(sink: RelaySink, relayedBefore: number): RelaySink {
    return {
      push: (event: RelayEvent): boolean => {
        if (event.type === "done") return sink.push(this.doneAfter(event, relayedBefore))
        // Any other event takes indexes as tokens do (text, and whatever else is numbered like it).
        if (event.type === "tokens") this.chunks.push(event.tokens)
        return sink.push(relayedBefore === 0 ? event : { ...event, index: event.index + relayedBefore })
      }
    }
  }
}
