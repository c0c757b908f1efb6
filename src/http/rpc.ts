import { RpcSerialization, RpcServer } from "@effect/rpc"
import { Effect, Layer, Option, Stream } from "effect"
import { ClusterConfigService } from "../config/cluster-config.js"
import { ClusterStatusQuery } from "../controller/cluster-status.js"
import { Registry } from "../controller/registry.js"
import { Router } from "../controller/router.js"
import { InvalidRequest, WorkerNotFound } from "../domain/errors.js"
import type { RelayEvent } from "../domain/route.js"
import { ClusterRpcs, type GenerateEvent } from "../domain/rpc.js"
import { simpleToRoute } from "./route-request.js"

/** One relayed event as the RPC stream's items: a token per token, then `done`. */
const toGenerateEvents = (event: RelayEvent): ReadonlyArray<GenerateEvent> =>
  event.type === "tokens" ? event.tokens.map((token, i) => ({ type: "token", index: event.index + i, token })) : [event]

/** The handlers of `ClusterRpcs`: each one call to a controller service. */
export const ClusterRpcHandlersLive = ClusterRpcs.toLayer(
  Effect.gen(function* () {
    const status = yield* ClusterStatusQuery
    const registry = yield* Registry
    const router = yield* Router
    const api = (yield* ClusterConfigService).controller.api
    return ClusterRpcs.of({
      ClusterStatus: () => status.status,
      ListWorkers: () => registry.all,
      GetWorker: ({ workerId }) =>
        registry.get(workerId).pipe(
          Effect.flatMap(Option.match({ onNone: () => Effect.fail(new WorkerNotFound({ workerId })), onSome: Effect.succeed }))
        ),
      Generate: (payload) =>
        (payload.prompt === undefined) === (payload.messages === undefined)
          ? Stream.fail(new InvalidRequest({ message: "exactly one of prompt or messages is required", param: "prompt" }))
          : router.route(simpleToRoute(payload, api, "rpc")).pipe(Stream.mapConcat(toGenerateEvents))
    })
  })
)

/**
 * `POST /rpc`: the `ClusterRpcs` group over HTTP with NDJSON framing. Needs the HttpRouter,
 * `ClusterStatusQuery`, `Registry`, `Router` and the config. API keys are checked by the front door
 * (`front-door.ts`).
 */
export const RpcRouteLive = RpcServer.layerHttpRouter({ group: ClusterRpcs, path: "/rpc", protocol: "http" }).pipe(
  Layer.provide([ClusterRpcHandlersLive, RpcSerialization.layerNdjson])
)
