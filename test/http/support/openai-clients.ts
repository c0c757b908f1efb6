import { Effect } from "effect"
import OpenAI from "openai"
import { baseUrl } from "../../support/cluster.js"

/** A promise-returning call as an Effect (a rejection is a defect: the tests that use it expect success). */
export const promise = <A>(f: () => PromiseLike<A>) => Effect.promise(() => Promise.resolve(f()))

/** An official client of the controller's `/v1` that never retries (so counts are exact). */
export const openaiClient = Effect.map(baseUrl, (url) => new OpenAI({ baseURL: `${url}/v1`, apiKey: "unused", maxRetries: 0 }))

/**
 * An official client of the controller's `/v1` with the SDK's own retries on (2) that counts the
 * HTTP requests it sends: a test that expects no retry checks `attempts()` is 1.
 */
export const attemptCountingClient = Effect.map(baseUrl, (url) => {
  let attempts = 0
  const openai = new OpenAI({
    baseURL: `${url}/v1`,
    apiKey: "unused",
    maxRetries: 2,
    fetch: (input, init) => {
      attempts++
      return fetch(input, init)
    }
  })
  return { openai, attempts: () => attempts }
})
