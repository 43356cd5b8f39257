/**
 * @module
 * Point-in-time correct historical retrieval (Feast's get_historical_features):
 * for each entity row, the value each feature had at the row's timestamp.
 *
 * The semantics, the same for every engine: the logged row of the view with
 * the entity row's join keys and the greatest (event time, created time) with
 * event time at or before the entity row's timestamp; among rows of equal
 * (event time, created time) the first appended (its `logSeq`), so a replay
 * from at-least-once delivery changes nothing. When that row is older than
 * the view's ttl (entity time - event time > ttl) the features are null, as
 * an online read says OUTSIDE_MAX_AGE. ttl 0 keeps values forever.
 * Aggregate features of an aggregating view are folded from its logged
 * events by core/historical-aggregates.ts.
 */
import type { AsOfEntity, AsOfMatch, FeatureRow, OfflineStore, Row } from "./contracts.ts";
import type { FeatureView } from "./definitions.ts";
import { windowRange } from "./aggregations.ts";
import { entityKeyOf } from "./entity-key.ts";
import { aggregateAsOf } from "./historical-aggregates.ts";
import { FreshetError } from "./errors.ts";
import { isNewer } from "./online.ts";
import type { Registry } from "./registry.ts";
import { parseEventTime } from "./time.ts";

/** Whether logged row `a` wins over `b` for the same entity: a greater (event time, created time), or equal and appended first. */
export function preferLogged(a: Pick<FeatureRow, "eventTime" | "createdTime" | "logSeq">, b: Pick<FeatureRow, "eventTime" | "createdTime" | "logSeq"> | undefined): boolean {
  if (!b) return true;
  if (isNewer(a, b)) return true;
  if (isNewer(b, a)) return false;
  return a.logSeq !== undefined && (b.logSeq === undefined || a.logSeq < b.logSeq);
}

/** Progress of a historical retrieval, per view. */
export interface HistoricalProgress {
  /** The view being joined. */
  view: string;
  /** "duckdb" (the store's own engine) or "stream" (the streaming join over `read`); "..., stream (aggregates)" when aggregate features were folded too. */
  engine: string;
  /** Feature rows read so far (streaming join only). */
  featureRows: number;
  /** Entity rows joined so far. */
  entityRows: number;
  /** Whether the view is finished. */
  done: boolean;
}

/** Options of {@link getHistoricalFeatures}. */
export interface HistoricalOptions {
  /** The feature repo. */
  registry: Registry;
  /** The offline log to read. */
  offline: OfflineStore;
  /** Entity rows: the join keys of the views asked for, and a timestamp. */
  entityRows: Row[];
  /** Feature refs, `view:feature` (or `view:*` for every feature of the view). */
  features: string[];
  /** The field of an entity row that holds its timestamp. Default `event_timestamp`. */
  timestampField?: string;
  /** Name the output columns `view__feature` (Feast's full_feature_names). Default false: `feature`. */
  fullFeatureNames?: boolean;
  /** "auto" (default): the store's engine when it has one that is available, else the streaming join; "stream": always the streaming join. */
  engine?: "auto" | "stream";
  /** Called as the join advances. */
  onProgress?: (p: HistoricalProgress) => void;
}

/** The answer of {@link getHistoricalFeatures}. */
export interface HistoricalResult {
  /** One row per entity row, in order: the entity row's fields, then one column per feature (null when there was no value). */
  rows: Row[];
  /** The output feature columns, in the order asked. */
  columns: string[];
  /** Which engine answered each view. */
  engines: Record<string, string>;
}

/**
 * The streaming as-of join: holds the entity rows (grouped by key and sorted
 * by time) and, per entity row, at most one candidate; the feature rows go
 * by once, in any order and in chunks, and are never all in memory. A
 * feature row lands in the bucket of the first entity time at or after its
 * event time; a prefix maximum over the buckets of a key gives each entity
 * row the latest row at or before its time. O(F log E + E log E).
 *
 * @example
 * ```ts
 * const matches = await asOfJoin(view, ["conv_rate"], [{ entityKey: "driver_id=1", time: Date.now() }], offline.read(view, {}))
 * ```
 */
