/**
 * @module
 * Aggregation tiles on the Redis protocol, shared by `redisStore` (TCP) and
 * `upstashStore` (REST): one script reads the entity hashes a fold touches
 * (with their versions), the tiles are merged in JS with core's tile math,
 * and one script ({@link FOLD_TILES}) checks the applied marks and the
 * versions and writes the tiles, the marks, the watermarks and the done key
 * in one atomic step. When a hash changed in between (another writer of the
 * same entity), nothing is written and the fold reads again. A read of
 * aggregation features is one script call for all its entities.
 *
 * On Redis Cluster a fold's keys must share a slot: use a hash-tagged
 * prefix (`"{freshet}"`), as for writes.
 */
import { mergeTile, readAggregates, type Tile, type TileDelta, tilesForRead } from "../../../core/aggregations.ts";
import type { CommitMeta, FeatureValue, FoldResult, TileCommit } from "../../../core/contracts.ts";
import type { FeatureView } from "../../../core/definitions.ts";
import { FreshetError, storeUnavailable } from "../../../core/errors.ts";
import { encodeCommit, type RedisLayout } from "./layout.ts";
import { CLEAR_TILES, FOLD_TILES, READ_FIELDS, READ_HASHES } from "./scripts.ts";
import { evalScript, redisError, type RedisTransport } from "./transport.ts";

/** Options of {@link redisTiles}. */
export interface RedisTilesOptions {
  transport: RedisTransport;
  layout: RedisLayout;
  plugin: string;
  now: () => number;
}

/** The aggregation side of a Redis-protocol store. */
export interface RedisTiles {
  foldTiles(view: FeatureView, deltas: TileDelta[], commit?: TileCommit): Promise<FoldResult>;
  getAppliedMark(key: string): Promise<string | undefined>;
  clearTiles(view: FeatureView, range: { start: number; end: number }): Promise<void>;
  read(view: FeatureView, entityKeys: string[], features: string[]): Promise<Record<string, FeatureValue>[]>;
}

/** A stored tile field: expiry by event time (null: never) and the tile. */
interface StoredTile {
  e: number | null;
  t: Tile;
}

const MAX_ATTEMPTS = 64;

/** Escapes glob characters for SCAN MATCH. */
const globEscape = (s: string) => s.replace(/[*?[\]\\]/g, "\\$&");

/**
 * The aggregation contract over a Redis transport.
 *
 * @example
 * ```ts
 * const tiles = redisTiles({ transport, layout, plugin: "redis", now: Date.now })
 * await tiles.foldTiles(view, deltas, { marks: [{ key, expected, position }] })
 * ```
 */
