import * as Fs from "node:fs"
import * as Os from "node:os"
import * as Path from "node:path"
import { NodeContext } from "@effect/platform-node"
import { describe, expect, it } from "@effect/vitest"
import { Effect, Layer, Schema } from "effect"
import { ClusterConfigService } from "../../src/config/cluster-config.js"
import { HardwareProfile } from "../../src/domain/worker.js"
import {
  applyHardwareOverrides,
  detectHardware,
  Hardware,
  type HardwareProbe,
  metalWorkingSetGB,
  nodeProbe,
  type OsFacts,
  parseCpuInfoModel,
  parseGpuCores,
  parseSysctl,
  profileFromDarwin,
  profileFromLinux,
  profileFromOs,
  SYSCTL_KEYS
} from "../../src/worker/hardware.js"
import { testHardware } from "./support/worker-harness.js"

const fixture = (name: string) =>
  Fs.readFileSync(Path.join(import.meta.dirname, "..", "fixtures", "hardware", name), "utf8")

const GiB = 1024 ** 3

const macFacts = (memGB: number): OsFacts => ({
  platform: "darwin",
  arch: "arm64",
  cpuCount: 10,
  cpuModel: "Apple M-something",
  totalMemoryBytes: memGB * GiB
})

describe("hardware parsing (captured outputs)", () => {
  it("parseSysctl reads key: value lines and ignores noise", () => {
    const parsed = parseSysctl(fixture("darwin-m2-max-96gb.sysctl.txt") + "\nsysctl: unknown oid 'x'\n\nnot a line")
    expect(parsed.get("hw.memsize")).toBe("103079215104")
    expect(parsed.get("machdep.cpu.brand_string")).toBe("Apple M2 Max")
    expect(parsed.has("sysctl")).toBe(true) // harmless: not a key we read
    expect(parsed.size).toBe(7)
  })

  it("parseGpuCores reads sppci_cores from system_profiler JSON", () => {
    expect(parseGpuCores(fixture("darwin-m2-max-96gb.system_profiler.json"))).toBe(38)
    expect(parseGpuCores(fixture("darwin-m1-16gb.system_profiler.json"))).toBe(8)
    expect(parseGpuCores(JSON.stringify({ SPDisplaysDataType: [{ sppci_model: "x" }, { sppci_cores: 16 }] }))).toBe(16)
    expect(parseGpuCores(JSON.stringify({ SPDisplaysDataType: [{ sppci_cores: "many" }] }))).toBeUndefined()
    expect(parseGpuCores("not json")).toBeUndefined()
    expect(parseGpuCores("{}")).toBeUndefined()
  })

  it("parseCpuInfoModel: x86 model name, ARM board model, nothing", () => {
    expect(parseCpuInfoModel(fixture("linux-x86_64.cpuinfo.txt"))).toBe("Intel(R) Xeon(R) Platinum 8259CL CPU @ 2.50GHz")
    expect(parseCpuInfoModel(fixture("linux-raspberrypi.cpuinfo.txt"))).toBe("Raspberry Pi 4 Model B Rev 1.1")
    expect(parseCpuInfoModel("Hardware\t: BCM2835\n")).toBe("BCM2835")
    expect(parseCpuInfoModel("")).toBeUndefined()
  })

  it("metalWorkingSetGB: wired limit when set, else 75 % from 36 GB up and 2/3 below", () => {
    expect(metalWorkingSetGB(96)).toBe(72)
    expect(metalWorkingSetGB(36)).toBe(27)
    expect(metalWorkingSetGB(32)).toBe(21.33)
    expect(metalWorkingSetGB(16)).toBe(10.67)
    expect(metalWorkingSetGB(192, 180000)).toBe(175.78)
    expect(metalWorkingSetGB(16, 0)).toBe(10.67)
  })

  it("profileFromDarwin: M2 Max 96 GB", () => {
    const profile = profileFromDarwin(
      macFacts(8),
      fixture("darwin-m2-max-96gb.sysctl.txt"),
      fixture("darwin-m2-max-96gb.system_profiler.json")
    )
    expect(profile).toEqual(testHardware)
    expect(Schema.decodeUnknownSync(HardwareProfile)(profile)).toEqual(profile)
  })

  it("profileFromDarwin: M1 16 GB without a wired-limit key, M3 Ultra with a wired limit and perflevels only", () => {
    const m1 = profileFromDarwin(macFacts(16), fixture("darwin-m1-16gb.sysctl.txt"), fixture("darwin-m1-16gb.system_profiler.json"))
    expect(m1).toMatchObject({ chip: "Apple M1", cpuCores: 8, gpuCores: 8, totalMemoryGB: 16, gpuMemoryGB: 10.67 })
    const m3 = profileFromDarwin(macFacts(192), fixture("darwin-m3-ultra-192gb-wired.sysctl.txt"), undefined)
    expect(m3).toMatchObject({ chip: "Apple M3 Ultra", cpuCores: 32, totalMemoryGB: 192, gpuMemoryGB: 175.78 })
    expect(m3.gpuCores).toBeUndefined()
  })

  it("profileFromDarwin degrades to os facts when the commands gave nothing", () => {
    const profile = profileFromDarwin(macFacts(64), undefined, "garbage")
    expect(profile).toEqual({
      platform: "darwin",
      arch: "arm64",
      chip: "Apple M-something",
      cpuCores: 10,
      gpuMemoryGB: 48,
      totalMemoryGB: 64
    })
  })

  it("profileFromLinux: chip from /proc/cpuinfo, memory share as gpuMemoryGB", () => {
    const facts: OsFacts = { platform: "linux", arch: "x64", cpuCount: 2, cpuModel: "os model", totalMemoryBytes: 8 * GiB }
    expect(profileFromLinux(facts, fixture("linux-x86_64.cpuinfo.txt"))).toEqual({
      platform: "linux",
      arch: "x64",
      chip: "Intel(R) Xeon(R) Platinum 8259CL CPU @ 2.50GHz",
      cpuCores: 2,
      gpuMemoryGB: 5.33,
      totalMemoryGB: 8
    })
    expect(profileFromLinux(facts, undefined).chip).toBe("os model")
    expect(profileFromOs({ ...facts, cpuModel: undefined }).chip).toBeUndefined()
  })

  it("applyHardwareOverrides: every field can be overridden; absent ones keep the detected value", () => {
    const detected = profileFromOs({ platform: "linux", arch: "x64", cpuCount: 2, cpuModel: "c", totalMemoryBytes: GiB })
    expect(applyHardwareOverrides(detected, {})).toEqual(detected)
    // Every field given: the result is the overrides, field for field.
    const everyField = { platform: "darwin", arch: "arm64", chip: "Apple M4 Max", cpuCores: 16, gpuCores: 40, gpuMemoryGB: 48, totalMemoryGB: 64 }
    expect(applyHardwareOverrides(detected, everyField)).toEqual(everyField)
  })
})

