/**
 * @module
 * The SQLite online store: one file shared by every process on a machine
 * (WAL mode, a busy timeout), or a D1 database on Workers, behind the
 * driver seam of ./driver.ts and ./d1.ts. This file imports no `node:`
 * module and loads the local drivers (./driver.ts) only when given a `path`.
 *
 * A write is one transaction for the whole batch, whatever its size, and
 * the writes that arrive in one turn of the event loop (concurrent pushes)
 * share one (group commit):
 *
 * ```
 * BEGIN IMMEDIATE
 *   INSERT INTO freshet_features ... SELECT ... FROM json_each(?rows) ...   all rows as one JSON parameter (libsql, D1),
 *   or INSERT INTO freshet_features ... VALUES (...) once per row            a cached statement (bun:sqlite, node:sqlite)
 *     ON CONFLICT (view, entity) DO UPDATE ... WHERE strictly newer by (ts, ct), or the stored row expired
 *   INSERT INTO freshet_watermarks ... FROM json_each(?commit) ... max      when the commit has watermarks
 *   INSERT INTO freshet_idempotency ... 'done'                              when the commit has a done key
 *   DELETE up to 256 expired features, and up to 256 expired idempotency keys
 * COMMIT
 * ```
 *
 * so the comparison runs in SQL, under the write lock, and concurrent
 * writers in several processes never regress a value. Rows already outside
 * the ttl are counted `expired` in JS and never sent. A read is one
 * statement per view. See ./layout.ts for the tables and ./meta.ts for the
 * metadata.
 *
 * @example
 * ```ts
 * import { sqliteStore } from "freshet/stores/sqlite"
 * const online = sqliteStore({ path: "./data/freshet.db" })
 * ```
 */
import type { AggregatingStore, CommitMeta, FeatureRow, FeatureValue, FoldResult, OnlineStore, TileCommit, WriteResult } from "../../../core/contracts.ts";
import type { TileDelta } from "../../../core/aggregations.ts";
import type { FeatureView } from "../../../core/definitions.ts";
import { FreshetError } from "../../../core/errors.ts";
import { expiresAt, featureValue } from "../../../core/online.ts";
import type { LocalDriverName, SqlDriver, SqlResult, SqlStatement } from "./driver.ts";
import { PLUGIN, sqliteError } from "./errors.ts";
import { checkLayout, NO_CREATED_TIME, openLayout } from "./layout.ts";
import { markDone, raiseWatermarks, sqliteMeta } from "./meta.ts";
import { clearSqlTiles, foldSqlTiles, readSqlAggregates, readSqlMark } from "./tiles.ts";

/** Runs `f` at the end of the current turn of the event loop (after the I/O callbacks of this turn): `setImmediate` where there is one, else a 0 ms timer. */
const defer: (f: () => void) => void = (globalThis as { setImmediate?: (f: () => void) => void }).setImmediate ?? ((f) => void setTimeout(f, 0));

/**
 * Options of {@link sqliteStore}: a `path` to a local file, or a `driver` (D1).
 *
 * @example
 * ```ts
 * const opts: SqliteStoreOptions = { path: "./data/freshet.db", busyTimeoutMs: 10_000 }
 * ```
 */
export interface SqliteStoreOptions {
  /** A local database file, created with its directory when missing; `":memory:"` for a private one. */
  path?: string;
  /** A connection to use instead of a path, e.g. `d1Driver(env.DB)`. The store closes it on `close()`. */
  driver?: SqlDriver;
  /** With `path`: which local driver; default the runtime's (bun:sqlite, node:sqlite, else libsql on Node 20). */
  localDriver?: LocalDriverName;
  /** The clock for ttl, expiry, idempotency keys and leases. Default `Date.now`. */
  now?: () => number;
  /** With `path`: how long to wait for another process's lock before failing with a retriable error. Default 5000. */
  busyTimeoutMs?: number;
  /** With `path`: `PRAGMA synchronous`; default "full" (see `OpenSqliteOptions.synchronous`). */
  synchronous?: "full" | "normal";
  /** Expired rows deleted per write, at most. Default 256. */
  purgeBudget?: number;
}

