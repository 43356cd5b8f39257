/**
 * @module
 * The processor: for each batch of raw records, decode -> validate -> UDF ->
 * watermark -> dedupe -> write -> (the caller acks). Every record ends in
 * exactly one counted outcome: written, stale, late, invalid (dead-lettered),
 * or duplicate (HTTP idempotency).
 */
import type { DeadLetter, DeadLetterReason, DeadLetterSink, FeatureRow, Logger, OfflineStore, OnlineStore, Position, RawRecord, Row } from "./contracts.ts";
import type { FeatureView, StreamSourceDef } from "./definitions.ts";
import { entityKeyOf } from "./entity-key.ts";
import { FreshetError, isRetriable, storeUnavailable } from "./errors.ts";
import { createMetrics, type Metrics } from "./metrics.ts";
import type { Registry } from "./registry.ts";
import { parseEventTime } from "./time.ts";

/** Where a batch is written, as Feast's push `to`. */
export type WriteTarget = "online" | "offline" | "online_and_offline";

/** Options of {@link createProcessor}. */
export interface ProcessorOptions {
  registry: Registry;
  online?: OnlineStore;
  offline?: OfflineStore;
  /** Where invalid and late records go. Required: nothing is dropped silently. */
  deadLetters: DeadLetterSink;
  /** Sinks for particular sources (e.g. a Kafka source's dead-letter topic), by source name; others use `deadLetters`. */
  sourceDeadLetters?: Record<string, DeadLetterSink>;
  metrics?: Metrics;
  logger?: Logger;
}

/** Options of one {@link Processor.process} call. */
export interface ProcessOptions {
  /** Overrides the views' online/offline flags (HTTP push's `to`). */
  to?: WriteTarget;
  /**
   * "dead-letter" (streams): bad records go to the sink and the rest are written.
   * "reject" (HTTP): if any record is bad, nothing is written and the issues are returned.
   */
  onInvalid?: "dead-letter" | "reject";
}

/** One bad record, as an HTTP client or a dead letter sees it. */
export interface RecordIssue {
  /** Index of the record in the batch. */
  index: number;
  view?: string;
  reason: DeadLetterReason;
  /** The offending field. */
  path?: string;
  message: string;
}

/** Outcome counts of one view in a batch. */
export interface ViewCounts {
  written: number;
  stale: number;
  late: number;
  invalid: number;
}

/** What one batch did. */
export interface BatchResult extends ViewCounts {
  records: number;
  views: Record<string, ViewCounts>;
  /** Set in "reject" mode when the batch was refused; nothing was written. */
  rejected?: RecordIssue[];
  /** Issues that went to the dead-letter sink. */
  deadLettered: RecordIssue[];
}

/** The pipeline for the views of a registry. */
export interface Processor {
  readonly registry: Registry;
  readonly online?: OnlineStore;
  readonly offline?: OfflineStore;
  readonly deadLetters: DeadLetterSink;
  readonly metrics: Metrics;
  /** Runs a batch of one source through every view fed by it. Throws a retriable FreshetError when a store is down. */
  process(sourceName: string, records: RawRecord[], opts?: ProcessOptions): Promise<BatchResult>;
}

interface Prepared {
  view: FeatureView & { source: StreamSourceDef };
  online: FeatureRow[];
  offline: FeatureRow[];
  counts: ViewCounts;
}

const textDecoder = new TextDecoder("utf-8", { fatal: true });

/**
 * Creates a processor.
 *
 * @example
 * ```ts
 * const processor = createProcessor({ registry, online: memoryStore(), deadLetters: memoryDeadLetters() })
 * const result = await processor.process("driver_stats_push_source", [{ value: row, position }])
 * ```
 */
