import { describe, expect, it } from "@effect/vitest"
import { Effect, Either } from "effect"
import { parseCliFlags, usage } from "../../src/config/cli-flags.js"

const run = (argv: ReadonlyArray<string>) => {
  const result = parseCliFlags(argv)
  if (Either.isLeft(result)) throw new Error(`expected flags, got error: ${result.left}`)
  if (result.right._tag !== "Run") throw new Error("expected flags, got help")
  return result.right.flags
}

const failure = (argv: ReadonlyArray<string>) => {
  const result = parseCliFlags(argv)
  if (Either.isRight(result)) throw new Error("expected an error")
  return result.left
}

describe("parseCliFlags", () => {
  it.effect("reads every flag in the `--flag value` form", () =>
    Effect.sync(() => {
      expect(
        run([
          "--config",
          "a.yaml",
          "--mode",
          "worker",
          "--port",
          "9000",
          "--nats-url",
          "nats://h:4222",
          "--model-dir",
          "/m",
          "--worker-id",
          "w1"
        ])
      ).toStrictEqual({
        config: "a.yaml",
        mode: "worker",
        port: "9000",
        natsUrl: "nats://h:4222",
        modelDir: "/m",
        workerId: "w1"
      })
    }))

  it.effect("reads every flag in the `--flag=value` form, values may contain `=`", () =>
    Effect.sync(() => {
      expect(
        run([
          "--config=a.yaml",
          "--mode=both",
          "--port=1",
          "--nats-url=nats://u:p=w@h:4222",
          "--model-dir=/m",
          "--worker-id=w"
        ])
      ).toStrictEqual({
        config: "a.yaml",
        mode: "both",
        port: "1",
        natsUrl: "nats://u:p=w@h:4222",
        modelDir: "/m",
        workerId: "w"
      })
    }))

  it.effect("no arguments: no flags", () => Effect.sync(() => expect(run([])).toStrictEqual({})))

  it.effect("a flag given twice keeps its last value", () =>
    Effect.sync(() => expect(run(["--port", "1", "--port=2"])).toStrictEqual({ port: "2" })))

  it.effect("an empty `--flag=` value is kept, for the schema to judge", () =>
    Effect.sync(() => expect(run(["--port="])).toStrictEqual({ port: "" })))

  it.effect("--help and -h give the usage text, even beside other or bad flags", () =>
    Effect.sync(() => {
      for (const argv of [["--help"], ["-h"], ["--port", "1", "--help"], ["--bogus", "-h"]]) {
        expect(parseCliFlags(argv)).toStrictEqual(Either.right({ _tag: "Help", text: usage }))
      }
      for (const name of ["--config", "--mode", "--port", "--nats-url", "--model-dir", "--worker-id", "--help"]) {
        expect(usage).toContain(name)
      }
      for (const env of ["CLUSTER_CONFIG", "CLUSTER_MODE", "CONTROLLER_PORT", "NATS_URL", "MODEL_DIR", "WORKER_ID"]) {
        expect(usage).toContain(env)
      }
    }))

  it.effect("an unknown flag is an error naming it", () =>
    Effect.sync(() => {
      expect(failure(["--prot", "80"])).toBe('unknown flag "--prot" (see --help)')
      expect(failure(["--verbose=1"])).toBe('unknown flag "--verbose" (see --help)')
      expect(failure(["--toString", "x"])).toBe('unknown flag "--toString" (see --help)')
    }))

  it.effect("a positional argument, a single dash or a bare `--` is an error", () =>
    Effect.sync(() => {
      expect(failure(["controller"])).toBe('unexpected argument "controller" (see --help)')
      expect(failure(["-p", "80"])).toBe('unexpected argument "-p" (see --help)')
      expect(failure(["--"])).toBe('unexpected argument "--" (see --help)')
      expect(failure(["--mode", "both", "extra"])).toBe('unexpected argument "extra" (see --help)')
    }))

  it.effect("a flag without its value is an error", () =>
    Effect.sync(() => {
      expect(failure(["--port"])).toBe("flag --port needs a value (see --help)")
      expect(failure(["--config", "--mode", "both"])).toBe("flag --config needs a value (see --help)")
    }))
})
