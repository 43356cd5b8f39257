/**
 * @module
 * Stream aggregations over tiles: the pure math every store shares.
 *
 * An aggregation with window W and slide interval s (W a multiple of s,
 * k = W / s) keeps, per entity, one partial state per tile of s: tile i
 * holds the events with event time in [i*s, (i+1)*s). A read at time t
 * merges the tiles floor(t/s)-k+1 .. floor(t/s), so **the window at t is
 * the event times in [(floor(t/s)+1)*s - W, (floor(t/s)+1)*s)**: the last k
 * tiles, the current (partial) one included. With s = W (Feast's default)
 * that is a tumbling window; a smaller s slides it in steps of s. A lifetime
 * aggregation has one tile that holds every event and never expires.
 *
 * Partial states merge, never subtract: count and sum add; mean is (count,
 * sum); variance and stddev are (count, mean, M2) merged with Chan's formula
 * (exact in real arithmetic); min and max compare; last, lastN and
 * lastDistinctN keep the newest values by (event time, created time), of
 * equals the one that arrived first (as {@link isNewer}); the approximate
 * distinct count is a HyperLogLog with 2^12 registers (standard error
 * 1.04/sqrt(4096) ≈ 1.6%), hand-written here because the state is stored
 * and merged by every store (register-wise max), so its layout and hash
 * must be a fixed contract of Freshet rather than a library's internals.
 *
 * Null and missing values are ignored by every function (SQL semantics):
 * `count` counts the non-null values of its column.
 */
import type { FeatureValue, Row } from "./contracts.ts";
import { definitionError } from "./errors.ts";
import { readDuration } from "./time.ts";

/** The functions an aggregation can compute. `count_distinct` is approximate (HyperLogLog). */
export type AggregationFunction =
  | "count"
  | "sum"
  | "mean"
  | "min"
  | "max"
  | "stddev"
  | "variance"
  | "last"
  | "lastN"
  | "lastDistinctN"
  | "count_distinct";

/** All functions, for messages. */
export const AGGREGATION_FUNCTIONS: readonly AggregationFunction[] = ["count", "sum", "mean", "min", "max", "stddev", "variance", "last", "lastN", "lastDistinctN", "count_distinct"];

const NUMERIC = new Set<AggregationFunction>(["sum", "mean", "min", "max", "stddev", "variance"]);
const WITH_N = new Set<AggregationFunction>(["lastN", "lastDistinctN"]);
/** The largest `n` of lastN / lastDistinctN: a tile holds up to n values per entity. */
export const MAX_LAST_N = 1000;

/** An aggregation over a time window, as declared (Feast's Aggregation, in camelCase). */
export interface Aggregation {
  /** The column of the view's rows to aggregate. */
  column: string;
  /** What to compute: sum, count, avg, min, max, stddev, lastN, lastDistinctN, ... */
  function: AggregationFunction;
  /** The window: seconds, a duration string ("10m", "1h", "1d"), or "lifetime". */
  timeWindow: number | string;
  /** The tile size and step of the window; defaults to the window (Feast's default). W must be a multiple of it. */
  slideInterval?: number | string;
  /** The feature name; default `{function}_{column}_{seconds}s` (`..._lifetime` for a lifetime window). */
  name?: string;
  /** How many values lastN and lastDistinctN keep, 1 to 1000. */
  n?: number;
}

/** An aggregation after checking: durations in ms and the output name. */
export interface ResolvedAggregation {
  /** The feature name it answers to. */
  readonly name: string;
  /** The column it aggregates. */
  readonly column: string;
  /** What it computes. */
  readonly function: AggregationFunction;
  /** The window in ms; undefined for a lifetime window. */
  readonly windowMs?: number;
  /** The tile size in ms; 0 for a lifetime window (one tile). */
  readonly slideMs: number;
  /** How many values lastN and lastDistinctN keep. */
  readonly n?: number;
}

