/**
 * @module
 * Says once that a store is down and once that it is back: an outage is one
 * warning, a reminder at most every `remindMs`, and one line when the first
 * write succeeds again, however many partitions, retries or requests meet it.
 */
import type { Logger } from "./contracts.ts";

/** What {@link outageLog} returns. */
export interface OutageLog {
  /** A retriable failure: logs at the start of an outage and then at most every `remindMs`. */
  failed(error: unknown, context?: string): void;
  /**
   * A success: logs the end of an outage, if one was under way. `startedAt`
   * (same clock as `now`) is when the successful attempt began: one that
   * began before the outage did (a write answered just before the store
   * went away) says nothing about the store now and is ignored.
   */
  ok(startedAt?: number): void;
  /** Whether an outage is under way. */
  readonly down: boolean;
}

/**
 * An outage tracker for one component (`[kafka] "trips"`, `[http]`).
 *
 * @example
 * ```ts
 * const outage = outageLog(logger, '[kafka] "trips"', "source paused, retrying")
 * try { await commit(); outage.ok() } catch (e) { outage.failed(e) }
 * ```
 */
export function outageLog(logger: Logger | undefined, who: string, whileDown: string, opts: { remindMs?: number; now?: () => number } = {}): OutageLog {
  const remindMs = opts.remindMs ?? 60_000;
  const now = opts.now ?? Date.now;
  let since: number | undefined;
  let failures = 0;
  let reminded = 0;
  return {
    get down() {
      return since !== undefined;
    },
    failed(error, context) {
      const t = now();
      failures++;
      const why = error instanceof Error ? error.message : String(error);
      if (since === undefined) {
        since = reminded = t;
        logger?.warn(`[freshet] ${who}: store down: ${why}${context ? ` (${context})` : ""}; ${whileDown} until it is back`);
      } else if (t - reminded >= remindMs) {
        reminded = t;
        logger?.warn(`[freshet] ${who}: store still down after ${Math.round((t - since) / 1000)} s (${failures} failures): ${why}`);
      }
    },
    ok(startedAt) {
      if (since === undefined || (startedAt !== undefined && startedAt < since)) return;
      logger?.info(`[freshet] ${who}: store is back after ${Math.round((now() - since) / 1000)} s (${failures} failures meanwhile)`);
      since = undefined;
      failures = 0;
    },
  };
}
