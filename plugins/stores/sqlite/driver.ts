/**
 * @module
 * The SQLite driver seam and the local drivers behind it: `bun:sqlite` on
 * Bun, `node:sqlite` on Deno and on Node where it exists (22.13+, 24), and
 * the npm package `libsql` on Node 20. Each is loaded only when a file is
 * opened, through `process.getBuiltinModule` (see {@link openSqliteDriver}),
 * so no bundler or type checker goes looking for a driver the runtime does
 * not have. The Workers path (./store.ts with ./d1.ts) never runs this file.
 *
 * libsql is an optional peer dependency (a devDependency of the checkout, so
 * `npm install && npm start` works on Node 20): only Node 20 needs it, so a
 * user on node:sqlite, Bun, Deno or Workers does not install its native
 * binaries. Without it, Node 20 gets an error that says to install it.
 *
 * The seam is what the store needs and no more: statements with positional
 * parameters (`?1`, `?2`, ...), and a batch that runs as one transaction.
 * Its methods return a value or a promise, so a synchronous driver (all
 * three local ones) costs no extra tick and an asynchronous one (D1) fits.
 */
import type { MaybePromise } from "../../../core/contracts.ts";
import { FreshetError } from "../../../core/errors.ts";
import { damagedFile, errorText, PLUGIN, sqliteCode } from "./errors.ts";

/** A value bound to a `?N` parameter. */
export type SqlValue = string | number | bigint | null;

/** A result row, by column name. */
export type SqlRow = Record<string, unknown>;

/** One statement of a {@link SqlDriver.batch}. */
export interface SqlStatement {
  /** The statement, with `?1`, `?2`, ... parameters. */
  sql: string;
  /** The parameters, in order. */
  params?: readonly SqlValue[];
  /** Collect the rows it returns (a SELECT, or RETURNING). */
  rows?: boolean;
}

/** What one statement of a batch did: rows changed, and its rows when asked for. */
export interface SqlResult {
  /** Rows changed. */
  changes: number;
  /** The rows it returned, when asked for. */
  rows: SqlRow[];
}

/**
 * A connection to one SQLite database.
 *
 * @example
 * ```ts
 * const db: SqlDriver = await openSqliteDriver("./data/freshet.db")
 * const [upsert] = await db.batch([{ sql: "INSERT INTO t (k, v) VALUES (?1, ?2)", params: ["a", 1] }])
 * ```
 */
export interface SqlDriver {
  /** The driver: "bun:sqlite", "node:sqlite", "libsql" or "d1". */
  readonly name: string;
  /** What it is connected to, for messages: a file path, or "D1 binding". */
  readonly target: string;
  /** The busy timeout it was opened with, for the message when it runs out. */
  readonly busyTimeoutMs?: number;
  /** The largest string parameter worth sending in one statement (D1 caps values near 2 MB). */
  readonly maxParamBytes?: number;
  /**
   * A statement costs about what a row does (an in-process driver with a
   * cheap call into SQLite): the store then upserts a batch with one
   * prepared statement per row. Otherwise (libsql, D1) it sends the rows as
   * one JSON parameter to a single statement, which is faster there
   * (measured with batches of 500: bun:sqlite and node:sqlite ~1.3x faster
   * per row, libsql ~1.3x faster with JSON; D1 pays per statement).
   */
  readonly cheapStatements?: boolean;
  /** Runs one statement without parameters. */
  exec(sql: string): MaybePromise<void>;
  /** Runs one statement, autocommit. Writes that may meet another connection's lock go through `batch`, which takes it up front. */
  run(sql: string, params?: readonly SqlValue[]): MaybePromise<{ changes: number }>;
  /** Runs one query. */
  all(sql: string, params?: readonly SqlValue[]): MaybePromise<SqlRow[]>;
  /** Runs the statements in order as one transaction: all of them or none. */
  batch(statements: readonly SqlStatement[]): MaybePromise<SqlResult[]>;
  /** Closes the connection. */
  close(): MaybePromise<void>;
}

/** The local drivers, by the name {@link SqlDriver.name} gives them. */
export type LocalDriverName = "bun:sqlite" | "node:sqlite" | "libsql";

/** Options of {@link openSqliteDriver}. */
export interface OpenSqliteOptions {
  /** Which driver; default: the runtime's (bun:sqlite on Bun, else node:sqlite, else libsql). */
  use?: LocalDriverName;
  /** How long a statement waits for another connection's lock before it fails. Default 5000. */
  busyTimeoutMs?: number;
  /**
   * `PRAGMA synchronous`. Default "full": every commit is fsynced before it
   * returns, so a write acknowledged to a source (a Kafka offset committed
   * after it) survives a power loss or an OS crash, not only a killed
   * process, which is what "normal" promises in WAL mode. The cost is one
   * fsync per transaction, and a transaction is a whole batch.
   */
  synchronous?: "full" | "normal";
}

// ---- shims: the few members of each driver that are used -------------------

