import { describe, expect, it } from "@effect/vitest"
import { Effect } from "effect"
import { ClusterConfigService } from "../../src/config/cluster-config.js"
import { defaultClusterConfig } from "../../src/config/schema.js"

describe("ClusterConfigService", () => {
  it.effect("layer provides the given config", () =>
    Effect.gen(function* () {
      const config = { ...defaultClusterConfig(), mode: "worker" as const }
      const got = yield* ClusterConfigService.pipe(Effect.provide(ClusterConfigService.layer(config)))
      expect(got).toBe(config)
    }))

  it.effect("layerTest provides the defaults, patched", () =>
    Effect.gen(function* () {
      const plain = yield* ClusterConfigService.pipe(Effect.provide(ClusterConfigService.layerTest()))
      expect(plain).toStrictEqual(defaultClusterConfig())
      const patched = yield* ClusterConfigService.pipe(
        Effect.provide(
          ClusterConfigService.layerTest((c) => ({ ...c, controller: { ...c.controller, port: 0 } }))
        )
      )
      expect(patched.controller.port).toBe(0)
    }))
})
