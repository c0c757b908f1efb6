import { setFlagsFromString } from "node:v8"

/**
 * V8 heap settings for a request-serving process. Imported first by `main.ts`, so that they apply
 * before the first request (V8 reads these flags as it goes).
 *
 * `--no-allocation-site-pretenuring`: V8 watches, per allocation site, how many of its objects
 * survive a young-generation collection, and once most do it allocates that site's objects straight
 * in the old generation ("pretenuring"). Under load a request lives across several collections, so
 * the sites of the request path (its HTTP objects, fibers, relay, parsed body) get pretenured — and
 * stay so when the load falls: from then on every request's objects went to the old space and
 * waited there for a mark-compact. Measured on the controller at concurrency 1: 18.8 KB promoted
 * per streamed request with pretenuring, 0.5 KB without (`npm run bench -- --scenario tail` shows
 * what it does to the time to first token). A request's objects die young; the young generation is
 * where they are cheapest to collect.
 *
 * `--heap-growing-percent=100`: after each full collection V8 lets the old generation grow to
 * `factor × live` before the next one, with a factor it picks between 1.1 and 4 — near 4 for a
 * small heap that it collects fast, which is the controller's case. At high concurrency requests
 * outlive several young collections and are promoted, so the old space filled with dead requests up
 * to four times the live heap: 260 MB of old space over 50 MB live at c=1,024. A factor of 2 (Go's
 * `GOGC=100`): with 2,000 streams started at once the controller peaked at 211–271 MiB instead of
 * 297–359 in `npm run bench`, for CPU within the machine's noise (docs/operations.md, "Memory").
 * Given to node (its flags or `NODE_OPTIONS`), the operator's value wins:
 * `--heap-growing-percent=0` is V8's own choice.
 */
export const heapFlags = (execArgv: ReadonlyArray<string>, nodeOptions: string | undefined): ReadonlyArray<string> => {
  const given = [...execArgv, ...(nodeOptions ?? "").split(/\s+/)].map((arg) => arg.replace(/_/g, "-"))
  const growing = given.some((arg) => arg.startsWith("--heap-growing-percent"))
  return ["--no-allocation-site-pretenuring", ...(growing ? [] : ["--heap-growing-percent=100"])]
}

for (const flag of heapFlags(process.execArgv, process.env["NODE_OPTIONS"])) setFlagsFromString(flag)
