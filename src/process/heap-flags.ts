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
 */
setFlagsFromString("--no-allocation-site-pretenuring")