/**
 * Checks one declared aggregation and resolves it, or throws a definition
 * error that says how to fix it.
 *
 * @example
 * ```ts
 * resolveAggregation("txn", { column: "amount", function: "sum", timeWindow: "1h", slideInterval: "5m" }).name // "sum_amount_3600s"
 * ```
 */
export function resolveAggregation(view: string, a: Aggregation): ResolvedAggregation {
  if (!a || typeof a !== "object") throw definitionError(view, 'each aggregation is an object, e.g. { column: "amount", function: "sum", timeWindow: "1h" }');
  const where = `aggregation ${JSON.stringify(a.name ?? `${a.function} of ${a.column}`)}`;
  if (typeof a.column !== "string" || !a.column) throw definitionError(view, `${where}: column is required, e.g. column: "amount"`);
  if (!AGGREGATION_FUNCTIONS.includes(a.function)) {
    throw definitionError(view, `${where}: function ${JSON.stringify(a.function)} is not one of ${AGGREGATION_FUNCTIONS.join(", ")}`);
  }
  if (WITH_N.has(a.function)) {
    if (!Number.isInteger(a.n) || a.n! < 1 || a.n! > MAX_LAST_N) throw definitionError(view, `${where}: ${a.function} needs n, an integer from 1 to ${MAX_LAST_N}, e.g. n: 5`);
  } else if (a.n !== undefined) {
    throw definitionError(view, `${where}: n applies only to lastN and lastDistinctN; remove it`);
  }
  let windowMs: number | undefined;
  let slideMs = 0;
  if (a.timeWindow === "lifetime") {
    if (a.slideInterval !== undefined) throw definitionError(view, `${where}: a lifetime window has no slideInterval; remove it`);
  } else {
    const window = readDuration(a.timeWindow);
    if ("error" in window) throw definitionError(view, `${where}: timeWindow ${window.error}, or "lifetime"`);
    windowMs = window.ms;
    if (windowMs <= 0) throw definitionError(view, `${where}: timeWindow ${JSON.stringify(a.timeWindow)} is not a positive duration: use seconds (3600), a string ("10m", "1h", "PT1H"), or "lifetime"`);
    const slide = a.slideInterval === undefined ? window : readDuration(a.slideInterval);
    if ("error" in slide) throw definitionError(view, `${where}: slideInterval ${slide.error}`);
    slideMs = slide.ms;
    if (!(slideMs > 0)) throw definitionError(view, `slideInterval ${JSON.stringify(a.slideInterval)} of ${where} is not a positive duration: use seconds (300) or a string ("5m", "PT5M")`);
    if (windowMs % 1000 !== 0 || slideMs % 1000 !== 0) {
      throw definitionError(view, `${where}: timeWindow and slideInterval must be whole seconds, e.g. "90s" or "5m"`);
    }
    if (slideMs > windowMs) throw definitionError(view, `${where}: slideInterval (${slideMs / 1000}s) is longer than timeWindow (${windowMs / 1000}s); use a slideInterval that divides the window, e.g. ${windowMs / 1000}s`);
    if (windowMs % slideMs !== 0) {
      throw definitionError(view, `${where}: timeWindow (${windowMs / 1000}s) is not a multiple of slideInterval (${slideMs / 1000}s), so the window cannot be made of whole tiles; pick a slideInterval that divides it`);
    }
    if (windowMs / slideMs > 10_000) throw definitionError(view, `${where}: ${windowMs / slideMs} tiles per window is too many to merge on read (at most 10000); use a longer slideInterval`);
  }
  const name = a.name ?? `${a.function}_${a.column}_${windowMs === undefined ? "lifetime" : `${windowMs / 1000}s`}`;
  if (typeof name !== "string" || !/^[A-Za-z_][A-Za-z0-9_]*$/.test(name)) {
    throw definitionError(view, `${where}: name ${JSON.stringify(name)} must be letters, digits and "_", starting with a letter or "_"`);
  }
  return Object.freeze({ name, column: a.column, function: a.function, windowMs, slideMs, n: a.n });
}