/** The SQLite store: an OnlineStore, plus the connection once it is open. */
export interface SqliteStore extends OnlineStore, AggregatingStore {
  /**
   * Opens the database (once) and checks its layout; rejects with a
   * non-retriable INVALID_CONFIG for a foreign, newer or damaged file.
   * Resolves to the connection, for tools and benchmarks.
   */
  ready(): Promise<SqlDriver>;
  /** Closes the connection (a D1 binding stays the Worker's). */
  close(): Promise<void>;
}

const ON_CONFLICT = "ON CONFLICT (view, entity) DO UPDATE SET ts = excluded.ts, ct = excluded.ct, expires_at = excluded.expires_at, vals = excluded.vals " +
  "WHERE excluded.ts > freshet_features.ts OR (excluded.ts = freshet_features.ts AND excluded.ct > freshet_features.ct) " +
  "OR freshet_features.expires_at <= ?3";

/** One statement for many rows: ?2 is a JSON array of [entity, ts, ct, expires_at, vals as JSON text], applied in order. */
const UPSERT_JSON = "INSERT INTO freshet_features (view, entity, ts, ct, expires_at, vals) " +
  `SELECT ?1, r.value ->> 0, r.value ->> 1, coalesce(r.value ->> 2, ${NO_CREATED_TIME}), r.value ->> 3, r.value ->> 4 ` +
  "FROM json_each(?2) AS r WHERE true ORDER BY r.key " + ON_CONFLICT;

/** One statement per row. */
const UPSERT_ROW = "INSERT INTO freshet_features (view, entity, ts, ct, expires_at, vals) " +
  `VALUES (?1, ?4, ?5, coalesce(?6, ${NO_CREATED_TIME}), ?7, ?2) ` + ON_CONFLICT;

const READ = "SELECT entity, ts, vals FROM freshet_features " +
  "WHERE view = ?1 AND entity IN (SELECT value FROM json_each(?2)) AND (expires_at IS NULL OR expires_at > ?3)";

const PURGE_FEATURES = "DELETE FROM freshet_features WHERE (view, entity) IN " +
  "(SELECT view, entity FROM freshet_features WHERE expires_at <= ?1 LIMIT ?2)";
const PURGE_IDEMPOTENCY = "DELETE FROM freshet_idempotency WHERE key IN " +
  "(SELECT key FROM freshet_idempotency WHERE expires_at <= ?1 LIMIT ?2)";

/** Local files: a JSON parameter of tens of MB is fine; D1 sets its own, smaller. */
const DEFAULT_MAX_PARAM = 8 << 20;

/** Splits JSON array items into arrays whose text stays under `max` characters. */
function jsonChunks(items: string[], max: number): string[] {
  const out: string[] = [];
  let start = 0;
  let size = 2;
  for (let i = 0; i < items.length; i++) {
    if (i > start && size + items[i].length + 1 > max) {
      out.push(`[${items.slice(start, i).join(",")}]`);
      start = i;
      size = 2;
    }
    size += items[i].length + 1;
  }
  if (items.length > start) out.push(`[${items.slice(start).join(",")}]`);
  return out;
}

/**
 * The SQLite online store: latest-wins in SQL, one transaction per batch,
 * expiry by event time with a bounded purge, reads in one statement per
 * view, and the metadata (idempotency keys, checkpoints, watermarks,
 * leases) atomic across processes. Opens lazily: the first call (or
 * `ready()`, or `ping()`) opens the file and checks its layout.
 *
 * @example
 * ```ts
 * const online = sqliteStore({ path: "./data/freshet.db" })
 * await online.ready() // refuses a foreign, newer or damaged file here
 * await online.write(view, rows)
 * ```
 */
