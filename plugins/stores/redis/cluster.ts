/**
 * @module
 * The key layout of the Redis store on a Redis Cluster, and why it is safe.
 *
 * A Lua script may only touch keys of one hash slot. One slot for every key
 * (a hash-tagged prefix) works but puts the whole store on one master, so
 * here the keys are spread and every script stays inside one slot:
 *
 * - **Rows and tiles** stay one hash per entity, under a per-view *bucket*
 *   hash tag: `{base}{<view>.<b>.<n>}:{entityKey}`, bucket `b` =
 *   CRC16(`view:entityKey`) mod `buckets` (default 16). The tag of bucket
 *   `b` is the first `<view>.<b>.<n>` (n = 0, 1, ...) whose slot falls in
 *   the b-th of `buckets` equal ranges of the slot space (rotated by the
 *   view's own slot), so a view's buckets cover the slot space evenly and a
 *   cluster whose masters own contiguous ranges gets an even share of them.
 *   Buckets rather than one slot per entity: a batch of 500 rows becomes at
 *   most `buckets` script calls, not 500, and an applied mark per bucket
 *   (below) is a handful of keys per partition, not one per slot.
 * - **Metadata** (idempotency keys, watermarks, checkpoints, leases, the
 *   leases' index, unscoped applied marks) lives under its own tag
 *   `{base}{<prefix>:<project>}...`: the scripts that update several of
 *   these at once (a fenced checkpoint with its lease, a lease with its
 *   index) still run in one slot.
 * - **Applied marks of aggregations** are kept per bucket, in the bucket's
 *   slot (`{base}{<view>.<b>.<n>}#applied:{view:partition}#{b}`), so a fold
 *   checks and advances its marks in the same script as the tiles it
 *   writes, exactly once per bucket. The processor keys the marks by
 *   bucket through the store's `markKey`, so it filters a redelivery per
 *   bucket too (see core/contracts.ts, AggregatingStore.markKey).
 *
 * What cannot be atomic: a batch whose rows span several buckets, and its
 * watermarks or idempotency "done" mark in the metadata slot. So a write
 * runs one script per bucket (latest-wins, so applying a group twice
 * changes nothing: a retry or a redelivery of the whole batch is harmless)
 * and only when every bucket has answered, the metadata last, in one more
 * script. Until then the batch is pending, never "done": the idempotency
 * key stays pending (a retry re-applies the rows, a no-op where they
 * landed), the watermark has not moved (a redelivery is judged as the
 * first delivery was) and the source is not acknowledged. A fold does the
 * same: its buckets (each atomic with its own marks, so none is folded
 * twice), then the metadata.
 *
 * The bucket count is part of the layout: it is recorded in the metadata
 * slot on first use, and a store opened with another count is refused.
 */
import calculateSlot from "cluster-key-slot";
import { FreshetError } from "../../../core/errors.ts";
import { type RedisLayout, redisLayout } from "./layout.ts";

/** Slots of a Redis Cluster. */
const SLOTS = 16384;

/** The default number of buckets per view. */
export const DEFAULT_CLUSTER_BUCKETS = 16;

/** What a cluster layout adds to a {@link RedisLayout}. */
export interface ClusterLayout {
  readonly buckets: number;
  /** The bucket of an entity of a view. */
  bucketOf(view: string, entityKey: string): number;
  /** The applied mark key of `key` (`view:partition`) for the bucket of an entity. */
  markKey(view: string, entityKey: string, key: string): string;
  /** The bucket of a mark key made by {@link ClusterLayout.markKey}, or undefined for an unscoped one. */
  markBucket(key: string): number | undefined;
  /** Where the layout (the bucket count) is recorded, in the metadata slot. */
  readonly layoutKey: string;
  /** What {@link ClusterLayout.layoutKey} holds for this layout. */
  readonly layoutValue: string;
}