/**
 * Checks a view's aggregations together: each resolved, names unique.
 *
 * @example
 * ```ts
 * resolveAggregations("txn", [{ column: "amount", function: "sum", timeWindow: "1h" }])
 * ```
 */
export function resolveAggregations(view: string, list: Aggregation[]): ResolvedAggregation[] {
  if (!Array.isArray(list)) throw definitionError(view, "aggregations must be an array of { column, function, timeWindow, slideInterval?, name? }");
  const out = list.map((a) => resolveAggregation(view, a));
  const seen = new Set<string>();
  for (const a of out) {
    if (seen.has(a.name)) throw definitionError(view, `two aggregations are named "${a.name}"; give one of them a distinct name: "..."`);
    seen.add(a.name);
  }
  return out;
}

// ---------------------------------------------------------------------------
// Partial states. All are JSON values, so every store can keep them as text.

/** A value with its version, for last, lastN and lastDistinctN: [value, event time, created time or null]. */
export type Versioned = [unknown, number, number | null];

/** A HyperLogLog: sorted sparse codes (register << 5 | rank), or the dense registers as base64. */
export type HllState = { s: number[] } | { d: string };

/** The partial state of one aggregation in one tile. */
export type PartialState =
  | number // count, sum, min, max
  | [number, number] // mean: count, sum
  | [number, number, number] // variance, stddev: count, mean, M2
  | Versioned // last
  | Versioned[] // lastN, lastDistinctN (newest first)
  | HllState;

/** One tile of one entity: the greatest event time folded, and a state per aggregation name. */
export interface Tile {
  /** The greatest event time folded into the tile. */
  t: number;
  /** The partial state of each aggregation, by aggregation name. */
  s: Record<string, PartialState>;
}

/** The states of a batch for one tile of one entity, to merge into the stored tile. */
export interface TileDelta {
  /** The serialized entity key. */
  entityKey: string;
  /** The tile key, see {@link tileKey}. */
  tile: string;
  /** When the tile expires, epoch ms by event time (longest window of its tile size + watermark delay); undefined: never. */
  expiresAt?: number;
  /** The states to merge. */
  state: Tile;
}

/** The key of a tile: its size and index, e.g. `300000:5869` (lifetime: `0:0`). */
export function tileKey(slideMs: number, index: number): string {
  return `${slideMs}:${index}`;
}

/** Parses a tile key. */
export function parseTileKey(key: string): { slideMs: number; index: number } {
  const i = key.indexOf(":");
  return { slideMs: Number(key.slice(0, i)), index: Number(key.slice(i + 1)) };
}

/** The index of the tile of size `slideMs` that holds `eventTime` (0 for lifetime). */
export function tileIndex(slideMs: number, eventTime: number): number {
  return slideMs === 0 ? 0 : Math.floor(eventTime / slideMs);
}

/**
 * The event-time range an aggregation's window covers when read at `now`:
 * `[start, end)`. Lifetime: everything.
 *
 * @example
 * ```ts
 * windowRange({ windowMs: 3_600_000, slideMs: 300_000 } as ResolvedAggregation, now)
 * ```
 */
export function windowRange(a: Pick<ResolvedAggregation, "windowMs" | "slideMs">, now: number): { start: number; end: number } {
  if (a.windowMs === undefined) return { start: -Infinity, end: Infinity };
  const end = (Math.floor(now / a.slideMs) + 1) * a.slideMs;
  return { start: end - a.windowMs, end };
}

/** The tile keys an aggregation's window merges at `now`, oldest first. */
export function windowTiles(a: Pick<ResolvedAggregation, "windowMs" | "slideMs">, now: number): string[] {
  if (a.windowMs === undefined) return [tileKey(0, 0)];
  const last = Math.floor(now / a.slideMs);
  const k = a.windowMs / a.slideMs;
  const out: string[] = [];
  for (let i = last - k + 1; i <= last; i++) out.push(tileKey(a.slideMs, i));
  return out;
}