interface SyncStatement {
  run(...params: SqlValue[]): { changes: number | bigint };
  all(...params: SqlValue[]): unknown[];
}
interface SyncConnection {
  prepare(sql: string): SyncStatement;
  exec(sql: string): unknown;
  close(): unknown;
}

/**
 * A {@link SqlDriver} over a synchronous connection (bun:sqlite, node:sqlite,
 * libsql): prepared statements cached by their text, and a batch as BEGIN
 * IMMEDIATE ... COMMIT (ROLLBACK on error), so the write lock is taken up
 * front, waiting up to the busy timeout, and never upgraded halfway.
 */
function syncDriver(name: LocalDriverName, target: string, conn: SyncConnection, busyTimeoutMs: number): SqlDriver {
  const cache = new Map<string, SyncStatement>();
  let closed = false;
  const prepared = (sql: string) => {
    let s = cache.get(sql);
    if (!s) {
      s = conn.prepare(sql);
      if (cache.size >= 256) cache.clear();
      cache.set(sql, s);
    }
    return s;
  };
  const args = (params?: readonly SqlValue[]) => (params ?? []) as SqlValue[];
  // A statement that failed is prepared afresh next time: libsql leaves one
  // that hit SQLITE_BUSY in progress (which fails a later COMMIT), so the
  // store takes its write lock with BEGIN IMMEDIATE, never inside a statement.
  const guarded = <T>(sql: string, f: (s: SyncStatement) => T): T => {
    const s = prepared(sql);
    try {
      return f(s);
    } catch (e) {
      cache.delete(sql);
      throw e;
    }
  };
  const runSql = (sql: string, params?: readonly SqlValue[]) => ({ changes: Number(guarded(sql, (s) => s.run(...args(params))).changes) });
  const allSql = (sql: string, params?: readonly SqlValue[]) => guarded(sql, (s) => s.all(...args(params))) as SqlRow[];
  const runOne = (st: SqlStatement): SqlResult => {
    if (st.rows) {
      const rows = allSql(st.sql, st.params);
      return { changes: rows.length, rows };
    }
    return { changes: runSql(st.sql, st.params).changes, rows: [] };
  };
  return {
    name,
    target,
    busyTimeoutMs,
    cheapStatements: name !== "libsql",
    exec(sql) {
      conn.exec(sql);
    },
    run: runSql,
    all: allSql,
    batch(statements) {
      conn.exec("BEGIN IMMEDIATE");
      try {
        const out = statements.map(runOne);
        conn.exec("COMMIT");
        return out;
      } catch (e) {
        try {
          conn.exec("ROLLBACK");
        } catch {
          // No transaction left to roll back (COMMIT failed and SQLite rolled back itself).
        }
        throw e;
      }
    },
    close() {
      if (closed) return;
      closed = true;
      cache.clear();
      conn.close();
    },
  };
}

/** `process.getBuiltinModule` (Node 20.16+, 22.3+, Bun, Deno), typed structurally: no Node types in this file. */
type BuiltinLoader = (id: string) => unknown;
const builtins = (): BuiltinLoader | undefined =>
  (globalThis as { process?: { getBuiltinModule?: BuiltinLoader } }).process?.getBuiltinModule;

/**
 * Loads a driver's module. Built-ins come through `process.getBuiltinModule`
 * and libsql through `require`, not through `import()`: a literal
 * `import("bun:sqlite")` fails Deno's type check and a Workers bundle, a
 * computed one is refused by workerd's module loader (miniflare), and this
 * file is bundled (never run) on Workers behind ./store.ts's lazy import.
 */
function loadDriver(use: LocalDriverName): Record<string, unknown> | undefined {
  const get = builtins();
  if (!get) return undefined;
  if (use !== "libsql") return get(use) as Record<string, unknown> | undefined;
  const { createRequire } = get("node:module") as { createRequire(from: string): (id: string) => unknown };
  return createRequire(import.meta.url)("libsql") as Record<string, unknown>;
}

function connect(use: LocalDriverName, path: string): SyncConnection {
  const mod = loadDriver(use);
  if (!mod) throw new Error(`${use} is not available in this runtime`);
  switch (use) {
    case "bun:sqlite": {
      const { Database } = mod as { Database: new (path: string, opts?: { create?: boolean }) => SyncConnection };
      return new Database(path, { create: true });
    }
    case "node:sqlite": {
      const { DatabaseSync } = mod as { DatabaseSync: new (path: string) => SyncConnection };
      return new DatabaseSync(path);
    }
    case "libsql": {
      const Database = ((mod as { default?: unknown }).default ?? mod) as new (path: string) => SyncConnection;
      return new Database(path);
    }
  }
}