export async function asOfJoin(view: Pick<FeatureView, "ttlMs">, features: string[], entities: AsOfEntity[], rows: AsyncIterable<FeatureRow[]> | Iterable<FeatureRow[]>, onRows?: (n: number) => void): Promise<(AsOfMatch | undefined)[]> {
  const order = Array.from(entities, (_, i) => i);
  order.sort((a, b) => (entities[a].entityKey < entities[b].entityKey ? -1 : entities[a].entityKey > entities[b].entityKey ? 1 : entities[a].time - entities[b].time));
  const times = new Float64Array(order.length);
  for (let i = 0; i < order.length; i++) times[i] = entities[order[i]].time;
  /** Per key, its range [from, to) of `order`. */
  const ranges = new Map<string, [number, number]>();
  for (let i = 0; i < order.length;) {
    const key = entities[order[i]].entityKey;
    let j = i + 1;
    while (j < order.length && entities[order[j]].entityKey === key) j++;
    ranges.set(key, [i, j]);
    i = j;
  }
  const best: (FeatureRow | undefined)[] = new Array(order.length);
  let seen = 0;
  for await (const chunk of rows as AsyncIterable<FeatureRow[]>) {
    for (const r of chunk) {
      const range = ranges.get(r.entityKey);
      if (!range) continue;
      // The first entity time >= the row's event time.
      let lo = range[0], hi = range[1];
      while (lo < hi) {
        const mid = (lo + hi) >>> 1;
        if (times[mid] < r.eventTime) lo = mid + 1;
        else hi = mid;
      }
      if (lo === range[1]) continue;
      if (preferLogged(r, best[lo])) {
        const values: Row = {};
        for (const f of features) values[f] = r.values[f] ?? null;
        best[lo] = { entityKey: r.entityKey, values, eventTime: r.eventTime, createdTime: r.createdTime, logSeq: r.logSeq };
      }
    }
    seen += chunk.length;
    onRows?.(seen);
  }
  const out: (AsOfMatch | undefined)[] = new Array(entities.length).fill(undefined);
  for (const [from, to] of ranges.values()) {
    let running: FeatureRow | undefined;
    for (let i = from; i < to; i++) {
      const b = best[i];
      if (b && preferLogged(b, running)) running = b;
      if (running && !(view.ttlMs > 0 && times[i] - running.eventTime > view.ttlMs)) out[order[i]] = { values: running.values, eventTime: running.eventTime };
    }
  }
  return out;
}

/** Resolves feature refs to views and features, in the order asked. */
export function resolveFeatureRefs(registry: Registry, refs: string[]): { view: FeatureView; features: string[]; aggregates: string[] }[] {
  if (!Array.isArray(refs) || refs.length === 0) throw new FreshetError("INVALID_INPUT", 'features is empty: give feature refs "view:feature", e.g. driver_hourly_stats:conv_rate');
  const byView = new Map<string, { view: FeatureView; features: string[]; aggregates: string[] }>();
  for (const ref of refs) {
    const i = typeof ref === "string" ? ref.indexOf(":") : -1;
    if (i <= 0 || i === ref.length - 1) throw new FreshetError("INVALID_INPUT", `feature ref ${JSON.stringify(ref)} is not "view:feature", e.g. driver_hourly_stats:conv_rate`);
    const name = ref.slice(0, i);
    const feature = ref.slice(i + 1);
    let view: FeatureView;
    try {
      view = registry.view(name);
    } catch {
      throw new FreshetError("INVALID_INPUT", `feature ref "${ref}": no view named "${name}"; views: ${[...registry.views.keys()].join(", ")}`);
    }
    let entry = byView.get(name);
    if (!entry) byView.set(name, entry = { view, features: [], aggregates: [] });
    const aggNames = (view.aggregations ?? []).map((a) => a.name);
    // `view:*` is what the view serves online: its aggregations on an aggregating view.
    const add = feature === "*" ? (aggNames.length ? aggNames : view.features) : [feature];
    for (const f of add) {
      const agg = view.aggregations?.find((a) => a.name === f);
      if (agg) {
        if (!view.features.includes(agg.column)) throw new FreshetError("INVALID_INPUT", `feature ref "${ref}": aggregation "${f}" reads column "${agg.column}", which view "${name}" does not log offline; add "${agg.column}" to the view's features`);
        if (!entry.aggregates.includes(f)) entry.aggregates.push(f);
        continue;
      }
      if (!view.features.includes(f)) throw new FreshetError("INVALID_INPUT", `feature ref "${ref}": view "${name}" has no feature "${f}"; it has ${[...view.features, ...aggNames].join(", ")}`);
      if (!entry.features.includes(f)) entry.features.push(f);
    }
  }
  return [...byView.values()];
}

/**
 * Point-in-time correct training data from the offline log: for each entity
 * row, each asked feature as it was at the row's timestamp (see the module
 * doc for the exact rule). Uses the offline store's own engine (DuckDB over
 * Parquet for the file log) when it has one, else the streaming join; both
 * give the same answer.
 *
 * @example
 * ```ts
 * const { rows } = await getHistoricalFeatures({ registry, offline, entityRows: [{ driver_id: 1001, event_timestamp: "2026-01-01T12:00:00Z" }], features: ["driver_hourly_stats:conv_rate"] })
 * ```
 */