/** The tile keys a read of these aggregations needs at `now`, each once. */
export function tilesForRead(aggs: readonly ResolvedAggregation[], now: number): string[] {
  const keys = new Set<string>();
  for (const a of aggs) for (const k of windowTiles(a, now)) keys.add(k);
  return [...keys];
}

/**
 * When a tile expires, by event time: after its end plus the longest window
 * of its tile size plus the watermark delay, it can no longer be in any
 * window nor receive an event that is not late. Undefined (never) for the
 * lifetime tile.
 */
export function tileExpiresAt(aggs: readonly ResolvedAggregation[], slideMs: number, index: number, watermarkDelayMs = 0): number | undefined {
  if (slideMs === 0) return undefined;
  let longest = 0;
  for (const a of aggs) if (a.slideMs === slideMs && a.windowMs! > longest) longest = a.windowMs!;
  return (index + 1) * slideMs + longest + watermarkDelayMs;
}

/** Why a value cannot be folded by an aggregation, or undefined when it can (or is null, and ignored). */
export function checkAggregationValue(a: ResolvedAggregation, value: unknown): string | undefined {
  if (value === null || value === undefined) return undefined;
  if (NUMERIC.has(a.function) && !(typeof value === "number" && Number.isFinite(value))) {
    return `${a.function} of "${a.column}" needs a finite number, got ${typeof value === "string" ? JSON.stringify(value.slice(0, 40)) : typeof value}`;
  }
  return undefined;
}

/** The state of one event, or undefined when its value is null (ignored). */
export function initialState(a: ResolvedAggregation, value: unknown, eventTime: number, createdTime?: number): PartialState | undefined {
  if (value === null || value === undefined) return undefined;
  switch (a.function) {
    case "count":
      return 1;
    case "sum":
    case "min":
    case "max":
      return value as number;
    case "mean":
      return [1, value as number];
    case "stddev":
    case "variance":
      return [1, value as number, 0];
    case "last":
      return [value, eventTime, createdTime ?? null];
    case "lastN":
    case "lastDistinctN":
      return [[value, eventTime, createdTime ?? null]];
    case "count_distinct":
      return hllAdd({ s: [] }, value);
  }
}

/** Whether version a is strictly newer than b: (event time, created time), a missing created time below any. */
function newer(a: Versioned, b: Versioned): boolean {
  if (a[1] !== b[1]) return a[1] > b[1];
  return (a[2] ?? -Infinity) > (b[2] ?? -Infinity);
}

/** Merges two newest-first lists, `older` (arrived first) winning ties; keeps `n`. */
function mergeNewest(older: Versioned[], later: Versioned[], n: number): Versioned[] {
  const out: Versioned[] = [];
  let i = 0, j = 0;
  while (out.length < n && (i < older.length || j < later.length)) {
    if (j >= later.length || (i < older.length && !newer(later[j], older[i]))) out.push(older[i++]);
    else out.push(later[j++]);
  }
  return out;
}

/** The identity of a value for lastDistinctN and the distinct count: its type and JSON text. */
export function distinctKey(value: unknown): string {
  return typeof value === "string" ? "s" + value : typeof value + JSON.stringify(value);
}

function mergeDistinct(older: Versioned[], later: Versioned[], n: number): Versioned[] {
  // Each value ranks by its newest occurrence; of equal versions, the earlier arrival.
  const best = new Map<string, { v: Versioned; rank: number }>();
  let rank = 0;
  for (const list of [older, later]) {
    for (const v of list) {
      const k = distinctKey(v[0]);
      const cur = best.get(k);
      if (!cur) best.set(k, { v, rank: rank++ });
      else if (newer(v, cur.v)) best.set(k, { v, rank: rank++ });
    }
  }
  return [...best.values()]
    .sort((x, y) => (newer(x.v, y.v) ? -1 : newer(y.v, x.v) ? 1 : x.rank - y.rank))
    .slice(0, n)
    .map((x) => x.v);
}

