import * as RpcSerialization from "@effect/rpc/RpcSerialization"
import * as RpcServer from "@effect/rpc/RpcServer"
import { Effect, Either, Layer, Option, Stream } from "effect"
import { ClusterConfigService } from "../config/cluster-config.js"
import { ClusterStatusQuery } from "../controller/cluster-status.js"
import { Registry } from "../controller/registry.js"
import { Router } from "../controller/router.js"
import { InvalidRequest, WorkerNotFound } from "../domain/errors.js"
import type { RelayEvent } from "../domain/route.js"
import { ClusterRpcs, type GenerateEvent } from "../domain/rpc.js"
import { promptOrMessagesProblem } from "../domain/simple-inference.js"
import { simpleToRoute } from "./route-request.js"

/**
 * One relayed event as the RPC stream's items: a token per token, then `done`. Plain text only:
 * tool-call deltas (which no RPC request asks for) are not items of this stream.
 */
const toGenerateEvents = (event: RelayEvent): ReadonlyArray<GenerateEvent> => {
  switch (event.type) {
    case "tokens":
      return event.tokens.map((token, i) => ({ type: "token", index: event.index + i, token }))
    case "toolCalls":
      return []
    case "done": {
      const { systemFingerprint: _fingerprint, ...done } = event
      return [done]
    }
  }
}

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
      Generate: (payload) => {
        const problem = promptOrMessagesProblem(payload)
        return problem !== undefined
          ? Stream.fail(new InvalidRequest({ message: problem, param: "prompt" }))
          : Either.match(simpleToRoute(payload, api, "rpc"), {
              onLeft: (error) => Stream.fail(error),
              onRight: (request) => router.route(request).pipe(Stream.mapConcat(toGenerateEvents))
            })
      }
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
