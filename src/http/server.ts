import { HttpApiSwagger, HttpLayerRouter } from "@effect/platform"
import { NodeHttpServer } from "@effect/platform-node"
import { Effect, Layer } from "effect"
import { createServer } from "node:http"
import { ClusterConfigService } from "../config/cluster-config.js"
import { ClusterApi } from "../domain/api.js"
import { ClusterHandlersLive, HealthHandlersLive } from "./cluster-handlers.js"
import { MetricsRouteLive } from "./metrics-route.js"
import { OpenAiHandlersLive } from "./openai-handlers.js"
import { ProtectionsLive } from "./protections.js"
import { RpcRouteLive } from "./rpc.js"
import { WebSocketRouteLive } from "./websocket.js"

/** The HttpApi (OpenAI, cluster and health groups) with `/openapi.json` and the `/docs` page. */
const ApiRoutesLive = Layer.mergeAll(
  HttpLayerRouter.addHttpApi(ClusterApi, { openapiPath: "/openapi.json" }).pipe(
    Layer.provide([OpenAiHandlersLive, ClusterHandlersLive, HealthHandlersLive])
  ),
  HttpApiSwagger.layerHttpLayerRouter({ api: ClusterApi, path: "/docs" })
)

const CorsLive = Layer.unwrapEffect(
  Effect.map(ClusterConfigService, (config) =>
    config.controller.api.corsEnabled
      ? HttpLayerRouter.cors({
          allowedOrigins: config.controller.api.corsOrigins,
          allowedHeaders: ["authorization", "content-type"],
          maxAge: 600
        })
      : Layer.empty
  )
)

/** Every route of the controller on one port: HttpApi, docs, `/ws`, `/rpc`, `/metrics`. */
export const AllRoutesLive = Layer.mergeAll(ApiRoutesLive, WebSocketRouteLive, RpcRouteLive, MetricsRouteLive).pipe(
  Layer.provide([ProtectionsLive, CorsLive])
)

/**
 * Keep-alive connections outlive the 5 s Node default: OpenAI clients and proxies reuse them, and a
 * server that closes a connection just as a client sends on it resets that request.
 */
const makeNodeServer = () => {
  const server = createServer()
  server.keepAliveTimeout = 65_000
  server.headersTimeout = 66_000
  return server
}

/**
 * The controller's HTTP server on `controller.bind_address:port`. The per-request logger of
 * @effect/platform is off: it halves throughput; the Router logs one line per inference request.
 * Exposes the `HttpServer` so that the ready line can name the port actually bound.
 */
export const HttpServerLive = Layer.unwrapEffect(
  Effect.map(ClusterConfigService, (config) =>
    HttpLayerRouter.serve(AllRoutesLive, { disableLogger: true, disableListenLog: true }).pipe(
      Layer.provideMerge(
        NodeHttpServer.layer(makeNodeServer, {
          port: config.controller.port,
          host: config.controller.bindAddress,
          // Hundreds of clients connect at once under load; Node's default backlog (511) resets the rest.
          backlog: 4096
        })
      )
    )
  )
)
