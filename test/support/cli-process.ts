import { type ChildProcess, spawn } from "node:child_process"
import { join } from "node:path"

const root = join(import.meta.dirname, "..", "..")

/** The real CLI (`tsx src/main.ts ARGS`, or a build's `node dist/main.js ARGS`) as a child process whose output the test can wait on. */
export interface CliProcess {
  readonly process: ChildProcess
  readonly output: () => string
  /** Resolves when a line matching `pattern` has been printed (stdout or stderr). */
  readonly waitFor: (pattern: RegExp, timeoutMs?: number) => Promise<void>
  /** Resolves with the exit code (or the signal name) when the process ends. */
  readonly exited: Promise<number | string>
}

/** How node starts the program: src/main.ts under tsx's loader (the default), or a build's (`runBuildArgs`). */
export const TSX_ENTRY: ReadonlyArray<string> = ["--import", "tsx", "src/main.ts"]

export const spawnCli = (args: ReadonlyArray<string>, env: Record<string, string> = {}, entry = TSX_ENTRY): CliProcess => {
  // One process (node, with tsx's loader or on a build), not the tsx wrapper: a signal must reach the real program.
  const child = spawn(process.execPath, [...entry, ...args], {
    cwd: root,
    env: { ...process.env, ...env },
    stdio: ["ignore", "pipe", "pipe"]
  })
  let output = ""
  const waiters = new Set<() => void>()
  const onData = (chunk: Buffer) => {
    output += chunk.toString("utf8")
    for (const check of waiters) check()
  }
  child.stdout.on("data", onData)
  child.stderr.on("data", onData)
  const exited = new Promise<number | string>((resolve) =>
    child.once("exit", (code, signal) => resolve(code ?? signal ?? "unknown"))
  )
  const waitFor = (pattern: RegExp, timeoutMs = 20_000) =>
    new Promise<void>((resolve, reject) => {
      const check = () => {
        if (pattern.test(output)) {
          waiters.delete(check)
          clearTimeout(timer)
          resolve()
        }
      }
      const timer = setTimeout(() => {
        waiters.delete(check)
        reject(new Error(`no line matching ${String(pattern)} within ${timeoutMs} ms; output:\n${output}`))
      }, timeoutMs)
      waiters.add(check)
      void exited.then(() => {
        if (waiters.has(check)) {
          waiters.delete(check)
          clearTimeout(timer)
          reject(new Error(`process exited before ${String(pattern)}; output:\n${output}`))
        }
      })
      check()
    })
  return { process: child, output: () => output, waitFor, exited }
}

/** Stops a CLI process (SIGKILL after `graceMs` if SIGTERM is not enough) and waits for it. */
export const stopCli = async (cli: CliProcess, graceMs = 10_000) => {
  if (cli.process.exitCode !== null || cli.process.signalCode !== null) return
  cli.process.kill("SIGTERM")
  const timer = setTimeout(() => cli.process.kill("SIGKILL"), graceMs)
  await cli.exited
  clearTimeout(timer)
}
