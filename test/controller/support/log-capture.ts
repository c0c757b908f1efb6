import { HashMap, type Layer, Logger, type LogLevel } from "effect"

export interface CapturedLog {
  readonly level: LogLevel.LogLevel["label"]
  readonly message: string
  readonly annotations: Readonly<Record<string, unknown>>
}

/** A logger layer that records every line (instead of printing it) into `lines`. */
export const captureLogs = (): { readonly lines: ReadonlyArray<CapturedLog>; readonly layer: Layer.Layer<never> } => {
  const lines: Array<CapturedLog> = []
  const logger = Logger.make(({ annotations, logLevel, message }) => {
    const text = Array.isArray(message) ? message.map(String).join(" ") : String(message)
    lines.push({ level: logLevel.label, message: text, annotations: Object.fromEntries(HashMap.toEntries(annotations)) })
  })
  return { lines, layer: Logger.replace(Logger.defaultLogger, logger) }
}
