import * as Os from "node:os"
import { Schema } from "effect"
import { MAX_ID_LENGTH, WorkerId } from "../domain/ids.js"

/**
 * A stable worker id derived from a host name: the first DNS label (so `Mac-Studio-1.local` and
 * `Mac-Studio-1.lan` give the same id), lower-cased, with every character that is not a letter,
 * digit, `_` or `-` (in particular `.`, `*`, `>`, whitespace and non-ASCII letters, which a
 * `WorkerId` may not hold) replaced by `-`, runs of `-` collapsed and trimmed, cut to
 * `MAX_ID_LENGTH`. An empty result becomes `worker`. Any host name gives a valid id.
 */
export const workerIdFromHostname = (hostname: string): WorkerId => {
  const label = hostname.trim().split(".")[0] ?? ""
  const cleaned = label
    .toLowerCase()
    .replace(/[^a-z0-9_-]+/g, "-")
    .replace(/-+/g, "-")
    .replace(/^-|-$/g, "")
    .slice(0, MAX_ID_LENGTH)
    .replace(/-$/, "")
  return Schema.decodeSync(WorkerId)(cleaned.length > 0 ? cleaned : "worker")
}

/** `worker.id` from the config when set, else the id derived from this machine's host name. */
export const resolveWorkerId = (configured: string | null, hostname: string = Os.hostname()): WorkerId =>
  configured !== null ? Schema.decodeSync(WorkerId)(configured) : workerIdFromHostname(hostname)
