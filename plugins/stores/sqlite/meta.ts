/**
 * @module
 * The MetaStore of the SQLite store, with the Redis scripts' semantics:
 * each method is one statement, or one transaction of two, so it is atomic
 * on its key across every process sharing the file (or the D1 database).
 * Idempotency keys, leases and fenced checkpoints run on the store's clock.
 */
import type { IdempotencyState, Lease, MetaStore } from "../../../core/contracts.ts";
import { FreshetError } from "../../../core/errors.ts";
import type { SqlDriver, SqlStatement, SqlValue } from "./driver.ts";
import { PLUGIN } from "./errors.ts";

/** Runs `fn` on the open connection, turning driver errors into FreshetErrors. */
export type UseDriver = <T>(fn: (db: SqlDriver) => T | Promise<T>, definition?: string) => Promise<T>;

/**
 * The statement that marks an idempotency key done until `now + ttlMs`: used
 * by a write's commit (in its transaction) and by `settle`.
 *
 * @example
 * ```ts
 * await db.batch([upsertRows, markDone("webhook:msg_1", "sha256:...", Date.now(), 86_400_000)])
 * ```
 */
export function markDone(key: string, fingerprint: string, now: number, ttlMs: number): SqlStatement {
  return {
    sql: "INSERT INTO freshet_idempotency (key, state, fingerprint, token, expires_at) VALUES (?1, 'done', ?2, NULL, ?3) " +
      "ON CONFLICT (key) DO UPDATE SET state = 'done', fingerprint = excluded.fingerprint, token = NULL, expires_at = excluded.expires_at",
    params: [String(key), String(fingerprint), now + ttl(ttlMs)],
  };
}

/**
 * The statement that raises watermarks to at least the given values (a JSON
 * object of key to epoch ms), never lowering one.
 *
 * @example
 * ```ts
 * raiseWatermarks({ "push:driver_push": 1767225600000 })
 * ```
 */
export function raiseWatermarks(watermarks: Record<string, number>): SqlStatement {
  return {
    sql: "INSERT INTO freshet_watermarks (key, value) SELECT w.key, w.value FROM json_each(?1) AS w WHERE true " +
      "ON CONFLICT (key) DO UPDATE SET value = excluded.value WHERE excluded.value > freshet_watermarks.value",
    params: [JSON.stringify(watermarks)],
  };
}

const ttl = (ms: number) => Math.max(1, Math.ceil(ms));

/**
 * One write statement as a transaction of its own: the lock is taken by
 * BEGIN IMMEDIATE, so a busy file fails there (libsql leaves a statement
 * that hit SQLITE_BUSY in progress, which would fail the next COMMIT).
 */
const write1 = async (db: SqlDriver, s: SqlStatement): Promise<number> => (await db.batch([s]))[0].changes;

// A checkpoint without leading zeros, in SQL, so stored values compare as decimals.
const norm = (x: string) => `(CASE WHEN ltrim(${x}, '0') = '' THEN '0' ELSE ltrim(${x}, '0') END)`;

const SET_CHECKPOINT = "INSERT INTO freshet_checkpoints (key, value) SELECT ?1, ?2 " +
  "WHERE ?4 IS NULL OR EXISTS (SELECT 1 FROM freshet_leases WHERE key = ?4 AND owner = ?5 AND counter = ?6 AND expires_at > ?7) " +
  "ON CONFLICT (key) DO UPDATE SET value = excluded.value " +
  `WHERE length(?3) > length(${norm("freshet_checkpoints.value")}) OR (length(?3) = length(${norm("freshet_checkpoints.value")}) AND ?3 > ${norm("freshet_checkpoints.value")})`;

const ACQUIRE_LEASE = "INSERT INTO freshet_leases (key, owner, counter, expires_at) VALUES (?1, ?2, 1, ?3 + ?4) " +
  "ON CONFLICT (key) DO UPDATE SET " +
  "counter = CASE WHEN freshet_leases.owner = excluded.owner AND freshet_leases.expires_at > ?3 THEN freshet_leases.counter ELSE freshet_leases.counter + 1 END, " +
  "owner = excluded.owner, expires_at = excluded.expires_at " +
  "WHERE freshet_leases.owner = '' OR freshet_leases.owner = excluded.owner OR freshet_leases.expires_at <= ?3 " +
  "RETURNING counter, expires_at";

/** A value unique to one delivery. */
function deliveryToken(): string {
  // Cast: @cloudflare/workers-types declares crypto as a global const, not a property of globalThis.
  return (globalThis as { crypto?: { randomUUID?: () => string } }).crypto?.randomUUID?.() ?? `${Date.now().toString(36)}-${Math.random().toString(36).slice(2)}`;
}

