import * as Os from "node:os"
import * as Command from "@effect/platform/Command"
import * as FileSystem from "@effect/platform/FileSystem"
import type { CommandExecutor } from "@effect/platform/CommandExecutor"
import { Context, Effect, Either, Layer, Option, Schema } from "effect"
import { ClusterConfigService } from "../config/cluster-config.js"
import type { HardwareOverrides } from "../config/schema.js"
import type { HardwareProfile } from "../domain/worker.js"

/**
 * Hardware detection. Everything that reads the machine goes through a `HardwareProbe`; everything
 * that interprets what was read is a pure function below, unit-tested with captured outputs.
 *
 * - macOS: `sysctl` (hw.memsize, machdep.cpu.brand_string, hw.physicalcpu, hw.perflevel*,
 *   iogpu.wired_limit_mb) and `system_profiler SPDisplaysDataType -json` (`sppci_cores`).
 * - Linux: `/proc/cpuinfo` for the chip name, `os` for the rest.
 * - Anything else, or any probe that fails: what `os` knows.
 *
 * `gpuMemoryGB` is the memory usable for weights. On Apple Silicon (unified memory) it is the Metal
 * working set: `iogpu.wired_limit_mb` when an operator raised it, else 75 % of RAM on machines with
 * 36 GB or more and 2/3 below. Without GPU information (Linux, other platforms) the same share of
 * RAM is reported, because a CPU-only host holds the weights in RAM too; a real GPU host should set
 * `worker.hardware.gpu_memory_gb`.
 */

const GiB = 1024 ** 3

const round2 = (n: number): number => Math.round(n * 100) / 100

/** `key: value` lines of `sysctl a b c` (unknown keys are reported on stderr and simply absent). */
export const parseSysctl = (output: string): ReadonlyMap<string, string> => {
  const entries = new Map<string, string>()
  for (const line of output.split(/\r?\n/)) {
    const colon = line.indexOf(":")
    if (colon <= 0) continue
    const key = line.slice(0, colon).trim()
    const value = line.slice(colon + 1).trim()
    if (key.length > 0 && !key.includes(" ")) entries.set(key, value)
  }
  return entries
}

const nonNegativeInt = (value: string | undefined): number | undefined => {
  if (value === undefined || !/^\d+$/.test(value.trim())) return undefined
  const n = Number(value.trim())
  return Number.isSafeInteger(n) ? n : undefined
}

const SystemProfilerDisplays = Schema.parseJson(
  Schema.Struct({
    SPDisplaysDataType: Schema.Array(
      Schema.Struct({
        sppci_cores: Schema.optional(Schema.Union(Schema.String, Schema.Number)),
        sppci_model: Schema.optional(Schema.String)
      })
    )
  })
)

/** GPU core count from `system_profiler SPDisplaysDataType -json`: the first GPU that states one. */
export const parseGpuCores = (json: string): number | undefined =>
  Either.match(Schema.decodeUnknownEither(SystemProfilerDisplays)(json), {
    onLeft: () => undefined,
    onRight: (parsed) => {
      for (const gpu of parsed.SPDisplaysDataType) {
        const cores = nonNegativeInt(gpu.sppci_cores === undefined ? undefined : String(gpu.sppci_cores))
        if (cores !== undefined && cores > 0) return cores
      }
      return undefined
    }
  })

/** The CPU's name from `/proc/cpuinfo` (`model name` on x86, `Model`/`Hardware` on ARM boards). */
export const parseCpuInfoModel = (cpuinfo: string): string | undefined => {
  const fields = new Map<string, string>()
  for (const line of cpuinfo.split(/\r?\n/)) {
    const colon = line.indexOf(":")
    if (colon <= 0) continue
    const key = line.slice(0, colon).trim().toLowerCase()
    const value = line.slice(colon + 1).trim()
    if (value.length > 0 && !fields.has(key)) fields.set(key, value)
  }
  return fields.get("model name") ?? fields.get("model") ?? fields.get("hardware") ?? fields.get("cpu model")
}

