#!/usr/bin/env node
// The `freshet` bin on Node. Installed from npm (under node_modules) it runs the
// built CLI in dist/; in a checkout it runs the TypeScript sources through tsx.
// Feature repos written in TypeScript load with Node's own type stripping where
// this Node has it on (22.18+, 23.6+, 24), and through tsx otherwise, when tsx
// is installed; loadRepo says what to do when neither is there.
import { existsSync } from "node:fs";
import { fileURLToPath } from "node:url";
import { sep } from "node:path";
import process from "node:process";

const here = fileURLToPath(import.meta.url);
const built = new URL("../dist/adapters/cli.js", import.meta.url);
const installed = here.split(sep).includes("node_modules") && existsSync(built);
// Bun and Deno strip types themselves.
const stripsTypes = process.features.typescript || "Bun" in globalThis || "Deno" in globalThis;
if (!installed || !stripsTypes) {
  try {
    const { register } = await import("tsx/esm/api");
    register();
    // And for require(): in a project without "type": "module" Node hands a .ts repo to the CommonJS loader (ERR_REQUIRE_CYCLE_MODULE without it).
    (await import("tsx/cjs/api")).register();
  } catch (e) {
    // Without tsx an installed CLI still loads JavaScript feature repos.
    if (!installed) throw e;
  }
}
const { main } = await import(installed ? built.href : "../adapters/cli.ts");
main(process.argv.slice(2)).catch((e) => {
  console.error(e?.name === "FreshetError" ? e.message : e);
  // A mistake in the flags, the env or the feature repo: exit 2, like a usage error.
  process.exit(e?.code === "INVALID_CONFIG" || e?.code === "INVALID_DEFINITION" ? 2 : 1);
});