const SCOPED = /^([^:#]+):.*#(\d+)$/;

/**
 * The key layout of a store on a Redis Cluster (module doc above).
 *
 * @example
 * ```ts
 * const keys = clusterLayout({ project: "driver_stats" })
 * keys.entityKey("driver_hourly_stats", "driver_id=1001") // "freshet:driver_stats:{driver_hourly_stats.5.2}:driver_id=1001"
 * keys.watermarkKey("push:driver_push")                   // "freshet:driver_stats:{freshet:driver_stats}#wm:push:driver_push"
 * ```
 */
export function clusterLayout(opts: { prefix?: string; project?: string; plugin?: string; buckets?: number } = {}): RedisLayout & { cluster: ClusterLayout } {
  const plugin = opts.plugin ?? "redis";
  const flat = redisLayout(opts);
  const buckets = opts.buckets ?? DEFAULT_CLUSTER_BUCKETS;
  if (!Number.isInteger(buckets) || buckets < 1 || buckets > 1024) {
    throw new FreshetError("INVALID_CONFIG", `buckets ${JSON.stringify(opts.buckets)} must be an integer from 1 to 1024 (default ${DEFAULT_CLUSTER_BUCKETS})`, { plugin });
  }
  const base = flat.base;
  if (/[{}]/.test(base)) {
    throw new FreshetError("INVALID_CONFIG", `on a Redis Cluster the store spreads its keys with hash tags of its own: use a prefix and project without "{" or "}" (got "${base}")`, { plugin });
  }
  const meta = `${base}{${base.slice(0, -1)}}`;
  const tags = new Map<string, string[]>();
  const tagOf = (view: string, b: number): string => {
    let list = tags.get(view);
    if (!list) tags.set(view, list = []);
    let tag = list[b];
    if (tag === undefined) {
      const from = Math.floor((b * SLOTS) / buckets);
      const width = Math.floor(((b + 1) * SLOTS) / buckets) - from;
      const start = (calculateSlot(view) + from) % SLOTS;
      for (let n = 0; ; n++) {
        const t = `${view}.${b}.${n}`;
        if ((calculateSlot(t) - start + SLOTS) % SLOTS < width) {
          tag = t;
          break;
        }
      }
      list[b] = tag;
    }
    return tag;
  };
  const bucketOf = (view: string, entityKey: string) => calculateSlot(`${view}:${entityKey}`) % buckets;
  const markBucket = (key: string): number | undefined => {
    const m = SCOPED.exec(key);
    return m && Number(m[2]) < buckets ? Number(m[2]) : undefined;
  };
  return {
    base,
    entityKey: (view, entityKey) => `${base}{${tagOf(view, bucketOf(view, entityKey))}}:${entityKey}`,
    idemKey: (key) => `${meta}#idem:${key}`,
    watermarkKey: (key) => `${meta}#wm:${key}`,
    checkpointKey: (key) => `${meta}#cp:${key}`,
    appliedKey(key) {
      const b = markBucket(key);
      return b === undefined ? `${meta}#applied:${key}` : `${base}{${tagOf(SCOPED.exec(key)![1], b)}}#applied:${key}`;
    },
    leaseKey: (key) => `${meta}#lease:${key}`,
    leaseIndexKey: `${meta}#leases`,
    cluster: {
      buckets,
      bucketOf,
      markKey: (view, entityKey, key) => `${key}#${bucketOf(view, entityKey)}`,
      markBucket,
      layoutKey: `${meta}#layout`,
      layoutValue: `cluster buckets=${buckets}`,
    },
  };
}

/**
 * The seeds of a `redis+cluster://[user:password@]host:port,host:port` (or
 * `rediss+cluster://`) URL, as ioredis `Cluster` takes them, and the
 * credentials and TLS that go to every node. Undefined for another URL.
 *
 * @example
 * ```ts
 * clusterSeeds("redis+cluster://10.0.0.1:7000,10.0.0.2:7000")
 * // { nodes: [{ host: "10.0.0.1", port: 7000 }, { host: "10.0.0.2", port: 7000 }], tls: false }
 * ```
 */
export function clusterSeeds(url: string): { nodes: { host: string; port: number }[]; username?: string; password?: string; tls: boolean } | undefined {
  const m = /^(rediss?)\+cluster:\/\/(?:([^@/]*)@)?([^/?#]+)\/?$/.exec(url);
  if (!m) return undefined;
  let username: string | undefined, password: string | undefined;
  if (m[2] !== undefined) {
    const at = m[2].indexOf(":");
    username = decodeURIComponent(at < 0 ? m[2] : m[2].slice(0, at)) || undefined;
    password = at < 0 ? undefined : decodeURIComponent(m[2].slice(at + 1));
  }
  const nodes = m[3].split(",").map((hp) => {
    const i = hp.lastIndexOf(":");
    const host = (i < 0 ? hp : hp.slice(0, i)).replace(/^\[|\]$/g, "");
    const port = i < 0 ? 6379 : Number(hp.slice(i + 1));
    if (!host || !Number.isInteger(port) || port < 1 || port > 65535) {
      throw new FreshetError("INVALID_CONFIG", `cluster seed "${hp}" in the store URL is not host:port (e.g. redis+cluster://10.0.0.1:7000,10.0.0.2:7000)`, { plugin: "redis" });
    }
    return { host, port };
  });
  return { nodes, username, password, tls: m[1] === "rediss" };
}
