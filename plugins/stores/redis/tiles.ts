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
 * On a Redis Cluster (layout of ./cluster.ts) a fold is one such script
 * per bucket, each with that bucket's applied marks, and then the
 * watermarks and the done key in the metadata slot; a read is one script
 * per bucket.
 */
import { mergeTile, readAggregates, type Tile, type TileDelta, tilesForRead } from "../../../core/aggregations.ts";
import type { AppliedMark, CommitMeta, FeatureValue, FoldResult, TileCommit } from "../../../core/contracts.ts";
import type { FeatureView } from "../../../core/definitions.ts";
import { FreshetError, storeUnavailable } from "../../../core/errors.ts";
import { type EncodedCommit, encodeCommit, type RedisLayout } from "./layout.ts";
import { CLEAR_TILES, FOLD_TILES, READ_FIELDS, READ_HASHES, WRITE_ROWS, writeScriptArgs } from "./scripts.ts";
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
/** Escapes a string for a RegExp. */
const reEscape = (s: string) => s.replace(/[.*+?^${}()|[\]\\]/g, "\\$&");

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
    const cluster = layout.cluster;
    if (!cluster) {
      const r = await foldGroup(view, aggs, deltas, marks, encoded);
      if (r.ok) await replicated(view.name);
      return r;
    }
    // One fold per bucket, each atomic with the marks of its bucket; the metadata last (see ./cluster.ts).
    const groups = new Map<number, { deltas: TileDelta[]; marks: AppliedMark[] }>();
    const group = (b: number) => {
      let g = groups.get(b);
      if (!g) groups.set(b, g = { deltas: [], marks: [] });
      return g;
    };
    for (const d of deltas) group(cluster.bucketOf(view.name, d.entityKey)).deltas.push(d);
    for (const m of marks) {
      const b = cluster.markBucket(m.key);
      if (b === undefined) {
        throw new FreshetError("INVALID_INPUT", `applied mark "${m.key}" is not kept per bucket: on a Redis Cluster a fold's marks are keyed by store.markKey(view, entityKey, key)`, { plugin, definition: view.name, retriable: false });
      }
      group(b).marks.push(m);
    }
    for (const [b, g] of groups) {
      if (g.deltas.length > 0 && !g.marks.length && marks.length) {
        throw new FreshetError("INVALID_INPUT", `the fold has applied marks, but none for bucket ${b} of its deltas: key the marks by store.markKey(view, entityKey, key)`, { plugin, definition: view.name, retriable: false });
      }
    }
    const results = await Promise.all([...groups.values()].map((g) => foldGroup(view, aggs, g.deltas, g.marks, undefined)));
    if (results.some((r) => !r.ok)) {
      // The buckets that applied hold their new marks; the others answered theirs.
      const out: Record<string, string | undefined> = {};
      for (const m of marks) out[m.key] = m.position;
      for (const r of results) if (!r.ok) Object.assign(out, r.marks);
      return { ok: false, marks: out };
    }
    await replicated(view.name);
    if (encoded) {
      await run(WRITE_ROWS, ...commitCall(encoded), view.name);
      await replicated(view.name);
    }
    let tiles = 0, expired = 0;
    for (const r of results) {
      if (r.ok) {
        tiles += r.tiles;
        expired += r.expired;
      }
    }
    return { ok: true, tiles, expired };
  }

  const replicated = async (definition: string) => {
    try {
      await transport.replicated?.();
    } catch (e) {
      throw redisError(plugin, e, definition);
    }
  };

  const commitCall = (encoded: EncodedCommit): [string[], string[]] => {
    const { keys, args } = writeScriptArgs([], 0, now(), encoded);
    return [keys, args];
  };

  /** One atomic fold: its marks, its entity hashes and `encoded`, in one slot on a Redis Cluster. */
  async function foldGroup(view: FeatureView, aggs: NonNullable<FeatureView["aggregations"]>, deltas: TileDelta[], marks: AppliedMark[], encoded: EncodedCommit | undefined): Promise<FoldResult> {
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
    const keys = entityKeys.map((ek) => layout.entityKey(view.name, ek));
    let replies: unknown[] = [];
    if (wanted.length && !layout.cluster) replies = await run(READ_FIELDS, keys, wanted, view.name) as unknown[];
    else if (wanted.length) {
      // One script per bucket (a script reads one slot), in parallel.
      const byBucket = new Map<number, number[]>();
      entityKeys.forEach((ek, i) => {
        const b = layout.cluster!.bucketOf(view.name, ek);
        const list = byBucket.get(b);
        if (list) list.push(i);
        else byBucket.set(b, [i]);
      });
      replies = new Array(keys.length);
      await Promise.all([...byBucket.values()].map(async (idx) => {
        const part = await run(READ_FIELDS, idx.map((i) => keys[i]), wanted, view.name) as unknown[];
        idx.forEach((i, j) => replies[i] = part[j]);
      }));
    }
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
    const match = layout.cluster ? globEscape(`${layout.base}{${view.name}.`) + "*" : globEscape(layout.entityKey(view.name, "")) + "*";
    const all = range.start === -Infinity && range.end === Infinity ? "1" : "0";
    const own = layout.cluster ? new RegExp(`^${reEscape(`${layout.base}{${view.name}`)}\\.\\d+\\.\\d+\\}:`) : undefined;
    let nodes: RedisTransport[];
    try {
      nodes = layout.cluster && transport.masters ? await transport.masters() : [transport];
    } catch (e) {
      throw redisError(plugin, e, view.name);
    }
    for (const node of nodes) {
      let cursor = "0";
      do {
        let reply: unknown;
        try {
          reply = await node.send("SCAN", [cursor, "MATCH", match, "COUNT", "500"], view.name);
        } catch (e) {
          throw redisError(plugin, e, view.name);
        }
        const [next, keys] = reply as [string, string[]];
        cursor = String(next);
        for (const k of keys ?? []) {
          // On a cluster the match also takes in the keys of a view named `view.x`: only this view's bucket tags.
          if (own && !own.test(String(k))) continue;
          await run(CLEAR_TILES, [String(k)], [String(Math.max(-9e15, range.start)), String(Math.min(9e15, range.end)), all], view.name);
        }
      } while (cursor !== "0");
    }
  }

  return { foldTiles, getAppliedMark, clearTiles, read };
}
