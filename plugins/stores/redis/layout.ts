/**
 * @module
 * The key layout and value codec of the Redis family (`redisStore` over
 * TCP, `upstashStore` over REST): plain strings and pure functions, no SDK
 * and no runtime global, so both transports (and a Worker) use the very
 * same bytes.
 *
 * Keys (`base` = `{prefix}:{project}:`, prefix "freshet" by default):
 * - `{base}{view}:{entityKey}`: a hash per entity and view. One field per
 *   feature, its value JSON-encoded so that numbers, strings, booleans,
 *   null, arrays and objects come back as they went in; `_ts` is the event
 *   time and `_ct` the created time (absent when the row had none), both
 *   epoch ms as decimal strings. A feature whose name starts with `_` is
 *   stored as `_` + name, so no feature can collide with `_ts` or `_ct`.
 *   The key expires at event time + the view's ttl (PEXPIREAT).
 * - `{base}#idem:{key}`: an idempotency key, a string. `p|{token}|{fingerprint}`
 *   while a delivery runs (PX the pending ttl), `d|{fingerprint}` once its
 *   effect is durable (PX the done ttl).
 * - `{base}#wm:{key}`: a watermark, the greatest event time seen, epoch ms
 *   as a decimal string (may be negative).
 * - `{base}#cp:{key}`: a checkpoint, a non-negative decimal string.
 * - `{base}#applied:{key}`: the applied mark of an aggregation view and
 *   partition, the highest source position folded, as a string.
 * - On a view with aggregations, `{base}{view}:{entityKey}` holds the
 *   entity's tiles instead of features: one field per tile (`slide:index`,
 *   see core/aggregations.ts) whose value is `{"e": expiresAt or null,
 *   "t": tile}` as JSON, and `_v`, a version raised by every fold. The key
 *   expires when its last tile does (PEXPIREAT); expired fields are
 *   deleted by the next fold of that entity.
 * - `{base}#lease:{key}`: a lease hash (`owner`, `counter`, `expiresAt`),
 *   and `{base}#leases`, the sorted set of lease names (all scores 0).
 *
 * View names cannot contain `#`, so metadata never collides with features.
 * Every key a script touches is passed in KEYS (Redis' contract for
 * scripts). On a Redis Cluster the store uses the layout of ./cluster.ts
 * instead, which spreads entities over hash-tagged buckets and keeps the
 * metadata under a tag of its own.
 */
import type { CommitMeta, FeatureRow, FeatureValue } from "../../../core/contracts.ts";
import type { FeatureView } from "../../../core/definitions.ts";
import { FreshetError } from "../../../core/errors.ts";
import { featureValue } from "../../../core/online.ts";
import type { ClusterLayout } from "./cluster.ts";

/** Key names of one store: a prefix and a project. */
export interface RedisLayout {
  /** `{prefix}:{project}:`, the start of every key. */
  readonly base: string;
  /** The hash of one entity of one view. */
  entityKey(view: string, entityKey: string): string;
  /** An idempotency key (pending or done). */
  idemKey(key: string): string;
  /** A watermark. */
  watermarkKey(key: string): string;
  checkpointKey(key: string): string;
  /** The applied mark of an aggregation view and partition. */
  appliedKey(key: string): string;
  leaseKey(key: string): string;
  /** The sorted set (all scores 0) of lease names, for `listLeases` by prefix. */
  readonly leaseIndexKey: string;
  /** On a Redis Cluster: the buckets rows, tiles and applied marks are spread over (see ./cluster.ts). */
  readonly cluster?: ClusterLayout;
}

/** The default key prefix. */
export const DEFAULT_REDIS_PREFIX = "freshet";
/** The default project segment of the keys. */
export const DEFAULT_REDIS_PROJECT = "default";

/**
 * The key layout for a prefix and project.
 *
 * @example
 * ```ts
 * const keys = redisLayout({ project: "driver_stats" })
 * keys.entityKey("driver_hourly_stats", "driver_id=1001") // "freshet:driver_stats:driver_hourly_stats:driver_id=1001"
 * keys.watermarkKey("push:driver_push")                   // "freshet:driver_stats:#wm:push:driver_push"
 * ```
 */
