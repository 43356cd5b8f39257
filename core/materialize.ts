/**
 * @module
 * Backfill: the latest row per entity from a batch source into the online
 * store, over a time range, with progress.
 */
import type { FeatureRow, OnlineStore, Row } from "./contracts.ts";
import type { FeatureView } from "./definitions.ts";
import { entityKeyOf } from "./entity-key.ts";
import { FreshetError } from "./errors.ts";
import { isNewerRow } from "./processor.ts";
import { parseEventTime } from "./time.ts";

/** Progress of a backfill. */
export interface MaterializeProgress {
  /** The view being materialized, for logs. */
  view?: string;
  /** Rows read from the batch source so far. */
  read: number;
  /** Rows inside the range. */
  inRange: number;
  /** Rows that were bad (no timestamp, no join key, failed the schema). */
  invalid: number;
  /** Entities written so far (after dedupe), and stale ones skipped. */
  written: number;
  stale: number;
  /** Total rows, when the reader knows it up front. */
  total?: number;
  done: boolean;
}

/** Options of {@link materialize}. */
export interface MaterializeOptions {
  /** Range of event times, epoch ms or ISO strings; `end` is exclusive. */
  start?: number | string;
  end?: number | string;
  /** Reads the view's batch source in chunks of rows. The file plugin provides `readFileSource`. */
  read: AsyncIterable<Row[]>;
  /** Called after each chunk, and once with `done: true`. */
  onProgress?: (p: MaterializeProgress) => void;
  /** Total rows, when known, for a percentage. */
  total?: number;
  /** Rows per store write. Default 5000. */
  writeBatch?: number;
}

/**
 * Materializes the latest row per entity from the view's batch source into
 * the online store. Holds one row per entity in memory, then writes in
 * batches; latest-wins in the store makes it safe to run beside a live stream.
 *
 * @example
 * ```ts
 * await materialize(store, view, { start: "2024-01-01", end: Date.now(), read: readFileSource(view.source.batchSource) })
 * ```
 */
export async function materialize(store: OnlineStore, view: FeatureView, opts: MaterializeOptions): Promise<MaterializeProgress> {
  const start = toMs(opts.start, -Infinity, "start");
  const end = toMs(opts.end, Infinity, "end");
  const source = typeof view.source === "object" ? view.source : undefined;
  const tsField = view.timestampField ?? source?.batchSource?.timestampField;
  if (!tsField) throw new FreshetError("INVALID_CONFIG", "the view has no timestamp field; resolve it through featureRepo() first", { definition: view.name });
  const mapping = source?.batchSource?.fieldMapping;
  const createdField = view.createdTimestampField ?? source?.batchSource?.createdTimestampColumn;
  const p: MaterializeProgress = { view: view.name, read: 0, inRange: 0, invalid: 0, written: 0, stale: 0, total: opts.total, done: false };
  const latest = new Map<string, { row: FeatureRow; order: number }>();
  let order = 0;
  for await (const chunk of opts.read) {
    for (const raw of chunk) {
      p.read++;
      const row = mapping ? Object.fromEntries(Object.entries(raw).map(([k, v]) => [mapping[k] ?? k, v])) : raw;
      const eventTime = parseEventTime(row[tsField]);
      if (eventTime === undefined) {
        p.invalid++;
        continue;
      }
      if (eventTime < start || eventTime >= end) continue;
      let valid = view.schema["~standard"].validate(row);
      if (valid instanceof Promise) valid = await valid; // valibot answers synchronously: no microtask per row
      const ek = entityKeyOf(view.joinKeys, row);
      if (valid.issues || "missing" in ek) {
        p.invalid++;
        continue;
      }
      p.inRange++;
      const values: Row = {};
      for (const f of view.features) values[f] = (valid.value as Row)[f] ?? null;
      const createdTime = createdField ? parseEventTime(row[createdField]) : undefined;
      const r = { row: { entityKey: ek.key, values, eventTime, createdTime }, order: order++ };
      const cur = latest.get(ek.key);
      if (!cur || isNewerRow(r, cur)) latest.set(ek.key, r);
    }
    opts.onProgress?.({ ...p });
  }
  const rows = [...latest.values()].map((r) => r.row);
  const size = opts.writeBatch ?? 5000;
  for (let i = 0; i < rows.length; i += size) {
    const w = await store.write(view, rows.slice(i, i + size));
    p.written += w.written;
    p.stale += w.stale;
    opts.onProgress?.({ ...p });
  }
  p.done = true;
  opts.onProgress?.({ ...p });
  return p;
}

function toMs(v: number | string | undefined, dflt: number, name: string): number {
  if (v === undefined) return dflt;
  const ms = parseEventTime(v);
  if (ms === undefined) throw new FreshetError("INVALID_CONFIG", `materialize ${name} ${JSON.stringify(v)} is not a time: use ISO 8601 or epoch ms`);
  return ms;
}
