// Deep imports keep the CLI's start-up short (the package barrels load every module).
import * as FetchHttpClient from "@effect/platform/FetchHttpClient"
import * as HttpClient from "@effect/platform/HttpClient"
import * as HttpClientError from "@effect/platform/HttpClientError"
import * as HttpClientRequest from "@effect/platform/HttpClientRequest"
import * as RpcClient from "@effect/rpc/RpcClient"
import type { RpcClientError } from "@effect/rpc/RpcClientError"
import type * as RpcGroup from "@effect/rpc/RpcGroup"
import * as RpcSerialization from "@effect/rpc/RpcSerialization"
import { Context, Effect, Layer } from "effect"
import { ClusterRpcs } from "./domain/rpc.js"
import { toOpenAiError, type WireError } from "./domain/errors.js"

/**
 * A client of the controller's `/rpc` group (`ClusterRpcs`) for internal tools: HTTP with NDJSON
 * framing, so `Generate` yields its tokens as they arrive.
 *
 * ```ts
 * import { ClusterClient, layer } from "./rpc-client.js"
 *
 * const program = Effect.gen(function* () {
 *   const cluster = yield* ClusterClient
 *   const status = yield* cluster.ClusterStatus()
 *   yield* cluster.Generate({ model, prompt }).pipe(Stream.runForEach(Console.log))
 * }).pipe(Effect.provide(layer({ url: "http://127.0.0.1:8080/rpc", apiKey })))
 * ```
 */
export type ClusterClientService = RpcClient.RpcClient<RpcGroup.Rpcs<typeof ClusterRpcs>, RpcClientError>

export class ClusterClient extends Context.Tag("rpc/ClusterClient")<ClusterClient, ClusterClientService>() {}

export interface ClusterClientOptions {
  /** The RPC endpoint, e.g. `http://127.0.0.1:8080/rpc`. */
  readonly url: string
  /** Sent as `Authorization: Bearer KEY` when the controller has `api_keys`. */
  readonly apiKey?: string
}

/**
 * The HTTP client under the protocol: a non-2xx answer (401, 404, 5xx) fails the call with an
 * `RpcClientError` whose cause is the `ResponseError`, instead of being parsed as RPC frames.
 */
const httpClientLayer = (apiKey: string | undefined) =>
  Layer.effect(
    HttpClient.HttpClient,
    Effect.map(HttpClient.HttpClient, (client) => {
      const checked = HttpClient.filterStatusOk(client)
      return apiKey === undefined ? checked : HttpClient.mapRequest(checked, HttpClientRequest.bearerToken(apiKey))
    })
  ).pipe(Layer.provide(FetchHttpClient.layer))

/** A `ClusterClient` for the controller at `options.url`. */
export const layer = (options: ClusterClientOptions): Layer.Layer<ClusterClient> =>
  Layer.scoped(ClusterClient, RpcClient.make(ClusterRpcs)).pipe(
    Layer.provide(RpcClient.layerProtocolHttp({ url: options.url })),
    Layer.provide([RpcSerialization.layerNdjson, httpClientLayer(options.apiKey)])
  )

/** One readable line for any failure of a `ClusterClient` call. */
export const describeError = (error: RpcClientError | WireError): string => {
  if (error._tag !== "RpcClientError") {
    const { body } = toOpenAiError(error)
    return `${body.error.message} (${body.error.code ?? body.error.type})`
  }
  const cause: unknown = error.cause
  if (HttpClientError.isHttpClientError(cause)) {
    if (cause._tag === "ResponseError") {
      const status = cause.response.status
      const hint = status === 401 ? ": missing or wrong API key (--api-key or CLUSTER_API_KEY)" : ""
      return `the controller answered HTTP ${status} at ${cause.request.url}${hint}`
    }
    return `cannot reach the controller at ${cause.request.url}: ${cause.message}`
  }
  return error.message
}