export function redisTiles(opts: RedisTilesOptions): RedisTiles {
  const { transport, layout, plugin, now } = opts;
  const run = async (s: typeof FOLD_TILES, keys: string[], args: string[], definition?: string) => {
    try {
      return await evalScript(transport, s, keys, args, definition);
    } catch (e) {
      throw redisError(plugin, e, definition);
    }
  };

  async function foldTiles(view: FeatureView, deltas: TileDelta[], commit?: TileCommit): Promise<FoldResult> {
    const aggs = view.aggregations;
    if (!aggs?.length) throw new FreshetError("INVALID_INPUT", "foldTiles needs a view with aggregations", { plugin, definition: view.name, retriable: false });
    const meta: CommitMeta = { watermarks: commit?.watermarks, done: commit?.done };
    const encoded = encodeCommit(layout, meta, plugin, view.name);
    const marks = commit?.marks ?? [];
    // The deltas of each entity, in order.
    const byEntity = new Map<string, TileDelta[]>();
    for (const d of deltas) {
      const list = byEntity.get(d.entityKey);
      if (list) list.push(d);
      else byEntity.set(d.entityKey, [d]);
    }
    const entities = [...byEntity.keys()];
    const hashKeys = entities.map((ek) => layout.entityKey(view.name, ek));
    for (let attempt = 1; ; attempt++) {
      const t = now();
      const hashes = hashKeys.length ? await run(READ_HASHES, hashKeys, [], view.name) as unknown[] : [];
      const segs: string[] = [];
      let expired = 0;
      let tiles = 0;
      for (let i = 0; i < entities.length; i++) {
        const flat = (hashes[i] ?? []) as string[];
        let version = "";
        const stored = new Map<string, StoredTile>();
        for (let j = 0; j + 1 < flat.length; j += 2) {
          if (flat[j] === "_v") version = String(flat[j + 1]);
          else stored.set(String(flat[j]), JSON.parse(String(flat[j + 1])));
        }
        const set = new Map<string, StoredTile>();
        for (const d of byEntity.get(entities[i])!) {
          if (d.expiresAt !== undefined && d.expiresAt <= t) {
            expired++;
            continue;
          }
          const prev = set.get(d.tile) ?? stored.get(d.tile);
          const live = prev && (prev.e === null || prev.e > t) ? prev.t : undefined;
          set.set(d.tile, { e: d.expiresAt ?? null, t: mergeTile(aggs, live, d.state) });
        }
        const del: string[] = [];
        let lifetime = false;
        let until = -Infinity;
        for (const [f, s] of stored) {
          if (set.has(f)) continue;
          if (s.e !== null && s.e <= t) del.push(f);
          else if (s.e === null) lifetime = true;
          else until = Math.max(until, s.e);
        }
        for (const s of set.values()) {
          if (s.e === null) lifetime = true;
          else until = Math.max(until, s.e);
        }
        tiles += set.size;
        segs.push(version, lifetime || until === -Infinity ? "" : String(until), String(set.size));
        for (const [f, s] of set) segs.push(f, JSON.stringify(s));
        segs.push(String(del.length), ...del);
      }
      const keys = [
        ...marks.map((m) => layout.appliedKey(m.key)),
        ...(encoded?.watermarkKeys ?? []),
        ...hashKeys,
        ...(encoded?.done ? [encoded.done.key] : []),
      ];
      const args = [String(marks.length), String(encoded?.watermarkKeys.length ?? 0), String(hashKeys.length), encoded?.done ? "1" : "0", encoded?.done?.fingerprint ?? "", encoded?.done?.ttlMs ?? "0"];
      for (const m of marks) args.push(m.expected === undefined ? "-" : "=" + m.expected, String(m.position));
      args.push(...(encoded?.watermarks ?? []));
      // One array, never a spread: a fold can carry many tiles.
      const argv = args.concat(segs);
      const reply = await run(FOLD_TILES, keys, argv, view.name) as unknown[];
      const code = Number(reply?.[0]);
      if (code === 1) return { ok: true, tiles, expired };
      if (code === 0) {
        const out: Record<string, string | undefined> = {};
        marks.forEach((m, i) => {
          const v = String(reply[i + 1]);
          out[m.key] = v === "-" ? undefined : v.slice(1);
        });
        return { ok: false, marks: out };
      }
      if (code !== -1) throw storeUnavailable(plugin, new Error(`unexpected answer to the fold script: ${JSON.stringify(reply)}`), view.name);
      if (attempt >= MAX_ATTEMPTS) {
        throw new FreshetError("STORE_UNAVAILABLE", `folding tiles of ${entities.length} entities met concurrent writers ${attempt} times in a row; retry later`, { plugin, definition: view.name, retriable: true });
      }
      await new Promise((r) => setTimeout(r, Math.random() * 2 ** Math.min(attempt, 7)));
    }
  }

  async function read(view: FeatureView, entityKeys: string[], features: string[]): Promise<Record<string, FeatureValue>[]> {
    const aggs = view.aggregations!;
    const t = now();
    const wanted = tilesForRead(aggs.filter((a) => features.includes(a.name)), t);
    if (!entityKeys.length) return [];
    const replies = wanted.length ? await run(READ_FIELDS, entityKeys.map((ek) => layout.entityKey(view.name, ek)), wanted, view.name) as unknown[] : [];
    return entityKeys.map((_, i) => {
      const values = (replies[i] ?? []) as (string | null | false)[];
      const tiles = new Map<string, Tile>();
      for (let j = 0; j < wanted.length; j++) {
        const raw = values[j];
        if (raw === null || raw === undefined || raw === false) continue;
        const s = JSON.parse(String(raw)) as StoredTile;
        if (s.e === null || s.e > t) tiles.set(wanted[j], s.t);
      }
      return readAggregates(aggs, tiles, features, t);
    });
  }

  async function getAppliedMark(key: string): Promise<string | undefined> {
    try {
      const v = await transport.send("GET", [layout.appliedKey(key)]);
      return v === null || v === undefined ? undefined : String(v);
    } catch (e) {
      throw redisError(plugin, e);
    }
  }

  async function clearTiles(view: FeatureView, range: { start: number; end: number }): Promise<void> {
    const match = globEscape(layout.entityKey(view.name, "")) + "*";
    const all = range.start === -Infinity && range.end === Infinity ? "1" : "0";
    let cursor = "0";
    do {
      let reply: unknown;
      try {
        reply = await transport.send("SCAN", [cursor, "MATCH", match, "COUNT", "500"], view.name);
      } catch (e) {
        throw redisError(plugin, e, view.name);
      }
      const [next, keys] = reply as [string, string[]];
      cursor = String(next);
      for (const k of keys ?? []) await run(CLEAR_TILES, [String(k)], [String(Math.max(-9e15, range.start)), String(Math.min(9e15, range.end)), all], view.name);
    } while (cursor !== "0");
  }

  return { foldTiles, getAppliedMark, clearTiles, read };
}
