/**
 * @module
 * The graceful-stop logic every runtime adapter shares: on the first signal,
 * run `stop` (finish in-flight work, flush stores), then exit 0, or 1 if it threw.
 */
import process from "node:process";

/**
 * Returns a signal handler that runs `stop` once and then calls `exit`.
 *
 * @example
 * ```ts
 * const handle = shutdownHandler(async () => { await server.close() }, (code) => process.exit(code))
 * process.on("SIGTERM", () => handle("SIGTERM"))
 * ```
 */
export function shutdownHandler(stop: () => Promise<void>, exit: (code: number) => void): (signal: string) => void {
  let stopping = false;
  return (signal) => {
    if (stopping) return;
    stopping = true;
    console.error(`[freshet] ${signal}: finishing in-flight work, then stopping`);
    stop().then(() => exit(0), (e) => {
      console.error("[freshet] error while stopping:", e);
      exit(1);
    });
  };
}

/**
 * Runs `stop` once on SIGTERM or SIGINT, then exits (0, or 1 if `stop` threw). For Node and Bun.
 *
 * @example
 * ```ts
 * onShutdown(async () => { await server.close(); await host.close() })
 * ```
 */
export function onShutdown(stop: () => Promise<void>): void {
  const handle = shutdownHandler(stop, (code) => process.exit(code));
  process.on("SIGTERM", () => handle("SIGTERM"));
  process.on("SIGINT", () => handle("SIGINT"));
}