export function createProcessor(opts: ProcessorOptions): Processor {
  const { registry, online, offline, deadLetters } = opts;
  if (!deadLetters) throw new FreshetError("INVALID_CONFIG", "createProcessor needs a deadLetters sink, e.g. fileDeadLetters(\"data/dead-letters.jsonl\") or memoryDeadLetters()");
  const metrics = opts.metrics ?? createMetrics();

  async function process(sourceName: string, records: RawRecord[], popts: ProcessOptions = {}): Promise<BatchResult> {
    const views = registry.viewsForSource(sourceName);
    const source = registry.sources.get(sourceName);
    if (!source || views.length === 0) {
      throw new FreshetError("INVALID_CONFIG", `no stream feature view reads source "${sourceName}"; known sources: ${[...registry.sources.keys()].join(", ")}`, { definition: sourceName });
    }
    const issues: RecordIssue[] = [];
    const decoded = await decodeAll(source, records, issues);
    const prepared: Prepared[] = [];
    for (const view of views) prepared.push(await prepareView(view, decoded, issues, popts.to));

    const result: BatchResult = { records: records.length, written: 0, stale: 0, late: 0, invalid: 0, views: {}, deadLettered: [] };
    const badInput = issues.filter((i) => i.reason !== "late");
    if (popts.onInvalid === "reject" && badInput.length > 0) {
      result.rejected = badInput;
      return result;
    }

    // Dead letters first: once the batch is acknowledged they must already be safe.
    if (issues.length > 0) {
      const letters = issues.map((issue) => toDeadLetter(source.name, issue, records[issue.index] ?? records[0]));
      const sink = opts.sourceDeadLetters?.[source.name] ?? deadLetters;
      try {
        await sink.write(letters);
      } catch (e) {
        throw storeUnavailable(`dead-letters:${sink.name}`, e);
      }
      result.deadLettered = issues;
    }

    for (const p of prepared) {
      if (p.online.length > 0) {
        if (!online) throw new FreshetError("INVALID_CONFIG", `view "${p.view.name}" writes online but no online store is configured`);
        try {
          const w = await online.write(p.view, p.online);
          p.counts.written += w.written;
          p.counts.stale += w.stale;
        } catch (e) {
          metrics.inc("freshet_store_errors_total", { store: online.name });
          throw storeUnavailable(online.name, e, p.view.name);
        }
      }
      if (p.offline.length > 0) {
        if (!offline) throw new FreshetError("INVALID_CONFIG", `view "${p.view.name}" writes offline but no offline store is configured`);
        try {
          await offline.append(p.view, p.offline);
        } catch (e) {
          metrics.inc("freshet_store_errors_total", { store: offline.name });
          throw storeUnavailable(offline.name, e, p.view.name);
        }
        // Offline-only rows count as written when appended.
        if (p.online.length === 0) p.counts.written += p.offline.length;
      }
    }

    for (const p of prepared) {
      result.views[p.view.name] = p.counts;
      for (const k of ["written", "stale", "late", "invalid"] as const) {
        result[k] += p.counts[k];
        metrics.inc("freshet_records_total", { source: source.name, view: p.view.name, outcome: k }, p.counts[k]);
      }
    }
    metrics.inc("freshet_batches_total", { source: source.name, result: "ok" });
    return result;
  }

  return { registry, online, offline, deadLetters, metrics, process };
}

/** Decodes every record once per source; failures become issues and `undefined`. */
async function decodeAll(source: StreamSourceDef, records: RawRecord[], issues: RecordIssue[]): Promise<(Row | undefined)[]> {
  const format = source.kind === "kafka" ? source.messageFormat : source.kind === "kinesis" ? source.recordFormat : undefined;
  const out: (Row | undefined)[] = new Array(records.length);
  for (let i = 0; i < records.length; i++) {
    const value = records[i].value;
    try {
      let body: unknown;
      if (value instanceof Uint8Array) body = format ? await format.decode(value) : JSON.parse(textDecoder.decode(value));
      else if (typeof value === "string") body = format ? await format.decode(new TextEncoder().encode(value)) : JSON.parse(value);
      else body = value;
      if (body === null || typeof body !== "object" || Array.isArray(body)) {
        throw new Error(`expected an object, got ${body === null ? "null" : Array.isArray(body) ? "an array" : typeof body}`);
      }
      out[i] = mapFields(body as Row, source.fieldMapping);
    } catch (e) {
      // A retriable failure (a schema registry that is down) is not the record's fault: pause, don't dead-letter.
      if (isRetriable(e)) throw e;
      issues.push({ index: i, reason: "decode", message: `cannot decode with ${format?.name ?? "json"}: ${(e as Error)?.message ?? e}` });
    }
  }
  return out;
}

