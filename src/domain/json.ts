/** A parsed JSON object: what `JSON.parse` gives for `{…}`. */
export type JsonObject = Record<string, unknown>

/** Whether a parsed JSON value is an object (not `null`, not an array). */
export const isJsonObject = (u: unknown): u is JsonObject => typeof u === "object" && u !== null && !Array.isArray(u)
