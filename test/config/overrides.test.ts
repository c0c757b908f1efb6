import { describe, expect, it } from "@effect/vitest"
import { Effect } from "effect"
import { applyOverrides, configPathFrom, DEFAULT_CONFIG_PATH, dropNulls, expandHome } from "../../src/config/overrides.js"

describe("applyOverrides", () => {
  const file = {
    cluster: {
      mode: "worker",
      controller: { port: 1111, bind_address: "127.0.0.1" },
      nats: { server_url: "nats://file:4222", mode: "external" },
      worker: { model_dir: "/file/models", id: "file-id", max_concurrent: 2 }
    }
  }

  const cases = [
    {
      name: "mode",
      path: ["cluster", "mode"],
      flag: { mode: "both" },
      env: { CLUSTER_MODE: "controller" },
      values: { flag: "both", env: "controller", file: "worker" },
      flagName: "--mode",
      envName: "CLUSTER_MODE"
    },
    {
      name: "port",
      path: ["cluster", "controller", "port"],
      flag: { port: "3333" },
      env: { CONTROLLER_PORT: "2222" },
      values: { flag: 3333, env: 2222, file: 1111 },
      flagName: "--port",
      envName: "CONTROLLER_PORT"
    },
    {
      name: "nats url",
      path: ["cluster", "nats", "server_url"],
      flag: { natsUrl: "nats://flag:4222" },
      env: { NATS_URL: "nats://env:4222" },
      values: { flag: "nats://flag:4222", env: "nats://env:4222", file: "nats://file:4222" },
      flagName: "--nats-url",
      envName: "NATS_URL"
    },
    {
      name: "model dir",
      path: ["cluster", "worker", "model_dir"],
      flag: { modelDir: "/flag/models" },
      env: { MODEL_DIR: "/env/models" },
      values: { flag: "/flag/models", env: "/env/models", file: "/file/models" },
      flagName: "--model-dir",
      envName: "MODEL_DIR"
    },
    {
      name: "worker id",
      path: ["cluster", "worker", "id"],
      flag: { workerId: "flag-id" },
      env: { WORKER_ID: "env-id" },
      values: { flag: "flag-id", env: "env-id", file: "file-id" },
      flagName: "--worker-id",
      envName: "WORKER_ID"
    }
  ] as const

  const at = (raw: unknown, path: ReadonlyArray<string>): unknown =>
    path.reduce<unknown>((node, key) => (node as Record<string, unknown>)[key], raw)

  for (const c of cases) {
    it.effect(`${c.name}: flag beats env beats file`, () =>
      Effect.sync(() => {
        const key = c.path.join(".")
        const both = applyOverrides(file, c.flag, c.env)
        expect(at(both.raw, c.path)).toBe(c.values.flag)
        expect(both.sources.get(key)).toBe(c.flagName)

        const envOnly = applyOverrides(file, {}, c.env)
        expect(at(envOnly.raw, c.path)).toBe(c.values.env)
        expect(envOnly.sources.get(key)).toBe(c.envName)

        const none = applyOverrides(file, {}, {})
        expect(at(none.raw, c.path)).toBe(c.values.file)
        expect(none.sources.size).toBe(0)
        expect(none.raw).toBe(file)
      }))
  }

  it.effect("lays every override at once, keeping the file's other keys", () =>
    Effect.sync(() => {
      const { raw, sources } = applyOverrides(
        file,
        { mode: "both", port: "1", natsUrl: "nats://f", modelDir: "/f", workerId: "f" },
        {}
      )
      expect(raw).toStrictEqual({
        cluster: {
          mode: "both",
          controller: { port: 1, bind_address: "127.0.0.1" },
          nats: { server_url: "nats://f", mode: "external" },
          worker: { model_dir: "/f", id: "f", max_concurrent: 2 }
        }
      })
      expect([...sources.keys()]).toStrictEqual([
        "cluster.mode",
        "cluster.controller.port",
        "cluster.nats.server_url",
        "cluster.worker.model_dir",
        "cluster.worker.id"
      ])
    }))

  it.effect("never modifies its input", () =>
    Effect.sync(() => {
      const frozen = structuredClone(file)
      const deepFreeze = (o: object): void => {
        Object.values(o).forEach((v) => typeof v === "object" && v !== null && deepFreeze(v as object))
        Object.freeze(o)
      }
      deepFreeze(frozen)
      applyOverrides(frozen, { port: "1", mode: "both" }, { WORKER_ID: "x" })
      expect(frozen).toStrictEqual(file)
    }))

  it.effect("creates missing and null mappings on the way", () =>
    Effect.sync(() => {
      expect(applyOverrides({}, { port: "80" }, {}).raw).toStrictEqual({ cluster: { controller: { port: 80 } } })
      expect(applyOverrides({ cluster: { controller: null } }, { port: "80" }, {}).raw).toStrictEqual({
        cluster: { controller: { port: 80 } }
      })
      expect(applyOverrides(undefined, {}, { CLUSTER_MODE: "worker" }).raw).toStrictEqual({
        cluster: { mode: "worker" }
      })
    }))

  it.effect("leaves a non-mapping on the way alone, for the schema to report the file's value", () =>
    Effect.sync(() => {
      const raw = { cluster: { controller: 5 } }
      const result = applyOverrides(raw, { port: "80" }, {})
      expect(result.raw).toBe(raw)
      expect(result.sources.size).toBe(0)
      expect(applyOverrides([1], { port: "80" }, {}).raw).toStrictEqual([1])
    }))

  it.effect("numbers in --port/CONTROLLER_PORT become numbers; anything else stays a string", () =>
    Effect.sync(() => {
      const port = (value: string) =>
        (applyOverrides({}, { port: value }, {}).raw as { cluster: { controller: { port: unknown } } }).cluster
          .controller.port
      expect(port("8080")).toBe(8080)
      expect(port(" 8080 ")).toBe(8080)
      expect(port("-1")).toBe(-1)
      expect(port("80.5")).toBe(80.5)
      expect(port("1e3")).toBe(1000)
      expect(port("abc")).toBe("abc")
      expect(port("0x50")).toBe("0x50")
      expect(port("")).toBe("")
      // other settings stay strings even when numeric
      const id = applyOverrides({}, { workerId: "42" }, {}).raw as { cluster: { worker: { id: unknown } } }
      expect(id.cluster.worker.id).toBe("42")
    }))

  it.effect("an empty environment variable counts as unset; an empty flag does not", () =>
    Effect.sync(() => {
      const raw = { cluster: { mode: "worker" } }
      expect(applyOverrides(raw, {}, { CLUSTER_MODE: "" }).raw).toBe(raw)
      expect(applyOverrides(raw, { mode: "" }, {}).raw).toStrictEqual({ cluster: { mode: "" } })
    }))
})

