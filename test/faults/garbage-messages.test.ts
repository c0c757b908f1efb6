import { connect, type NatsConnection } from "nats"
import { afterEach, expect, it } from "vitest"
import { chat, type ClientResult, getJson, hasExited, request, waitUntil } from "../support/fault-cluster.js"
// Seeded: the same garbage on every run.
import { prng } from "../../src/worker/engines/synthetic-engine.js"
import { startOnline, useFaultHarness } from "../support/fault-harness.js"

const MESSAGES = 10_000

const harness = useFaultHarness()
let raw: NatsConnection | undefined
afterEach(async () => {
  await raw?.close()
})

const registration = {
  workerId: "w1",
  hostname: "evil",
  ip: "10.0.0.66",
  port: 0,
  hardware: { platform: "darwin", arch: "arm64", cpuCores: 8, gpuMemoryGB: 64, totalMemoryGB: 64 },
  capabilities: { maxConcurrent: 99, supportsStreaming: true, engine: "synthetic" },
  skills: { availableModels: ["evil/model"], modelPaths: { "evil/model": "/evil" }, modelSizes: {}, totalModelSize: 0, lastScanned: 1 },
  timestamp: 1
}
const heartbeat = { workerId: "w1", timestamp: 1, metrics: { cpuUsage: 0, memoryUsage: 0, requests: { active: 0, total: 0, succeeded: 0, failed: 0 } } }
const inference = {
  requestId: "req-evil",
  model: "synthetic/demo",
  messages: [{ role: "user", content: "hi" }],
  maxTokens: 8,
  stream: true
}

/**
 * Messages that look almost right but each fail the subject's schema in one place. None of them may
 * change anything (a *valid* deregistration, say, would rightly take a worker offline).
 */
const invalidBySubject: Record<string, ReadonlyArray<unknown>> = {
  register: [
    { ...registration, workerId: 42 },
    { ...registration, workerId: "" },
    { ...registration, workerId: "w1.>" },
    { ...registration, workerId: "w 1" },
    { ...registration, hardware: null },
    { ...registration, hardware: { ...registration.hardware, cpuCores: -1 } },
    { ...registration, capabilities: { ...registration.capabilities, maxConcurrent: 1.5 } },
    { ...registration, skills: "all of them" },
    { ...registration, skills: { ...registration.skills, availableModels: [1, 2] } },
    { ...registration, timestamp: -1 },
    { ...registration, timestamp: "now" },
    { ...registration, port: Number.MAX_SAFE_INTEGER + 0.5 },
    { workerId: "w9" }
  ],
  heartbeat: [
    { ...heartbeat, metrics: null },
    { ...heartbeat, metrics: { ...heartbeat.metrics, requests: { active: -1, total: 0, succeeded: 0, failed: 0 } } },
    { ...heartbeat, metrics: { ...heartbeat.metrics, cpuUsage: "high" } },
    { ...heartbeat, workerId: "" },
    { ...heartbeat, timestamp: -5 },
    { workerId: "w1" }
  ],
  deregister: [{ workerId: "w1" }, { workerId: "w1", timestamp: "yesterday" }, { workerId: "w1.*", timestamp: 1 }, { workerId: 1, timestamp: 1 }, { timestamp: 1 }],
  announce: [{}, { controllerId: 5, timestamp: 1 }, { controllerId: "evil" }, { controllerId: "evil", timestamp: -1 }],
  inference: [
    { ...inference, maxTokens: 0 },
    { ...inference, maxTokens: "many" },
    { ...inference, model: "" },
    { ...inference, requestId: "req.evil" },
    { ...inference, requestId: "" },
    { ...inference, messages: [{ role: "robot", content: "hi" }] },
    { ...inference, stream: "yes" },
    { requestId: "req-evil" }
  ],
  cancel: [{}, { requestId: "" }, { requestId: 5 }, { requestId: "a.b" }, { requestId: ">" }],
  response: [
    { type: "token", requestId: "x", index: -1, token: "evil" },
    { type: "token", requestId: "x", index: 0 },
    { type: "token", requestId: "x", index: 0.5, token: "evil" },
    { type: "done", requestId: "x", finishReason: "bored", usage: { promptTokens: 1, completionTokens: 1 }, latencyMs: 1 },
    { type: "done", requestId: "x" },
    { type: "error", requestId: "x", code: 5 },
    { type: "surprise", requestId: "x" },
    { type: "token", requestId: "", index: 0, token: "evil" }
  ]
}