function mapFields(row: Row, mapping: Record<string, string> | undefined): Row {
  if (!mapping) return row;
  const out: Row = {};
  for (const [k, v] of Object.entries(row)) out[mapping[k] ?? k] = v;
  return out;
}

async function prepareView(
  view: FeatureView & { source: StreamSourceDef },
  decoded: (Row | undefined)[],
  issues: RecordIssue[],
  to: WriteTarget | undefined,
): Promise<Prepared> {
  const counts: ViewCounts = { written: 0, stale: 0, late: 0, invalid: 0 };
  const bad = (index: number, reason: DeadLetterReason, message: string, path?: string) => {
    issues.push({ index, view: view.name, reason, message, path });
    counts[reason === "late" ? "late" : "invalid"]++;
  };
  const tsField = view.timestampField!;
  const createdField = view.createdTimestampField;

  // 1. validate. Timestamps are taken from the raw row when the schema leaves them out.
  const valid: Row[] = [];
  const origin: number[] = [];
  for (let i = 0; i < decoded.length; i++) {
    const raw = decoded[i];
    if (raw === undefined) {
      counts.invalid++;
      continue;
    }
    let r = view.schema["~standard"].validate(raw);
    if (r instanceof Promise) r = await r;
    if (r.issues) {
      const first = r.issues[0];
      const path = first?.path?.map((p) => (typeof p === "object" ? String(p.key) : String(p))).join(".");
      bad(i, "schema", r.issues.map((x) => x.message).join("; "), path || undefined);
      continue;
    }
    const row = { ...(r.value as Row) };
    if (!(tsField in row) && tsField in raw) row[tsField] = raw[tsField];
    if (createdField && !(createdField in row) && createdField in raw) row[createdField] = raw[createdField];
    valid.push(row);
    origin.push(i);
  }

  // 2. UDF, on the whole batch; if it throws, row by row to find the poison rows.
  let rows = valid;
  let rowOrigin = origin;
  if (view.udf && valid.length > 0) {
    try {
      rows = await view.udf(valid.map((r) => ({ ...r })));
      if (!Array.isArray(rows)) throw new Error("the udf must return an array of rows");
      if (rows.length !== valid.length) rowOrigin = rows.map(() => -1);
    } catch {
      rows = [];
      rowOrigin = [];
      for (let k = 0; k < valid.length; k++) {
        try {
          const out = await view.udf([{ ...valid[k] }]);
          if (!Array.isArray(out)) throw new Error("the udf must return an array of rows");
          for (const o of out) {
            rows.push(o);
            rowOrigin.push(origin[k]);
          }
        } catch (e) {
          bad(origin[k], "udf", `udf ${view.udf.name || "anonymous"} threw: ${(e as Error)?.message ?? e}`);
        }
      }
    }
  }

  // 3. event times and entity keys.
  const timed: { row: FeatureRow; order: number }[] = [];
  for (let k = 0; k < rows.length; k++) {
    const row = rows[k];
    const index = rowOrigin[k] >= 0 ? rowOrigin[k] : origin[0] ?? 0;
    if (row === null || typeof row !== "object") {
      bad(index, "udf", "the udf returned a row that is not an object");
      continue;
    }
    const eventTime = parseEventTime(row[tsField]);
    if (eventTime === undefined) {
      bad(index, "timestamp", `cannot parse ${JSON.stringify(row[tsField]) ?? "a missing value"} as an event time: use ISO 8601 or epoch seconds/milliseconds`, tsField);
      continue;
    }
    let createdTime: number | undefined;
    if (createdField && row[createdField] !== undefined && row[createdField] !== null) {
      createdTime = parseEventTime(row[createdField]);
      if (createdTime === undefined) {
        bad(index, "timestamp", `cannot parse ${JSON.stringify(row[createdField])} as a created time`, createdField);
        continue;
      }
    }
    const ek = entityKeyOf(view.joinKeys, row);
    if ("missing" in ek) {
      bad(index, "join_key", `join key "${ek.missing}" is missing or empty`, ek.missing);
      continue;
    }
    const values: Row = {};
    for (const f of view.features) values[f] = row[f] === undefined ? null : row[f];
    timed.push({ row: { entityKey: ek.key, values, eventTime, createdTime }, order: k });
  }

  // 4. watermark: later than the batch's max event time minus the delay is late.
  let onTime = timed;
  if (view.watermarkDelayMs !== undefined && timed.length > 0) {
    let max = -Infinity;
    for (const t of timed) if (t.row.eventTime > max) max = t.row.eventTime;
    const watermark = max - view.watermarkDelayMs;
    onTime = [];
    for (const t of timed) {
      if (t.row.eventTime < watermark) {
        const index = rowOrigin[t.order] >= 0 ? rowOrigin[t.order] : origin[0] ?? 0;
        bad(index, "late", `event time ${new Date(t.row.eventTime).toISOString()} is before the watermark ${new Date(watermark).toISOString()} (max event time minus ${view.watermarkDelayMs / 1000}s)`, tsField);
      } else onTime.push(t);
    }
  }

  // 5. dedupe and split by target.
  const wantOnline = to ? to !== "offline" : view.online;
  const wantOffline = to ? to !== "online" : view.offline;
  const latest = wantOnline ? dedupeLatest(onTime) : [];
  if (wantOnline) counts.stale += onTime.length - latest.length;
  return {
    view,
    online: latest,
    offline: wantOffline ? onTime.map((t) => t.row) : [],
    counts,
  };
}

