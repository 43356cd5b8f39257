/**
 * @module
 * Serves a Freshet app on Node with @hono/node-server (an optional
 * dependency, loaded on first serve), and stops it cleanly.
 */
import type { AddressInfo } from "node:net";
import { missingPackage } from "../core/errors.ts";

/** A running server. */
export interface RunningServer {
  /** The port it listens on (the one chosen when asked for port 0). */
  port: number;
  /** Stops accepting connections and resolves when in-flight requests have finished. */
  close(): Promise<void>;
}

/** Anything with a fetch handler: a Hono app. */
export interface FetchApp {
  /** Answers one request. */
  fetch: (req: Request) => Response | Promise<Response>;
}

/**
 * Serves `app` on Node.
 *
 * @example
 * ```ts
 * const server = await serve(host.app, { port: 8080 })
 * onShutdown(() => server.close())
 * ```
 */
export async function serve(app: FetchApp, opts: { port?: number; hostname?: string } = {}): Promise<RunningServer> {
  const { serve: honoServe } = await import("@hono/node-server").catch(missingPackage("@hono/node-server", "the Node server", "node"));
  return new Promise((resolve, reject) => {
    const server = honoServe({ fetch: app.fetch, port: opts.port ?? 8080, hostname: opts.hostname ?? "127.0.0.1" }, (info: AddressInfo) => {
      resolve({
        port: info.port,
        close: () =>
          new Promise<void>((done) => {
            server.close(() => done());
            // Idle keep-alive sockets would hold close() open; requests in flight still finish.
            (server as { closeIdleConnections?: () => void }).closeIdleConnections?.();
          }),
      });
    });
    server.once("error", reject);
  });
}

// Node and Bun share the process-signal API.
export { onShutdown } from "./shutdown.ts";
