// @ts-check
import tseslint from "typescript-eslint"

export default tseslint.config(
  { ignores: ["node_modules", "coverage", "bench/results", "bench/profiles", "tmp"] },
  ...tseslint.configs.recommended,
  {
    files: ["**/*.ts"],
    languageOptions: { parserOptions: { projectService: true, tsconfigRootDir: import.meta.dirname } },
    rules: {
      "@typescript-eslint/no-explicit-any": "error",
      "@typescript-eslint/no-floating-promises": "error",
      "@typescript-eslint/consistent-type-imports": ["error", { fixStyle: "inline-type-imports" }],
      "@typescript-eslint/no-unused-vars": ["error", { argsIgnorePattern: "^_", varsIgnorePattern: "^_" }],
      "@typescript-eslint/no-namespace": "off",
      "@typescript-eslint/no-empty-object-type": "off"
    }
  },
  {
    // A package's index loads every module of it: @effect/platform's holds the Swagger UI and Scalar
    // bundles as strings (≈20 MiB of heap), @effect/platform-node's loads undici. The processes
    // import the modules they use (`@effect/platform/HttpServerResponse`), which keeps ≈50 MiB of
    // RSS out of every controller and worker.
    files: ["src/**/*.ts"],
    rules: {
      "no-restricted-imports": [
        "error",
        ...["@effect/platform", "@effect/platform-node", "@effect/rpc"].map((name) => ({
          name,
          message: `import the module itself (${name}/Module): the package's index loads all of it`
        }))
      ]
    }
  }
)
