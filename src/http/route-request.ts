import type { RouteRequest } from "../domain/route.js"
import type { ChatMessage } from "../domain/inference.js"

/** Limits that shape every inference request (from `controller.api`). */
export interface TokenLimits {
  readonly defaultMaxTokens: number
  readonly maxTokensCeiling: number
}

/** `max_tokens` as every front door applies it: the default when absent, capped at the ceiling. */
export const maxTokensOf = (requested: number | null | undefined, limits: TokenLimits): number =>
  Math.min(requested ?? limits.defaultMaxTokens, limits.maxTokensCeiling)

/** The request shape of the WebSocket and RPC front doors (CONTRACT §6's `data`). */
export interface SimpleInference {
  readonly model: string
  readonly prompt?: string | undefined
  readonly messages?: ReadonlyArray<ChatMessage> | undefined
  readonly maxTokens?: number | undefined
  readonly temperature?: number | undefined
}

/** A WebSocket or RPC request as the Router takes it. */
export const simpleToRoute = (data: SimpleInference, limits: TokenLimits, route: string): RouteRequest => ({
  model: data.model,
  maxTokens: maxTokensOf(data.maxTokens, limits),
  route,
  ...(data.prompt === undefined ? {} : { prompt: data.prompt }),
  ...(data.messages === undefined ? {} : { messages: data.messages }),
  ...(data.temperature === undefined ? {} : { temperature: data.temperature })
})
