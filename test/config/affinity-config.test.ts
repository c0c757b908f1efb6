import { describe, expect, it } from "@effect/vitest"
import { Either } from "effect"
import { decodeConfig, parseConfigYaml } from "../../src/config/load-config.js"
import { defaultClusterConfig } from "../../src/config/schema.js"

const decode = (yaml: string) => {
  const { raw } = Either.getOrThrow(parseConfigYaml(yaml, "test.yaml"))
  return decodeConfig({ raw, flags: {}, env: {}, file: "test.yaml", homeDir: "/home/test" })
}

describe("config: cache-aware routing (issue 16)", () => {
  it("defaults: affinity on for smart; no prefill cost, 10 prompts cached", () => {
    const config = defaultClusterConfig()
    expect(config.loadBalancing).toEqual({
      strategy: "smart",
      affinity: { enabled: true, minPrefixTokens: 64, maxImbalance: 2, blockTokens: 16, maxBlocksPerWorker: 8192, maxAgeMs: 600_000 }
    })
    expect(config.worker.engine.synthetic).toEqual({ tokensPerSecond: 50, firstTokenMs: 50, prefillTokensPerSecond: 0, promptCacheSize: 10, maxAnswerTokens: 256 })
  })

  it("reads the snake_case keys; the ones not given keep their defaults", () => {
    const result = Either.getOrThrow(
      decode(`cluster:
  load_balancing:
    strategy: round_robin
    affinity: { enabled: false, min_prefix_tokens: 128, max_imbalance: 0, max_age_ms: 1000 }
  worker:
    engine:
      synthetic: { prefill_tokens_per_second: 2000, prompt_cache_size: 4 }
`)
    )
    expect(result.warnings).toEqual([])
    expect(result.config.loadBalancing).toEqual({
      strategy: "round_robin",
      affinity: { enabled: false, minPrefixTokens: 128, maxImbalance: 0, blockTokens: 16, maxBlocksPerWorker: 8192, maxAgeMs: 1000 }
    })
    expect(result.config.worker.engine.synthetic).toMatchObject({ tokensPerSecond: 50, prefillTokensPerSecond: 2000, promptCacheSize: 4 })
  })

  it("a bad value names its key; a misspelt key is a warning", () => {
    const bad = decode("cluster: { load_balancing: { affinity: { max_imbalance: -1 } } }\n")
    expect(Either.isLeft(bad) && bad.left.message).toContain("cluster.load_balancing.affinity.max_imbalance")
    const zeroBlocks = decode("cluster: { load_balancing: { affinity: { block_tokens: 0 } } }\n")
    expect(Either.isLeft(zeroBlocks) && zeroBlocks.left.message).toContain("block_tokens")
    const typo = Either.getOrThrow(decode("cluster: { load_balancing: { affinity: { min_prefix_token: 10 } } }\n"))
    expect(typo.warnings.join("\n")).toContain("min_prefix_tokens")
  })
})