/**
 * Memory usable for weights on unified memory, in GB: the wired limit when set (non-zero), else the
 * default Metal working set (75 % of RAM from 36 GB up, 2/3 below).
 */
export const metalWorkingSetGB = (totalMemoryGB: number, wiredLimitMb?: number): number => {
  if (wiredLimitMb !== undefined && wiredLimitMb > 0) return round2(wiredLimitMb / 1024)
  return round2(totalMemoryGB >= 36 ? totalMemoryGB * 0.75 : (totalMemoryGB * 2) / 3)
}

/** What `os` knows: the fallback of every probe. */
export interface OsFacts {
  readonly platform: string
  readonly arch: string
  readonly cpuCount: number
  readonly cpuModel: string | undefined
  readonly totalMemoryBytes: number
}

export const osFacts = (): OsFacts => {
  const cpus = Os.cpus()
  return {
    platform: Os.platform(),
    arch: Os.arch(),
    cpuCount: Math.max(cpus.length, 1),
    cpuModel: cpus[0]?.model.trim() || undefined,
    totalMemoryBytes: Os.totalmem()
  }
}

/** The profile `os` alone gives. */
export const profileFromOs = (facts: OsFacts): HardwareProfile => {
  const totalMemoryGB = round2(facts.totalMemoryBytes / GiB)
  return {
    platform: facts.platform,
    arch: facts.arch,
    ...(facts.cpuModel !== undefined ? { chip: facts.cpuModel } : {}),
    cpuCores: facts.cpuCount,
    gpuMemoryGB: metalWorkingSetGB(totalMemoryGB),
    totalMemoryGB
  }
}

/** macOS: the `os` profile refined by `sysctl` and `system_profiler` output (either may be missing). */
export const profileFromDarwin = (
  facts: OsFacts,
  sysctlOutput: string | undefined,
  systemProfilerJson: string | undefined
): HardwareProfile => {
  const base = profileFromOs(facts)
  const sysctl = parseSysctl(sysctlOutput ?? "")
  const memBytes = nonNegativeInt(sysctl.get("hw.memsize"))
  const totalMemoryGB = memBytes !== undefined && memBytes > 0 ? round2(memBytes / GiB) : base.totalMemoryGB
  const perf = nonNegativeInt(sysctl.get("hw.perflevel0.physicalcpu"))
  const efficiency = nonNegativeInt(sysctl.get("hw.perflevel1.physicalcpu"))
  const physical = nonNegativeInt(sysctl.get("hw.physicalcpu"))
  const cpuCores =
    physical !== undefined && physical > 0
      ? physical
      : perf !== undefined && perf > 0
        ? perf + (efficiency ?? 0)
        : base.cpuCores
  const brand = sysctl.get("machdep.cpu.brand_string")
  const chip = brand !== undefined && brand.length > 0 ? brand : base.chip
  const gpuCores = systemProfilerJson !== undefined ? parseGpuCores(systemProfilerJson) : undefined
  return {
    platform: base.platform,
    arch: base.arch,
    ...(chip !== undefined ? { chip } : {}),
    cpuCores,
    ...(gpuCores !== undefined ? { gpuCores } : {}),
    gpuMemoryGB: metalWorkingSetGB(totalMemoryGB, nonNegativeInt(sysctl.get("iogpu.wired_limit_mb"))),
    totalMemoryGB
  }
}

/** Linux: the `os` profile with the chip named by `/proc/cpuinfo` when it says. */
export const profileFromLinux = (facts: OsFacts, cpuinfo: string | undefined): HardwareProfile => {
  const base = profileFromOs(facts)
  const model = cpuinfo !== undefined ? parseCpuInfoModel(cpuinfo) : undefined
  return model !== undefined ? { ...base, chip: model } : base
}