const encoder = new TextEncoder()

/** One garbage payload for a subject kind: random bytes, broken text, truncated or schema-invalid JSON, odd JSON values, huge or deep bodies. */
const garbage = (random: () => number, kind: string, n: number): Uint8Array => {
  const invalid = invalidBySubject[kind] ?? [{}]
  const pick = <A>(items: ReadonlyArray<A>): A => items[Math.floor(random() * items.length)] as A
  switch (n % 8) {
    case 0: {
      const bytes = new Uint8Array(Math.floor(random() * 512))
      for (let i = 0; i < bytes.length; i++) bytes[i] = Math.floor(random() * 256)
      return bytes
    }
    case 1:
      return encoder.encode(pick(["", "{", "}{", "[", "nul", "\u0000", "undefined", "NaN", "{'a':1}", '{"a":', "\uFFFD\uD800", "<xml/>"]))
    case 2: {
      const json = JSON.stringify(pick(invalid))
      return encoder.encode(json.slice(0, Math.floor(random() * json.length)))
    }
    case 3:
    case 4:
      return encoder.encode(JSON.stringify(pick(invalid)))
    case 5:
      return encoder.encode(pick(["null", "0", "-1", "1e999", '"a string"', "[]", "true", "{}", "[{}]", '{"__proto__":{"polluted":true}}']))
    case 6:
      // Every 1,000th message is big (256 KiB) or deeply nested; the rest are small invalid objects.
      if (n % 1000 === 6) return encoder.encode(JSON.stringify({ workerId: "x".repeat(256 * 1024) }))
      if (n % 1000 === 14) return encoder.encode("[".repeat(50_000) + "]".repeat(50_000))
      return encoder.encode(JSON.stringify({ ...(pick(invalid) as object), nested: { deeper: [1, { x: null }] } }))
    default:
      return encoder.encode(JSON.stringify(pick(invalid)).replace(/"/g, pick(["'", "", '\\"'])))
  }
}

/** The registry without what changes by itself (heartbeat times and metrics). */
const stable = (list: unknown) =>
  (list as ReadonlyArray<Record<string, unknown>>).map(({ lastHeartbeat: _t, metrics: _m, ...rest }) => rest)

it("10,000 garbage, truncated and schema-invalid messages on every subject: no crash, registry unchanged, requests still served", async () => {
  const c = harness.cluster()
  const config = c.config({
    // The contract's default offline timeout: digesting 10,000 bad messages (each logged) keeps every
    // node busy for seconds on 2 cores, and a worker must not be declared dead for that.
    discovery: { heartbeat_interval_ms: 500, offline_timeout_ms: 15_000, health_check_interval_ms: 1_000 },
    worker: { engine: { synthetic: { tokens_per_second: 40, first_token_ms: 10 } } }
  })
  const { controller, workers: [w1, w2] } = await startOnline(c, config, ["w1", "w2"])
  const url = controller.url
  const before = stable((await getJson(`${url}/api/cluster/workers`)).body)

  raw = await connect({ servers: harness.nats().url, name: "garbage" })
  const conn = raw
  // Learn the response subjects of requests in flight, to aim garbage at them too.
  const inFlight = new Set<string>()
  const spy = conn.subscribe("response.>", { callback: (_err, msg) => void inFlight.add(msg.subject) })
  await conn.flush()

  // Two streams that run through the flood (~2.5 s of tokens each).
  const prompt = (i: number) => chat(`through the flood ${i}`, 100)
  const streams: Array<Promise<ClientResult>> = [0, 1].map((i) =>
    request(`${url}/v1/chat/completions`, prompt(i), { signal: AbortSignal.timeout(30_000) })
  )
  await waitUntil(() => inFlight.size >= 2, 10_000)
  spy.unsubscribe()

  const random = prng(6)
  const subjects: ReadonlyArray<readonly [string, string, boolean]> = [
    ["worker.register", "register", false],
    ["worker.heartbeat", "heartbeat", false],
    ["worker.deregister", "deregister", false],
    ["controller.announce", "announce", false],
    ["worker.w1.inference", "inference", false],
    ["worker.w1.inference", "inference", true],
    ["worker.w2.inference", "inference", true],
    ["worker.w2.inference", "inference", false],
    ["worker.ghost.inference", "inference", true],
    ["worker.w1.cancel", "cancel", false],
    ["worker.w2.cancel", "cancel", false],
    ...[...inFlight].map((s) => [s, "response", false] as const),
    ["response.req-nobody-asked", "response", false]
  ]
  const counts = new Map<string, number>()
  // Replies to the garbage sent with a reply subject: the workers' refusals (and the server's
  // no-responders answers for worker.ghost).
  let refusals = 0
  let otherReplies = 0
  const inbox = conn.subscribe("_INBOX.garbage.>", {
    callback: (_err, msg) => {
      let reply: unknown
      try {
        reply = msg.data.length === 0 ? undefined : JSON.parse(new TextDecoder().decode(msg.data))
      } catch {
        reply = undefined
      }
      if (typeof reply === "object" && reply !== null && "accepted" in reply && reply.accepted === false) refusals++
      else otherReplies++
    }
  })
  const floodStart = Date.now()
  for (let n = 0; n < MESSAGES; n++) {
    const [subject, kind, withReply] = subjects[n % subjects.length] as readonly [string, string, boolean]
    counts.set(subject, (counts.get(subject) ?? 0) + 1)
    conn.publish(subject, garbage(random, kind, Math.floor(n / subjects.length)), withReply ? { reply: `_INBOX.garbage.${n}` } : {})
    if (n % 500 === 499) await conn.flush()
  }
  await conn.flush()
  const floodMs = Date.now() - floodStart
  // Every node has chewed through its backlog when its log stops growing.
  const quiet = async () => {
    let last = ""
    await waitUntil(
      () => {
        const now = [controller.cli, w1, w2].map((p) => p.output().length).join(",")
        const same = now === last
        last = now
        return same
      },
      60_000,
      1_000
    )
  }
  await quiet()
  const digestedMs = Date.now() - floodStart
  inbox.unsubscribe()

  const [s0, s1] = await Promise.all(streams)
  const whole = await Promise.all(
    [0, 1].map((i) => request(`${url}/v1/chat/completions`, { ...prompt(i), stream: false }, { signal: AbortSignal.timeout(10_000) }))
  )
  const after = stable((await getJson(`${url}/api/cluster/workers`)).body)
  const fresh = await Promise.all(
    [0, 1, 2, 3].map((i) => request(`${url}/v1/chat/completions`, chat(`after the flood ${i}`, 8, i % 2 === 0), { signal: AbortSignal.timeout(10_000) }))
  )
  const logged = controller.cli.output().match(/dropped a message on/g)?.length ?? 0
  console.log(
    `garbage: ${MESSAGES} messages on ${counts.size} subjects in ${floodMs} ms (${[...inFlight].length} in-flight response subjects), ` +
      `digested by every node ${digestedMs} ms after the first; ${refusals} invalid_request refusals (+${otherReplies} other replies) ` +
      `for requests with a reply subject, ${logged} drops logged by the controller; ` +
      `processes alive ${c.alive().length}/3`
  )

  expect(hasExited(controller.cli) || hasExited(w1) || hasExited(w2)).toBe(false)
  // nats.js prints "reader closed" when a subscription callback throws: that connection then reads
  // nothing more, ever (deaf but "connected"), which no later assertion would explain as clearly.
  for (const p of [controller.cli, w1, w2]) expect(p.output()).not.toMatch(/reader closed/)
  expect(after).toEqual(before)
  // The streams that ran through the flood are whole and equal to the same requests non-streamed.
  for (const [i, s] of [s0, s1].entries()) {
    expect(s).toMatchObject({ status: 200, done: true, error: undefined, afterEnd: 0, thrown: undefined })
    expect(s?.text).toBe(whole[i]?.text)
  }
  for (const r of fresh) expect(r).toMatchObject({ status: 200, done: true, error: undefined })
  expect(controller.cli.output()).toMatch(/dropped a message on worker\.register/)
  expect(controller.cli.output()).toMatch(/dropped a message on worker\.heartbeat/)
  expect(controller.cli.output()).toMatch(/dropped a message on worker\.deregister/)
  expect(w1.output()).toMatch(/invalid inference request on worker\.w1\.inference/)
  expect(refusals).toBeGreaterThan(0)
})
