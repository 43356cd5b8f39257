#!/usr/bin/env node
// The `freshet` bin on Node: registers tsx so that feature repos written in TypeScript load, then runs the CLI.
import { register } from "tsx/esm/api";
register();
const { main } = await import("../adapters/cli.ts");
main(process.argv.slice(2)).catch((e) => {
  console.error(e?.name === "FreshetError" ? e.message : e);
  // A mistake in the flags, the env or the feature repo: exit 2, like a usage error.
  process.exit(e?.code === "INVALID_CONFIG" || e?.code === "INVALID_DEFINITION" ? 2 : 1);
});