/** `worker.hardware` wins over every detected field. */
export const applyHardwareOverrides = (profile: HardwareProfile, overrides: HardwareOverrides): HardwareProfile => {
  const merged: { -readonly [K in keyof HardwareProfile]: HardwareProfile[K] } = { ...profile }
  if (overrides.platform !== undefined) merged.platform = overrides.platform
  if (overrides.arch !== undefined) merged.arch = overrides.arch
  if (overrides.chip !== undefined) merged.chip = overrides.chip
  if (overrides.cpuCores !== undefined) merged.cpuCores = overrides.cpuCores
  if (overrides.gpuCores !== undefined) merged.gpuCores = overrides.gpuCores
  if (overrides.gpuMemoryGB !== undefined) merged.gpuMemoryGB = overrides.gpuMemoryGB
  if (overrides.totalMemoryGB !== undefined) merged.totalMemoryGB = overrides.totalMemoryGB
  return merged
}

/** The machine access hardware detection needs; every call yields `undefined` when it fails. */
export interface HardwareProbe {
  readonly facts: OsFacts
  readonly run: (command: string, args: ReadonlyArray<string>) => Effect.Effect<string | undefined>
  readonly readFile: (path: string) => Effect.Effect<string | undefined>
}

export const SYSCTL_KEYS = [
  "hw.memsize",
  "machdep.cpu.brand_string",
  "hw.physicalcpu",
  "hw.perflevel0.physicalcpu",
  "hw.perflevel1.physicalcpu",
  "iogpu.wired_limit_mb"
] as const

/** Detects the profile through `probe`; never fails. */
export const detectHardware = (probe: HardwareProbe): Effect.Effect<HardwareProfile> => {
  switch (probe.facts.platform) {
    case "darwin":
      return Effect.all(
        [probe.run("sysctl", SYSCTL_KEYS), probe.run("system_profiler", ["SPDisplaysDataType", "-json"])],
        { concurrency: 2 }
      ).pipe(Effect.map(([sysctl, profiler]) => profileFromDarwin(probe.facts, sysctl, profiler)))
    case "linux":
      return probe.readFile("/proc/cpuinfo").pipe(Effect.map((cpuinfo) => profileFromLinux(probe.facts, cpuinfo)))
    default:
      return Effect.succeed(profileFromOs(probe.facts))
  }
}

/** The probe of this machine: real commands (bounded to 15 s each) and files. */
export const nodeProbe: Effect.Effect<HardwareProbe, never, CommandExecutor | FileSystem.FileSystem> = Effect.gen(
  function* () {
    const context = yield* Effect.context<CommandExecutor | FileSystem.FileSystem>()
    const fs = yield* FileSystem.FileSystem
    return {
      facts: osFacts(),
      run: (command, args) =>
        Command.string(Command.make(command, ...args)).pipe(
          Effect.timeoutOption("15 seconds"),
          Effect.map(Option.getOrUndefined),
          Effect.tapError((error) => Effect.logDebug(`hardware probe "${command}" failed`, error)),
          Effect.orElseSucceed(() => undefined),
          Effect.provide(context)
        ),
      readFile: (path) =>
        fs.readFileString(path).pipe(
          Effect.tapError((error) => Effect.logDebug(`hardware probe could not read ${path}`, error)),
          Effect.orElseSucceed(() => undefined)
        )
    }
  }
)

/** This worker's hardware profile, detected once at start with `worker.hardware` applied on top. */
export class Hardware extends Context.Tag("worker/Hardware")<Hardware, HardwareProfile>() {
  static readonly layer: Layer.Layer<Hardware, never, ClusterConfigService | CommandExecutor | FileSystem.FileSystem> =
    Layer.effect(
      Hardware,
      Effect.gen(function* () {
        const config = yield* ClusterConfigService
        const probe = yield* nodeProbe
        const detected = yield* detectHardware(probe)
        const profile = applyHardwareOverrides(detected, config.worker.hardware)
        yield* Effect.logDebug("hardware detected", profile)
        return profile
      })
    )

  static readonly layerTest = (profile: HardwareProfile) => Layer.succeed(Hardware, profile)
}
