#!/usr/bin/env node
// The `freshet` bin on Node: registers tsx so that feature repos written in TypeScript load, then runs the CLI.
import { register } from "tsx/esm/api";
register();
const { main } = await import("../adapters/cli.ts");
main(process.argv.slice(2)).catch((e) => {
  console.error(e?.name === "FreshetError" ? e.message : e);
  process.exit(e?.code === "INVALID_CONFIG" ? 2 : 1);
});
