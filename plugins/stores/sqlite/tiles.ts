/**
 * @module
 * Aggregation tiles in SQLite: a fold is one transaction that checks what
 * it read and writes what it merged.
 *
 * A fold reads the applied marks and the stored tiles it touches (with
 * their versions), refuses when a mark is not the expected one, merges the
 * deltas in JS (core's tile math), then runs one batch:
 *
 * ```
 * BEGIN IMMEDIATE
 *   INSERT INTO freshet_guard SELECT 0 WHERE <a mark or a tile version is not what was read>   aborts the transaction
 *   INSERT INTO freshet_tiles ... ON CONFLICT DO UPDATE ... ver = ver + 1                      the merged tiles
 *   INSERT INTO freshet_applied ...                                                            the new marks
 *   watermarks, done key, a bounded purge of expired tiles
 * COMMIT
 * ```
 *
 * The guard's CHECK fails inside the transaction when another writer
 * changed a mark or a tile in between, so nothing is applied; the fold then
 * reads again and retries. So the tiles, the marks and the metadata move
 * together or not at all, across processes and on D1.
 */
import { mergeTile, parseTileKey, readAggregates, type Tile, type TileDelta, tilesForRead } from "../../../core/aggregations.ts";
import type { FeatureValue, FoldResult, TileCommit } from "../../../core/contracts.ts";
import type { FeatureView } from "../../../core/definitions.ts";
import { FreshetError } from "../../../core/errors.ts";
import type { SqlDriver, SqlStatement } from "./driver.ts";
import { PLUGIN } from "./errors.ts";
import { markDone, raiseWatermarks } from "./meta.ts";

const READ_MARKS = "SELECT key, position FROM freshet_applied WHERE key IN (SELECT value FROM json_each(?1))";
/** Stored tiles of a fold: ?2 is a JSON array of [entity, tile]. */
const READ_FOLD = "SELECT t.entity, t.tile, t.ver, t.expires_at, t.state FROM json_each(?2) AS j " +
  "CROSS JOIN freshet_tiles AS t ON t.view = ?1 AND t.entity = j.value ->> 0 AND t.tile = j.value ->> 1"; // CROSS: json_each outer, the primary key inner
/** Aborts when a tile's version is not the one read (?2: [entity, tile, ver or null]). */
const GUARD_TILES = "INSERT INTO freshet_guard (ok) SELECT 0 WHERE EXISTS (SELECT 1 FROM json_each(?2) AS j " +
  "LEFT JOIN freshet_tiles AS t ON t.view = ?1 AND t.entity = j.value ->> 0 AND t.tile = j.value ->> 1 " +
  "WHERE t.ver IS NOT (j.value ->> 2))";
/** Aborts when a mark is not the expected one (?1: [key, expected or null]). */
const GUARD_MARKS = "INSERT INTO freshet_guard (ok) SELECT 0 WHERE EXISTS (SELECT 1 FROM json_each(?1) AS j " +
  "LEFT JOIN freshet_applied AS a ON a.key = j.value ->> 0 WHERE a.position IS NOT (j.value ->> 1))";
/** ?2: [entity, tile, start, slide, expires_at, state] */
const UPSERT_TILES = "INSERT INTO freshet_tiles (view, entity, tile, start, slide, ver, expires_at, state) " +
  "SELECT ?1, j.value ->> 0, j.value ->> 1, j.value ->> 2, j.value ->> 3, 1, j.value ->> 4, j.value ->> 5 FROM json_each(?2) AS j WHERE true " +
  "ON CONFLICT (view, entity, tile) DO UPDATE SET ver = freshet_tiles.ver + 1, expires_at = excluded.expires_at, state = excluded.state";
const UPSERT_MARKS = "INSERT INTO freshet_applied (key, position) SELECT j.value ->> 0, j.value ->> 1 FROM json_each(?1) AS j WHERE true " +
  "ON CONFLICT (key) DO UPDATE SET position = excluded.position";
const READ_TILES = "SELECT entity, tile, state FROM freshet_tiles WHERE view = ?1 AND entity IN (SELECT value FROM json_each(?2)) " +
  "AND tile IN (SELECT value FROM json_each(?3)) AND (expires_at IS NULL OR expires_at > ?4)";
const PURGE_TILES = "DELETE FROM freshet_tiles WHERE (view, entity, tile) IN " +
  "(SELECT view, entity, tile FROM freshet_tiles WHERE expires_at <= ?1 LIMIT ?2)";
const CLEAR_TILES = "DELETE FROM freshet_tiles WHERE view = ?1 AND ((slide > 0 AND start >= ?2 AND start + slide <= ?3) OR (slide = 0 AND ?4 = 1))";
/** Beyond every event time (Dates span ±8.64e15 ms): an unbounded side of a range. */
const FAR = 9e15;

/** Attempts before a fold that keeps meeting concurrent writers gives up with a retriable error. */
const MAX_ATTEMPTS = 64;

const isConflict = (e: unknown) => /freshet_fold_conflict|freshet_guard/.test(String((e as Error)?.message ?? e));

/**
 * Folds tile deltas into the store, see the module comment.
 *
 * @example
 * ```ts
 * await foldSqlTiles(db, view, deltas, { marks: [{ key, expected, position }] }, Date.now, 256)
 * ```
 */