export async function getHistoricalFeatures(opts: HistoricalOptions): Promise<HistoricalResult> {
  const { registry, offline, entityRows } = opts;
  if (!offline || typeof offline.read !== "function") throw new FreshetError("INVALID_CONFIG", "getHistoricalFeatures needs an offline store, e.g. fileOffline({ dir })");
  if (!Array.isArray(entityRows)) throw new FreshetError("INVALID_INPUT", "entityRows must be an array of rows with join keys and a timestamp");
  const tsField = opts.timestampField ?? "event_timestamp";
  const wanted = resolveFeatureRefs(registry, opts.features);
  const times = new Float64Array(entityRows.length);
  for (let i = 0; i < entityRows.length; i++) {
    const row = entityRows[i];
    const t = row && typeof row === "object" ? parseEventTime(row[tsField]) : undefined;
    if (t === undefined) throw new FreshetError("INVALID_INPUT", `entity row ${i}: "${tsField}" ${row && typeof row === "object" && row[tsField] !== undefined ? `${JSON.stringify(row[tsField])} is not a time (ISO 8601 or epoch ms)` : "is missing"}`);
    times[i] = t;
  }
  const columns: string[] = [];
  const results: { view: FeatureView; names: string[]; values: (Row | undefined)[] }[] = [];
  const engines: Record<string, string> = {};
  for (const { view, features, aggregates } of wanted) {
    const entities: AsOfEntity[] = new Array(entityRows.length);
    for (let i = 0; i < entityRows.length; i++) {
      const ek = entityKeyOf(view.joinKeys, entityRows[i]);
      if ("missing" in ek) throw new FreshetError("INVALID_INPUT", `entity row ${i}: ${ek.reason ?? `join key "${ek.missing}" of view "${view.name}" is missing or empty`}`);
      entities[i] = { entityKey: ek.key, time: times[i] };
    }
    const progress: HistoricalProgress = { view: view.name, engine: "stream", featureRows: 0, entityRows: entities.length, done: false };
    const onRows = (n: number) => {
      progress.featureRows = n;
      opts.onProgress?.({ ...progress });
    };
    let min = Infinity, max = -Infinity;
    for (const t of times) {
      if (t < min) min = t;
      if (t > max) max = t;
    }
    const values: (Row | undefined)[] = new Array(entityRows.length).fill(undefined);
    const used: string[] = [];
    if (features.length) {
      let matches = opts.engine === "stream" || !offline.asOf ? undefined : await offline.asOf(view, features, entities);
      if (matches) progress.engine = "duckdb";
      else {
        const range = entities.length ? { start: view.ttlMs > 0 ? min - view.ttlMs : undefined, end: max + 1 } : { start: 0, end: 0 };
        matches = await asOfJoin(view, features, entities, offline.read(view, range), onRows);
      }
      used.push(progress.engine);
      for (let i = 0; i < matches.length; i++) values[i] = matches[i]?.values;
    }
    if (aggregates.length) {
      // Aggregates always take the streaming fold over `read` (also when DuckDB answered the plain features).
      let start = Infinity;
      for (const name of aggregates) {
        const a = view.aggregations!.find((x) => x.name === name)!;
        start = Math.min(start, windowRange(a, min).start);
      }
      const range = entities.length ? { start: Number.isFinite(start) ? start : undefined, end: max + 1 } : { start: 0, end: 0 };
      progress.engine = "stream";
      progress.featureRows = 0;
      const aggValues = await aggregateAsOf(view, aggregates, entities, offline.read(view, range), onRows);
      for (let i = 0; i < aggValues.length; i++) values[i] = { ...values[i], ...aggValues[i] };
      used.push("stream (aggregates)");
    }
    progress.engine = used.join(", ");
    engines[view.name] = progress.engine;
    opts.onProgress?.({ ...progress, done: true });
    const names = [...features, ...aggregates];
    results.push({ view, names, values });
    for (const f of names) columns.push(opts.fullFeatureNames ? `${view.name}__${f}` : f);
  }
  if (!opts.fullFeatureNames && new Set(columns).size !== columns.length) {
    throw new FreshetError("INVALID_INPUT", `two views have a feature of the same name (${columns.filter((c, i) => columns.indexOf(c) !== i).join(", ")}): ask for full feature names (view__feature)`);
  }
  const rows: Row[] = new Array(entityRows.length);
  for (let i = 0; i < entityRows.length; i++) {
    const out: Row = { ...entityRows[i] };
    for (const { view, names, values } of results) {
      const m = values[i];
      for (const f of names) out[opts.fullFeatureNames ? `${view.name}__${f}` : f] = m ? m[f] ?? null : null;
    }
    rows[i] = out;
  }
  return { rows, columns, engines };
}
