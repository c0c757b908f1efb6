import { describe, expect, it } from "vitest"
import { defaultClusterConfig } from "../../src/config/schema.js"
import {
  admitDeregistration,
  admitHeartbeat,
  admitRegistration,
  boundHardware,
  boundSkills,
  cleanLabel,
  emptyLimiter,
  LIMITER_MAX_KEYS,
  LIMITS,
  OVERFLOW_KEY,
  policyFromConfig,
  type RegistrationPolicy,
  warningDue,
  type WarningLimiter
} from "../../src/controller/registration-policy.js"
import { WorkerId } from "../../src/domain/ids.js"
import type { ModelSkills, WorkerRegistration } from "../../src/domain/worker.js"
import { heartbeat, registration } from "./support/fixtures.js"

const policy = (over: Partial<RegistrationPolicy> = {}): RegistrationPolicy => ({
  ...policyFromConfig(defaultClusterConfig()),
  ...over
})

const fresh = { known: false, size: 0 }

const admittedValue = <A>(admission: { _tag: string; value?: A }): A => {
  if (admission._tag !== "Admitted" || admission.value === undefined) throw new Error(`not admitted: ${JSON.stringify(admission)}`)
  return admission.value
}

describe("policyFromConfig", () => {
  it("reads the defaults: every id allowed, 1000 workers, 1000 models each, no overrides", () => {
    const p = policyFromConfig(defaultClusterConfig())
    expect(p).toEqual({ allowedWorkers: undefined, overrides: {}, maxWorkers: 1000, maxModelsPerWorker: 1000 })
    const c = defaultClusterConfig()
    expect(policyFromConfig({ ...c, controller: { ...c.controller, allowedWorkers: ["a", "b"] } }).allowedWorkers).toEqual(
      new Set(["a", "b"])
    )
  })
})

describe("admitRegistration", () => {
  it("refuses ids outside controller.allowed_workers, and new ids beyond max_workers", () => {
    const allowOnlyA = policy({ allowedWorkers: new Set(["a"]) })
    expect(admitRegistration(allowOnlyA, registration({ id: "b" }), fresh)).toEqual({
      _tag: "Refused",
      reason: "not_allowed",
      message: 'worker "b" is not in controller.allowed_workers'
    })
    expect(admitRegistration(allowOnlyA, registration({ id: "a" }), fresh)._tag).toBe("Admitted")
    const two = policy({ maxWorkers: 2 })
    expect(admitRegistration(two, registration({ id: "c" }), { known: false, size: 2 })).toMatchObject({
      _tag: "Refused",
      reason: "too_many_workers"
    })
    // A known worker registering again is never refused for the cap.
    expect(admitRegistration(two, registration({ id: "c" }), { known: true, size: 5 })._tag).toBe("Admitted")
    expect(admitRegistration(two, registration({ id: "c" }), { known: false, size: 1 })._tag).toBe("Admitted")
  })

  it("leaves a sane registration exactly as it was, without notes", () => {
    const reg = registration({ id: "w1", priority: 3, tags: ["studio"] })
    const admission = admitRegistration(policy(), reg, fresh)
    expect(admission).toEqual({ _tag: "Admitted", value: reg, notes: [] })
  })

  it("clamps a claimed priority of 1e300 and a huge GPU, and says so", () => {
    const reg = registration({ id: "rogue", priority: 1e300, gpuMemoryGB: 1e12, maxConcurrent: 1_000_000 })
    const admission = admitRegistration(policy(), reg, fresh)
    const value = admittedValue(admission)
    expect(value.priority).toBe(LIMITS.priority)
    expect(value.hardware.gpuMemoryGB).toBe(64)
    expect(value.capabilities.maxConcurrent).toBe(LIMITS.maxConcurrent)
    expect(admission._tag === "Admitted" && admission.notes).toEqual([
      "gpuMemoryGB 1000000000000 bounded to 64",
      "priority 1e+300 bounded to 1000",
      "maxConcurrent 1000000 bounded to 1024"
    ])
    expect(admittedValue(admitRegistration(policy(), registration({ id: "low", priority: -1e9 }), fresh)).priority).toBe(-1000)
  })

  it("applies the operator's overrides after the bounds, and keeps absent fields absent", () => {
    const p = policy({
      overrides: { studio: { priority: 7, maxConcurrent: 2, tags: ["big"], hardware: { gpuMemoryGB: 144, chip: "M2 Ultra" } } }
    })
    const value = admittedValue(admitRegistration(p, registration({ id: "studio", priority: 900 }), fresh))
    expect(value).toMatchObject({
      priority: 7,
      tags: ["big"],
      capabilities: { maxConcurrent: 2 },
      hardware: { gpuMemoryGB: 144, chip: "M2 Ultra", totalMemoryGB: 64 }
    })
    const plain = admittedValue(admitRegistration(p, registration({ id: "other" }), fresh))
    expect("priority" in plain).toBe(false)
    expect("tags" in plain).toBe(false)
  })

  it("cleans free text: host name, tags, chip (no control characters, bounded)", () => {
    const reg: WorkerRegistration = {
      ...registration({ id: "w" }),
      hostname: `evil\n[INFO] forged${"x".repeat(1000)}`,
      tags: ["ok", "\u001b[31mred", "", ...Array.from({ length: 100 }, (_, i) => `t${i}`)],
      hardware: { ...registration({ id: "w" }).hardware, chip: "M\u202e1" }
    }
    const admission = admitRegistration(policy(), reg, fresh)
    const value = admittedValue(admission)
    expect(value.hostname).not.toContain("\n")
    expect(value.hostname).toHaveLength(LIMITS.hostnameChars)
    expect(value.tags?.slice(0, 2)).toEqual(["ok", "[31mred"])
    expect(value.tags).toHaveLength(LIMITS.tags)
    expect(value.hardware.chip).toBe("M1")
    expect(admission._tag === "Admitted" && admission.notes).toEqual(["reported 102 tags; kept the first 32"])
  })
})

