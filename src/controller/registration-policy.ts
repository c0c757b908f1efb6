import type { ClusterConfig, HardwareOverrides, WorkerOverride } from "../config/schema.js"
import { quoteForLog } from "../domain/log-text.js"
import type {
  HardwareProfile,
  ModelSkills,
  WorkerDeregistration,
  WorkerHeartbeat,
  WorkerMetrics,
  WorkerRegistration
} from "../domain/worker.js"

/**
 * What the controller accepts of what workers say about themselves (pure; the registry sync applies
 * it before the Registry sees a message). Anyone who may publish on `worker.register` can claim
 * anything, so:
 *
 * - `controller.allowed_workers`, when set, is the list of worker ids the controller listens to:
 *   registrations, heartbeats and deregistrations of other ids are refused;
 * - a new worker id is refused while the registry already holds `discovery.max_workers` workers;
 * - self-reported numbers are bounded (`LIMITS`): priority clamped, hardware finite and within sane
 *   caps, `gpuMemoryGB ≤ totalMemoryGB`, load fractions within 0..1;
 * - free text (host name, chip, tags, model names) is cut and stripped of control characters; model
 *   names that are empty, too long or hold control characters are dropped, and so is every model
 *   beyond `discovery.max_models_per_worker`;
 * - `controller.worker_overrides.<id>` replaces priority, max_concurrent, tags and hardware fields
 *   with what the operator wrote, after the bounds (the operator's values are taken as given).
 *
 * Every adjustment comes back as a note (one short line, user text quoted with `quoteForLog`) for
 * the caller to log.
 */

/** The bounds applied to self-reported values. Documented in docs/operations.md ("Threat model"). */
export const LIMITS = {
  /** `priority` is clamped to ±this. */
  priority: 1000,
  cpuCores: 1024,
  gpuCores: 1024,
  /** GB; today's largest Mac has 512. */
  memoryGB: 4096,
  maxConcurrent: 1024,
  modelNameChars: 256,
  modelPathChars: 1024,
  tags: 32,
  tagChars: 64,
  hostnameChars: 255,
  ipChars: 64,
  /** `platform`, `arch`, `chip`, `engine`. */
  labelChars: 128,
  /** Entries of `capabilities.features` (and of each `modelFeatures` list), each at most `labelChars`. */
  features: 64
} as const

export interface RegistrationPolicy {
  /** `undefined`: every id is allowed. */
  readonly allowedWorkers: ReadonlySet<string> | undefined
  readonly overrides: Readonly<Record<string, WorkerOverride>>
  readonly maxWorkers: number
  readonly maxModelsPerWorker: number
}

export const policyFromConfig = (config: ClusterConfig): RegistrationPolicy => ({
  allowedWorkers: config.controller.allowedWorkers === null ? undefined : new Set(config.controller.allowedWorkers),
  overrides: config.controller.workerOverrides,
  maxWorkers: config.discovery.maxWorkers,
  maxModelsPerWorker: config.discovery.maxModelsPerWorker
})

/** Why a message was refused; the caller rate-limits its warning per (reason, worker id). */
export type RefusalReason = "not_allowed" | "too_many_workers"

export type Admission<A> =
  | { readonly _tag: "Admitted"; readonly value: A; readonly notes: ReadonlyArray<string> }
  | { readonly _tag: "Refused"; readonly reason: RefusalReason; readonly message: string }

const admitted = <A>(value: A, notes: ReadonlyArray<string> = []): Admission<A> => ({ _tag: "Admitted", value, notes })

const notAllowed = (policy: RegistrationPolicy, workerId: string): Admission<never> | undefined =>
  policy.allowedWorkers !== undefined && !policy.allowedWorkers.has(workerId)
    ? { _tag: "Refused", reason: "not_allowed", message: `worker ${quoteForLog(workerId)} is not in controller.allowed_workers` }
    : undefined

// ---------------------------------------------------------------------------------------------
// Bounds

/** Control characters, DEL and C1, separators and bidi overrides: never useful in a label. */
const CONTROL = /[\u0000-\u001f\u007f-\u009f\u2028\u2029\u202a-\u202e\u2066-\u2069]/

