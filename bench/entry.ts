/**
 * The entry point shared by the benchmarks that run themselves in child
 * processes: `--worker` runs the measuring side (on whichever runtime
 * started it), anything else runs the benchmark as a script when the file is
 * the entry point. lib.ts is loaded only on the script side, as before.
 */
import process from "node:process";
import type { BenchOptions, BenchRun } from "./lib.ts";

export async function benchEntry(url: string, name: string, run: (opts: BenchOptions) => Promise<BenchRun>, worker: (argv: string[]) => Promise<unknown>): Promise<void> {
  const argv = process.argv.slice(2);
  if (argv.includes("--worker")) {
    await worker(argv).then(() => process.exit(0), (e) => {
      console.error(e);
      process.exit(1);
    });
    return;
  }
  const { benchMain, isMain } = await import("./lib.ts");
  if (isMain(url)) await benchMain(name, run, argv);
}
