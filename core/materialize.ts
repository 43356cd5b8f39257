/**
 * @module
 * Backfill: rows of a view's batch source through the same pipeline as the
 * stream (validate, UDF, time checks, dedupe; no watermark) into the online
 * store, over a time range, with progress. On a view with aggregations, the
 * tiles of the range are deleted first and rebuilt from the batch source
 * (replaced, not added to).
 */
import { type FeatureRow, isAggregatingStore, type OfflineStore, type RawRecord, type Row } from "./contracts.ts";
import { preferLogged } from "./historical.ts";
import type { FeatureView } from "./definitions.ts";
import { FreshetError } from "./errors.ts";
import type { Processor } from "./processor.ts";
import { parseEventTime } from "./time.ts";

/** Progress of a backfill. */
export interface MaterializeProgress {
  /** The view being materialized, for logs. */
  view?: string;
  /** Rows read from the batch source so far. */
  read: number;
  /** Valid rows inside the range. */
  inRange: number;
  /** Rows that were bad (schema, UDF, timestamp, join key): dead-lettered. */
  invalid: number;
  /** Rows written, and rows not newer than what the store held (or than another row of the same chunk). */
  written: number;
  /** Rows not newer than what the store held. */
  stale: number;
  /** Rows already outside the view's ttl: not written. */
  expired: number;
  /** Total rows, when the reader knows it up front. */
  total?: number;
  /** Whether the backfill is finished. */
  done: boolean;
}

/** Options of {@link materialize}. */
export interface MaterializeOptions {
  /** Range of event times, epoch ms or ISO strings; `end` is exclusive. */
  start?: number | string;
  /** End of the range (exclusive). */
  end?: number | string;
  /** Reads the view's batch source in chunks of rows. The file plugin provides `readFileSource`. */
  read: AsyncIterable<Row[]>;
  /** Called after each chunk, and once with `done: true`. */
  onProgress?: (p: MaterializeProgress) => void;
  /** Total rows, when known, for a percentage. */
  total?: number;
  /** Where the rows come from, for dead-letter positions. Default the batch source's path. */
  path?: string;
}

/**
 * Materializes a view's batch source into the online store through the
 * processor's own pipeline, so a backfill gives the same online values as
 * pushing the same rows (the UDF runs; the watermark does not apply). Each
 * chunk is prepared and committed in turn; latest-wins in the store makes
 * the result independent of chunking and safe beside a live stream.
 *
 * @example
 * ```ts
 * await materialize(processor, registry.view("driver_hourly_stats"), { start: "2024-01-01", read: readFileSource(batchSource) })
 * ```
 */
export async function materialize(processor: Processor, view: FeatureView, opts: MaterializeOptions): Promise<MaterializeProgress> {
  if (typeof (processor as Partial<Processor>)?.prepare !== "function") {
    throw new FreshetError("INVALID_CONFIG", "materialize takes a processor: materialize(createProcessor({ registry, online, deadLetters }), view, opts)");
  }
  const start = toMs(opts.start, -Infinity, "start");
  const end = toMs(opts.end, Infinity, "end");
  const resolved = processor.registry.view(view.name);
  const batch = resolved.source.batchSource;
  const path = opts.path ?? batch?.path ?? resolved.source.name;
  const p: MaterializeProgress = { view: view.name, read: 0, inRange: 0, invalid: 0, written: 0, stale: 0, expired: 0, total: opts.total, done: false };
  if (resolved.aggregations?.length) await clearForRebuild(processor, resolved, start, end);
  for await (const chunk of opts.read) {
    const records: RawRecord[] = new Array(chunk.length);
    for (let i = 0; i < chunk.length; i++) records[i] = { value: chunk[i], position: { kind: "file", path, line: p.read + i + 1 } };
    p.read += chunk.length;
    const prepared = await processor.prepare(resolved.source.name, records, {
      views: [view.name],
      to: "online",
      watermark: false,
      fieldMapping: batch?.fieldMapping ?? resolved.source.fieldMapping,
      range: { start, end },
    });
    const r = await processor.commit(prepared);
    p.invalid += r.invalid;
    p.written += r.written;
    p.stale += r.stale;
    p.expired += r.expired;
    p.inRange += r.written + r.stale + r.expired;
    opts.onProgress?.({ ...p });
  }
  p.done = true;
  processor.metrics.inc("freshet_materialized_rows_total", { view: view.name }, p.written);
  opts.onProgress?.({ ...p });
  return p;
}

/**
 * Before an aggregation view is rebuilt from its batch source, its tiles of
 * [start, end) are deleted, so the backfill replaces them instead of adding
 * to them. The range must be made of whole tiles of every slide interval,
 * and a lifetime aggregation can only be rebuilt from the whole history.
 */
