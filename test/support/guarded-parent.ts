/**
 * A parent process for the orphan-guard tests: starts `PROGRAM ARGS…` under the orphan guard,
 * prints `child PID` and waits to be killed. Run as `node --import tsx test/support/guarded-parent.ts PROGRAM ARGS…`.
 */
import { spawn } from "node:child_process"
import { guardedCommand } from "../../src/process/orphan-guard.js"

const [program, ...args] = process.argv.slice(2)
if (program === undefined) throw new Error("usage: guarded-parent PROGRAM [ARGS…]")
const guarded = guardedCommand(program, args, { graceMs: Number(process.env["GRACE_MS"] ?? "500") })
const child = spawn(guarded.command, guarded.args, {
  env: { ...process.env, ...guarded.env },
  stdio: ["pipe", "inherit", "inherit"],
  detached: true
})
child.on("spawn", () => process.stdout.write(`child ${child.pid}\n`))
child.on("exit", (code, signal) => process.stdout.write(`child exited ${code ?? signal}\n`))
setInterval(() => undefined, 60_000)
