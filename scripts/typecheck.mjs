#!/usr/bin/env node
// `npm run typecheck` (and the first step of `npm test`): tsc over the published
// code (tsconfig.json: strict, verbatimModuleSyntax, isolatedDeclarations), over
// examples, tests and bench (tsconfig.dev.json), the Bun adapter against
// bun-types (tsconfig.bun.json), the Workers adapter against
// @cloudflare/workers-types (tsconfig.workers.json), and the Deno adapter with
// `deno check`.
// Exits 1 when any of them reports an error.
import { spawnSync } from "node:child_process";
import { dirname, join, resolve } from "node:path";
import { fileURLToPath } from "node:url";
import process from "node:process";

const root = resolve(dirname(fileURLToPath(import.meta.url)), "..");
const bin = (name) => join(root, "node_modules", ".bin", name);
const checks = [
  ["tsc (published code)", bin("tsc"), ["-p", "tsconfig.json"]],
  ["tsc (examples, tests, bench)", bin("tsc"), ["-p", "tsconfig.dev.json"]],
  ["tsc (Bun adapter, bun-types)", bin("tsc"), ["-p", "tsconfig.bun.json"]],
  ["tsc (Workers adapter, @cloudflare/workers-types)", bin("tsc"), ["-p", "tsconfig.workers.json"]],
  ["deno check (Deno adapter)", bin("deno"), ["check", "adapters/deno.ts", "examples/edge_push/deno.ts", "tests/types/deno.ts"]],
];
let failed = 0;
for (const [name, cmd, args] of checks) {
  const t0 = Date.now();
  const r = spawnSync(cmd, args, { cwd: root, stdio: "inherit", env: { ...process.env, NO_COLOR: "1" } });
  const ok = r.status === 0;
  if (!ok) failed++;
  console.log(`typecheck: ${name}: ${ok ? "ok" : `FAILED (${r.error?.message ?? `exit ${r.status}`})`}, ${((Date.now() - t0) / 1000).toFixed(1)} s`);
}
process.exit(failed ? 1 : 0);
