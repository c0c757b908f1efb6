import { Either } from "effect"
import { InvalidRequest } from "../domain/errors.js"
import type { RouteRequest } from "../domain/route.js"
import type { SimpleInference } from "../domain/simple-inference.js"

/** Limits that shape every inference request (from `controller.api`). */
export interface TokenLimits {
  /** null: no limit. */
  readonly maxTokensCeiling: number | null
}

/**
 * `max_tokens` as every front door applies it (issue 12): absent stays absent (the engine's own
 * limit applies, never a default of ours); above `max_tokens_ceiling` it is a 400 naming the field,
 * never a quiet cap.
 */
export const maxTokensOf = (
  requested: number | null | undefined,
  limits: TokenLimits,
  param = "max_tokens"
): Either.Either<number | undefined, InvalidRequest> => {
  if (requested === null || requested === undefined) return Either.right(undefined)
  const ceiling = limits.maxTokensCeiling
  if (ceiling !== null && requested > ceiling) {
    return Either.left(
      new InvalidRequest({
        message: `Invalid value for '${param}': ${requested} is above this cluster's limit of ${ceiling} tokens (controller.api.max_tokens_ceiling)`,
        param
      })
    )
  }
  return Either.right(requested)
}

/** A WebSocket or RPC request as the Router takes it (its `maxTokens` checked against the ceiling). */
export const simpleToRoute = (data: SimpleInference, limits: TokenLimits, route: string): Either.Either<RouteRequest, InvalidRequest> =>
  Either.map(maxTokensOf(data.maxTokens, limits, "maxTokens"), (maxTokens) => ({
    model: data.model,
    route,
    ...(maxTokens === undefined ? {} : { maxTokens }),
    ...(data.prompt === undefined ? {} : { prompt: data.prompt }),
    ...(data.messages === undefined ? {} : { messages: data.messages }),
    ...(data.temperature === undefined ? {} : { temperature: data.temperature })
  }))
