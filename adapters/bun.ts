/**
 * @module
 * Serves a Freshet app with `Bun.serve`, and stops it cleanly.
 */
import type { FetchApp, RunningServer } from "./node.ts";

/**
 * The part of Bun's global `Bun` this adapter uses: a structural shim instead
 * of bun-types, whose globals clash with Node's. tests/types/bun.ts checks it
 * against bun-types (tsconfig.bun.json).
 */
export interface BunServeApi {
  /** Starts a server; `stop(false)` stops listening and lets in-flight requests finish. */
  serve: (opts: { fetch: FetchApp["fetch"]; port: number; hostname: string; maxRequestBodySize?: number }) => { port?: number; stop: (closeActive?: boolean) => Promise<void> };
}
declare const Bun: BunServeApi;

/**
 * Serves `app` on Bun.
 *
 * @example
 * ```ts
 * const server = await serve(host.app, { port: 8080 })
 * ```
 */
export function serve(app: FetchApp, opts: { port?: number; hostname?: string } = {}): Promise<RunningServer> {
  const server = Bun.serve({ fetch: app.fetch, port: opts.port ?? 8080, hostname: opts.hostname ?? "127.0.0.1", maxRequestBodySize: 1024 * 1024 * 1024 });
  // stop(false) stops listening and lets in-flight requests finish.
  return Promise.resolve({ port: server.port ?? opts.port ?? 8080, close: () => server.stop(false) });
}

// Node and Bun share the process-signal API.
export { onShutdown } from "./shutdown.ts";
