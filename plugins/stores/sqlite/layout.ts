/**
 * @module
 * The tables of the SQLite store, and the check that a database is ours and
 * of a layout this version reads.
 *
 * ```
 * freshet_meta        (key PK, value)                         layout_version = 1
 * freshet_features    (view, entity, ts, ct, expires_at, vals) PK (view, entity)
 *                     index (expires_at) where not null, for the purge
 * freshet_idempotency (key PK, state, fingerprint, token, expires_at)
 * freshet_checkpoints (key PK, value)                         decimal text, as given
 * freshet_watermarks  (key PK, value)                         epoch ms
 * freshet_leases      (key PK, owner, counter, expires_at)    owner "" when released
 * freshet_applied     (key PK, position)                      applied marks of aggregation views
 * freshet_tiles       (view, entity, tile, start, slide, ver, expires_at, state)  PK (view, entity, tile)
 *                     index (expires_at) where not null, for the purge
 * freshet_guard       (ok CHECK ok = 1)                       never holds a row: a fold inserts 0 into it
 *                                                             to abort its transaction when what it read changed
 * freshet_dead_letters (id PK autoincrement, at, source, ...)  see ./dead-letters.ts
 * ```
 *
 * `ts` is the event time and `ct` the created time in epoch ms, with
 * {@link NO_CREATED_TIME} for a row without one, so that the SQL compares
 * (ts, ct) as core's `isNewer` does. `vals` is the feature values as a JSON
 * object. `expires_at` is event time + ttl, NULL for a view without ttl.
 */
import { FreshetError } from "../../../core/errors.ts";
import type { SqlDriver, SqlStatement } from "./driver.ts";
import { damagedFile, PLUGIN, sqliteCode, sqliteError } from "./errors.ts";

/** The layout this version writes and reads. A database with a greater one is refused. */
export const LAYOUT_VERSION = 1;

/** The created time stored for a row without one: below any real epoch ms (Dates span ±8.64e15). */
export const NO_CREATED_TIME = "-9223372036854775808";

/** The dead-letter table: in every new database, and created by the sink in one made before it. */
export const DEAD_LETTERS_TABLE: string = "CREATE TABLE IF NOT EXISTS freshet_dead_letters (id INTEGER PRIMARY KEY AUTOINCREMENT, at TEXT NOT NULL, source TEXT NOT NULL, view TEXT, " +
  "reason TEXT NOT NULL, message TEXT NOT NULL, path TEXT, position TEXT NOT NULL, payload TEXT NOT NULL, encoding TEXT, payload_chars INTEGER)";

const TABLES: readonly string[] = [
  "CREATE TABLE IF NOT EXISTS freshet_meta (key TEXT PRIMARY KEY NOT NULL, value TEXT NOT NULL) WITHOUT ROWID",
  "CREATE TABLE IF NOT EXISTS freshet_features (view TEXT NOT NULL, entity TEXT NOT NULL, ts INTEGER NOT NULL, ct INTEGER NOT NULL, expires_at INTEGER, vals TEXT NOT NULL, PRIMARY KEY (view, entity)) WITHOUT ROWID",
  "CREATE INDEX IF NOT EXISTS freshet_features_expiry ON freshet_features (expires_at) WHERE expires_at IS NOT NULL",
  "CREATE TABLE IF NOT EXISTS freshet_idempotency (key TEXT PRIMARY KEY NOT NULL, state TEXT NOT NULL, fingerprint TEXT NOT NULL, token TEXT, expires_at INTEGER NOT NULL) WITHOUT ROWID",
  "CREATE INDEX IF NOT EXISTS freshet_idempotency_expiry ON freshet_idempotency (expires_at)",
  "CREATE TABLE IF NOT EXISTS freshet_checkpoints (key TEXT PRIMARY KEY NOT NULL, value TEXT NOT NULL) WITHOUT ROWID",
  "CREATE TABLE IF NOT EXISTS freshet_watermarks (key TEXT PRIMARY KEY NOT NULL, value NUMERIC NOT NULL) WITHOUT ROWID",
  "CREATE TABLE IF NOT EXISTS freshet_leases (key TEXT PRIMARY KEY NOT NULL, owner TEXT NOT NULL, counter INTEGER NOT NULL, expires_at INTEGER NOT NULL) WITHOUT ROWID",
  "CREATE TABLE IF NOT EXISTS freshet_applied (key TEXT PRIMARY KEY NOT NULL, position TEXT NOT NULL) WITHOUT ROWID",
  DEAD_LETTERS_TABLE,
];