/**
 * Merges two partial states of one aggregation: `stored` arrived first
 * (it wins ties of last-N), `incoming` after it.
 *
 * @example
 * ```ts
 * mergeState(agg, [2, 10, 8], [1, 4, 0]) // variance: count 3, mean 8, M2 ...
 * ```
 */
export function mergeState(a: ResolvedAggregation, stored: PartialState | undefined, incoming: PartialState | undefined): PartialState | undefined {
  if (stored === undefined) return incoming;
  if (incoming === undefined) return stored;
  switch (a.function) {
    case "count":
    case "sum":
      return (stored as number) + (incoming as number);
    case "min":
      return Math.min(stored as number, incoming as number);
    case "max":
      return Math.max(stored as number, incoming as number);
    case "mean": {
      const [n1, s1] = stored as [number, number], [n2, s2] = incoming as [number, number];
      return [n1 + n2, s1 + s2];
    }
    case "stddev":
    case "variance": {
      // Chan et al.: exact in real arithmetic, and stable.
      const [n1, m1, q1] = stored as [number, number, number], [n2, m2, q2] = incoming as [number, number, number];
      const n = n1 + n2;
      const d = m2 - m1;
      return [n, m1 + (d * n2) / n, q1 + q2 + (d * d * n1 * n2) / n];
    }
    case "last":
      return newer(incoming as Versioned, stored as Versioned) ? incoming : stored;
    case "lastN":
      return mergeNewest(stored as Versioned[], incoming as Versioned[], a.n!);
    case "lastDistinctN":
      return mergeDistinct(stored as Versioned[], incoming as Versioned[], a.n!);
    case "count_distinct":
      return hllMerge(stored as HllState, incoming as HllState);
  }
}

/** Merges two tiles of the same entity and key (stored first). */
export function mergeTile(aggs: readonly ResolvedAggregation[], stored: Tile | undefined, incoming: Tile): Tile {
  if (!stored) return incoming;
  const s: Record<string, PartialState> = { ...stored.s };
  for (const a of aggs) {
    const m = mergeState(a, stored.s[a.name], incoming.s[a.name]);
    if (m !== undefined) s[a.name] = m;
  }
  return { t: Math.max(stored.t, incoming.t), s };
}

/** The answer of an aggregation from its merged state: count 0 and null for others on an empty window. */
export function finalizeState(a: ResolvedAggregation, state: PartialState | undefined): unknown {
  if (state === undefined) return a.function === "count" || a.function === "count_distinct" ? 0 : null;
  switch (a.function) {
    case "count":
    case "sum":
    case "min":
    case "max":
      return state;
    case "mean": {
      const [n, s] = state as [number, number];
      return s / n;
    }
    case "variance":
    case "stddev": {
      // The sample variance (n - 1), as Spark's var_samp and pandas: undefined (null) for one value.
      const [n, , q] = state as [number, number, number];
      if (n < 2) return null;
      const v = Math.max(0, q / (n - 1));
      return a.function === "variance" ? v : Math.sqrt(v);
    }
    case "last":
      return (state as Versioned)[0];
    case "lastN":
    case "lastDistinctN":
      return (state as Versioned[]).map((v) => v[0]);
    case "count_distinct":
      return hllCount(state as HllState);
  }
}

/**
 * Reads aggregations from an entity's tiles at `now` (`tiles` by tile key,
 * absent ones missing). The status is PRESENT when the window holds a
 * value; an empty window answers count 0 (PRESENT) and null (NOT_FOUND)
 * for the other functions; a variance of one value is null (NULL_VALUE).
 * The event time is the greatest event time of the window's tiles.
 *
 * @example
 * ```ts
 * readAggregates(aggs, tiles, ["sum_amount_3600s"], Date.now())
 * ```
 */