/**
 * Keeps the latest row per entity key: the greatest event time, then created
 * time, then position in the batch (later wins).
 *
 * @example
 * ```ts
 * dedupeLatest([{ row: a, order: 0 }, { row: b, order: 1 }])
 * ```
 */
export function dedupeLatest(rows: { row: FeatureRow; order: number }[]): FeatureRow[] {
  const best = new Map<string, { row: FeatureRow; order: number }>();
  for (const r of rows) {
    const cur = best.get(r.row.entityKey);
    if (!cur || isNewerRow(r, cur)) best.set(r.row.entityKey, r);
  }
  return [...best.values()].map((r) => r.row);
}

/** Whether `a` beats `b` for the same entity: a later event time, then created time, then position. */
export function isNewerRow(a: { row: FeatureRow; order: number }, b: { row: FeatureRow; order: number }): boolean {
  if (a.row.eventTime !== b.row.eventTime) return a.row.eventTime > b.row.eventTime;
  const ac = a.row.createdTime ?? -Infinity;
  const bc = b.row.createdTime ?? -Infinity;
  if (ac !== bc) return ac > bc;
  return a.order > b.order;
}

function toDeadLetter(source: string, issue: RecordIssue, record: RawRecord): DeadLetter {
  const { payload, encoding } = payloadOf(record?.value);
  return {
    source,
    view: issue.view,
    reason: issue.reason,
    message: issue.message,
    path: issue.path,
    position: record?.position ?? ({ kind: "memory", index: issue.index } as Position),
    payload,
    encoding,
    at: new Date().toISOString(),
  };
}

function payloadOf(value: RawRecord["value"] | undefined): { payload: string; encoding: DeadLetter["encoding"] } {
  if (value instanceof Uint8Array) {
    try {
      return { payload: textDecoder.decode(value), encoding: "utf8" };
    } catch {
      let bin = "";
      for (let i = 0; i < value.length; i += 0x8000) bin += String.fromCharCode(...value.subarray(i, i + 0x8000));
      return { payload: btoa(bin), encoding: "base64" };
    }
  }
  if (typeof value === "string") return { payload: value, encoding: "utf8" };
  return { payload: JSON.stringify(value ?? null), encoding: "json" };
}
