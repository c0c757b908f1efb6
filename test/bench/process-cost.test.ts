import { describe, expect, it } from "@effect/vitest"
import { parseCpuTime, parseProcStat, parseProcStatusRss, parsePs, sampleProcesses } from "../../bench/process-cost.js"

describe("bench: process cost", () => {
  it("reads ps's CPU time in the macOS and the Linux formats", () => {
    expect(parseCpuTime("0:01.23")).toBeCloseTo(1.23) // macOS: minutes:seconds.hundredths
    expect(parseCpuTime("1234:56.78")).toBeCloseTo(1234 * 60 + 56.78) // macOS never rolls minutes into hours
    expect(parseCpuTime("00:01:02")).toBe(62) // Linux procps: HH:MM:SS
    expect(parseCpuTime("1-02:03:04")).toBe(86_400 + 2 * 3_600 + 3 * 60 + 4)
    expect(parseCpuTime("12:01:02.50")).toBeCloseTo(12 * 3_600 + 62.5)
    expect(parseCpuTime("")).toBeUndefined()
    expect(parseCpuTime("1.5")).toBeUndefined()
    expect(parseCpuTime("a:bc")).toBeUndefined()
  })

  it("reads `ps -o pid=,rss=,time=` output: one sample per pid, RSS from KiB to MiB, odd lines left out", () => {
    const macOS = "  512  10448   0:01.23\n 9731 262144  12:34.50\n"
    expect(parsePs(macOS)).toEqual(
      new Map([
        [512, { cpuSeconds: 1.23, rssMiB: 10448 / 1024 }],
        [9731, { cpuSeconds: 12 * 60 + 34.5, rssMiB: 256 }]
      ])
    )
    const linux = "    1 14520 00:00:25\n"
    expect(parsePs(linux).get(1)).toEqual({ cpuSeconds: 25, rssMiB: 14520 / 1024 })
    expect(parsePs("").size).toBe(0)
    expect(parsePs("  PID   RSS TIME\nps: 123: no such process\n 77 - 0:00.01\n").size).toBe(0)
  })

  it("reads /proc's stat and status, a command name with spaces and parens included", () => {
    const fields = ["S", "1", "2", "3", "4", "5", "6", "7", "8", "9", "10", "250", "50", "0", "0"]
    expect(parseProcStat(`4242 (node (tsx) x) ${fields.join(" ")}`, 100)).toBe(3)
    expect(parseProcStat("4242 (node) S 1 2", 100)).toBeUndefined()
    expect(parseProcStatusRss("Name:\tnode\nVmPeak:\t 999 kB\nVmRSS:\t  204800 kB\n")).toBe(200)
    expect(parseProcStatusRss("Name:\tnode\n")).toBeUndefined()
  })

  it("samples a live process from /proc and from ps alike", async () => {
    for (const source of process.platform === "linux" ? (["proc", "ps"] as const) : (["ps"] as const)) {
      const sample = (await sampleProcesses([process.pid], source)).get(process.pid)
      expect(sample?.rssMiB).toBeGreaterThan(10)
      expect(sample?.cpuSeconds).toBeGreaterThanOrEqual(0)
    }
    expect((await sampleProcesses([2 ** 22 + 1])).size).toBe(0)
  })
})