export function readAggregates(aggs: readonly ResolvedAggregation[], tiles: ReadonlyMap<string, Tile>, names: string[], now: number): Record<string, FeatureValue> {
  const out: Record<string, FeatureValue> = {};
  for (const name of names) {
    const a = aggs.find((x) => x.name === name);
    if (!a) {
      out[name] = { value: null, status: "NOT_FOUND" };
      continue;
    }
    let state: PartialState | undefined;
    let t: number | undefined;
    for (const key of windowTiles(a, now)) {
      const tile = tiles.get(key);
      if (!tile) continue;
      if (tile.s[a.name] !== undefined) state = mergeState(a, state, tile.s[a.name]);
      if (t === undefined || tile.t > t) t = tile.t;
    }
    const value = finalizeState(a, state);
    const status = state === undefined ? (a.function === "count" || a.function === "count_distinct" ? "PRESENT" : "NOT_FOUND") : value === null ? "NULL_VALUE" : "PRESENT";
    out[name] = t === undefined ? { value, status } : { value, status, eventTime: t };
  }
  return out;
}

/** One event to fold: its entity, times and row. */
export interface FoldEvent {
  /** The serialized entity key. */
  entityKey: string;
  /** Event time, epoch ms. */
  eventTime: number;
  /** Created time, epoch ms, when the source has one. */
  createdTime?: number;
  /** The row after the UDF. */
  row: Row;
}

/**
 * Folds a batch of events (in arrival order) into tile deltas, one per
 * entity and tile. Values are checked with {@link checkAggregationValue}
 * by the caller first.
 *
 * @example
 * ```ts
 * const deltas = foldTiles(aggs, events, view.watermarkDelayMs)
 * ```
 */
export function foldTiles(aggs: readonly ResolvedAggregation[], events: Iterable<FoldEvent>, watermarkDelayMs = 0): TileDelta[] {
  const bySlide = new Map<number, ResolvedAggregation[]>();
  for (const a of aggs) bySlide.set(a.slideMs, [...(bySlide.get(a.slideMs) ?? []), a]);
  const deltas = new Map<string, TileDelta>();
  for (const e of events) {
    for (const [slideMs, group] of bySlide) {
      const index = tileIndex(slideMs, e.eventTime);
      const tile = tileKey(slideMs, index);
      const id = e.entityKey + "\u0000" + tile;
      let d = deltas.get(id);
      if (!d) {
        d = { entityKey: e.entityKey, tile, state: { t: e.eventTime, s: {} } };
        const exp = tileExpiresAt(aggs, slideMs, index, watermarkDelayMs);
        if (exp !== undefined) d.expiresAt = exp;
        deltas.set(id, d);
      } else if (e.eventTime > d.state.t) d.state.t = e.eventTime;
      for (const a of group) {
        const init = initialState(a, e.row[a.column], e.eventTime, e.createdTime);
        const m = mergeState(a, d.state.s[a.name], init);
        if (m !== undefined) d.state.s[a.name] = m;
      }
    }
  }
  return [...deltas.values()];
}

// ---------------------------------------------------------------------------
// HyperLogLog, p = 12: 4096 registers, standard error 1.04 / 64 ≈ 1.63%.
// Sparse (sorted codes) up to 512 registers set, then dense (one byte per register, base64).

const P = 12;
const M = 1 << P;
const SPARSE_MAX = 512;
const encoder = new TextEncoder();

/** The HyperLogLog's standard error: an estimate is within ±3.3% of the truth about 95% of the time. */
export const HLL_STANDARD_ERROR: number = 1.04 / Math.sqrt(M);

