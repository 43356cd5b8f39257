/**
 * @module
 * What a SQLite driver's error means for the caller: a lock held past the
 * busy timeout is retriable, a damaged or foreign file is not. Shared by
 * the local drivers and the store (no `node:` import: the Workers path uses it).
 */
import { FreshetError } from "../../../core/errors.ts";

/** The plugin name in every message. */
export const PLUGIN = "sqlite";

const NAMED: Record<string, number> = { BUSY: 5, LOCKED: 6, READONLY: 8, IOERR: 10, CORRUPT: 11, FULL: 13, CANTOPEN: 14, NOTADB: 26 };

/**
 * The primary SQLite result code of a driver's error (5 busy, 6 locked, 11
 * corrupt, 26 not a database, ...), or undefined when it is not one. Each
 * driver says it differently: node:sqlite `errcode`, libsql `rawCode`,
 * bun:sqlite `errno`, and most of them a `SQLITE_*` name or SQLite's message.
 *
 * @example
 * ```ts
 * sqliteCode(e) === 5 // SQLITE_BUSY
 * ```
 */
export function sqliteCode(e: unknown): number | undefined {
  if (!e || typeof e !== "object") return undefined;
  const o = e as { errno?: unknown; errcode?: unknown; rawCode?: unknown; code?: unknown; message?: unknown };
  for (const n of [o.errcode, o.rawCode, o.errno]) if (typeof n === "number" && n > 0) return n & 0xff;
  const text = `${String(o.code ?? "")} ${String(o.message ?? "")}`;
  const named = /SQLITE_(BUSY|LOCKED|CORRUPT|NOTADB|IOERR|FULL|CANTOPEN|READONLY)/.exec(text)?.[1];
  if (named) return NAMED[named];
  if (/database is locked/i.test(text)) return 5;
  if (/file is not a database/i.test(text)) return 26;
  if (/malformed/i.test(text)) return 11;
  return undefined;
}

/**
 * A driver error's message, without D1's prefix.
 *
 * @example
 * ```ts
 * errorText(new Error("D1_ERROR: no such table: t")) // "no such table: t"
 * ```
 */
export function errorText(e: unknown): string {
  return (e instanceof Error ? e.message : String(e)).replace(/^D1_ERROR:\s*/, "");
}

/**
 * The refusal for a file that is not SQLite, or is damaged.
 *
 * @example
 * ```ts
 * throw damagedFile("/data/freshet.db", e)
 * ```
 */
export function damagedFile(target: string, e: unknown): FreshetError {
  return new FreshetError(
    "INVALID_CONFIG",
    `${target} is not a readable SQLite database (${errorText(e)}): point the store at a new file, or move this one away and restore it from a backup (\`sqlite3 ${target} .recover\` may save its rows)`,
    { plugin: PLUGIN, retriable: false, cause: e },
  );
}

/** Where an error happened, for {@link sqliteError}. */
export interface ErrorContext {
  /** The file or binding. */
  target: string;
  busyTimeoutMs?: number;
  /** How long the failed call ran, ms. */
  waitedMs: number;
  /** The view, for writes and reads. */
  definition?: string;
}

/**
 * A driver error as a FreshetError: a lock held past the busy timeout is a
 * retriable STORE_UNAVAILABLE that says who holds it and how long this
 * waited; a damaged file is a non-retriable INVALID_CONFIG; anything else is
 * a retriable STORE_UNAVAILABLE (a full disk, an I/O error, D1 unreachable).
 *
 * @example
 * ```ts
 * throw sqliteError(e, { target: "/data/freshet.db", busyTimeoutMs: 5000, waitedMs: 5003 })
 * ```
 */
export function sqliteError(e: unknown, ctx: ErrorContext): FreshetError {
  if (e instanceof FreshetError) return e;
  const code = sqliteCode(e);
  const opts = { plugin: PLUGIN, definition: ctx.definition, cause: e };
  if (code === 5 || code === 6) {
    const timeout = ctx.busyTimeoutMs === undefined ? "" : ` (busy timeout ${ctx.busyTimeoutMs} ms)`;
    return new FreshetError(
      "STORE_UNAVAILABLE",
      `the database ${ctx.target} is locked by another process: waited ${Math.round(ctx.waitedMs)} ms${timeout} for its lock; retry later, find the process holding a long transaction on it, or raise busyTimeoutMs`,
      { ...opts, retriable: true },
    );
  }
  if (code === 26 || code === 11) return damagedFile(ctx.target, e);
  return new FreshetError("STORE_UNAVAILABLE", `store unavailable: ${ctx.target}: ${errorText(e)}`, { ...opts, retriable: true });
}
