import { describe, expect, it } from "vitest"
import { spawn, spawnSync } from "node:child_process"
import { existsSync, mkdtempSync, statSync, writeFileSync } from "node:fs"
import { tmpdir } from "node:os"
import { join } from "node:path"
import { Effect, Option } from "effect"
import {
  commandLineOf,
  isProcessAlive,
  isStale,
  type PidRecord,
  readPidFile,
  removePidFile,
  stopStaleChild,
  stopStaleChildren,
  writePidFile
} from "../../src/process/pid-file.js"

const dir = () => mkdtempSync(join(tmpdir(), "pid-file-"))

/** The pid of a process that has exited (and been reaped). */
const deadPid = (): number => {
  const done = spawnSync("true")
  return done.pid ?? 999_999
}

/** A detached `sleep` that nobody guards: what a previous run's child looks like to a new start. */
const leftover = (seconds = 300, trapTerm = false) => {
  const child = trapTerm
    ? spawn("sh", ["-c", `trap '' TERM; sleep ${seconds} & wait; sleep ${seconds}`], { detached: true, stdio: "ignore" })
    : spawn("sleep", [String(seconds)], { detached: true, stdio: "ignore" })
  child.unref()
  return child.pid ?? -1
}

const record = (over: Partial<PidRecord>): PidRecord => ({ pid: 1, ownerPid: 1, marker: "sleep", startedAt: 0, ...over })

describe("pid files", () => {
  it("are written 0600 in a 0700 folder, read back, and removed only while they name the same pid", async () => {
    const path = join(dir(), "state", "x.pid")
    const r = record({ pid: 42, ownerPid: process.pid })
    await Effect.runPromise(writePidFile(path, r))
    expect(statSync(path).mode & 0o777).toBe(0o600)
    expect(statSync(join(path, "..")).mode & 0o777).toBe(0o700)
    expect(readPidFile(path)).toEqual(Option.some(r))
    await Effect.runPromise(removePidFile(path, 43))
    expect(existsSync(path)).toBe(true)
    await Effect.runPromise(removePidFile(path, 42))
    expect(existsSync(path)).toBe(false)
  })

  it("ignore garbage: a file that is not a record reads as none", () => {
    const path = join(dir(), "bad.pid")
    writeFileSync(path, "12345\n")
    expect(readPidFile(path)).toEqual(Option.none())
    expect(readPidFile(join(dir(), "absent.pid"))).toEqual(Option.none())
  })

  it("isStale: owner gone, child running, and its command line still shows the marker", () => {
    const probe = (alive: ReadonlyArray<number>, cmd: string | undefined) => ({
      alive: (pid: number) => alive.includes(pid),
      commandLine: () => cmd
    })
    const r = record({ pid: 10, ownerPid: 20, marker: "nats-server" })
    expect(isStale(r, probe([10], "/usr/sbin/nats-server -p 4222"))).toBe(true)
    expect(isStale(r, probe([10, 20], "/usr/sbin/nats-server -p 4222"))).toBe(false)
    expect(isStale(r, probe([], "/usr/sbin/nats-server"))).toBe(false)
    // The pid was reused by something else.
    expect(isStale(r, probe([10], "/usr/bin/vim notes.txt"))).toBe(false)
  })

  it("a start stops the child a dead owner left running, and removes the file", async () => {
    const pid = leftover()
    const path = join(dir(), "nats-server-1.pid")
    await Effect.runPromise(writePidFile(path, record({ pid, ownerPid: deadPid(), marker: "sleep" })))
    expect(commandLineOf(pid)).toContain("sleep")
    expect(await Effect.runPromise(stopStaleChild(path))).toEqual(Option.some(pid))
    expect(isProcessAlive(pid)).toBe(false)
    expect(existsSync(path)).toBe(false)
  })

  it("leaves alone a child whose owner still runs, and a pid now used by another program", async () => {
    const pid = leftover()
    try {
      const d = dir()
      await Effect.runPromise(writePidFile(join(d, "mlx-lm-1.pid"), record({ pid, ownerPid: process.pid })))
      await Effect.runPromise(writePidFile(join(d, "mlx-lm-2.pid"), record({ pid, ownerPid: deadPid(), marker: "python3" })))
      await Effect.runPromise(writePidFile(join(d, "other-3.pid"), record({ pid, ownerPid: deadPid() })))
      expect(await Effect.runPromise(stopStaleChildren(d, "mlx-lm-"))).toEqual([])
      expect(isProcessAlive(pid)).toBe(true)
      // The dead owner's file is cleaned up; the live owner's and the other prefix's stay.
      expect([existsSync(join(d, "mlx-lm-1.pid")), existsSync(join(d, "mlx-lm-2.pid")), existsSync(join(d, "other-3.pid"))]).toEqual([
        true,
        false,
        true
      ])
    } finally {
      process.kill(pid, "SIGKILL")
    }
  })

  it("a stale child that ignores SIGTERM is SIGKILLed after the grace period", async () => {
    const pid = leftover(300, true)
    const path = join(dir(), "x.pid")
    await Effect.runPromise(writePidFile(path, record({ pid, ownerPid: deadPid(), marker: "trap" })))
    const started = Date.now()
    expect(await Effect.runPromise(stopStaleChild(path, 300))).toEqual(Option.some(pid))
    expect(Date.now() - started).toBeGreaterThanOrEqual(250)
    expect(isProcessAlive(pid)).toBe(false)
    // Its own `sleep` child was not part of the record: end it with the group.
    process.kill(-pid, "SIGKILL")
  })

  it("isProcessAlive: this process yes, a reaped one no", () => {
    expect(isProcessAlive(process.pid)).toBe(true)
    expect(isProcessAlive(deadPid())).toBe(false)
  })
})