export function redisLayout(opts: { prefix?: string; project?: string; plugin?: string } = {}): RedisLayout {
  const prefix = opts.prefix ?? DEFAULT_REDIS_PREFIX;
  const project = opts.project ?? DEFAULT_REDIS_PROJECT;
  for (const [name, v] of [["prefix", prefix], ["project", project]] as const) {
    if (typeof v !== "string" || v === "" || v.includes(":")) {
      throw new FreshetError("INVALID_CONFIG", `${name} ${JSON.stringify(v)} must be a non-empty string without ":"`, { plugin: opts.plugin ?? "redis" });
    }
  }
  const base = `${prefix}:${project}:`;
  return {
    base,
    entityKey: (view, entityKey) => `${base}${view}:${entityKey}`,
    idemKey: (key) => `${base}#idem:${key}`,
    watermarkKey: (key) => `${base}#wm:${key}`,
    checkpointKey: (key) => `${base}#cp:${key}`,
    appliedKey: (key) => `${base}#applied:${key}`,
    leaseKey: (key) => `${base}#lease:${key}`,
    leaseIndexKey: `${base}#leases`,
  };
}

/**
 * The hash field of a feature: its name, with one more `_` in front when it
 * starts with `_` (injective, and never `_ts` or `_ct`).
 *
 * @example
 * ```ts
 * featureField("conv_rate") // "conv_rate"
 * featureField("_ts")       // "__ts"
 * ```
 */
export function featureField(feature: string): string {
  return feature.charCodeAt(0) === 95 /* _ */ ? "_" + feature : feature;
}

// ---- rows ----------------------------------------------------------------

/** One row, encoded for the write script. */
export interface EncodedRow {
  key: string;
  /** Event time, epoch ms, as a decimal string. */
  ts: string;
  /** Created time, or "" when the row has none. */
  ct: string;
  /** Hash fields (see {@link featureField}), in the order of `values`. */
  fields: string[];
  /** JSON-encoded values. */
  values: string[];
}

const jsonValue = (v: unknown): string => {
  // A finite number's JSON is its String() (both are Number::toString), without the serializer: the common case.
  if (typeof v === "number" && Number.isFinite(v)) return String(v);
  try {
    return JSON.stringify(v);
  } catch {
    // BigInt: a safe integer as a number, a larger one as its decimal string.
    return JSON.stringify(v, (_k, x) => typeof x === "bigint" ? (Number.isSafeInteger(Number(x)) ? Number(x) : x.toString()) : x);
  }
};

const isEpochMs = (t: unknown): t is number => typeof t === "number" && Number.isFinite(t);

/**
 * Encodes rows for the write script. Values that are `undefined` are left
 * out (that feature reads back as NOT_FOUND); everything else is JSON.
 * Throws INVALID_INPUT for a time that is not a finite epoch ms.
 *
 * @example
 * ```ts
 * const rows = encodeRows(redisLayout(), view, [{ entityKey: "driver_id=1", values: { trips: 3 }, eventTime: Date.now() }])
 * ```
 */
export function encodeRows(layout: RedisLayout, view: FeatureView, rows: readonly FeatureRow[], plugin: string): EncodedRow[] {
  const out: EncodedRow[] = new Array(rows.length);
  for (let i = 0; i < rows.length; i++) {
    const r = rows[i];
    if (!isEpochMs(r.eventTime)) {
      throw new FreshetError("INVALID_INPUT", `row ${i} (${r.entityKey}) has event time ${String(r.eventTime)}: it must be epoch ms`, { plugin, definition: view.name, retriable: false });
    }
    if (r.createdTime !== undefined && !isEpochMs(r.createdTime)) {
      throw new FreshetError("INVALID_INPUT", `row ${i} (${r.entityKey}) has created time ${String(r.createdTime)}: it must be epoch ms`, { plugin, definition: view.name, retriable: false });
    }
    const fields: string[] = [];
    const values: string[] = [];
    for (const name in r.values) {
      const v = r.values[name];
      if (v === undefined) continue;
      fields.push(featureField(name));
      values.push(jsonValue(v));
    }
    out[i] = {
      key: layout.entityKey(view.name, r.entityKey),
      ts: String(r.eventTime),
      ct: r.createdTime === undefined ? "" : String(r.createdTime),
      fields,
      values,
    };
  }
  return out;
}