// A global copy for replace().
const CONTROL_ALL = new RegExp(CONTROL.source, "g")

/** Free text for display: control characters removed, cut to `max`. */
export const cleanLabel = (text: string, max: number): string => {
  const cleaned = text.replace(CONTROL_ALL, "")
  return cleaned.length > max ? cleaned.slice(0, max) : cleaned
}

/** `value` within `[min, max]`; NaN becomes `min` (the schema already refuses NaN; belt and braces). */
export const clamp = (value: number, min: number, max: number): number =>
  Number.isNaN(value) ? min : Math.min(max, Math.max(min, value))

const bounded = (
  notes: Array<string>,
  what: string,
  value: number,
  min: number,
  max: number,
  integer = false
): number => {
  const inRange = clamp(integer ? Math.floor(value) : value, min, max)
  if (inRange !== value) notes.push(`${what} ${value} bounded to ${inRange}`)
  return inRange
}

/** Self-reported hardware within `LIMITS`, `gpuMemoryGB ≤ totalMemoryGB`, labels cleaned. */
export const boundHardware = (hardware: HardwareProfile, notes: Array<string> = []): HardwareProfile => {
  const totalMemoryGB = bounded(notes, "totalMemoryGB", hardware.totalMemoryGB, 0, LIMITS.memoryGB)
  const gpuMemoryGB = bounded(notes, "gpuMemoryGB", hardware.gpuMemoryGB, 0, totalMemoryGB)
  return {
    platform: cleanLabel(hardware.platform, LIMITS.labelChars),
    arch: cleanLabel(hardware.arch, LIMITS.labelChars),
    ...(hardware.chip === undefined ? {} : { chip: cleanLabel(hardware.chip, LIMITS.labelChars) }),
    cpuCores: bounded(notes, "cpuCores", hardware.cpuCores, 0, LIMITS.cpuCores, true),
    ...(hardware.gpuCores === undefined ? {} : { gpuCores: bounded(notes, "gpuCores", hardware.gpuCores, 0, LIMITS.gpuCores, true) }),
    gpuMemoryGB,
    totalMemoryGB
  }
}

const isUsableModelName = (name: string): boolean =>
  name.length > 0 && name.length <= LIMITS.modelNameChars && !CONTROL.test(name)

const pick = <V>(record: Readonly<Record<string, V>>, keys: ReadonlyArray<string>): Record<string, V> => {
  const out: Record<string, V> = {}
  for (const key of keys) {
    if (Object.prototype.hasOwnProperty.call(record, key)) out[key] = record[key] as V
  }
  return out
}

const sample = (names: ReadonlyArray<string>, count = 3): string =>
  names
    .slice(0, count)
    .map((n) => quoteForLog(n, 60))
    .join(", ") + (names.length > count ? ", …" : "")

/**
 * The skills with unusable model names dropped (empty, longer than `LIMITS.modelNameChars`, control
 * characters), duplicates removed, at most `maxModels` models kept (in the order the worker sent
 * them), and paths and sizes kept only for the kept models.
 */
export const boundSkills = (skills: ModelSkills, maxModels: number, notes: Array<string> = []): ModelSkills => {
  const unusable = skills.availableModels.filter((name) => !isUsableModelName(name))
  if (unusable.length > 0) notes.push(`dropped ${unusable.length} unusable model name(s): ${sample(unusable)}`)
  const usable = [...new Set(skills.availableModels.filter(isUsableModelName))]
  const kept = usable.length > maxModels ? usable.slice(0, maxModels) : usable
  if (usable.length > maxModels) {
    notes.push(`reported ${usable.length} models; kept the first ${maxModels} (discovery.max_models_per_worker)`)
  }
  const paths = pick(skills.modelPaths, kept)
  for (const [name, path] of Object.entries(paths)) paths[name] = cleanLabel(path, LIMITS.modelPathChars)
  return { ...skills, availableModels: kept, modelPaths: paths, modelSizes: pick(skills.modelSizes, kept) }
}

