import { describe, expect, it } from "@effect/vitest"
import { Cause, Effect, HashMap, Logger, LogLevel } from "effect"
import { jsonLine, LogFields, logfmtValue, makeLogger, messageText, prettyLine } from "../src/logging.js"

const date = new Date("2026-12-03T07:43:57.651Z")

const input = (message: unknown, annotations: Record<string, unknown> = {}, cause: Cause.Cause<unknown> = Cause.empty) => ({
  date,
  logLevel: LogLevel.Info,
  message,
  annotations: HashMap.fromIterable(Object.entries(annotations)),
  cause
})

/** Runs `effect` with a logger of `format` that collects its lines. */
const logged = <A, E>(format: "pretty" | "json", effect: Effect.Effect<A, E>) =>
  Effect.gen(function* () {
    const lines: Array<string> = []
    const logger = makeLogger(format, { write: (line) => lines.push(line) })
    yield* effect.pipe(Effect.provide(Logger.replace(Logger.defaultLogger, logger)))
    return lines
  })

describe("pretty lines", () => {
  it("write time, level, message, then the annotations as key=value on the same line, in a fixed order", () => {
    const line = prettyLine(
      input("request", {
        requestId: "req-1",
        durationMs: 431,
        model: "synthetic/demo",
        method: "POST",
        status: 200,
        zeta: "z",
        alpha: "a"
      })
    )
    expect(line).toBe(
      '2026-12-03T07:43:57.651Z INFO  request method=POST model="synthetic/demo" status=200 durationMs=431 requestId=req-1 alpha=a zeta=z'
    )
  })

  it("quote and escape any value a client could shape, so that it can neither break the line nor forge a field", () => {
    expect(logfmtValue("plain-id_1.2:3")).toBe("plain-id_1.2:3")
    expect(logfmtValue('evil" status=200\nINFO forged')).toBe('"evil\\" status=200\\nINFO forged"')
    expect(logfmtValue("word", true)).toBe('"word"')
    expect(logfmtValue(12.5)).toBe("12.5")
    expect(logfmtValue({ a: 1 })).toBe('"{\\"a\\":1}"')
    expect(logfmtValue("x".repeat(5_000)).length).toBeLessThan(2_100)
    const line = prettyLine(input("request", { model: "m\nWARN fake line" }))
    expect(line.split("\n")).toHaveLength(1)
    expect(line).toContain('model="m\\nWARN fake line"')
  })

  it("keep a multi-line message and a cause on one line", () => {
    expect(messageText(["two\nlines", 3])).toBe("two\\nlines 3")
    const line = prettyLine(input("stopped by a defect", {}, Cause.die(new Error("boom"))))
    expect(line.split("\n")).toHaveLength(1)
    expect(line).toMatch(/^2026-12-03T07:43:57\.651Z INFO  stopped by a defect cause="Error: boom\\n/)
  })

  it("paint the level only when asked (a terminal)", () => {
    expect(prettyLine({ ...input("x"), logLevel: LogLevel.Warning }, true)).toContain("\x1b[33mWARN\x1b[0m")
    expect(prettyLine({ ...input("x"), logLevel: LogLevel.Warning })).toBe("2026-12-03T07:43:57.651Z WARN  x")
  })
})

describe("LogFields", () => {
  it("are written like annotations, in their own order, before the annotations; other loggers see key=value", () => {
    const fields = new LogFields({ method: "GET", model: "a b", status: 200 })
    expect(prettyLine(input(["request", fields], { workerId: "w1" }))).toBe(
      '2026-12-03T07:43:57.651Z INFO  request method=GET model="a b" status=200 workerId=w1'
    )
    expect(JSON.parse(jsonLine(input(["request", fields])))).toEqual({
      time: "2026-12-03T07:43:57.651Z",
      level: "info",
      msg: "request",
      method: "GET",
      model: "a b",
      status: 200
    })
    expect(String(fields)).toBe('method=GET model="a b" status=200')
    expect(JSON.stringify(fields)).toBe('{"method":"GET","model":"a b","status":200}')
  })
})

describe("json lines", () => {
  it("are one JSON object per event with time, level, msg and the annotations as fields", () => {
    const line = jsonLine(input("request", { requestId: "req-1", status: 401, model: 'a"b\nc' }))
    expect(line.split("\n")).toHaveLength(1)
    expect(JSON.parse(line)).toEqual({
      time: "2026-12-03T07:43:57.651Z",
      level: "info",
      msg: "request",
      model: 'a"b\nc',
      status: 401,
      requestId: "req-1"
    })
  })

  it("never let an annotation replace time, level or msg; a cause becomes a string field", () => {
    const parsed = JSON.parse(jsonLine(input("m", { level: "fake", msg: "fake", time: "fake" }, Cause.fail("bad")))) as Record<
      string,
      unknown
    >
    expect(parsed["level"]).toBe("info")
    expect(parsed["msg"]).toBe("m")
    expect(parsed["time"]).toBe("2026-12-03T07:43:57.651Z")
    expect(parsed["cause"]).toContain("bad")
  })
})

describe("makeLogger", () => {
  it.effect("writes every Effect log call as one line, annotations included, in either format", () =>
    Effect.gen(function* () {
      const program = Effect.logWarning("worker w1 offline: no heartbeat for 15.2 s").pipe(Effect.annotateLogs({ workerId: "w1" }))
      const pretty = yield* logged("pretty", program)
      expect(pretty).toHaveLength(1)
      expect(pretty[0]).toMatch(/^\d{4}-\d\d-\d\dT[\d:.]+Z WARN  worker w1 offline: no heartbeat for 15\.2 s workerId=w1$/)
      const json = yield* logged("json", program)
      expect(JSON.parse(json[0] ?? "")).toMatchObject({ level: "warn", msg: "worker w1 offline: no heartbeat for 15.2 s", workerId: "w1" })
    })
  )
})
