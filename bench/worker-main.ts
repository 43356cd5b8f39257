/**
 * Runs a benchmark's child worker: the mode named after `--worker`, its result
 * printed as `RESULT <json>` for the parent, then exit. Kept apart from lib.ts
 * so that a worker loads nothing more than it measures (P8 reads its memory).
 */
import process from "node:process";

export function workerMain(modes: Record<string, (argv: string[]) => Promise<unknown>>, argv: string[]): void {
  const mode = argv[1];
  const run = modes[mode];
  (run ? run(argv) : Promise.reject(new Error(`unknown worker mode ${mode}; use one of ${Object.keys(modes).join(", ")}`))).then(
    (r) => {
      console.log("RESULT " + JSON.stringify(r));
      process.exit(0);
    },
    (e) => {
      console.error(e);
      process.exit(1);
    },
  );
}
