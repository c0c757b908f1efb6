import { describe, expect, it } from "vitest"
import { join } from "node:path"
import { findExecutable, GUARD_NAME, guardedCommand, SHELL } from "../../src/process/orphan-guard.js"
import { commandLineOf, isProcessAlive } from "../../src/process/pid-file.js"
import { spawnProcess, waitFor } from "./support.js"

const root = join(import.meta.dirname, "..", "..")
const sleepBinary = findExecutable("sleep") ?? "/bin/sleep"

/** A parent process running `program args…` under the guard; resolves with both pids. */
const startParent = async (program: string, args: ReadonlyArray<string>, env: Record<string, string> = {}) => {
  const parent = spawnProcess(process.execPath, ["--import", "tsx", "test/support/guarded-parent.ts", program, ...args], {
    cwd: root,
    env
  })
  await parent.waitFor(/child \d+/)
  const childPid = Number(/child (\d+)/.exec(parent.output())?.[1])
  return { parent, childPid }
}

describe("orphan guard", () => {
  it("wraps a program so that its pid is the program's and the shell is only the launcher", async () => {
    const guarded = guardedCommand("/usr/sbin/nats-server", ["-p", "1"], { graceMs: 5_000 })
    expect(guarded.command).toBe(SHELL)
    expect(guarded.args.slice(2)).toEqual([GUARD_NAME, "50", "/usr/sbin/nats-server", "-p", "1"])
    const { parent, childPid } = await startParent(sleepBinary, ["300"])
    try {
      await waitFor(() => (commandLineOf(childPid) ?? "").startsWith(`${sleepBinary} 300`), 2_000)
      expect(commandLineOf(childPid)).toBe(`${sleepBinary} 300`)
    } finally {
      parent.process.kill("SIGKILL")
    }
  })

  it("a SIGKILLed parent's child is gone within 2 s", async () => {
    const { parent, childPid } = await startParent(sleepBinary, ["300"])
    expect(isProcessAlive(childPid)).toBe(true)
    const killedAt = Date.now()
    parent.process.kill("SIGKILL")
    await waitFor(() => !isProcessAlive(childPid), 2_000)
    console.log(`orphan guard: child ${childPid} gone ${Date.now() - killedAt} ms after its parent's SIGKILL`)
  })

  it("a child that ignores SIGTERM is SIGKILLed after the grace period", async () => {
    const script = "trap '' TERM; while :; do sleep 0.05; done"
    const { parent, childPid } = await startParent(SHELL, ["-c", script], { GRACE_MS: "300" })
    parent.process.kill("SIGKILL")
    const killedAt = Date.now()
    await waitFor(() => !isProcessAlive(childPid), 3_000)
    expect(Date.now() - killedAt).toBeGreaterThanOrEqual(250)
  })

  it("leaves no watcher behind when the program exits by itself", async () => {
    const { parent, childPid } = await startParent(sleepBinary, ["1"])
    try {
      const guards = () =>
        spawnProcess("pgrep", ["-f", `${GUARD_NAME} ${childPid} `], {}).exited.then((code) => code === 0)
      expect(await guards()).toBe(true)
      await parent.waitFor(/child exited 0/)
      await waitFor(async () => !(await guards()), 2_000)
    } finally {
      parent.process.kill("SIGKILL")
    }
  })

  it("findExecutable resolves names on PATH and checks paths", () => {
    expect(findExecutable("sh", { PATH: "/nonexistent:/bin:/usr/bin" })).toMatch(/\/sh$/)
    expect(findExecutable("no-such-program-here", { PATH: "/bin" })).toBeUndefined()
    expect(findExecutable("/nonexistent/python3")).toBeUndefined()
    expect(findExecutable("nats-server", { PATH: "" }, ["/usr/sbin", "/usr/local/sbin"])).toMatch(/nats-server$/)
  })
})
