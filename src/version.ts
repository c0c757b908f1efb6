/** The version reported by `/api/cluster/status`; kept equal to package.json's by a test. */
export const VERSION = "0.1.0"
