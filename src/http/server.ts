import * as HttpLayerRouter from "@effect/platform/HttpLayerRouter"
import * as HttpServerResponse from "@effect/platform/HttpServerResponse"
import * as NodeHttpServer from "@effect/platform-node/NodeHttpServer"
import { Effect, Layer } from "effect"
import { ClusterConfigService } from "../config/cluster-config.js"
import { ClusterApi, openApiDocument, ServedApi } from "../domain/api.js"
import { ClusterHandlersLive, HealthHandlersLive } from "./cluster-handlers.js"
import { DashboardRoutesLive } from "./dashboard-routes.js"
import { FrontDoorServer, makeFrontDoor } from "./front-door.js"
import { MetricsRouteLive } from "./metrics-route.js"
import { ModelRouteLive, ModelsHandlersLive, NotFoundRouteLive } from "./openai-handlers.js"
import { RpcRouteLive } from "./rpc.js"

/** The OpenAPI document of every route, the fast lane's included; computed once. */
const OpenApiRouteLive = HttpLayerRouter.use((router) => router.add("GET", "/openapi.json", Effect.succeed(HttpServerResponse.unsafeJson(openApiDocument))))

/**
 * `GET /docs`, the Swagger UI page. Its module holds the whole Swagger UI bundle as a string (3.8 MB,
 * about 11 MiB of heap once the page is built), so it is loaded on the first visit, not by every
 * controller at start-up; the page is then built once and served from then on.
 */
const DocsRouteLive = HttpLayerRouter.use((router) =>
  Effect.gen(function* () {
    const scope = yield* Effect.scope
    const page = yield* Effect.cached(
      Effect.gen(function* () {
        const swagger = yield* Effect.promise(() => import("@effect/platform/HttpApiSwagger"))
        // A router of its own: the page's layer adds its route there, not to the running one.
        const own = yield* HttpLayerRouter.make
        yield* Layer.buildWithScope(
          swagger.layerHttpLayerRouter({ api: ClusterApi, path: "/docs" }).pipe(Layer.provide(Layer.succeed(HttpLayerRouter.HttpRouter, own))),
          scope
        )
        return own.asHttpEffect()
      })
    )
    yield* router.add("GET", "/docs", Effect.flatten(page))
  })
)

/** The HttpApi routes (models, cluster, health), `GET /v1/models/{id}`, `/openapi.json` and the `/docs` page. */
const ApiRoutesLive = Layer.mergeAll(
  HttpLayerRouter.addHttpApi(ServedApi).pipe(Layer.provide([ModelsHandlersLive, ClusterHandlersLive, HealthHandlersLive])),
  ModelRouteLive,
  OpenApiRouteLive,
  DocsRouteLive
)

/**
 * Every route the Effect router serves: the HttpApi, `/rpc`, `/metrics`, the dashboard, and an
 * OpenAI-shaped 404 for anything else. The front door (`front-door.ts`) serves the inference
 * routes and `/ws` itself.
 */
export const AllRoutesLive = Layer.mergeAll(ApiRoutesLive, RpcRouteLive, MetricsRouteLive, DashboardRoutesLive, NotFoundRouteLive)

/**
 * The controller's HTTP server on `controller.bind_address:port`: Node's server with the front door
 * in front, the Effect router behind it. The per-request logger of @effect/platform is off (it
 * halves throughput); requests are logged once each by the `RequestJournal`. Exposes the
 * `HttpServer` so that the ready line can name the port actually bound.
 */
export const HttpServerLive = Layer.unwrapScoped(
  Effect.gen(function* () {
    const config = yield* ClusterConfigService
    const door = yield* makeFrontDoor
    return HttpLayerRouter.serve(AllRoutesLive, { disableLogger: true, disableListenLog: true }).pipe(
      Layer.provideMerge(
        NodeHttpServer.layer(() => new FrontDoorServer(door), {
          port: config.controller.port,
          host: config.controller.bindAddress,
          // Hundreds of clients connect at once under load; Node's default backlog (511) resets the rest.
          backlog: 4096
        })
      )
    )
  })
)