/** Which local driver this runtime gets by default: bun:sqlite, else node:sqlite, else libsql. */
function pickDriver(): LocalDriverName {
  if ("Bun" in globalThis) return "bun:sqlite";
  if (!builtins()) {
    throw new FreshetError("INVALID_CONFIG", "this runtime has no process.getBuiltinModule to load a SQLite driver with: use Node 20.16+ (22.13+ for node:sqlite), Bun or Deno; on Workers pass driver: d1Driver(env.DB)", { plugin: PLUGIN, retriable: false });
  }
  try {
    // Absent on Node 20, and on 22 before 22.13 without --experimental-sqlite.
    if (loadDriver("node:sqlite")) return "node:sqlite";
  } catch {
    // not there: try libsql
  }
  try {
    loadDriver("libsql");
    return "libsql";
  } catch (e) {
    throw new FreshetError(
      "INVALID_CONFIG",
      "no SQLite driver in this runtime: node:sqlite needs Node 22.13 or later, and the npm package libsql (for Node 20) is not installed; run `npm install libsql`, or use Node 22.13+, Bun or Deno",
      { plugin: PLUGIN, retriable: false, cause: e },
    );
  }
}

/**
 * Opens a local SQLite file with the runtime's driver (or `opts.use`), in
 * WAL mode so that readers never block the writer and several processes
 * share the file, with a busy timeout and `synchronous` as asked. The
 * parent directory is created. `":memory:"` opens a private in-memory
 * database (no WAL).
 *
 * @example
 * ```ts
 * const db = await openSqliteDriver("./data/freshet.db", { busyTimeoutMs: 10_000 })
 * ```
 */
export function openSqliteDriver(path: string, opts: OpenSqliteOptions = {}): Promise<SqlDriver> {
  // Synchronous inside (the local drivers are); a promise so that the seam can change.
  return new Promise((resolve) => resolve(openLocal(path, opts)));
}

function openLocal(path: string, opts: OpenSqliteOptions): SqlDriver {
  const busyTimeoutMs = opts.busyTimeoutMs ?? 5000;
  if (!Number.isInteger(busyTimeoutMs) || busyTimeoutMs < 0) {
    throw new FreshetError("INVALID_CONFIG", `busyTimeoutMs must be a non-negative integer of ms, got ${String(opts.busyTimeoutMs)}`, { plugin: PLUGIN, retriable: false });
  }
  const synchronous = opts.synchronous ?? "full";
  if (synchronous !== "full" && synchronous !== "normal") {
    throw new FreshetError("INVALID_CONFIG", `synchronous must be "full" or "normal", got ${JSON.stringify(synchronous)}`, { plugin: PLUGIN, retriable: false });
  }
  const use = opts.use ?? pickDriver();
  let target = path;
  if (path !== ":memory:") {
    const get = builtins();
    if (!get) throw new FreshetError("INVALID_CONFIG", "a SQLite file needs Node 20.16+, Bun or Deno; on Workers pass driver: d1Driver(env.DB)", { plugin: PLUGIN, retriable: false });
    const { mkdirSync } = get("node:fs") as { mkdirSync(p: string, o: { recursive: boolean }): unknown };
    const { dirname, resolve } = get("node:path") as { dirname(p: string): string; resolve(p: string): string };
    target = resolve(path);
    try {
      mkdirSync(dirname(target), { recursive: true });
    } catch (e) {
      throw new FreshetError("INVALID_CONFIG", `cannot create the directory of ${target}: ${(e as Error).message}`, { plugin: PLUGIN, retriable: false, cause: e });
    }
  }
  let conn: SyncConnection;
  try {
    conn = connect(use, target);
  } catch (e) {
    if (e instanceof FreshetError) throw e;
    throw openError(target, use, e);
  }
  const driver = syncDriver(use, target, conn, busyTimeoutMs);
  try {
    // The busy timeout first: switching to WAL takes a lock another process may hold.
    conn.exec(`PRAGMA busy_timeout = ${busyTimeoutMs}`);
    const [mode] = driver.all("PRAGMA journal_mode") as { journal_mode?: string }[];
    if (target !== ":memory:" && String(mode?.journal_mode).toLowerCase() !== "wal") conn.exec("PRAGMA journal_mode = WAL");
    conn.exec(`PRAGMA synchronous = ${synchronous.toUpperCase()}`);
  } catch (e) {
    try {
      conn.close();
    } catch {
      // closing a connection that failed to set up
    }
    throw openError(target, use, e);
  }
  return driver;
}

/** The error for a file that cannot be opened: not SQLite, damaged, locked or unreadable. */
function openError(target: string, use: string, e: unknown): FreshetError {
  const code = sqliteCode(e);
  if (code === 26 || code === 11) return damagedFile(target, e);
  if (code === 5 || code === 6) return new FreshetError("STORE_UNAVAILABLE", `cannot open ${target}: it is locked by another process (${errorText(e)}); retry, or raise busyTimeoutMs`, { plugin: PLUGIN, retriable: true, cause: e });
  return new FreshetError("INVALID_CONFIG", `cannot open ${target} with ${use}: ${errorText(e)}`, { plugin: PLUGIN, retriable: false, cause: e });
}