describe("capabilities.features (issue 12)", () => {
  it("keeps the engine's list, bounds it, cleans it; per-model lists only for the kept models", () => {
    const reg = registration({ id: "w", models: ["a", "b"], features: ["tools", "seed\u0007", ...Array.from({ length: 100 }, (_, i) => `f${i}`)], modelFeatures: { a: ["logprobs"], zzz: ["tools"] } })
    const value = admittedValue(admitRegistration(policy(), reg, fresh))
    expect(value.capabilities.features).toHaveLength(LIMITS.features)
    expect(value.capabilities.features?.slice(0, 2)).toEqual(["tools", "seed"])
    expect(value.capabilities.modelFeatures).toEqual({ a: ["logprobs"] })
    const plain = admittedValue(admitRegistration(policy(), registration({ id: "old" }), fresh))
    expect(plain.capabilities).not.toHaveProperty("features")
    expect(plain.capabilities).not.toHaveProperty("modelFeatures")
  })
})

describe("boundHardware", () => {
  it("keeps numbers finite and within caps, and GPU memory within total memory", () => {
    const notes: Array<string> = []
    const hw = boundHardware(
      { platform: "darwin", arch: "arm64", cpuCores: 5000, gpuCores: 99_999, gpuMemoryGB: 80, totalMemoryGB: 1e6 },
      notes
    )
    expect(hw).toEqual({ platform: "darwin", arch: "arm64", cpuCores: 1024, gpuCores: 1024, gpuMemoryGB: 80, totalMemoryGB: 4096 })
    expect(notes).toHaveLength(3)
    expect(boundHardware({ platform: "p", arch: "a", cpuCores: 8, gpuMemoryGB: 100, totalMemoryGB: 16 }).gpuMemoryGB).toBe(16)
  })
})

