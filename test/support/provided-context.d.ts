import "vitest"

declare module "vitest" {
  /** Values the global setup hands to every test file (`inject("natsUrl")`). */
  export interface ProvidedContext {
    natsUrl: string
  }
}