// ---- commit --------------------------------------------------------------

/** A {@link CommitMeta}, encoded for the write script's trailer. */
export interface EncodedCommit {
  /** Watermark keys, in the order of `watermarks`. */
  watermarkKeys: string[];
  /** Their event times, epoch ms, as decimal strings. */
  watermarks: string[];
  /** The idempotency key to mark done, its fingerprint, and its ttl (ms, at least 1). */
  done?: { key: string; fingerprint: string; ttlMs: string };
}

/**
 * Encodes a commit, or returns undefined when it changes nothing. Throws
 * INVALID_INPUT for a watermark that is not a finite epoch ms or a done
 * key without a fingerprint or a positive ttl.
 *
 * @example
 * ```ts
 * encodeCommit(redisLayout(), { watermarks: { "push:driver_push": Date.now() } }, "redis")
 * ```
 */
export function encodeCommit(layout: RedisLayout, commit: CommitMeta | undefined, plugin: string, definition?: string): EncodedCommit | undefined {
  if (!commit) return undefined;
  const out: EncodedCommit = { watermarkKeys: [], watermarks: [] };
  for (const [key, t] of Object.entries(commit.watermarks ?? {})) {
    if (!isEpochMs(t)) throw new FreshetError("INVALID_INPUT", `watermark ${JSON.stringify(key)} is ${String(t)}: it must be epoch ms`, { plugin, definition, retriable: false });
    out.watermarkKeys.push(layout.watermarkKey(key));
    out.watermarks.push(String(t));
  }
  const d = commit.done;
  if (d) {
    if (typeof d.key !== "string" || typeof d.fingerprint !== "string" || !isEpochMs(d.ttlMs) || d.ttlMs <= 0) {
      throw new FreshetError("INVALID_INPUT", `commit.done needs a key, a fingerprint and a positive ttlMs (got ${JSON.stringify(d)})`, { plugin, definition, retriable: false });
    }
    out.done = { key: layout.idemKey(d.key), fingerprint: d.fingerprint, ttlMs: String(Math.ceil(d.ttlMs)) };
  }
  return out.watermarks.length || out.done ? out : undefined;
}

// ---- read ----------------------------------------------------------------

/**
 * The HMGET fields for reading `features`: their hash fields, then `_ts`.
 *
 * @example
 * ```ts
 * await redis.hmget(key, ...readFields(["conv_rate", "trips"]))
 * ```
 */
export function readFields(features: readonly string[]): string[] {
  const out = features.map(featureField);
  out.push("_ts");
  return out;
}

/**
 * Turns one HMGET reply (for {@link readFields}) into feature values, with
 * their status and the view's ttl enforced. A row whose event time + ttl is
 * not after `now` reads as NOT_FOUND, as if Redis had expired it already
 * (its clock may lag the store's).
 *
 * @example
 * ```ts
 * decodeRead(view, ["0.5", "7", "1767225600000"], ["conv_rate", "trips"], Date.now())
 * ```
 */
export function decodeRead(view: FeatureView, reply: readonly (string | null | undefined)[] | null | undefined, features: readonly string[], now: number): Record<string, FeatureValue> {
  const out: Record<string, FeatureValue> = {};
  const ts = reply?.[features.length];
  const eventTime = ts == null ? NaN : Number(ts);
  if (reply == null || ts == null || (view.ttlMs > 0 && eventTime + view.ttlMs <= now)) {
    for (const f of features) out[f] = featureValue(view, undefined, f, now);
    return out;
  }
  const values: Record<string, unknown> = {};
  for (let i = 0; i < features.length; i++) {
    const raw = reply[i];
    if (raw == null) continue;
    let v: unknown;
    try {
      v = JSON.parse(raw);
    } catch {
      v = raw; // written by something else than Freshet: keep the raw string
    }
    values[features[i]] = v;
  }
  const stored = { values, eventTime };
  for (const f of features) out[f] = featureValue(view, stored, f, now);
  return out;
}
