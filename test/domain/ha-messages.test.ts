import { describe, expect, it } from "@effect/vitest"
import { Either, Schema } from "effect"
import { InferenceReply, InferenceRequest } from "../../src/domain/inference.js"
import { Subjects } from "../../src/domain/subjects.js"
import { ControllerProbe, ControllerProbeReply, MAX_CONTROLLERS_PER_HEARTBEAT, WorkerHeartbeat } from "../../src/domain/worker.js"

/** The wire additions of issue 14 (several controllers): all optional, all bounded. */

const decodes = <A, I>(schema: Schema.Schema<A, I>, input: unknown): boolean => Either.isRight(Schema.decodeUnknownEither(schema)(input))

const request = { requestId: "req-1", model: "m", stream: true }
const heartbeat = (metrics: Record<string, unknown>) => ({
  workerId: "w1",
  timestamp: 1,
  metrics: { cpuUsage: 0.1, memoryUsage: 0.2, requests: { active: 1, total: 1, succeeded: 0, failed: 0 }, ...metrics }
})

describe("issue 14 wire additions", () => {
  it("InferenceRequest.controllerId: optional, a subject token", () => {
    expect(decodes(InferenceRequest, request)).toBe(true)
    expect(decodes(InferenceRequest, { ...request, controllerId: "mac-studio-4242-9f1c2a" })).toBe(true)
    for (const bad of ["", "a.b", "a*", ">", "a b", "x".repeat(129)]) expect(decodes(InferenceRequest, { ...request, controllerId: bad })).toBe(false)
  })

  it("acks and refusals may carry the worker's counts (non-negative integers); older replies still decode", () => {
    expect(decodes(InferenceReply, { accepted: true, workerId: "w1" })).toBe(true)
    expect(decodes(InferenceReply, { accepted: true, workerId: "w1", active: 2, activeForController: 1 })).toBe(true)
    expect(decodes(InferenceReply, { accepted: false, reason: "busy", message: "full", active: 4, activeForController: 0 })).toBe(true)
    expect(decodes(InferenceReply, { accepted: true, workerId: "w1", active: -1 })).toBe(false)
    expect(decodes(InferenceReply, { accepted: false, reason: "busy", message: "full", activeForController: 1.5 })).toBe(false)
  })

  it("heartbeat metrics: activeByController (bounded, keyed by controller ids), maxConcurrent, peakActive", () => {
    expect(decodes(WorkerHeartbeat, heartbeat({}))).toBe(true)
    expect(decodes(WorkerHeartbeat, heartbeat({ activeByController: { "ctl-a": 1 }, maxConcurrent: 2, peakActive: 2 }))).toBe(true)
    // A key that is no controller id is dropped, like any excess property.
    expect(Schema.decodeUnknownSync(WorkerHeartbeat)(heartbeat({ activeByController: { "ctl.a": 1, "ctl-b": 2 } })).metrics.activeByController).toEqual({ "ctl-b": 2 })
    expect(decodes(WorkerHeartbeat, heartbeat({ activeByController: { "ctl-a": -1 } }))).toBe(false)
    const many = (n: number) => Object.fromEntries(Array.from({ length: n }, (_, i) => [`ctl-${i}`, 1]))
    expect(decodes(WorkerHeartbeat, heartbeat({ activeByController: many(MAX_CONTROLLERS_PER_HEARTBEAT) }))).toBe(true)
    expect(decodes(WorkerHeartbeat, heartbeat({ activeByController: many(MAX_CONTROLLERS_PER_HEARTBEAT + 1) }))).toBe(false)
  })

  it("controller.{id}.probe: the subject, the probe and its answer", () => {
    expect(Subjects.controllerProbe("ctl-1")).toBe("controller.ctl-1.probe")
    expect(decodes(ControllerProbe, { workerId: "w1" })).toBe(true)
    expect(decodes(ControllerProbeReply, { controllerId: "ctl-1" })).toBe(true)
    expect(decodes(ControllerProbeReply, { controllerId: "ctl.1" })).toBe(false)
  })
})