const boundTags = (tags: ReadonlyArray<string>, notes: Array<string>): ReadonlyArray<string> => {
  const cleaned = tags.map((t) => cleanLabel(t, LIMITS.tagChars)).filter((t) => t.length > 0)
  if (cleaned.length > LIMITS.tags) notes.push(`reported ${cleaned.length} tags; kept the first ${LIMITS.tags}`)
  return cleaned.slice(0, LIMITS.tags)
}

const applyHardwareOverride = (hardware: HardwareProfile, o: HardwareOverrides): HardwareProfile => ({
  ...hardware,
  ...(o.platform === undefined ? {} : { platform: o.platform }),
  ...(o.arch === undefined ? {} : { arch: o.arch }),
  ...(o.chip === undefined ? {} : { chip: o.chip }),
  ...(o.cpuCores === undefined ? {} : { cpuCores: o.cpuCores }),
  ...(o.gpuCores === undefined ? {} : { gpuCores: o.gpuCores }),
  ...(o.gpuMemoryGB === undefined ? {} : { gpuMemoryGB: o.gpuMemoryGB }),
  ...(o.totalMemoryGB === undefined ? {} : { totalMemoryGB: o.totalMemoryGB })
})

const boundFeatures = (features: ReadonlyArray<string>): ReadonlyArray<string> =>
  features.slice(0, LIMITS.features).map((f) => cleanLabel(f, LIMITS.labelChars))

/** Feature lists bounded; per-model lists kept only for the kept models. */
const boundCapabilityFeatures = (
  capabilities: WorkerRegistration["capabilities"],
  models: ReadonlyArray<string>
): Pick<WorkerRegistration["capabilities"], "features" | "modelFeatures"> => {
  const perModel = capabilities.modelFeatures === undefined ? undefined : pick(capabilities.modelFeatures, models)
  if (perModel !== undefined) for (const [model, list] of Object.entries(perModel)) perModel[model] = boundFeatures(list)
  return {
    ...(capabilities.features === undefined ? {} : { features: boundFeatures(capabilities.features) }),
    ...(perModel === undefined ? {} : { modelFeatures: perModel })
  }
}

/** A registration with every self-reported value bounded, then the operator's overrides applied. */
export const boundRegistration = (
  reg: WorkerRegistration,
  policy: RegistrationPolicy
): { readonly value: WorkerRegistration; readonly notes: ReadonlyArray<string> } => {
  const notes: Array<string> = []
  const override = Object.prototype.hasOwnProperty.call(policy.overrides, reg.workerId)
    ? policy.overrides[reg.workerId]
    : undefined
  const { priority: reportedPriority, tags: reportedTags, ...rest } = reg
  const hardware = boundHardware(reg.hardware, notes)
  const priority =
    override?.priority ??
    (reportedPriority === undefined
      ? undefined
      : bounded(notes, "priority", reportedPriority, -LIMITS.priority, LIMITS.priority))
  const tags = override?.tags ?? (reportedTags === undefined ? undefined : boundTags(reportedTags, notes))
  const maxConcurrent = bounded(notes, "maxConcurrent", reg.capabilities.maxConcurrent, 0, LIMITS.maxConcurrent, true)
  const skills = boundSkills(reg.skills, policy.maxModelsPerWorker, notes)
  const value: WorkerRegistration = {
    ...rest,
    hostname: cleanLabel(reg.hostname, LIMITS.hostnameChars),
    ip: cleanLabel(reg.ip, LIMITS.ipChars),
    hardware: override?.hardware === undefined ? hardware : applyHardwareOverride(hardware, override.hardware),
    capabilities: {
      ...reg.capabilities,
      maxConcurrent: override?.maxConcurrent ?? maxConcurrent,
      engine: cleanLabel(reg.capabilities.engine, LIMITS.labelChars),
      ...boundCapabilityFeatures(reg.capabilities, skills.availableModels)
    },
    skills,
    ...(priority === undefined ? {} : { priority }),
    ...(tags === undefined ? {} : { tags })
  }
  return { value, notes }
}

const boundMetrics = (metrics: WorkerMetrics): WorkerMetrics => {
  const cpuUsage = clamp(metrics.cpuUsage, 0, 1)
  const memoryUsage = clamp(metrics.memoryUsage, 0, 1)
  return cpuUsage === metrics.cpuUsage && memoryUsage === metrics.memoryUsage ? metrics : { ...metrics, cpuUsage, memoryUsage }
}