async function clearForRebuild(processor: Processor, view: FeatureView, start: number, end: number): Promise<void> {
  const store = processor.online;
  if (!isAggregatingStore(store)) throw new FreshetError("INVALID_CONFIG", `view "${view.name}" has aggregations: materialize it into a store that keeps tiles (memory, SQLite, Redis, Upstash)`, { definition: view.name });
  for (const a of view.aggregations!) {
    if (a.windowMs === undefined) {
      if (start !== -Infinity || end !== Infinity) {
        throw new FreshetError("INVALID_CONFIG", `aggregation "${a.name}" of view "${view.name}" has a lifetime window, which holds the whole history: materialize it without start and end`, { definition: view.name });
      }
      continue;
    }
    for (const [name, t] of [["start", start], ["end", end]] as const) {
      if (Number.isFinite(t) && t % a.slideMs !== 0) {
        const down = Math.floor(t / a.slideMs) * a.slideMs;
        throw new FreshetError("INVALID_CONFIG", `materialize ${name} ${new Date(t).toISOString()} is not on a tile boundary of "${a.name}" (slide ${a.slideMs / 1000}s), so its tile would be part rebuilt and part kept: use ${new Date(down).toISOString()} or ${new Date(down + a.slideMs).toISOString()}`, { definition: view.name });
      }
    }
  }
  await store.clearTiles(view, { start, end });
}

function toMs(v: number | string | undefined, dflt: number, name: string): number {
  if (v === undefined) return dflt;
  const ms = parseEventTime(v);
  if (ms === undefined) throw new FreshetError("INVALID_CONFIG", `materialize ${name} ${JSON.stringify(v)} is not a time: use ISO 8601 or epoch ms`);
  return ms;
}

/** Options of {@link materializeFromOffline}. */
export interface MaterializeFromOfflineOptions {
  /** Range of event times, epoch ms or ISO strings; `end` is exclusive. */
  start?: number | string;
  /** End of the range (exclusive). */
  end?: number | string;
  /** The log to read. Default the processor's offline store. */
  offline?: OfflineStore;
  /** Called after each chunk. */
  onProgress?: (p: MaterializeProgress) => void;
}

/**
 * Rebuilds a view's online values from the offline log: the log's rows (the
 * values as they were written, after schema and UDF, so neither runs again)
 * go to the online store chunk by chunk, latest-wins, so the store ends with
 * the latest logged row per entity whatever the order of the log's files,
 * and duplicates from at-least-once delivery are stale. Rows outside the
 * view's ttl are counted expired by the store. Among rows of equal (event
 * time, created time) within a chunk the first appended wins; across chunks
 * the first written does.
 *
 * @example
 * ```ts
 * await materializeFromOffline(processor, registry.view("driver_hourly_stats"), { start: "2026-01-01" })
 * ```
 */
export async function materializeFromOffline(processor: Processor, view: FeatureView, opts: MaterializeFromOfflineOptions = {}): Promise<MaterializeProgress> {
  const offline = opts.offline ?? processor.offline;
  if (!offline) throw new FreshetError("INVALID_CONFIG", "materialize from the offline log needs an offline store: createProcessor({ registry, online, offline })");
  if (!processor.online) throw new FreshetError("INVALID_CONFIG", "materialize needs an online store: createProcessor({ registry, online, offline })");
  const start = toMs(opts.start, -Infinity, "start");
  const end = toMs(opts.end, Infinity, "end");
  const resolved = processor.registry.view(view.name);
  const p: MaterializeProgress = { view: view.name, read: 0, inRange: 0, invalid: 0, written: 0, stale: 0, expired: 0, done: false };
  for await (const chunk of offline.read(resolved, { start: Number.isFinite(start) ? start : undefined, end: Number.isFinite(end) ? end : undefined })) {
    p.read += chunk.length;
    const best = new Map<string, FeatureRow>();
    let inRange = 0;
    for (const r of chunk) {
      if (r.eventTime < start || r.eventTime >= end) continue;
      inRange++;
      if (preferLogged(r, best.get(r.entityKey))) best.set(r.entityKey, r);
    }
    const rows = [...best.values()].map((r) => ({ entityKey: r.entityKey, values: r.values, eventTime: r.eventTime, createdTime: r.createdTime }));
    p.inRange += inRange;
    p.stale += inRange - rows.length; // older rows of the same entity in this chunk
    if (rows.length) {
      const w = await processor.online.write(resolved, rows);
      p.written += w.written;
      p.stale += w.stale;
      p.expired += w.expired;
    }
    opts.onProgress?.({ ...p });
  }
  p.done = true;
  processor.metrics.inc("freshet_materialized_rows_total", { view: view.name }, p.written);
  opts.onProgress?.({ ...p });
  return p;
}
