import { expect, it } from "@effect/vitest"
import { Effect, Layer, Option } from "effect"
import { mkdtempSync, writeFileSync } from "node:fs"
import { tmpdir } from "node:os"
import { join } from "node:path"
import { Registry } from "../../src/controller/registry.js"
import { startNatsServer } from "../../src/nats/nats-server-process.js"
import { baseUrl, controllerLayer, workerLayer } from "../support/cluster.js"
import { eventually } from "../support/eventually.js"
import { freePort } from "../support/nats-server.js"

/**
 * Issue 11.5: limits that fit each other. A body the bus cannot carry (the NATS server's
 * `max_payload`) is a 413 that says so — at the door when the body itself is over it, at dispatch
 * when the request it becomes is — never "every worker was tried".
 */

const MODEL = "limits/model"
const MAX_PAYLOAD = 8_192

const chat = (url: string, content: string) =>
  Effect.promise(() =>
    fetch(`${url}/v1/chat/completions`, {
      method: "POST",
      headers: { "content-type": "application/json" },
      body: JSON.stringify({ model: MODEL, max_tokens: 2, messages: [{ role: "user", content }] })
    }).then(async (r) => ({ status: r.status, body: (await r.json()) as { error?: { code: string; message: string } } }))
  )

it.scopedLive(
  "with a nats max_payload of 8 KiB: 6 KB works, 9 KB is a 413 at the door, a body whose bus message would pass the limit is a 413 at dispatch",
  () =>
    Effect.gen(function* () {
      const dir = mkdtempSync(join(tmpdir(), "bus-limits-"))
      const conf = join(dir, "nats.conf")
      writeFileSync(conf, `max_payload: ${MAX_PAYLOAD}\n`)
      const port = yield* Effect.promise(() => freePort())
      const server = yield* startNatsServer({ host: "127.0.0.1", port, args: ["-c", conf] })
      const context = yield* Layer.build(controllerLayer(server.url))
      yield* Layer.build(workerLayer(server.url, { id: "limits-worker", models: [MODEL] }))
      yield* eventually(Effect.flatMap(Effect.provide(Registry, context), (r) => Effect.map(r.get("limits-worker"), Option.isSome)))
      const url = yield* Effect.provide(baseUrl, context)

      expect((yield* chat(url, "x".repeat(6_000))).status).toBe(200)

      const atDoor = yield* chat(url, "x".repeat(9_000))
      expect(atDoor.status).toBe(413)
      expect(atDoor.body.error).toMatchObject({ code: "body_too_large", message: expect.stringContaining("max_payload") })

      // Under the limit as a body, over it as the bus message the request becomes (ids, fields).
      const atDispatch = yield* chat(url, "x".repeat(MAX_PAYLOAD - 90))
      expect(atDispatch.status).toBe(413)
      expect(atDispatch.body.error?.message).toMatch(/max_payload.*this request takes \d+/)
    }),
  60_000
)
