import { execFileSync } from "node:child_process"
import { mkdirSync, readdirSync, readFileSync, rmSync, writeFileSync } from "node:fs"
import { dirname, join } from "node:path"
import { Duration, Effect, Either, Option, Schedule, Schema } from "effect"
import { decodeGuarded, parseJson } from "../domain/decode.js"

/**
 * Pid files of the children this process starts (embedded nats-server, mlx_lm.server): written
 * when a child starts, removed when it stops. A start that finds a pid file left by a run that
 * died without cleaning up (its owner is gone but its child still runs, e.g. because the child
 * ignored its watcher's signals) stops that child first: it would hold the port and the memory.
 *
 * A pid file is trusted only as far as it can be checked: the recorded child is stopped only when
 * its owner is gone, it is still running, and its command line still contains the recorded
 * `marker` (so a pid reused by an unrelated process is left alone).
 */

export const PidRecord = Schema.Struct({
  /** The child. */
  pid: Schema.Number.pipe(Schema.int(), Schema.positive()),
  /** The process that started it. */
  ownerPid: Schema.Number.pipe(Schema.int(), Schema.positive()),
  /** A string the child's command line contains, e.g. `nats-server`. */
  marker: Schema.String.pipe(Schema.minLength(1)),
  startedAt: Schema.Number
})
export type PidRecord = typeof PidRecord.Type

/** Whether `pid` is a live process (a zombie, exited but not reaped, counts as gone). */
export const isProcessAlive = (pid: number): boolean => {
  try {
    process.kill(pid, 0)
  } catch (cause) {
    // EPERM: it exists but belongs to someone else.
    return typeof cause === "object" && cause !== null && "code" in cause && cause.code === "EPERM"
  }
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, "utf8")
    // `PID (COMM) STATE …`: COMM may hold spaces and parentheses, STATE follows the last ')'.
    return stat.slice(stat.lastIndexOf(")") + 2, stat.lastIndexOf(")") + 3) !== "Z"
  } catch {
    return true // no /proc (macOS): kill(0) is the answer
  }
}

/** The command line of `pid` (`/proc` on Linux, `ps` elsewhere), or `undefined`. */
export const commandLineOf = (pid: number): string | undefined => {
  try {
    return readFileSync(`/proc/${pid}/cmdline`, "utf8").split("\0").join(" ").trim()
  } catch {
    try {
      return execFileSync("ps", ["-o", "command=", "-p", String(pid)], { encoding: "utf8", timeout: 2_000 }).trim() || undefined
    } catch {
      return undefined
    }
  }
}

const decodeRecord = decodeGuarded(PidRecord)

/** The record in `path`, or `None` when there is none or it is unreadable. */
export const readPidFile = (path: string): Option.Option<PidRecord> => {
  let text: string
  try {
    text = readFileSync(path, "utf8")
  } catch {
    return Option.none()
  }
  const json = parseJson(text)
  return Either.isLeft(json) ? Option.none() : Either.getRight(decodeRecord(json.right))
}

/** Writes `record` to `path` (mode 0600, its folder 0700 when created). */
export const writePidFile = (path: string, record: PidRecord): Effect.Effect<void> =>
  Effect.sync(() => {
    try {
      mkdirSync(dirname(path), { recursive: true, mode: 0o700 })
      writeFileSync(path, `${JSON.stringify(record)}\n`, { mode: 0o600 })
    } catch {
      // Without a pid file only the stale-child cleanup of a later start is lost.
    }
  })

/** Removes `path` when it still names `pid` (a newer start may have replaced it). */
export const removePidFile = (path: string, pid: number): Effect.Effect<void> =>
  Effect.sync(() => {
    const current = readPidFile(path)
    if (Option.isSome(current) && current.value.pid !== pid) return
    rmSync(path, { force: true })
  })

/** Why the child of a pid file is (or is not) stopped; pure, for tests. */
export const isStale = (
  record: PidRecord,
  probe: { readonly alive: (pid: number) => boolean; readonly commandLine: (pid: number) => string | undefined }
): boolean =>
  !probe.alive(record.ownerPid) && probe.alive(record.pid) && (probe.commandLine(record.pid) ?? "").includes(record.marker)

/** True once `pid` is gone, false when it is still there after `timeoutMs`. */
export const waitUntilGone = (pid: number, timeoutMs: number): Effect.Effect<boolean> =>
  Effect.sync(() => isProcessAlive(pid)).pipe(
    Effect.repeat({ while: (alive) => alive, schedule: Schedule.spaced(Duration.millis(50)) }),
    Effect.timeoutOption(Duration.millis(timeoutMs)),
    Effect.map(Option.isSome)
  )

/**
 * When `path` names a stale child (see `isStale`), stops it (SIGTERM, SIGKILL after `graceMs`)
 * and returns its pid; removes a pid file whose owner is gone either way.
 */
export const stopStaleChild = (path: string, graceMs = 2_000): Effect.Effect<Option.Option<number>> =>
  Effect.gen(function* () {
    const record = readPidFile(path)
    if (Option.isNone(record)) return Option.none()
    const { pid, ownerPid } = record.value
    // A live owner (this process included) manages its child itself.
    if (isProcessAlive(ownerPid)) return Option.none()
    const stale = isStale(record.value, { alive: isProcessAlive, commandLine: commandLineOf })
    if (stale) {
      yield* Effect.sync(() => signal(pid, "SIGTERM"))
      const gone = yield* waitUntilGone(pid, graceMs)
      if (!gone) {
        yield* Effect.sync(() => signal(pid, "SIGKILL"))
        yield* waitUntilGone(pid, 1_000)
      }
    }
    yield* Effect.sync(() => rmSync(path, { force: true }))
    return stale ? Option.some(pid) : Option.none()
  })

/** `stopStaleChild` for every `*.pid` file in `dir` whose name starts with `prefix`. */
export const stopStaleChildren = (dir: string, prefix: string): Effect.Effect<ReadonlyArray<number>> =>
  Effect.gen(function* () {
    let names: ReadonlyArray<string>
    try {
      names = readdirSync(dir).filter((n) => n.startsWith(prefix) && n.endsWith(".pid"))
    } catch {
      return []
    }
    const stopped: Array<number> = []
    for (const name of names) {
      const pid = yield* stopStaleChild(join(dir, name))
      if (Option.isSome(pid)) stopped.push(pid.value)
    }
    return stopped
  })

const signal = (pid: number, sig: NodeJS.Signals) => {
  try {
    process.kill(pid, sig)
  } catch {
    // gone already
  }
}
