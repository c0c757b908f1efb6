import { Effect } from "effect"
import { InferenceTimeout, type InferenceError } from "../domain/errors.js"
import type { TokenMessage } from "../domain/inference.js"
import type { RelaySink } from "../domain/route.js"
import { decodeTokenMessage } from "../domain/token-wire.js"
import type { RawMessage } from "../nats/nats-transport.js"
import type { Deadline } from "./deadline-sweep.js"
import { type AttemptOutcome, initialRelayState, type RelayState, step, workerLost } from "./relay-step.js"

export interface RelayLimits {
  readonly firstTokenTimeoutMs: number
  readonly streamIdleTimeoutMs: number
  readonly requestTimeoutMs: number
}

export interface RelayOptions {
  readonly workerId: string
  /** The id of this attempt on the bus (`response.{attemptId}`). */
  readonly attemptId: string
  readonly sink: RelaySink
  /** Tokens relayed by earlier attempts of the request. */
  readonly relayedBefore: number
  /** When the request arrived (the whole-request deadline counts from here). */
  readonly startedAt: number
  readonly limits: RelayLimits
  /** The Effect clock's time. */
  readonly now: () => number
  /** Tokens were passed to the consumer at `at` (the first call is the first token). */
  readonly onTokens: (count: number, at: number) => void
  /** The consumer cannot keep up: the outcome to end with. */
  readonly slowConsumer: () => InferenceError
  /** A message on the subject that is not a valid token message (dropped). */
  readonly onInvalid: (subject: string, reason: string) => void
}

/**
 * The effectful shell around `relay-step.ts` for one attempt: the bus callback feeds it messages
 * (decoded by the plain hot-path codec), the deadline sweep asks it about its deadlines, the Router
 * tells it when the worker was lost, and the request's fiber waits for its outcome with `await` —
 * the only Effect it has. From a message to the consumer's `push` nothing allocates but the event.
 */
export class Relay implements Deadline {
  private state: RelayState = initialRelayState
  private outcome: AttemptOutcome | undefined
  private resume: ((outcome: AttemptOutcome) => void) | undefined
  /** When the worker acknowledged the request; until then only the whole-request deadline applies. */
  private dispatchedAt: number | undefined
  private lastMessageAt = 0
  /** For the worker probes (issue 13): when the first message came, and how many did. */
  private firstMessageAt = 0
  private messages = 0
  /** Why the worker was lost, when that ended the attempt. */
  private lost_: string | undefined

  constructor(readonly options: RelayOptions) {}

  /** The worker sent `done` or `error`, or refused: it runs nothing more for this attempt. */
  get finished(): boolean {
    return this.state.finished
  }

  get relayed(): number {
    return this.state.expected
  }

  /** The reason given to `lost`, when the worker's loss ended this attempt (issue 13: it may move on). */
  get lostReason(): string | undefined {
    return this.lost_
  }

  /**
   * For the worker probes (`ProbedStream`, issue 13): when the worker last showed life on this
   * stream — its ack, then each message; undefined before the ack and once the attempt ended.
   */
  get lastHeardAt(): number | undefined {
    return this.outcome !== undefined || this.dispatchedAt === undefined ? undefined : this.lastMessageAt
  }

  /** The stream's mean gap between two messages so far; undefined before its second one. */
  get messageGapMs(): number | undefined {
    return this.messages < 2 ? undefined : (this.lastMessageAt - this.firstMessageAt) / (this.messages - 1)
  }

  /** The worker runs nothing for us (a refusal, no responders): no cancel is owed. */
  markFinished(): void {
    this.state = { ...this.state, finished: true }
  }

  /** The worker accepted the request at `at`: the first-token deadline starts. */
  dispatched(at: number): void {
    this.dispatchedAt = at
    this.lastMessageAt = at
  }

  /** The bus callback of `response.{attemptId}`. */
  readonly onMessage = (message: RawMessage): void => {
    if (this.outcome !== undefined) return
    const decoded = decodeTokenMessage(message.data)
    if (typeof decoded === "string") return this.options.onInvalid(message.subject, decoded)
    if (decoded.requestId !== this.options.attemptId) {
      return this.options.onInvalid(message.subject, `requestId ${decoded.requestId} is not this subject's`)
    }
    this.receive(decoded)
  }

  /** One decoded message from the worker. */
  receive(message: TokenMessage): void {
    if (this.outcome !== undefined) return
    const result = step(this.state, message, { workerId: this.options.workerId, relayedBefore: this.options.relayedBefore })
    this.state = result.state
    const event = result.event
    if (event !== undefined) {
      const at = this.options.now()
      this.lastMessageAt = at
      if (this.messages++ === 0) this.firstMessageAt = at
      if (event.type === "tokens") this.options.onTokens(event.tokens.length, at)
      else if (event.type === "toolCalls") this.options.onTokens(event.deltas.length, at)
      if (!this.options.sink.push(event) && result.outcome === undefined) {
        return this.end({ _tag: "Fail", error: this.options.slowConsumer() })
      }
    }
    if (result.outcome !== undefined) this.end(result.outcome)
  }

  /** The worker went offline or stopped answering. */
  lost(reason: string): void {
    if (this.outcome !== undefined) return
    this.lost_ = reason
    this.end(workerLost(this.state, { workerId: this.options.workerId, relayedBefore: this.options.relayedBefore }, reason))
  }

  /** Ends the attempt from outside (a forced stop, a failed dispatch); the first outcome wins. */
  end(outcome: AttemptOutcome): void {
    if (this.outcome !== undefined) return
    this.outcome = outcome
    const resume = this.resume
    this.resume = undefined
    resume?.(outcome)
  }

  /** Deadline sweep: first token, inactivity and whole request. */
  check(now: number): void {
    if (this.outcome !== undefined) return
    const { limits, startedAt, workerId } = this.options
    if (now - startedAt >= limits.requestTimeoutMs) {
      return this.end({ _tag: "Fail", error: new InferenceTimeout({ phase: "request", timeoutMs: limits.requestTimeoutMs, workerId }) })
    }
    if (this.dispatchedAt === undefined) return
    if (this.state.expected === 0) {
      if (now - this.dispatchedAt >= limits.firstTokenTimeoutMs) {
        this.end({ _tag: "Fail", error: new InferenceTimeout({ phase: "first_token", timeoutMs: limits.firstTokenTimeoutMs, workerId }) })
      }
    } else if (now - this.lastMessageAt >= limits.streamIdleTimeoutMs) {
      this.end({ _tag: "Fail", error: new InferenceTimeout({ phase: "stream_idle", timeoutMs: limits.streamIdleTimeoutMs, workerId }) })
    }
  }

  /**
   * The attempt's outcome, as soon as there is one, with `f` applied to it: no `Effect.map` frame
   * on the waiting fiber's stack for the stream's whole life. No canceler: `Effect.async` wraps an
   * effect that has one in `onInterrupt` (three more frames on the fiber's stack for the whole
   * stream), and an interrupted fiber ignores a later `resume` anyway; the attempt's end drops the
   * relay. A method, not an Effect made with each relay: the router makes the one it waits with.
   */
  awaitWith<B>(f: (outcome: AttemptOutcome) => B): Effect.Effect<B> {
    return Effect.async<B>((resume) => {
      if (this.outcome !== undefined) return resume(Effect.succeed(f(this.outcome)))
      this.resume = (outcome) => resume(Effect.succeed(f(outcome)))
    })
  }
}