/**
 * The MetaStore over a connection.
 *
 * @example
 * ```ts
 * const meta = sqliteMeta(use, Date.now)
 * await meta.setCheckpoint("kinesis:orders:shardId-000", "4959033827149025660855969253836157")
 * ```
 */
export function sqliteMeta(use: UseDriver, now: () => number): MetaStore {
  const invalid = (msg: string) => new FreshetError("INVALID_INPUT", msg, { plugin: PLUGIN, retriable: false });
  const checkMs = (what: string, ms: number) => {
    if (typeof ms !== "number" || !Number.isFinite(ms)) throw invalid(`${what} ${String(ms)} is not a finite number of ms`);
  };
  return {
    async begin(key, fingerprint, pendingTtlMs) {
      checkMs("pendingTtlMs", pendingTtlMs);
      return await use(async (db): Promise<IdempotencyState> => {
        const token = deliveryToken();
        const t = now();
        const [, found] = await db.batch([
          {
            sql: "INSERT INTO freshet_idempotency (key, state, fingerprint, token, expires_at) VALUES (?1, 'pending', ?2, ?3, ?4 + ?5) " +
              "ON CONFLICT (key) DO UPDATE SET state = 'pending', fingerprint = excluded.fingerprint, token = excluded.token, expires_at = excluded.expires_at " +
              "WHERE freshet_idempotency.expires_at <= ?4",
            params: [String(key), String(fingerprint), token, t, ttl(pendingTtlMs)],
          },
          { sql: "SELECT state, fingerprint, token FROM freshet_idempotency WHERE key = ?1", params: [String(key)], rows: true },
        ]);
        const row = found.rows[0];
        if (!row || row.token === token) return { state: "started", token };
        return { state: row.state === "done" ? "done" : "pending", fingerprint: String(row.fingerprint) };
      });
    },
    async abandon(key, token) {
      await use((db) => write1(db, { sql: "DELETE FROM freshet_idempotency WHERE key = ?1 AND state = 'pending' AND token = ?2", params: [String(key), String(token)] }));
    },
    async settle(key, fingerprint, ttlMs) {
      checkMs("ttlMs", ttlMs);
      await use((db) => write1(db, markDone(key, fingerprint, now(), ttlMs)));
    },
    getCheckpoint: (key) =>
      use(async (db) => {
        const [row] = await db.all("SELECT value FROM freshet_checkpoints WHERE key = ?1", [String(key)]);
        return row === undefined ? undefined : String(row.value);
      }),
    async setCheckpoint(key, value, fence) {
      if (typeof value !== "string" || !/^\d+$/.test(value)) throw invalid(`checkpoint ${JSON.stringify(value)} is not a non-negative decimal integer`);
      const normalized = value.replace(/^0+(?=\d)/, "");
      return await use(async (db) => {
        const params: SqlValue[] = fence
          ? [String(key), value, normalized, String(fence.lease), String(fence.owner), Number(fence.counter), now()]
          : [String(key), value, normalized, null, null, null, null];
        return (await write1(db, { sql: SET_CHECKPOINT, params })) === 1;
      });
    },
    getWatermark: (key) =>
      use(async (db) => {
        const [row] = await db.all("SELECT value FROM freshet_watermarks WHERE key = ?1", [String(key)]);
        return row === undefined ? undefined : Number(row.value);
      }),
    async advanceWatermark(key, eventTime) {
      checkMs("watermark", eventTime);
      return await use(async (db) => {
        const [, found] = await db.batch([
          raiseWatermarks({ [String(key)]: eventTime }),
          { sql: "SELECT value FROM freshet_watermarks WHERE key = ?1", params: [String(key)], rows: true },
        ]);
        return Number(found.rows[0].value);
      });
    },
    async acquireLease(key, owner, ttlMs) {
      checkMs("ttlMs", ttlMs);
      return await use(async (db): Promise<Lease | undefined> => {
        const [r] = await db.batch([{ sql: ACQUIRE_LEASE, params: [String(key), String(owner), now(), Math.ceil(ttlMs)], rows: true }]);
        const row = r.rows[0];
        return row ? { key, owner, counter: Number(row.counter), expiresAt: Number(row.expires_at) } : undefined;
      });
    },
    async releaseLease(key, owner) {
      await use((db) => write1(db, { sql: "UPDATE freshet_leases SET owner = '', expires_at = 0 WHERE key = ?1 AND owner = ?2", params: [String(key), String(owner)] }));
    },
    listLeases: (prefix) =>
      use(async (db) => {
        const rows = await db.all(
          "SELECT key, owner, counter, expires_at FROM freshet_leases WHERE key >= ?1 AND substr(key, 1, length(?1)) = ?1 ORDER BY key",
          [String(prefix)],
        );
        return rows.map((r) => ({ key: String(r.key), owner: String(r.owner), counter: Number(r.counter), expiresAt: Number(r.expires_at) }));
      }),
  };
}
