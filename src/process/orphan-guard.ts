import { accessSync, constants } from "node:fs"
import { delimiter, join } from "node:path"

/**
 * Children that die with their parent, however the parent dies (SIGKILL included), on Linux and
 * macOS alike, without prctl: the child is started through `sh`, which first forks a small
 * watcher and then `exec`s the real program (so the child's pid *is* the program's pid). The
 * watcher reads its stdin, a pipe whose other end only the parent holds, until EOF; the kernel
 * closes that end when the parent exits for any reason, and the watcher then sends the program
 * SIGTERM, and SIGKILL if it is still there after the grace period.
 *
 * - The watcher lives in the program's process group, so stopping the group (what a graceful stop
 *   does) stops it too; when the program exits by itself, Node closes the pipe and the watcher
 *   finds nothing left to kill.
 * - The watcher is its own `sh -c` with a short command line (`mlx-cluster-orphan-guard PID`), so
 *   `ps`/`pgrep` show the program's command line only once.
 * - The child must be spawned with `stdin: "pipe"` and never have that pipe closed by the parent
 *   while it should run. The program itself gets /dev/null as stdin.
 */

/** The watcher: `$1` the pid to stop, `$2` the grace in tenths of a second. */
const WATCHER =
  'while read -r _; do :; done; kill -TERM "$1" 2>/dev/null || exit 0; i=0; ' +
  'while kill -0 "$1" 2>/dev/null; do if [ "$i" -ge "$2" ]; then kill -KILL "$1" 2>/dev/null; exit 0; fi; ' +
  "sleep 0.1; i=$((i+1)); done"

/** The name the watcher shows in `ps`. */
export const GUARD_NAME = "mlx-cluster-orphan-guard"

/**
 * The launcher: `$1` the grace in tenths, the rest the program and its arguments. The watcher gets
 * the pipe as its stdin (an explicit `<&3`: a background command's stdin is /dev/null otherwise)
 * and the program gets /dev/null, so that only the watcher holds the pipe.
 */
const LAUNCHER = `g=$1; shift; exec 3<&0; sh -c 'eval "$WATCHER"' ${GUARD_NAME} "$$" "$g" <&3 & exec "$@" </dev/null 3<&-`

export const SHELL = "/bin/sh"

export interface GuardedCommand {
  readonly command: string
  readonly args: ReadonlyArray<string>
  /** Extra environment the launcher needs (the watcher's script). */
  readonly env: Readonly<Record<string, string>>
}

/**
 * `program args…` wrapped so that it dies with this process (see the module comment). Spawn
 * `command` with `args` and `env` added to the environment, `stdin: "pipe"`, in a process group of
 * its own (`detached: true`).
 */
export const guardedCommand = (
  program: string,
  args: ReadonlyArray<string>,
  options: { readonly graceMs: number }
): GuardedCommand => ({
  command: SHELL,
  args: ["-c", LAUNCHER, GUARD_NAME, String(Math.max(1, Math.ceil(options.graceMs / 100))), program, ...args],
  env: { WATCHER }
})

const isExecutable = (path: string): boolean => {
  try {
    accessSync(path, constants.X_OK)
    return true
  } catch {
    return false
  }
}

/**
 * The path of an executable: `name` itself when it holds a `/`, else the first match on PATH
 * (then `extraDirs`). The launcher's `exec` of a missing program fails only inside the child, so
 * callers check first and give a clear error.
 */
export const findExecutable = (
  name: string,
  env: NodeJS.ProcessEnv = process.env,
  extraDirs: ReadonlyArray<string> = []
): string | undefined => {
  if (name.includes("/")) return isExecutable(name) ? name : undefined
  const dirs = [...(env.PATH ?? "").split(delimiter).filter((d) => d !== ""), ...extraDirs]
  for (const dir of dirs) {
    const candidate = join(dir, name)
    if (isExecutable(candidate)) return candidate
  }
  return undefined
}