/** MurmurHash3 x86 32-bit of bytes. */
function murmur3(bytes: Uint8Array, seed = 0x9747b28c): number {
  let h = seed >>> 0;
  const n = bytes.length & ~3;
  for (let i = 0; i < n; i += 4) {
    let k = bytes[i] | (bytes[i + 1] << 8) | (bytes[i + 2] << 16) | (bytes[i + 3] << 24);
    k = Math.imul(k, 0xcc9e2d51);
    k = (k << 15) | (k >>> 17);
    k = Math.imul(k, 0x1b873593);
    h ^= k;
    h = (h << 13) | (h >>> 19);
    h = (Math.imul(h, 5) + 0xe6546b64) | 0;
  }
  let k = 0;
  switch (bytes.length & 3) {
    case 3:
      k ^= bytes[n + 2] << 16;
    // falls through
    case 2:
      k ^= bytes[n + 1] << 8;
    // falls through
    case 1:
      k ^= bytes[n];
      k = Math.imul(k, 0xcc9e2d51);
      k = (k << 15) | (k >>> 17);
      k = Math.imul(k, 0x1b873593);
      h ^= k;
  }
  h ^= bytes.length;
  h ^= h >>> 16;
  h = Math.imul(h, 0x85ebca6b);
  h ^= h >>> 13;
  h = Math.imul(h, 0xc2b2ae35);
  h ^= h >>> 16;
  return h >>> 0;
}

function registers(h: HllState): Uint8Array {
  const r = new Uint8Array(M);
  if ("s" in h) for (const c of h.s) r[c >>> 5] = Math.max(r[c >>> 5], c & 31);
  else {
    const bin = atob(h.d);
    for (let i = 0; i < M; i++) r[i] = bin.charCodeAt(i);
  }
  return r;
}

function fromRegisters(r: Uint8Array): HllState {
  const s: number[] = [];
  for (let i = 0; i < M && s.length <= SPARSE_MAX; i++) if (r[i]) s.push((i << 5) | r[i]);
  if (s.length <= SPARSE_MAX) return { s };
  let bin = "";
  for (let i = 0; i < M; i++) bin += String.fromCharCode(r[i]);
  return { d: btoa(bin) };
}

/** Adds a value to a HyperLogLog. */
export function hllAdd(h: HllState, value: unknown): HllState {
  const x = murmur3(encoder.encode(distinctKey(value)));
  const idx = x >>> (32 - P);
  const rest = (x << P) >>> 0;
  const rank = rest === 0 ? 32 - P + 1 : Math.clz32(rest) + 1;
  const code = (idx << 5) | rank;
  if ("s" in h) {
    const at = h.s.findIndex((c) => c >>> 5 === idx);
    if (at >= 0 && (h.s[at] & 31) >= rank) return h;
    const s = at >= 0 ? h.s.filter((_, i) => i !== at) : [...h.s];
    s.push(code);
    s.sort((p, q) => p - q);
    return s.length > SPARSE_MAX ? fromRegisters(registers({ s })) : { s };
  }
  const r = registers(h);
  if (r[idx] >= rank) return h;
  r[idx] = rank;
  return fromRegisters(r);
}

/** Merges two HyperLogLogs: the register-wise maximum. */
export function hllMerge(a: HllState, b: HllState): HllState {
  const r = registers(a);
  const q = registers(b);
  for (let i = 0; i < M; i++) if (q[i] > r[i]) r[i] = q[i];
  return fromRegisters(r);
}

/** The estimated number of distinct values (with the small-range correction). */
export function hllCount(h: HllState): number {
  const r = registers(h);
  let sum = 0;
  let zeros = 0;
  for (let i = 0; i < M; i++) {
    sum += 2 ** -r[i];
    if (r[i] === 0) zeros++;
  }
  const alpha = 0.7213 / (1 + 1.079 / M);
  const e = (alpha * M * M) / sum;
  if (e <= 2.5 * M && zeros > 0) return Math.round(M * Math.log(M / zeros));
  return Math.round(e);
}

/**
 * Declares an aggregation (Feast's `Aggregation`), checked on its own; the
 * view checks the column and the names together.
 *
 * @example
 * ```ts
 * aggregation({ column: "amount", function: "sum", timeWindow: "1h", slideInterval: "5m" })
 * ```
 */
export function aggregation(a: Aggregation): Aggregation {
  resolveAggregation("aggregation", a);
  return Object.freeze({ ...a });
}
