/**
 * @module
 * The SQLite driver seam over a Cloudflare D1 binding, for Workers. No
 * `node:` import and no SDK: a D1 binding is typed structurally with the
 * few members used. `batch` is D1's own, which runs its statements as one
 * transaction.
 *
 * @example
 * ```ts
 * import { d1Driver, sqliteStore } from "freshet/stores/sqlite"
 * export default { fetch: (req: Request, env: { DB: D1Database }) => app(sqliteStore({ driver: d1Driver(env.DB) })).fetch(req) }
 * ```
 */
import type { SqlDriver, SqlResult, SqlRow, SqlValue } from "./driver.ts";

/** The members of a D1 prepared statement that the driver uses. */
export interface D1PreparedStatementLike {
  /** Binds `?1`, `?2`, ... in order. */
  bind(...values: unknown[]): D1PreparedStatementLike;
  /** Runs it. */
  run(): Promise<D1ResultLike>;
  /** Runs it and returns its rows. */
  all(): Promise<D1ResultLike>;
}

/** What D1 answers for one statement. */
export interface D1ResultLike {
  /** The rows, for a query. */
  results?: unknown[];
  /** Rows changed, for a write. */
  meta?: { changes?: number };
}

/** The members of a D1Database binding that the driver uses. */
export interface D1DatabaseLike {
  /** Prepares one statement. */
  prepare(sql: string): D1PreparedStatementLike;
  /** Runs statements as one transaction. */
  batch(statements: D1PreparedStatementLike[]): Promise<D1ResultLike[]>;
}

/** Options of {@link d1Driver}. */
export interface D1DriverOptions {
  /** A name for messages, e.g. the binding's name. Default "D1 binding". */
  name?: string;
}

/**
 * A {@link SqlDriver} over a D1 binding. D1 caps a bound string near 2 MB,
 * so the store splits large batches into statements of at most
 * `maxParamBytes` (all in the same D1 batch, so still one transaction).
 * Closing it leaves the binding alone: the Worker owns it.
 *
 * @example
 * ```ts
 * const store = sqliteStore({ driver: d1Driver(env.DB, { name: "D1 binding DB" }) })
 * ```
 */
export function d1Driver(db: D1DatabaseLike, opts: D1DriverOptions = {}): SqlDriver {
  const stmt = (sql: string, params?: readonly SqlValue[]) => {
    const s = db.prepare(sql);
    return params && params.length ? s.bind(...params) : s;
  };
  const rowsOf = (r: D1ResultLike) => (r.results ?? []) as SqlRow[];
  return {
    name: "d1",
    target: opts.name ?? "D1 binding",
    maxParamBytes: 1_000_000,
    async exec(sql) {
      await stmt(sql).run();
    },
    async run(sql, params) {
      const r = await stmt(sql, params).run();
      return { changes: Number(r.meta?.changes ?? 0) };
    },
    async all(sql, params) {
      return rowsOf(await stmt(sql, params).all());
    },
    async batch(statements): Promise<SqlResult[]> {
      if (!statements.length) return [];
      const results = await db.batch(statements.map((s) => stmt(s.sql, s.params)));
      return results.map((r, i) => {
        const rows = rowsOf(r);
        return { changes: statements[i].rows ? rows.length : Number(r.meta?.changes ?? 0), rows: statements[i].rows ? rows : [] };
      });
    },
    close() {},
  };
}