describe("boundSkills", () => {
  const skillsOf = (models: ReadonlyArray<string>): ModelSkills => ({
    availableModels: [...models],
    modelPaths: Object.fromEntries(models.map((m) => [m, `/models/${m}`])),
    modelSizes: Object.fromEntries(models.map((m) => [m, 1])),
    totalModelSize: models.length,
    lastScanned: 0
  })

  it("keeps the first max models of a registration claiming 300k, with their paths and sizes only", () => {
    const many = Array.from({ length: 300_000 }, (_, i) => `m/${i}`)
    const notes: Array<string> = []
    const bounded = boundSkills(skillsOf(many), 1000, notes)
    expect(bounded.availableModels).toHaveLength(1000)
    expect(bounded.availableModels[999]).toBe("m/999")
    expect(Object.keys(bounded.modelPaths)).toHaveLength(1000)
    expect(Object.keys(bounded.modelSizes)).toHaveLength(1000)
    expect(notes).toEqual(["reported 300000 models; kept the first 1000 (discovery.max_models_per_worker)"])
  })

  it("drops names that are empty, too long or hold control characters, and duplicates", () => {
    const notes: Array<string> = []
    const bounded = boundSkills(skillsOf(["good/a", "", "evil\nname", "x".repeat(300), "good/a", "good/b"]), 10, notes)
    expect(bounded.availableModels).toEqual(["good/a", "good/b"])
    expect(notes).toEqual([`dropped 3 unusable model name(s): "", "evil\\nname", "${"x".repeat(60)}"…(+240 chars)`])
  })
})

describe("admitHeartbeat and admitDeregistration", () => {
  it("refuse ids that are not allowed; heartbeats get load fractions within 0..1", () => {
    const p = policy({ allowedWorkers: new Set(["a"]) })
    expect(admitHeartbeat(p, heartbeat("b"))._tag).toBe("Refused")
    expect(admitDeregistration(p, { workerId: WorkerId.make("b"), timestamp: 0 })._tag).toBe("Refused")
    expect(admitDeregistration(p, { workerId: WorkerId.make("a"), timestamp: 0 })._tag).toBe("Admitted")
    const hb = heartbeat("a")
    expect(admittedValue(admitHeartbeat(p, hb))).toBe(hb)
    const wild = { ...hb, metrics: { ...hb.metrics, cpuUsage: 50, memoryUsage: 2 } }
    expect(admittedValue(admitHeartbeat(p, wild)).metrics).toMatchObject({ cpuUsage: 1, memoryUsage: 1 })
  })
})

describe("cleanLabel", () => {
  it("removes control characters and cuts", () => {
    expect(cleanLabel("a\u0000b\u009bc\u2066d", 10)).toBe("abcd")
    expect(cleanLabel("abcdef", 3)).toBe("abc")
  })
})

describe("warningDue", () => {
  it("allows one warning per key per interval", () => {
    const [first, l1] = warningDue(emptyLimiter, "k", 0, 60_000)
    const [second, l2] = warningDue(l1, "k", 59_999, 60_000)
    const [other, l3] = warningDue(l2, "j", 59_999, 60_000)
    const [third] = warningDue(l3, "k", 60_000, 60_000)
    expect([first, second, other, third]).toEqual([true, false, true, true])
  })

  it("stays bounded under a flood of fresh ids: new keys share one line per interval once full", () => {
    let limiter: WarningLimiter = emptyLimiter
    let logged = 0
    for (let i = 0; i < LIMITER_MAX_KEYS + 500; i++) {
      const [due, next] = warningDue(limiter, `id-${i}`, 1_000, 60_000)
      limiter = next
      if (due) logged++
    }
    expect(logged).toBe(LIMITER_MAX_KEYS + 1)
    expect(limiter.last.size).toBe(LIMITER_MAX_KEYS + 1)
    expect(limiter.last.has(OVERFLOW_KEY)).toBe(true)
    // Full, nothing expired, the overflow line already logged: a fresh id is one lookup, the
    // limiter is returned as it is (no walk over its keys, no copy).
    const [again, same] = warningDue(limiter, "fresh", 2_000, 60_000)
    expect(again).toBe(false)
    expect(same).toBe(limiter)
    // After the interval the old keys are forgotten and new ids get their own line again.
    const [due, after] = warningDue(limiter, "late", 70_000, 60_000)
    expect(due).toBe(true)
    expect(after.last.size).toBe(1)
  })
})
