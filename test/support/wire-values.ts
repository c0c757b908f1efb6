/** Arbitrary values of a bus message's schema that a real sender could send (property tests). */
import { Arbitrary, type FastCheck as fc, Schema } from "effect"

/**
 * No `__proto__` key anywhere: in an object literal it sets the prototype instead of a member, so
 * such values are not what JSON.parse would give (records and open structs, issue 12), and the
 * controller never forwards one (`paramsOf`; the body's decode drops them elsewhere).
 */
export const hasProtoKey = (u: unknown): boolean =>
  typeof u === "object" && u !== null && (Object.hasOwn(u, "__proto__") || Object.values(u).some(hasProtoKey))

/**
 * Effect's Arbitrary for an open struct (named members plus `[key: string]: unknown`, issue 12)
 * can give the index signature a named member's key with a value of another type (`name: {}` in
 * a chat message): such a value is not of the schema's type at all. Keep the values that are.
 */
export const validOf = <A, I>(schema: Schema.Schema<A, I>) => {
  const is = Schema.is(schema)
  return (x: unknown): boolean => !hasProtoKey(x) && is(x)
}

/** `Arbitrary.make(schema)`, kept to the values `validOf` accepts. */
export const wireValuesOf = <A, I>(schema: Schema.Schema<A, I>): fc.Arbitrary<A> => Arbitrary.make(schema).filter(validOf(schema))
