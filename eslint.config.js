// @ts-check
import tseslint from "typescript-eslint"

export default tseslint.config(
  { ignores: ["node_modules", "coverage", "dist", "bench/results", "bench/profiles", "tmp"] },
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
  },
  {
    // The request path (issue 10): no generator function made per call. V8 (Node 20) gives every new
    // generator function its own initial map, in old space, pointing at the closure: a generator
    // made per request kept that request's objects alive through two scavenges (see the note on
    // `runAttempt` in src/controller/router.ts). A generator made once per process is fine: those say so inline.
    files: [
      "src/controller/{router,relay,relay-step,admission-queue,waiting-room,deadline-sweep,in-flight,request-journal,balancer,worker-probes}.ts",
      "src/http/{inference-lane,openai-request,route-request,sse,body-reader,front-door,answer,request-target}.ts",
      "src/nats/{nats-transport-live,codec,unsubscribe-batch}.ts",
      "src/domain/token-wire.ts",
      "src/worker/inference-handler.ts",
      "src/worker/engines/synthetic-engine.ts"
    ],
    rules: {
      "no-restricted-syntax": [
        "error",
        {
          selector:
            ":matches(ArrowFunctionExpression, FunctionExpression[generator=false], FunctionDeclaration) CallExpression[callee.property.name='gen'] > FunctionExpression[generator=true]",
          message:
            "a generator made per call (`(x) => Effect.gen(function* () {…})`) gets its own initial map in old space, which kept each request's objects alive through two scavenges: define it once with `Effect.fnUntraced(function* (x) {…})`, or use plain combinators"
        }
      ]
    }
  }
)