export function sqliteStore(opts: SqliteStoreOptions): SqliteStore {
  if (!opts || (opts.path === undefined) === (opts.driver === undefined)) {
    throw new FreshetError("INVALID_CONFIG", 'give exactly one of path or driver, e.g. sqliteStore({ path: "./data/freshet.db" }) or sqliteStore({ driver: d1Driver(env.DB) })', { plugin: PLUGIN, retriable: false });
  }
  if (opts.path !== undefined && (typeof opts.path !== "string" || !opts.path)) {
    throw new FreshetError("INVALID_CONFIG", `path must be a file path, got ${JSON.stringify(opts.path)}`, { plugin: PLUGIN, retriable: false });
  }
  const now = opts.now ?? Date.now;
  const purgeBudget = opts.purgeBudget ?? 256;
  let closed = false;

  const open = async (): Promise<SqlDriver> => {
    if (opts.driver) {
      // A given connection stays open on failure: it is the caller's until close().
      await openLayout(opts.driver);
      return opts.driver;
    }
    // Loaded here, not at the top: a Worker bundles it but never runs it.
    const local = await import("./driver.ts");
    const db = await local.openSqliteDriver(opts.path!, { use: opts.localDriver, busyTimeoutMs: opts.busyTimeoutMs, synchronous: opts.synchronous });
    try {
      await openLayout(db);
    } catch (e) {
      try {
        await db.close();
      } catch {
        // the refusal is the error worth reporting
      }
      throw e;
    }
    return db;
  };
  let opening: Promise<SqlDriver> | undefined;
  // A refusal sticks; a lock or an I/O error at open is tried again by the next call.
  const ready = () =>
    opening ??= open().catch((e) => {
      if (!(e instanceof FreshetError) || e.retriable) opening = undefined;
      throw e;
    });

  const use = async <T>(fn: (db: SqlDriver) => T | Promise<T>, definition?: string): Promise<T> => {
    if (closed) throw new FreshetError("INVALID_CONFIG", `the SQLite store on ${opts.path ?? opts.driver?.target} is closed`, { plugin: PLUGIN, retriable: false });
    const db = await ready();
    const started = Date.now();
    try {
      return await fn(db);
    } catch (e) {
      throw sqliteError(e, { target: db.target, busyTimeoutMs: db.busyTimeoutMs, waitedMs: Date.now() - started, definition });
    }
  };

  /**
   * Group commit: the writes that reach this point in one turn of the event
   * loop (concurrent pushes) run in ONE transaction, each write's statements
   * in their order, so each keeps its own counts (a later write is compared
   * with an earlier one's rows, as if they ran one after the other) and its
   * own idempotency key. A lone write waits for nothing but the end of the
   * current turn. When the transaction fails, every write in it fails (none
   * of their rows was written) and the next group starts afresh.
   */
  type Member = { statements: SqlStatement[]; resolve: (r: SqlResult[]) => void; reject: (e: unknown) => void };
  let group: Member[] | undefined;
  const groupCommit = (db: SqlDriver, statements: SqlStatement[], t: number) =>
    new Promise<SqlResult[]>((resolve, reject) => {
      if (!group) {
        const members: Member[] = [];
        group = members;
        defer(async () => {
          group = undefined;
          const all = members.flatMap((m) => m.statements);
          if (purgeBudget > 0) all.push({ sql: PURGE_FEATURES, params: [t, purgeBudget] }, { sql: PURGE_IDEMPOTENCY, params: [t, purgeBudget] });
          try {
            const results = await db.batch(all);
            let at = 0;
            for (const m of members) m.resolve(results.slice(at, (at += m.statements.length)));
          } catch (e) {
            for (const m of members) m.reject(e);
          }
        });
      }
      group.push({ statements, resolve, reject });
    });

  const invalid = (view: FeatureView, msg: string) => new FreshetError("INVALID_INPUT", msg, { plugin: PLUGIN, definition: view.name, retriable: false });

  async function write(view: FeatureView, rows: FeatureRow[], commit?: CommitMeta): Promise<WriteResult> {
    for (const [key, value] of Object.entries(commit?.watermarks ?? {})) {
      if (typeof value !== "number" || !Number.isFinite(value)) throw invalid(view, `watermark ${key} ${String(value)} is not a finite epoch ms`);
    }
    return await use(async (db) => {
      const t = now();
      let expired = 0;
      const perRow = db.cheapStatements === true;
      const upserts: SqlStatement[] = [];
      const items: string[] = [];
      for (let i = 0; i < rows.length; i++) {
        const r = rows[i];
        if (!Number.isFinite(r.eventTime) || (r.createdTime !== undefined && !Number.isFinite(r.createdTime))) {
          throw invalid(view, `row ${i} (${r.entityKey}) has a time that is not a finite epoch ms`);
        }
        const exp = expiresAt(view, r.eventTime);
        if (exp !== undefined && exp <= t) {
          expired++;
          continue;
        }
        let vals: string;
        try {
          vals = JSON.stringify(r.values ?? {});
        } catch (e) {
          throw invalid(view, `row ${i} (${r.entityKey}) has values that are not JSON: ${(e as Error).message}`);
        }
        if (perRow) upserts.push({ sql: UPSERT_ROW, params: [view.name, vals, t, String(r.entityKey), r.eventTime, r.createdTime ?? null, exp ?? null] });
        else items.push(JSON.stringify([String(r.entityKey), r.eventTime, r.createdTime ?? null, exp ?? null, vals]));
      }
      for (const json of jsonChunks(items, db.maxParamBytes ?? DEFAULT_MAX_PARAM)) upserts.push({ sql: UPSERT_JSON, params: [view.name, json, t] });
      const statements: SqlStatement[] = [...upserts];
      if (commit?.watermarks && Object.keys(commit.watermarks).length) statements.push(raiseWatermarks(commit.watermarks));
      if (commit?.done) statements.push(markDone(commit.done.key, commit.done.fingerprint, t, commit.done.ttlMs));
      if (!statements.length) return { written: 0, stale: 0, expired };
      const results = await groupCommit(db, statements, t);
      let written = 0;
      for (let i = 0; i < upserts.length; i++) written += results[i].changes;
      return { written, stale: rows.length - written - expired, expired };
    }, view.name);
  }

  async function read(view: FeatureView, entityKeys: string[], features: string[]): Promise<Record<string, FeatureValue>[]> {
    if (!entityKeys.length) return [];
    if (view.aggregations?.length) return await use((db) => readSqlAggregates(db, view, entityKeys, features, now()), view.name);
    return await use(async (db) => {
      const t = now();
      const found = new Map<string, { values: Record<string, unknown>; eventTime: number }>();
      const unique = [...new Set(entityKeys.map(String))].map((k) => JSON.stringify(k));
      for (const keys of jsonChunks(unique, db.maxParamBytes ?? DEFAULT_MAX_PARAM)) {
        for (const r of await db.all(READ, [view.name, keys, t])) {
          found.set(String(r.entity), { values: JSON.parse(String(r.vals)), eventTime: Number(r.ts) });
        }
      }
      return entityKeys.map((ek) => {
        const stored = found.get(ek);
        const out: Record<string, FeatureValue> = {};
        for (const f of features) out[f] = featureValue(view, stored, f, t);
        return out;
      });
    }, view.name);
  }

  return {
    name: "sqlite",
    // A fold is one JSON parameter of its merged tiles: a driver with a parameter cap (D1) folds big batches in steps.
    maxFoldBytes: opts.driver?.maxParamBytes === undefined ? undefined : Math.floor(opts.driver.maxParamBytes / 3),
    meta: sqliteMeta(use, now),
    write,
    read,
    foldTiles: (view: FeatureView, deltas: TileDelta[], commit?: TileCommit): Promise<FoldResult> => {
      for (const [key, value] of Object.entries(commit?.watermarks ?? {})) {
        if (typeof value !== "number" || !Number.isFinite(value)) return Promise.reject(invalid(view, `watermark ${key} ${String(value)} is not a finite epoch ms`));
      }
      return use((db) => foldSqlTiles(db, view, deltas, commit, now, purgeBudget), view.name);
    },
    getAppliedMark: (key: string) => use((db) => readSqlMark(db, key)),
    clearTiles: (view: FeatureView, range: { start: number; end: number }) => use(async (db) => void (await db.batch([clearSqlTiles(view, range)])), view.name),
    ready,
    ping: () => use((db) => checkLayout(db)),
    async close(): Promise<void> {
      if (closed) return;
      closed = true;
      if (!opening) {
        if (opts.driver) await opts.driver.close();
        return;
      }
      const db = await opening.catch(() => undefined);
      await db?.close();
    },
  };
}