describe("configPathFrom", () => {
  it.effect("--config beats CLUSTER_CONFIG beats the default", () =>
    Effect.sync(() => {
      expect(configPathFrom({ config: "flag.yaml" }, { CLUSTER_CONFIG: "env.yaml" })).toStrictEqual({
        path: "flag.yaml",
        source: "--config"
      })
      expect(configPathFrom({}, { CLUSTER_CONFIG: "env.yaml" })).toStrictEqual({
        path: "env.yaml",
        source: "CLUSTER_CONFIG"
      })
      expect(configPathFrom({}, {})).toStrictEqual({ path: DEFAULT_CONFIG_PATH, source: "default" })
      expect(configPathFrom({}, { CLUSTER_CONFIG: "" })).toStrictEqual({ path: "config/cluster.yaml", source: "default" })
    }))
})

// -----------------------------------------------------------------------------------------------

describe("dropNulls and expandHome", () => {
  it.effect("dropNulls removes null entries of mappings only", () =>
    Effect.sync(() => {
      expect(dropNulls({ a: null, b: { c: null, d: 1 }, e: [null, { f: null }] })).toStrictEqual({
        b: { d: 1 },
        e: [null, {}]
      })
      expect(dropNulls(null)).toBeNull()
      expect(dropNulls("x")).toBe("x")
    }))

  it.effect("expandHome replaces a leading ~ in path settings only", () =>
    Effect.sync(() => {
      const raw = {
        cluster: {
          worker: { model_dir: "~/models", hf_cache_dir: "~", tags: ["~/x"] },
          nats: { creds_file: "~other/x", tls: { ca_file: "~/ca.pem", key_file: "/abs/key.pem" } }
        }
      }
      expect(expandHome(raw, "/h")).toStrictEqual({
        cluster: {
          worker: { model_dir: "/h/models", hf_cache_dir: "/h", tags: ["~/x"] },
          nats: { creds_file: "~other/x", tls: { ca_file: "/h/ca.pem", key_file: "/abs/key.pem" } }
        }
      })
      expect(expandHome({}, "/h")).toStrictEqual({})
    }))
})
