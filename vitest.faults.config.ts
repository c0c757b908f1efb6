import { defineConfig } from "vitest/config"

/**
 * The fault and load tests (`npm run test:faults`): real CLI processes over a nats-server of each
 * file's own. One file at a time, so that the load tests do not fight each other for 2 cores.
 */
export default defineConfig({
  test: {
    include: ["test/faults/**/*.test.ts"],
    pool: "forks",
    fileParallelism: false,
    testTimeout: 120_000,
    hookTimeout: 60_000,
    coverage: { enabled: false }
  }
})