/** The aggregation tables: added to a layout-1 database that lacks them (older versions ignore them). */
const TILE_TABLES: readonly string[] = [
  "CREATE TABLE IF NOT EXISTS freshet_tiles (view TEXT NOT NULL, entity TEXT NOT NULL, tile TEXT NOT NULL, start INTEGER, slide INTEGER NOT NULL, ver INTEGER NOT NULL, expires_at INTEGER, state TEXT NOT NULL, PRIMARY KEY (view, entity, tile)) WITHOUT ROWID",
  "CREATE INDEX IF NOT EXISTS freshet_tiles_expiry ON freshet_tiles (expires_at) WHERE expires_at IS NOT NULL",
  "CREATE TABLE IF NOT EXISTS freshet_guard (ok INTEGER NOT NULL CONSTRAINT freshet_fold_conflict CHECK (ok = 1))",
];

// Tables that are not an application's: SQLite's own, D1's, and wrangler's migrations.
const NOT_FOREIGN = /^(sqlite_|_cf_|d1_migrations$)/;

const how = (target: string) => `point the store at a file of its own (a new path is created), or move ${target} away`;

/**
 * Opens the layout on a connection: creates the tables on an empty
 * database, and refuses (non-retriable INVALID_CONFIG naming the file) a
 * database with a newer layout version, one with tables but not ours, and a
 * file that is not SQLite. Safe when several processes open a new file at
 * once: the creation is one transaction of `IF NOT EXISTS` statements.
 *
 * @example
 * ```ts
 * await openLayout(await openSqliteDriver("./data/freshet.db"))
 * ```
 */
export async function openLayout(db: SqlDriver): Promise<void> {
  const target = db.target;
  const fail = (e: unknown, started: number): never => {
    const code = sqliteCode(e);
    if (code === 26 || code === 11) throw damagedFile(target, e);
    throw sqliteError(e, { target, busyTimeoutMs: db.busyTimeoutMs, waitedMs: Date.now() - started });
  };
  let started = Date.now();
  let tables: string[];
  try {
    tables = (await db.all("SELECT name FROM sqlite_master WHERE type = 'table'")).map((r) => String(r.name));
  } catch (e) {
    return fail(e, started);
  }
  if (tables.includes("freshet_meta")) {
    await checkLayout(db);
    if (tables.includes("freshet_tiles") && tables.includes("freshet_guard")) return;
    started = Date.now();
    try {
      await db.batch(TILE_TABLES.map((sql) => ({ sql })));
    } catch (e) {
      return fail(e, started);
    }
    return;
  }
  const foreign = tables.filter((t) => !NOT_FOREIGN.test(t));
  if (foreign.length) {
    const list = foreign.slice(0, 5).join(", ") + (foreign.length > 5 ? `, ... (${foreign.length} tables)` : "");
    throw new FreshetError("INVALID_CONFIG", `${target} holds another application's tables (${list}) and no freshet_meta: it is not a Freshet store; ${how(target)}`, { plugin: PLUGIN, retriable: false });
  }
  const create: SqlStatement[] = [
    ...TABLES.map((sql) => ({ sql })),
    ...TILE_TABLES.map((sql) => ({ sql })),
    { sql: "INSERT INTO freshet_meta (key, value) VALUES ('layout_version', ?1) ON CONFLICT (key) DO NOTHING", params: [String(LAYOUT_VERSION)] },
  ];
  started = Date.now();
  try {
    await db.batch(create);
  } catch (e) {
    return fail(e, started);
  }
  return checkLayout(db);
}

/**
 * Checks that the layout version stored in the database is one this version
 * reads (the store's `ping`).
 *
 * @example
 * ```ts
 * await checkLayout(db)
 * ```
 */
export async function checkLayout(db: SqlDriver): Promise<void> {
  const target = db.target;
  const started = Date.now();
  let rows;
  try {
    rows = await db.all("SELECT value FROM freshet_meta WHERE key = 'layout_version'");
  } catch (e) {
    throw sqliteError(e, { target, busyTimeoutMs: db.busyTimeoutMs, waitedMs: Date.now() - started });
  }
  const raw = rows[0]?.value;
  const version = Number(raw);
  if (raw === undefined || !Number.isInteger(version) || version < 1) {
    throw new FreshetError("INVALID_CONFIG", `${target} has a freshet_meta table without a valid layout_version (${JSON.stringify(raw ?? null)}): it was not written by Freshet, or was damaged; ${how(target)}`, { plugin: PLUGIN, retriable: false });
  }
  if (version > LAYOUT_VERSION) {
    throw new FreshetError("INVALID_CONFIG", `${target} was written with layout version ${version}, newer than this Freshet reads (${LAYOUT_VERSION}): upgrade Freshet, or point the store at another file`, { plugin: PLUGIN, retriable: false });
  }
}
