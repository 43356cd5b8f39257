/**
 * @module
 * Serves a Freshet app with `Deno.serve`, and stops it cleanly.
 */
import type { FetchApp, RunningServer } from "./node.ts";
import { shutdownHandler } from "./shutdown.ts";

/**
 * The part of Deno's global `Deno` this adapter uses: a structural shim
 * instead of Deno's lib types, so that the same sources type-check everywhere.
 * tests/types/deno.ts checks it against Deno's own types (`deno check`).
 */
export interface DenoServeApi {
  /** Starts a server that stops when `signal` aborts; `finished` resolves once it has. */
  serve(opts: { port: number; hostname: string; signal: AbortSignal; onListen?: (a: { port: number }) => void }, handler: FetchApp["fetch"]): { finished: Promise<void>; addr: { port: number } };
  /** Calls `handler` on the signal. */
  addSignalListener(signal: "SIGTERM" | "SIGINT", handler: () => void): void;
  /** Exits the process. */
  exit(code: number): never;
}
declare const Deno: DenoServeApi;

/**
 * Serves `app` on Deno.
 *
 * @example
 * ```ts
 * const server = await serve(host.app, { port: 8080 })
 * ```
 */
export function serve(app: FetchApp, opts: { port?: number; hostname?: string } = {}): Promise<RunningServer> {
  const ac = new AbortController();
  return new Promise((resolve) => {
    const server = Deno.serve({
      port: opts.port ?? 8080,
      hostname: opts.hostname ?? "127.0.0.1",
      signal: ac.signal,
      onListen: ({ port }) => resolve({ port, close: () => (ac.abort(), server.finished) }),
    }, app.fetch);
  });
}

/** Runs `stop` once on SIGTERM or SIGINT, then exits. */
export function onShutdown(stop: () => Promise<void>): void {
  const handle = shutdownHandler(stop, (code) => Deno.exit(code));
  Deno.addSignalListener("SIGTERM", () => handle("SIGTERM"));
  Deno.addSignalListener("SIGINT", () => handle("SIGINT"));
}