export async function foldSqlTiles(db: SqlDriver, view: FeatureView, deltas: TileDelta[], commit: TileCommit | undefined, now: () => number, purgeBudget: number): Promise<FoldResult> {
  const aggs = view.aggregations;
  if (!aggs?.length) throw new FreshetError("INVALID_INPUT", "foldTiles needs a view with aggregations", { plugin: PLUGIN, definition: view.name, retriable: false });
  const marks = commit?.marks ?? [];
  for (let attempt = 1; ; attempt++) {
    const t = now();
    if (marks.length) {
      const stored = new Map<string, string>();
      for (const r of await db.all(READ_MARKS, [JSON.stringify(marks.map((m) => m.key))])) stored.set(String(r.key), String(r.position));
      if (marks.some((m) => stored.get(m.key) !== m.expected)) {
        const out: Record<string, string | undefined> = {};
        for (const m of marks) out[m.key] = stored.get(m.key);
        return { ok: false, marks: out };
      }
    }
    const live = deltas.filter((d) => d.expiresAt === undefined || d.expiresAt > t);
    const expired = deltas.length - live.length;
    // Several deltas of one tile (not from foldTiles, but allowed): merged in order first.
    const byTile = new Map<string, TileDelta>();
    for (const d of live) {
      const id = JSON.stringify([d.entityKey, d.tile]);
      const cur = byTile.get(id);
      byTile.set(id, cur ? { ...d, state: mergeTile(aggs, cur.state, d.state) } : d);
    }
    const ids = [...byTile.keys()];
    const stored = new Map<string, { ver: number; tile?: Tile }>();
    if (ids.length) {
      for (const r of await db.all(READ_FOLD, [view.name, `[${ids.join(",")}]`])) {
        const exp = r.expires_at === null || r.expires_at === undefined ? undefined : Number(r.expires_at);
        stored.set(JSON.stringify([String(r.entity), String(r.tile)]), { ver: Number(r.ver), tile: exp === undefined || exp > t ? JSON.parse(String(r.state)) : undefined });
      }
    }
    const guards: string[] = [];
    const upserts: string[] = [];
    for (const [id, d] of byTile) {
      const s = stored.get(id);
      guards.push(JSON.stringify([d.entityKey, d.tile, s?.ver ?? null]));
      const { slideMs, index } = parseTileKey(d.tile);
      upserts.push(JSON.stringify([d.entityKey, d.tile, slideMs === 0 ? null : index * slideMs, slideMs, d.expiresAt ?? null, JSON.stringify(mergeTile(aggs, s?.tile, d.state))]));
    }
    const statements: SqlStatement[] = [];
    if (marks.length) statements.push({ sql: GUARD_MARKS, params: [JSON.stringify(marks.map((m) => [m.key, m.expected ?? null]))] });
    if (guards.length) {
      statements.push({ sql: GUARD_TILES, params: [view.name, `[${guards.join(",")}]`] });
      statements.push({ sql: UPSERT_TILES, params: [view.name, `[${upserts.join(",")}]`] });
    }
    if (marks.length) statements.push({ sql: UPSERT_MARKS, params: [JSON.stringify(marks.map((m) => [m.key, String(m.position)]))] });
    if (commit?.watermarks && Object.keys(commit.watermarks).length) statements.push(raiseWatermarks(commit.watermarks));
    if (commit?.done) statements.push(markDone(commit.done.key, commit.done.fingerprint, t, commit.done.ttlMs));
    if (!statements.length) return { ok: true, tiles: 0, expired };
    if (purgeBudget > 0) statements.push({ sql: PURGE_TILES, params: [t, purgeBudget] });
    try {
      await db.batch(statements);
      return { ok: true, tiles: upserts.length, expired };
    } catch (e) {
      if (!isConflict(e)) throw e;
      if (attempt >= MAX_ATTEMPTS) {
        throw new FreshetError("STORE_UNAVAILABLE", `folding ${upserts.length} tiles met concurrent writers ${attempt} times in a row; retry later`, { plugin: PLUGIN, definition: view.name, retriable: true, cause: e });
      }
      // Jittered backoff, so that writers racing on the same tiles spread out.
      await new Promise((r) => setTimeout(r, Math.random() * 2 ** Math.min(attempt, 7)));
    }
  }
}

/**
 * Reads aggregations of a view at the store's clock: one statement for
 * every entity and tile of the windows.
 */
export async function readSqlAggregates(db: SqlDriver, view: FeatureView, entityKeys: string[], features: string[], t: number): Promise<Record<string, FeatureValue>[]> {
  const aggs = view.aggregations!;
  const wanted = tilesForRead(aggs.filter((a) => features.includes(a.name)), t);
  const byEntity = new Map<string, Map<string, Tile>>();
  if (wanted.length && entityKeys.length) {
    const rows = await db.all(READ_TILES, [view.name, JSON.stringify([...new Set(entityKeys.map(String))]), JSON.stringify(wanted), t]);
    for (const r of rows) {
      const ek = String(r.entity);
      let m = byEntity.get(ek);
      if (!m) byEntity.set(ek, m = new Map());
      m.set(String(r.tile), JSON.parse(String(r.state)));
    }
  }
  return entityKeys.map((ek) => readAggregates(aggs, byEntity.get(ek) ?? new Map(), features, t));
}

/** The statements of {@link AggregatingStore.clearTiles}. */
export function clearSqlTiles(view: FeatureView, range: { start: number; end: number }): SqlStatement {
  const all = range.start === -Infinity && range.end === Infinity ? 1 : 0;
  return { sql: CLEAR_TILES, params: [view.name, Math.max(-FAR, range.start), Math.min(FAR, range.end), all] };
}

/** Reads one applied mark. */
export async function readSqlMark(db: SqlDriver, key: string): Promise<string | undefined> {
  const rows = await db.all("SELECT position FROM freshet_applied WHERE key = ?1", [String(key)]);
  return rows.length ? String(rows[0].position) : undefined;
}
