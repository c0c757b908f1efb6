// First: heap flags that must apply before the first request (see the module).
import "./process/heap-flags.js"
import * as NodeRuntime from "@effect/platform-node/NodeRuntime"
import { Cause, Console, Effect, Layer, Option } from "effect"
import { loadConfig } from "./config/load-config.js"
import type { ConfigLoaded } from "./config/load-config.js"
import { LoggingLive } from "./logging.js"
import { mainLayer, withRuntimeMetrics } from "./roles.js"

/**
 * `tsx src/main.ts [flags]`: load the config (flags > environment > file > defaults), then run the
 * roles of its mode until SIGINT/SIGTERM, which drain and exit 0. A bad config prints one line
 * naming the key and the file and exits 1 before anything starts.
 */
/** A failure as one readable line: its message, else its cause's (e.g. a port already in use). */
const describeFailure = (error: { readonly message: string; readonly cause?: unknown }): string => {
  if (error.message !== "") return error.message
  const cause = error.cause
  return cause instanceof Error ? cause.message : String(cause ?? "unknown error")
}

/** The roles of the config's mode, logging as the config says from the first line on. */
const run = (loaded: ConfigLoaded) =>
  Effect.gen(function* () {
    if (loaded.file === undefined) yield* Effect.logInfo("no config file found: using the defaults of docs/contract.md §2")
    for (const warning of loaded.warnings) yield* Effect.logWarning(warning)
    return yield* Layer.launch(mainLayer(loaded.config))
  }).pipe(
    Effect.tapDefect((defects) => Effect.logError("stopped by a defect", defects)),
    withRuntimeMetrics(loaded.config),
    Effect.provide(LoggingLive(loaded.config))
  )

const program = Effect.gen(function* () {
  const loaded = yield* loadConfig(process.argv.slice(2), process.env)
  if (loaded._tag === "Help") return yield* Console.log(loaded.text)
  return yield* run(loaded)
}).pipe(
  Effect.tapErrorCause((cause) => {
    const failure = Cause.failureOption(cause)
    if (Option.isSome(failure) && failure.value._tag === "ConfigError") {
      return Console.error(`config error: ${failure.value.message}`)
    }
    if (Option.isSome(failure)) return Console.error(`error: ${describeFailure(failure.value)}`)
    // Defects were logged by `run`, with the configured logger.
    return Effect.void
  })
)

// Our own logger (`LoggingLive`) replaces the default one; the pretty logger of `runMain` would write every line twice.
NodeRuntime.runMain(program, { disableErrorReporting: true, disablePrettyLogger: true })
