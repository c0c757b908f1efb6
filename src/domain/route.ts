import type { Requirement } from "./features.js"
import type { ChatMessage, FinishReason, InferenceEndpoint, TokenLogprob, ToolCallDelta, Usage } from "./inference.js"

/**
 * What the front doors (OpenAI HTTP, WebSocket, RPC) hand the Router and what they get back: the
 * shared language of `src/http/` and `src/controller/router.ts`.
 */

/** What a front door asks the cluster to generate. */
export interface RouteRequest {
  /** The id used on the bus, in logs and in `x-request-id`; the Router makes one when absent. */
  readonly requestId?: string
  readonly model: string
  readonly messages?: ReadonlyArray<ChatMessage>
  readonly prompt?: string
  /** Absent: the engine's own limit applies. */
  readonly maxTokens?: number
  readonly temperature?: number
  readonly topP?: number
  readonly stop?: ReadonlyArray<string>
  /** Every other field of the client's OpenAI request, verbatim (see `InferenceRequest.params`). */
  readonly params?: Readonly<Record<string, unknown>>
  /** The OpenAI route the client called. */
  readonly endpoint?: InferenceEndpoint
  /** What a worker's engine must honour to serve it (from `requirementsOf`): others are not chosen. */
  readonly requires?: ReadonlyArray<Requirement>
  /** Only workers carrying every one of these tags. */
  readonly tags?: ReadonlyArray<string>
  /** Higher leaves the admission queue first. */
  readonly priority?: number
  /** Metrics and log label: which front door asked (`chat`, `completions`, `ws`, `rpc`). */
  readonly route?: string
  /** The client's address, for the request log. */
  readonly client?: string
}

/** Tokens relayed as one bus message brought them (`index` is the first one's). */
export interface TokensEvent {
  readonly type: "tokens"
  readonly index: number
  readonly tokens: ReadonlyArray<string>
  /** The tokens' log probabilities, when the request asked for them. */
  readonly logprobs?: ReadonlyArray<TokenLogprob>
}

/** Tool-call deltas as one bus message brought them (`index` is the first one's). */
export interface ToolCallsEvent {
  readonly type: "toolCalls"
  readonly index: number
  readonly deltas: ReadonlyArray<ToolCallDelta>
}

/** The end of a successful generation. */
export interface DoneEvent {
  readonly type: "done"
  readonly finishReason: FinishReason
  readonly usage: Usage
  /** The worker's generation time. */
  readonly latencyMs: number
  readonly workerId: string
  /**
   * extension (issue 13): how many times the stream moved to another worker after its worker was
   * lost or hung; absent when it never did. `usage` then counts every token of every attempt.
   */
  readonly migrations?: number
  /** The engine's `system_fingerprint`, when it gave one. */
  readonly systemFingerprint?: string
}

/** One step of a relayed stream: a batch of tokens (or tool-call deltas) per bus message, then one `done`. */
export type RelayEvent = TokensEvent | ToolCallsEvent | DoneEvent

/**
 * Where the Router delivers a stream's events: in order, synchronously from the bus callback that
 * brought them (no fiber, queue or Effect per batch). `push` answers false when the consumer is too
 * far behind to take more; the Router then ends the request with `slow_consumer` and cancels the
 * worker's work.
 */
export interface RelaySink {
  readonly push: (event: RelayEvent) => boolean
}