describe("hardware detection through a probe", () => {
  const fakeProbe = (facts: OsFacts, outputs: Record<string, string | undefined>): HardwareProbe & { calls: Array<string> } => {
    const calls: Array<string> = []
    return {
      facts,
      calls,
      run: (command, args) =>
        Effect.sync(() => {
          calls.push([command, ...args].join(" "))
          return outputs[command]
        }),
      readFile: (path) =>
        Effect.sync(() => {
          calls.push(`read ${path}`)
          return outputs[path]
        })
    }
  }

  it.effect("macOS runs sysctl and system_profiler", () =>
    Effect.gen(function* () {
      const probe = fakeProbe(macFacts(8), {
        sysctl: fixture("darwin-m2-max-96gb.sysctl.txt"),
        system_profiler: fixture("darwin-m2-max-96gb.system_profiler.json")
      })
      const profile = yield* detectHardware(probe)
      expect(profile).toMatchObject({ chip: "Apple M2 Max", gpuCores: 38, totalMemoryGB: 96 })
      expect(probe.calls).toContain(`sysctl ${SYSCTL_KEYS.join(" ")}`)
      expect(probe.calls).toContain("system_profiler SPDisplaysDataType -json")
    })
  )

  it.effect("Linux reads /proc/cpuinfo; other platforms use os only", () =>
    Effect.gen(function* () {
      const linux = fakeProbe(
        { platform: "linux", arch: "arm64", cpuCount: 4, cpuModel: undefined, totalMemoryBytes: 4 * GiB },
        { "/proc/cpuinfo": fixture("linux-raspberrypi.cpuinfo.txt") }
      )
      expect((yield* detectHardware(linux)).chip).toBe("Raspberry Pi 4 Model B Rev 1.1")
      const win = fakeProbe({ platform: "win32", arch: "x64", cpuCount: 8, cpuModel: "X", totalMemoryBytes: 16 * GiB }, {})
      expect(yield* detectHardware(win)).toEqual({
        platform: "win32",
        arch: "x64",
        chip: "X",
        cpuCores: 8,
        gpuMemoryGB: 10.67,
        totalMemoryGB: 16
      })
      expect(win.calls).toEqual([])
    })
  )

  it.live("the node probe runs real commands and reads real files, yielding undefined on failure", () =>
    Effect.gen(function* () {
      const probe = yield* nodeProbe
      expect(yield* probe.run("echo", ["hello"])).toBe("hello\n")
      expect(yield* probe.run("definitely-not-a-command-xyz", [])).toBeUndefined()
      expect(yield* probe.readFile("/definitely/not/here")).toBeUndefined()
      if (Os.platform() === "linux") expect(yield* probe.readFile("/proc/cpuinfo")).toMatch(/processor/)
      expect(probe.facts.cpuCount).toBeGreaterThan(0)
    }).pipe(Effect.provide(NodeContext.layer))
  )

  it.live("Hardware.layer detects this machine and applies worker.hardware", () =>
    Effect.gen(function* () {
      const profile = yield* Hardware
      expect(profile.platform).toBe(Os.platform())
      expect(profile.arch).toBe(Os.arch())
      expect(profile.cpuCores).toBeGreaterThan(0)
      expect(profile.totalMemoryGB).toBeGreaterThan(0)
      expect(profile.gpuMemoryGB).toBe(48)
      expect(Schema.decodeUnknownSync(HardwareProfile)(profile)).toEqual(profile)
    }).pipe(
      Effect.provide(
        Hardware.layer.pipe(
          Layer.provide(NodeContext.layer),
          Layer.provide(
            ClusterConfigService.layerTest((c) => ({ ...c, worker: { ...c.worker, hardware: { gpuMemoryGB: 48 } } }))
          )
        )
      )
    )
  )
})
