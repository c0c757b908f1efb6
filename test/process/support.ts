import { type ChildProcess, spawn } from "node:child_process"

export interface Spawned {
  readonly process: ChildProcess
  readonly output: () => string
  readonly waitFor: (pattern: RegExp, timeoutMs?: number) => Promise<void>
  readonly exited: Promise<number | string>
}

/** A child whose stdout+stderr the test can wait on. */
export const spawnProcess = (
  command: string,
  args: ReadonlyArray<string>,
  options: { readonly cwd?: string; readonly env?: Record<string, string> }
): Spawned => {
  const child = spawn(command, args, {
    ...(options.cwd === undefined ? {} : { cwd: options.cwd }),
    env: { ...process.env, ...options.env },
    stdio: ["ignore", "pipe", "pipe"]
  })
  let output = ""
  child.stdout.on("data", (c: Buffer) => (output += c.toString("utf8")))
  child.stderr.on("data", (c: Buffer) => (output += c.toString("utf8")))
  const exited = new Promise<number | string>((resolve) => child.once("exit", (code, signal) => resolve(code ?? signal ?? "?")))
  const waitFor = (pattern: RegExp, timeoutMs = 20_000) =>
    waitForCondition(() => pattern.test(output), timeoutMs).catch(() => {
      throw new Error(`no output matching ${String(pattern)} within ${timeoutMs} ms:\n${output}`)
    })
  return { process: child, output: () => output, waitFor, exited }
}

const sleep = (ms: number) => new Promise<void>((resolve) => setTimeout(resolve, ms))

const waitForCondition = async (check: () => boolean | Promise<boolean>, timeoutMs: number, everyMs = 20) => {
  const start = Date.now()
  while (!(await check())) {
    if (Date.now() - start > timeoutMs) throw new Error(`condition not met within ${timeoutMs} ms`)
    await sleep(everyMs)
  }
}

/** Polls `check` until true; throws after `timeoutMs`. */
export const waitFor = waitForCondition