// ---------------------------------------------------------------------------------------------
// Admission

/** What the registry knows when a registration arrives. */
export interface RegistryView {
  /** The id is in the registry already (online or offline). */
  readonly known: boolean
  /** Workers in the registry now. */
  readonly size: number
}

/** A registration: refused (not allowed, or a new id beyond `max_workers`), else bounded. */
export const admitRegistration = (
  policy: RegistrationPolicy,
  reg: WorkerRegistration,
  registry: RegistryView
): Admission<WorkerRegistration> => {
  const refused = notAllowed(policy, reg.workerId)
  if (refused !== undefined) return refused
  if (!registry.known && registry.size >= policy.maxWorkers) {
    return {
      _tag: "Refused",
      reason: "too_many_workers",
      message: `new worker ${quoteForLog(reg.workerId)} refused: the registry holds ${registry.size} workers (discovery.max_workers)`
    }
  }
  const { value, notes } = boundRegistration(reg, policy)
  return admitted(value, notes)
}

/** A heartbeat: refused when the id is not allowed; load fractions clamped to 0..1. */
export const admitHeartbeat = (policy: RegistrationPolicy, hb: WorkerHeartbeat): Admission<WorkerHeartbeat> => {
  const refused = notAllowed(policy, hb.workerId)
  if (refused !== undefined) return refused
  const metrics = boundMetrics(hb.metrics)
  return admitted(metrics === hb.metrics ? hb : { ...hb, metrics })
}

/** A deregistration: refused when the id is not allowed (an outsider must not take workers offline). */
export const admitDeregistration = (
  policy: RegistrationPolicy,
  msg: WorkerDeregistration
): Admission<WorkerDeregistration> => notAllowed(policy, msg.workerId) ?? admitted(msg)

// ---------------------------------------------------------------------------------------------
// Rate-limited warnings

/** When each key last logged; bounded so that a flood of fresh ids cannot grow it without end. */
export interface WarningLimiter {
  readonly last: ReadonlyMap<string, number>
  /**
   * No entry of `last` is older than this (a lower bound: re-logging a key only makes it newer).
   * A full limiter looks for expired keys only once one may have expired, so a flood of fresh
   * ids costs a lookup each, not a walk of every key (10,000 ids: 10 million steps before).
   */
  readonly oldestAt: number
}

export const emptyLimiter: WarningLimiter = { last: new Map(), oldestAt: Number.POSITIVE_INFINITY }

/** Keys remembered at most; beyond it, keys older than the interval are forgotten first. */
export const LIMITER_MAX_KEYS = 1024

/** The key shared by every id once the limiter is full: one line per interval for all of them. */
export const OVERFLOW_KEY = "*"

const oldestOf = (last: ReadonlyMap<string, number>): number => {
  let oldest = Number.POSITIVE_INFINITY
  for (const at of last.values()) oldest = Math.min(oldest, at)
  return oldest
}

/**
 * Whether a warning under `key` may be logged at `now` (once per `intervalMs` per key), and the
 * limiter after it. When `LIMITER_MAX_KEYS` keys are remembered and none has expired, new keys
 * share `OVERFLOW_KEY`.
 */
export const warningDue = (
  limiter: WarningLimiter,
  key: string,
  now: number,
  intervalMs: number
): readonly [boolean, WarningLimiter] => {
  let current = limiter
  let effectiveKey = key
  if (!current.last.has(key) && current.last.size >= LIMITER_MAX_KEYS) {
    if (now - current.oldestAt >= intervalMs) {
      const kept = new Map([...current.last].filter(([, at]) => now - at < intervalMs))
      current = { last: kept, oldestAt: oldestOf(kept) }
    }
    if (current.last.size >= LIMITER_MAX_KEYS) effectiveKey = OVERFLOW_KEY
  }
  const previous = current.last.get(effectiveKey)
  if (previous !== undefined && now - previous < intervalMs) return [false, current]
  const next = new Map(current.last)
  next.set(effectiveKey, now)
  return [true, { last: next, oldestAt: Math.min(current.oldestAt, now) }]
}
