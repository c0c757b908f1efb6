/**
 * One run of the benchmark: the child processes and temporary folders it made, and whether it was
 * interrupted. The driver (main.ts) owns one and hands it to the scenario; its signal handlers and
 * its `finally` stop what the run started, and nothing else does.
 */
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from "node:fs"
import { tmpdir } from "node:os"
import { join } from "node:path"
import { type Child, spawnChild, stopChild } from "./child.js"

/** A scenario's progress lines, on stderr so that stdout carries only the report: `[bench] …` or `[bench:scope] …`. */
export const progress =
  (scope?: string) =>
  (line: string): void =>
    void process.stderr.write(`[bench${scope === undefined ? "" : `:${scope}`}] ${line}\n`)

export class BenchRun {
  private readonly children: Array<Child> = []
  private readonly dirs: Array<string> = []
  private stopped = false

  constructor(
    /** The repository's root: the children's working directory. */
    readonly root: string
  ) {}

  /** Set by SIGINT/SIGTERM: load loops check it and end early. */
  get interrupted(): boolean {
    return this.stopped
  }

  interrupt(): void {
    this.stopped = true
  }

  /** Starts a child that this run will stop. */
  spawn(name: string, command: string, args: ReadonlyArray<string>, env: NodeJS.ProcessEnv): Child {
    const child = spawnChild(name, command, args, { cwd: this.root, env })
    this.children.push(child)
    return child
  }

  /** A fresh temporary folder, removed when the run stops. */
  tempDir(prefix: string): string {
    const dir = mkdtempSync(join(tmpdir(), prefix))
    this.dirs.push(dir)
    return dir
  }

  /** Saves `results` as bench/results/NAME.json (colons, which some file systems refuse, as dashes); the file's path. */
  saveResults(name: string, results: unknown): string {
    const dir = join(this.root, "bench", "results")
    mkdirSync(dir, { recursive: true })
    const file = join(dir, `${name.replace(/:/g, "-")}.json`)
    writeFileSync(file, `${JSON.stringify(results, null, 2)}\n`)
    return file
  }

  /** Stops every child still running, the last started first (controller before workers before NATS); removes the folders. */
  async stop(graceMs = 8_000): Promise<void> {
    for (const child of [...this.children].reverse()) {
      if (child.isRunning()) await stopChild(child, graceMs)
    }
    this.removeDirs()
  }

  /** Last resort from a synchronous `exit` handler: SIGKILL what still runs. */
  killSync(): void {
    for (const child of this.children) {
      if (!child.isRunning()) continue
      try {
        child.process.kill("SIGKILL")
      } catch {
        // already gone
      }
    }
    this.removeDirs()
  }

  private removeDirs(): void {
    for (const dir of this.dirs.splice(0)) rmSync(dir, { recursive: true, force: true })
  }
}
