/**
 * @module
 * The processor, one pipeline for streams, pushes and backfills, in two
 * steps:
 *
 * - `prepare`: decode -> validate -> UDF -> time checks (parse, range,
 *   future skew, ttl, watermark) -> latest-wins dedupe. Pure but for reading
 *   the watermarks; nothing is written.
 * - `commit`: dead letters (once), the offline log, the online store, and
 *   with the last online write, in the same atomic step, the watermarks and
 *   the idempotency key. A failed commit can be retried with the same
 *   prepared batch: it resumes where it failed, so dead letters and
 *   offline rows are not written twice within a process.
 *
 * Every record ends in exactly one counted outcome: written, stale, expired,
 * late (views with `dropLate`), invalid (dead-lettered), or duplicate (HTTP
 * idempotency).
 */
import { checkAggregationValue, type FoldEvent, foldTiles, type TileDelta, tileExpiresAt, tileIndex } from "./aggregations.ts";
import { type AggregatingStore, type CommitMeta, type DeadLetter, type DeadLetterReason, type DeadLetterSink, type FeatureRow, isAggregatingStore, type Logger, type OfflineStore, type OnlineStore, type Position, type RawRecord, type Row, type WriteResult } from "./contracts.ts";
import type { FeatureView, StreamSourceDef } from "./definitions.ts";
import { entityKeyOf } from "./entity-key.ts";
import { FreshetError, isRetriable, storeUnavailable } from "./errors.ts";
import { createMetrics, type Metrics } from "./metrics.ts";
import { compareDecimal, expiresAt, isNewer } from "./online.ts";
import type { Registry } from "./registry.ts";
import { checkFutureSkew, readEventTime, toIso } from "./time.ts";

/** Where a batch is written, as Feast's push `to`. */
export type WriteTarget = "online" | "offline" | "online_and_offline";

/** Options of {@link createProcessor}. */
export interface ProcessorOptions {
  /** The feature repo. */
  registry: Registry;
  /** Where online rows go. */
  online?: OnlineStore;
  /** Where offline rows go. */
  offline?: OfflineStore;
  /** Where invalid and late records go. Required: nothing is dropped silently. */
  deadLetters: DeadLetterSink;
  /** Sinks for particular sources (e.g. a Kafka source's dead-letter topic), by source name; others use `deadLetters`. */
  sourceDeadLetters?: Record<string, DeadLetterSink>;
  /** Counters and gauges. Default a new registry. */
  metrics?: Metrics;
  /** Where dead letters are reported (a warning at most every `deadLetterLogIntervalMs`, with the counts held back). */
  logger?: Logger;
  /** Least time between two dead-letter warnings, in ms. Default 10 s. */
  deadLetterLogIntervalMs?: number;
  /** The clock for the ttl and the future bound. Default `Date.now`. */
  now?: () => number;
}

/** Options of {@link Processor.prepare}. */
export interface PrepareOptions {
  /** Overrides the views' online/offline flags (HTTP push's `to`). */
  to?: WriteTarget;
  /**
   * "dead-letter" (streams): bad records go to the sink and the rest are written.
   * "reject" (HTTP): if any record is bad, nothing is written and the issues are returned.
   */
  onInvalid?: "dead-letter" | "reject";
  /** Only these views of the source (backfill of one view). Default: every view fed by the source. */
  views?: string[];
  /** Apply the watermark. Default true; a backfill turns it off. */
  watermark?: boolean;
  /** Renames raw columns instead of the source's fieldMapping (a batch source's own mapping). */
  fieldMapping?: Record<string, string>;
  /** Only rows with an event time in [start, end) are kept; the others are counted as skipped. */
  range?: { start?: number; end?: number };
}

/** Options of {@link Processor.commit}. */
export interface CommitOptions {
  /** Marks this idempotency key done in the same atomic step as the last online write. */
  idempotency?: { key: string; fingerprint: string; ttlMs: number };
}

/** Options of one {@link Processor.process} call: prepare's and commit's. */
export interface ProcessOptions extends PrepareOptions, CommitOptions {}

/** One bad record, as an HTTP client or a dead letter sees it. */
export interface RecordIssue {
  /** Index of the record in the batch. */
  index: number;
  /** The view it failed for. */
  view?: string;
  /** Why it failed. */
  reason: DeadLetterReason;
  /** The offending field. */
  path?: string;
  /** What went wrong. */
  message: string;
}

/** Outcome counts of one view in a batch. */
export interface ViewCounts {
  /** Rows written. */
  written: number;
  /** Rows not newer than what the store held. */
  stale: number;
  /** Already outside the view's ttl when it arrived: not written online (still logged offline). */
  expired: number;
  /** Behind the watermark on a `dropLate` view: dead-lettered. */
  late: number;
  /** Records dead-lettered as bad. */
  invalid: number;
  /** Filtered out by the UDF (it returned no row for the record), or outside the requested range of a backfill. */
  skipped: number;
  /** Behind the watermark but kept (not an outcome: these are also written, stale or expired). */
  lateArrivals: number;
}

/** What one batch did. */
export interface BatchResult extends ViewCounts {
  /** Records in the batch. */
  records: number;
  /** Counts per view. */
  views: Record<string, ViewCounts>;
  /** Set in "reject" mode when the batch was refused; nothing was written. */
  rejected?: RecordIssue[];
  /** Issues that went to the dead-letter sink. */
  deadLettered: RecordIssue[];
}

/** One view's share of a prepared batch. */
export interface PreparedView {
  /** The view. */
  readonly view: FeatureView & { source: StreamSourceDef };
  /** Rows for the online store, one per entity (deduped). */
  readonly online: FeatureRow[];
  /** Rows for the offline log: every accepted row, late and expired ones too. */
  readonly offline: FeatureRow[];
  /** Whether this batch goes to the online store for this view (the view's flag, or push's `to`). */
  readonly toOnline: boolean;
  /** On a view with aggregations: the events to fold into its tiles, in arrival order (late ones left out). */
  readonly fold?: PreparedFoldEvent[];
  /** Its counts so far. */
  readonly counts: ViewCounts;
}

/** An event to fold, with the applied mark it is checked against (none for pushes: the webhook-id covers them). */
export interface PreparedFoldEvent extends FoldEvent {
  /** `view:partition` and the event's position in it, as a decimal string (parts separated by "."). */
  mark?: { key: string; position: string };
}

/** A batch after `prepare`: what to write, and how far `commit` got. */
export interface PreparedBatch {
  /** The source of the batch. */
  readonly source: StreamSourceDef;
  /** The batch's records. */
  readonly records: RawRecord[];
  /** Each view's share. */
  readonly views: PreparedView[];
  /** Records that go to the dead-letter sink (invalid, and late on dropLate views). */
  readonly issues: RecordIssue[];
  /** Set in "reject" mode when some record is bad: commit refuses to write it. */
  readonly rejected?: RecordIssue[];
  /** Greatest event time per watermark key after this batch (this process's view). */
  readonly watermarks: Record<string, number>;
  /**
   * The watermark each key was judged by in this batch. Committed beside the
   * greatest event time, so that this batch, if it is redelivered after a
   * crash between its write and its ack, is judged the same way again.
   */
  readonly watermarksBefore: Record<string, number>;
  /** How far `commit` got, so that a retry resumes. */
  readonly progress: { deadLetters: boolean; offline: Set<string>; online: Map<string, WriteResult>; meta: boolean };
}

/** The pipeline for the views of a registry. */
export interface Processor {
  /** The feature repo. */
  readonly registry: Registry;
  /** Where online rows go. */
  readonly online?: OnlineStore;
  /** Where offline rows go. */
  readonly offline?: OfflineStore;
  /** Where invalid and late records go. */
  readonly deadLetters: DeadLetterSink;
  /** Counters and gauges. */
  readonly metrics: Metrics;
  /** Decodes, validates, transforms, time-checks and dedupes a batch of one source. Writes nothing. */
  prepare(sourceName: string, records: RawRecord[], opts?: PrepareOptions): Promise<PreparedBatch>;
  /** Writes a prepared batch. Throws a retriable FreshetError when a store is down; call it again with the same batch to resume. */
  commit(batch: PreparedBatch, opts?: CommitOptions): Promise<BatchResult>;
  /** `prepare`, then `commit`. */
  process(sourceName: string, records: RawRecord[], opts?: ProcessOptions): Promise<BatchResult>;
  /** The latest dead letters this processor wrote (at most 20, newest last; payloads cut to 500 characters), for the status page. */
  recentDeadLetters(): DeadLetter[];
}

/** How many dead letters {@link Processor.recentDeadLetters} keeps. */
const RECENT_DEAD_LETTERS = 20;

// ignoreBOM: false is the default; @cloudflare/workers-types requires it to be given.
const textDecoder = new TextDecoder("utf-8", { fatal: true, ignoreBOM: false });
const textEncoder = new TextEncoder();
const OUTCOMES = ["written", "stale", "expired", "late", "invalid"] as const;
/** Suffix of the watermark key that holds what the last committed batch was judged by. */
const BEFORE = "|before";

/**
 * The watermark key of a record: one per view and source partition, shard
 * or push source.
 */
function partitionOf(p: Position): string {
  switch (p.kind) {
    case "kafka":
      return `kafka:${p.topic}:${p.partition}`;
    case "kinesis":
      return `kinesis:${p.stream}:${p.shardId}`;
    default:
      return p.kind;
  }
}

/**
 * The position of a record within its partition, for applied marks: the
 * Kafka offset, or the Kinesis sequence number and sub-sequence. Undefined
 * for a push (its idempotency key guards it instead), a backfill from a
 * file (it replaces the tiles of its range) and a memory source.
 */
export function positionInPartition(p: Position): string | undefined {
  switch (p.kind) {
    case "kafka":
      return p.offset;
    case "kinesis":
      return `${p.sequenceNumber}.${p.subSequence ?? 0}`;
    default:
      return undefined;
  }
}

/** Compares two positions of {@link positionInPartition}: decimal parts, in order. */
export function comparePositions(a: string, b: string): number {
  const x = a.split(".");
  const y = b.split(".");
  for (let i = 0; i < Math.max(x.length, y.length); i++) {
    const c = compareDecimal(x[i] ?? "0", y[i] ?? "0");
    if (c !== 0) return c;
  }
  return 0;
}

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
  for (const view of registry.views.values()) {
    if (view.offline && !offline) {
      throw new FreshetError("INVALID_CONFIG", `view "${view.name}" has offline: true but no offline store is configured: give the processor an offline store, or set offline: false on the view`, { definition: view.name });
    }
    if (view.online && !online) {
      throw new FreshetError("INVALID_CONFIG", `view "${view.name}" has online: true but no online store is configured: give the processor an online store, or set online: false on the view`, { definition: view.name });
    }
    if (view.aggregations?.length && view.online && !isAggregatingStore(online)) {
      throw new FreshetError("INVALID_CONFIG", `view "${view.name}" has aggregations, and the online store "${online!.name}" does not keep tiles: use the memory, SQLite, Redis or Upstash store`, { definition: view.name });
    }
  }
  const metrics = opts.metrics ?? createMetrics();
  const now = opts.now ?? Date.now;
  const reportDeadLetters = deadLetterReporter(opts.logger, now, opts.deadLetterLogIntervalMs ?? 10_000);
  /** Applied marks already read or committed, by `view:partition`: null when the store has none. */
  const markCache = new Map<string, string | null>();
  /** Watermark state already read or committed, by key: the greatest event time this process knows of. */
  const watermarkCache = new Map<string, number>();
  const recent: DeadLetter[] = [];
  const newestByView = new Map<string, number>();

  /**
   * The watermark a batch is judged by. Once a key is known in this process:
   * the greatest event time seen before the batch. On first sight (after a
   * start): the state as it stood before the LAST committed batch (`|before`),
   * because that batch may be exactly what is redelivered now (a crash between
   * its write and its ack), and it must be judged as it was the first time.
   * The greatest event time (`key`) is restored for every batch after that.
   */
  async function watermarkOf(key: string): Promise<number | undefined> {
    if (watermarkCache.has(key)) return watermarkCache.get(key);
    if (!online) return undefined;
    let latest: number | undefined, before: number | undefined;
    try {
      [latest, before] = await Promise.all([online.meta.getWatermark(key), online.meta.getWatermark(key + BEFORE)]);
    } catch (e) {
      throw storeUnavailable(online.name, e);
    }
    if (latest !== undefined) watermarkCache.set(key, latest);
    return before;
  }

  /**
   * The applied mark key of a record: `view:partition`, or the store's key for
   * the part of it that holds the entity (AggregatingStore.markKey). Undefined
   * when the store keys marks per entity and the row has no join key (it is
   * dead-lettered, never folded).
   */
  const scoped = isAggregatingStore(online) ? online.markKey?.bind(online) : undefined;
  function markKeyOf(view: FeatureView, row: Row, pos: Position, entityKey?: string): string | undefined {
    const key = `${view.name}:${partitionOf(pos)}`;
    if (!scoped) return key;
    if (entityKey === undefined) {
      const ek = entityKeyOf(view.joinKeys, row);
      if ("missing" in ek) return undefined;
      entityKey = ek.key;
    }
    return scoped(view, entityKey, key);
  }

  /** The applied mark of a view and partition: from this process's cache, else read once from the store. */
  async function markOf(key: string): Promise<string | undefined> {
    if (!markCache.has(key)) {
      try {
        markCache.set(key, (await (online as OnlineStore & AggregatingStore).getAppliedMark(key)) ?? null);
      } catch (e) {
        throw storeUnavailable(online!.name, e);
      }
    }
    return markCache.get(key) ?? undefined;
  }

  async function prepare(sourceName: string, records: RawRecord[], popts: PrepareOptions = {}): Promise<PreparedBatch> {
    let views = registry.viewsForSource(sourceName);
    const source = registry.sources.get(sourceName);
    if (!source || views.length === 0) {
      throw new FreshetError("INVALID_CONFIG", `no stream feature view reads source "${sourceName}"; known sources: ${[...registry.sources.keys()].join(", ")}`, { definition: sourceName });
    }
    if (popts.views) views = views.filter((v) => popts.views!.includes(v.name));
    const issues: RecordIssue[] = [];
    const decoded = await decodeAll(source, records, issues, popts.fieldMapping);
    const watermarks: Record<string, number> = {};
    const watermarksBefore: Record<string, number> = {};
    const prepared: PreparedView[] = [];
    const t = now();
    for (const view of views) prepared.push(await prepareView(view, records, decoded, issues, popts, t, watermarks, watermarksBefore));
    // Refused before any effect: events without positions (a push) whose fold is more than the store takes in one atomic step.
    const limit = (online as Partial<AggregatingStore> | undefined)?.maxFoldBytes;
    if (limit !== undefined) {
      for (const p of prepared) {
        if (!p.fold?.length || p.fold.every((e) => e.mark)) continue;
        const bytes = foldBytes(foldTiles(p.view.aggregations!, p.fold, p.view.watermarkDelayMs));
        if (bytes > limit) throw tooLarge(p.view.name, `${p.fold.length} events of view "${p.view.name}" fold ${bytes} bytes of tiles`, online!.name, limit, "; send fewer rows per push");
      }
    }
    const badInput = issues.filter((i) => i.reason !== "late");
    const rejected = popts.onInvalid === "reject" && badInput.length > 0 ? badInput : undefined;
    return { source, records, views: prepared, issues, rejected, watermarks, watermarksBefore, progress: { deadLetters: false, offline: new Set(), online: new Map(), meta: false } };
  }

  async function prepareView(
    view: FeatureView & { source: StreamSourceDef },
    records: RawRecord[],
    decoded: (Row | undefined)[],
    issues: RecordIssue[],
    popts: PrepareOptions,
    t: number,
    watermarks: Record<string, number>,
    watermarksBefore: Record<string, number>,
  ): Promise<PreparedView> {
    const counts: ViewCounts = { written: 0, stale: 0, expired: 0, late: 0, invalid: 0, skipped: 0, lateArrivals: 0 };
    /** Watermark keys already looked up for this batch (a key with nothing stored is looked up once too). */
    const judged = new Set<string>();
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
        // A UDF that filters or fans out: row by row below, so that each output keeps its record.
        if (rows.length !== valid.length) throw new Error("row count changed");
      } catch {
        rows = [];
        rowOrigin = [];
        for (let k = 0; k < valid.length; k++) {
          try {
            const out = await view.udf([{ ...valid[k] }]);
            if (!Array.isArray(out)) throw new Error("the udf must return an array of rows");
            if (out.length === 0) counts.skipped++; // filtered out by the UDF
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

    // 3. time checks and entity keys.
    const useWatermark = popts.watermark !== false && view.watermarkDelayMs !== undefined;
    const wantOnline = popts.to ? popts.to !== "offline" : view.online;
    const wantOffline = popts.to ? popts.to !== "online" : view.offline;
    const onlineRows: FeatureRow[] = [];
    const offlineRows: FeatureRow[] = [];
    const aggs = view.aggregations?.length ? view.aggregations : undefined;
    const fold: PreparedFoldEvent[] = [];
    const hasLifetime = !!aggs?.some((a) => a.windowMs === undefined);
    const slides = [...new Set((aggs ?? []).filter((a) => a.windowMs !== undefined).map((a) => a.slideMs))];
    const rangeStart = popts.range?.start ?? -Infinity;
    const rangeEnd = popts.range?.end ?? Infinity;
    for (let k = 0; k < rows.length; k++) {
      const row = rows[k];
      const index = rowOrigin[k] >= 0 ? rowOrigin[k] : origin[0] ?? 0;
      if (row === null || typeof row !== "object") {
        bad(index, "udf", "the udf returned a row that is not an object");
        continue;
      }
      // Already folded by an earlier delivery (a crash before the ack, or a rebalance): not judged again.
      if (aggs && wantOnline) {
        const pos = records[index]?.position;
        const at = pos && positionInPartition(pos);
        const key = at === undefined ? undefined : markKeyOf(view, row, pos!);
        if (at !== undefined && key !== undefined) {
          const done = await markOf(key);
          if (done !== undefined && comparePositions(at, done) <= 0) {
            counts.stale++;
            continue;
          }
        }
      }
      const brokerTime = records[index]?.brokerTime;
      const et = readEventTime(row[tsField]);
      if ("error" in et) {
        bad(index, "timestamp", row[tsField] === undefined || row[tsField] === null ? `the event time "${tsField}" is missing` : et.error, tsField);
        continue;
      }
      const eventTime = et.ms;
      const skew = checkFutureSkew(eventTime, t, view.maxFutureSkewMs, brokerTime);
      if (skew) {
        bad(index, "timestamp", skew, tsField);
        continue;
      }
      let createdTime: number | undefined;
      if (createdField && row[createdField] !== undefined && row[createdField] !== null) {
        const ct = readEventTime(row[createdField]);
        if ("error" in ct) {
          bad(index, "timestamp", `created time: ${ct.error}`, createdField);
          continue;
        }
        const cskew = checkFutureSkew(ct.ms, t, view.maxFutureSkewMs, brokerTime);
        if (cskew) {
          bad(index, "timestamp", `created time: ${cskew}`, createdField);
          continue;
        }
        createdTime = ct.ms;
      }
      const ek = entityKeyOf(view.joinKeys, row);
      if ("missing" in ek) {
        bad(index, "join_key", ek.reason ?? `join key "${ek.missing}" is missing or empty`, ek.missing);
        continue;
      }
      if (eventTime < rangeStart || eventTime >= rangeEnd) {
        counts.skipped++;
        continue;
      }
      const values: Row = {};
      for (const f of view.features) {
        const v = row[f];
        // JSON has no bigint: a safe integer becomes a number, a larger one its decimal string (as the Redis codec does).
        values[f] = v === undefined ? null : typeof v === "bigint" ? (Number.isSafeInteger(Number(v)) ? Number(v) : v.toString()) : v;
      }
      const featureRow: FeatureRow = { entityKey: ek.key, values, eventTime, createdTime };
      if (aggs) {
        const problem = aggs.map((a) => [a, checkAggregationValue(a, row[a.column])] as const).find(([, p]) => p);
        if (problem) {
          bad(index, "schema", problem[1]!, problem[0].column);
          continue;
        }
      }

      // The watermark as it stood before this batch: the batch's own events never make each other late.
      if (useWatermark) {
        const key = `${view.name}:${partitionOf(records[index]?.position ?? { kind: "memory", index })}`;
        let seen: number | undefined;
        if (key in watermarksBefore) seen = watermarksBefore[key];
        else if (!judged.has(key)) {
          // Read once per key and batch, even when nothing is stored yet.
          judged.add(key);
          seen = await watermarkOf(key);
          if (seen !== undefined) watermarksBefore[key] = seen;
        }
        if (seen !== undefined && eventTime < seen - view.watermarkDelayMs!) {
          if (aggs) {
            // Left out of the aggregates (its tile may be gone), still logged offline.
            bad(index, "late", `event time ${toIso(eventTime)} is behind the watermark ${toIso(seen - view.watermarkDelayMs!)} (the greatest event time seen on this partition, ${toIso(seen)}, minus ${view.watermarkDelayMs! / 1000}s): not folded into the aggregates`, tsField);
            if (!(key in watermarks) || eventTime > watermarks[key]) watermarks[key] = eventTime;
            if (wantOffline) offlineRows.push(featureRow);
            continue;
          }
          if (view.dropLate) {
            bad(index, "late", `event time ${toIso(eventTime)} is behind the watermark ${toIso(seen - view.watermarkDelayMs!)} (the greatest event time seen on this partition, ${toIso(seen)}, minus ${view.watermarkDelayMs! / 1000}s)`, tsField);
            continue;
          }
          counts.lateArrivals++;
        }
        if (!(key in watermarks) || eventTime > watermarks[key]) watermarks[key] = eventTime;
      }
      if (wantOffline) offlineRows.push(records[index] ? { ...featureRow, position: records[index].position } : featureRow);
      if (aggs) {
        if (!wantOnline) continue;
        // Already outside every window it could be read in: its tiles have expired (a lifetime tile never does).
        if (!hasLifetime && slides.every((s) => tileExpiresAt(aggs, s, tileIndex(s, eventTime), view.watermarkDelayMs)! <= t)) {
          counts.expired++;
          continue;
        }
        const pos = records[index]?.position;
        const at = pos && positionInPartition(pos);
        const foldRow: Row = {};
        for (const a of aggs) foldRow[a.column] = row[a.column];
        fold.push({ entityKey: ek.key, eventTime, createdTime, row: foldRow, mark: at === undefined ? undefined : { key: markKeyOf(view, row, pos!, ek.key)!, position: at } });
        continue;
      }
      if (wantOnline) {
        const exp = expiresAt(view, eventTime);
        if (exp !== undefined && exp <= t) counts.expired++;
        else onlineRows.push(featureRow);
      }
    }

    // 4. dedupe: one row per entity, by the one comparison.
    const latest = wantOnline ? dedupeLatest(onlineRows) : [];
    counts.stale += onlineRows.length - latest.length;
    return aggs ? { view, online: [], offline: offlineRows, toOnline: wantOnline, counts, fold } : { view, online: latest, offline: offlineRows, toOnline: wantOnline, counts };
  }

  async function commit(batch: PreparedBatch, copts: CommitOptions = {}): Promise<BatchResult> {
    const { source, records, views, issues, progress } = batch;
    const result: BatchResult = { records: records.length, written: 0, stale: 0, expired: 0, late: 0, invalid: 0, skipped: 0, lateArrivals: 0, views: {}, deadLettered: [] };
    if (batch.rejected) {
      result.rejected = batch.rejected;
      return result;
    }

    // Dead letters first, once: when the batch is acknowledged they must already be safe.
    if (issues.length > 0 && !progress.deadLetters) {
      const letters = issues.map((issue) => toDeadLetter(source.name, issue, records[issue.index] ?? records[0]));
      const sink = opts.sourceDeadLetters?.[source.name] ?? deadLetters;
      try {
        await sink.write(letters);
      } catch (e) {
        throw storeUnavailable(`dead-letters:${sink.name}`, e);
      }
      progress.deadLetters = true;
      reportDeadLetters(source.name, sink.name, issues);
      for (const l of letters.slice(-RECENT_DEAD_LETTERS)) recent.push(l.payload.length > 500 ? { ...l, payload: `${l.payload.slice(0, 500)}...` } : l);
      if (recent.length > RECENT_DEAD_LETTERS) recent.splice(0, recent.length - RECENT_DEAD_LETTERS);
    }
    result.deadLettered = issues;

    // The offline log next, so that the idempotency key rides on the last online write.
    for (const p of views) {
      if (p.offline.length === 0 || progress.offline.has(p.view.name)) continue;
      try {
        await offline!.append(p.view, p.offline);
      } catch (e) {
        metrics.inc("freshet_store_errors_total", { store: offline!.name });
        throw storeUnavailable(offline!.name, e, p.view.name);
      }
      progress.offline.add(p.view.name);
    }

    if (!online && views.some((p) => p.online.length > 0)) {
      throw new FreshetError("INVALID_CONFIG", "rows for the online store, but no online store is configured", { definition: views.find((p) => p.online.length > 0)!.view.name });
    }
    // Online writes; the last one carries the watermarks and the idempotency key.
    const meta: CommitMeta = {};
    // The greatest event time, and what this batch was judged by (for its redelivery after a crash),
    // also for a key whose records were all late: what judged them must be what judges them again.
    const wmKeys = new Set([...Object.keys(batch.watermarks), ...Object.keys(batch.watermarksBefore)]);
    if (wmKeys.size) {
      meta.watermarks = {};
      for (const k of wmKeys) {
        const before = batch.watermarksBefore[k];
        meta.watermarks[k] = Math.max(batch.watermarks[k] ?? -Infinity, before ?? -Infinity);
        if (before !== undefined) meta.watermarks[k + BEFORE] = before;
      }
    }
    if (copts.idempotency) meta.done = copts.idempotency;
    const hasMeta = meta.watermarks !== undefined || meta.done !== undefined;
    const pending = views.filter((p) => (p.online.length > 0 || (p.fold?.length ?? 0) > 0) && !progress.online.has(p.view.name));
    if (online && hasMeta && !progress.meta && pending.length === 0) {
      // Nothing (left) to write online: the metadata alone, still one atomic step.
      try {
        await online.write(views[0].view, [], meta);
      } catch (e) {
        metrics.inc("freshet_store_errors_total", { store: online.name });
        throw storeUnavailable(online.name, e, views[0].view.name);
      }
      progress.meta = true;
    }
    for (let i = 0; i < pending.length; i++) {
      const p = pending[i];
      const withMeta = i === pending.length - 1 && hasMeta && !progress.meta;
      try {
        progress.online.set(p.view.name, p.fold ? await foldView(p, p.fold, withMeta ? meta : undefined) : await online!.write(p.view, p.online, withMeta ? meta : undefined));
      } catch (e) {
        metrics.inc("freshet_store_errors_total", { store: online!.name });
        throw storeUnavailable(online!.name, e, p.view.name);
      }
      if (withMeta) progress.meta = true;
    }
    if (!online && copts.idempotency) {
      throw new FreshetError("INVALID_CONFIG", "idempotency by webhook-id needs an online store");
    }
    for (const [k, v] of Object.entries(batch.watermarks)) watermarkCache.set(k, Math.max(v, watermarkCache.get(k) ?? -Infinity));

    for (const p of views) {
      const c: ViewCounts = { ...p.counts };
      const w = progress.online.get(p.view.name);
      if (w) {
        c.written += w.written;
        c.stale += w.stale;
        c.expired += w.expired;
      } else if (!p.toOnline && progress.offline.has(p.view.name)) {
        // Offline-only rows count as written when appended.
        c.written += p.offline.length;
      }
      result.views[p.view.name] = c;
      for (const k of OUTCOMES) {
        result[k] += c[k];
        if (c[k]) metrics.inc("freshet_records_total", { source: source.name, view: p.view.name, outcome: k }, c[k]);
      }
      // Freshness: the newest event time a view has taken, as a gauge (age = time() - it).
      let newest = -Infinity;
      for (const rows of [p.online, p.offline, p.fold ?? []]) for (const r of rows) if (r.eventTime > newest) newest = r.eventTime;
      if (newest > (newestByView.get(p.view.name) ?? -Infinity)) {
        newestByView.set(p.view.name, newest);
        metrics.set("freshet_view_newest_event_seconds", { view: p.view.name }, newest / 1000);
      }
      result.skipped += c.skipped;
      result.lateArrivals += c.lateArrivals;
      if (c.lateArrivals) metrics.inc("freshet_late_arrivals_total", { source: source.name, view: p.view.name }, c.lateArrivals);
    }
    metrics.inc("freshet_batches_total", { source: source.name, result: "ok" });
    return result;
  }

  /**
   * Folds a view's events into its tiles, exactly once per source position:
   * the events at or below the applied mark of their partition are left
   * out (a redelivery), and the fold advances the marks only if they still
   * hold what was read, in the same atomic step as the tiles and `meta`.
   * When another consumer moved a mark (a rebalance), the batch is filtered
   * again against the marks the store answered.
   */
  async function foldView(p: PreparedView, events: PreparedFoldEvent[], meta: CommitMeta | undefined): Promise<WriteResult> {
    const store = online as OnlineStore & AggregatingStore;
    const aggs = p.view.aggregations!;
    const limit = store.maxFoldBytes;
    for (const e of events) if (e.mark) await markOf(e.mark.key);
    let written = 0;
    for (let attempt = 0; ;) {
      const fresh: PreparedFoldEvent[] = [];
      for (const e of events) {
        if (e.mark) {
          const done = markCache.get(e.mark.key);
          if (done !== null && done !== undefined && comparePositions(e.mark.position, done) <= 0) continue;
        }
        fresh.push(e);
      }
      let chunk = fresh;
      let deltas = foldTiles(aggs, chunk, p.view.watermarkDelayMs);
      // Sized once per candidate fold (a JSON pass over its states), only for a store with a limit.
      let bytes = limit === undefined ? 0 : foldBytes(deltas);
      if (limit !== undefined && bytes > limit) {
        // More than the store takes in one atomic step (Upstash's request size, D1's parameter size): fold in
        // steps, each with the applied marks of what it holds, in position order, so that a crash between
        // steps leaves every event either folded and marked or neither. A push has no marks: refused.
        if (chunk.some((e) => !e.mark)) throw tooLarge(p.view.name, `${chunk.length} events of view "${p.view.name}" fold ${bytes} bytes of tiles`, store.name, limit, "; send fewer rows per push");
        chunk = [...chunk].sort((a, b) => (a.mark!.key < b.mark!.key ? -1 : a.mark!.key > b.mark!.key ? 1 : comparePositions(a.mark!.position, b.mark!.position)));
        let n = chunk.length;
        while (n > 1 && bytes > limit) {
          n = Math.ceil(n / 2);
          deltas = foldTiles(aggs, chunk.slice(0, n), p.view.watermarkDelayMs);
          bytes = foldBytes(deltas);
        }
        if (bytes > limit) throw tooLarge(p.view.name, `one event of view "${p.view.name}" folds ${bytes} bytes of tiles`, store.name, limit, "");
        chunk = chunk.slice(0, n);
      }
      const last = chunk.length === fresh.length;
      const top = new Map<string, string>();
      for (const e of chunk) {
        if (!e.mark) continue;
        const cur = top.get(e.mark.key);
        if (cur === undefined || comparePositions(e.mark.position, cur) > 0) top.set(e.mark.key, e.mark.position);
      }
      const marks = [...top].map(([key, position]) => ({ key, expected: markCache.get(key) ?? undefined, position }));
      if (deltas.length === 0 && !meta && last && marks.length === 0) return { written, stale: events.length - written, expired: 0 };
      // The watermarks and the idempotency key ride on the last step.
      const r = await store.foldTiles(p.view, deltas, last ? { ...meta, marks } : { marks });
      if (r.ok) {
        for (const m of marks) markCache.set(m.key, m.position);
        written += chunk.length;
        // Events already folded by an earlier delivery count as stale: not newer than what is stored.
        if (last) return { written, stale: events.length - written, expired: 0 };
        continue;
      }
      for (const [k, v] of Object.entries(r.marks)) markCache.set(k, v ?? null);
      if (++attempt >= 16) throw new FreshetError("STORE_UNAVAILABLE", `the applied marks of view "${p.view.name}" keep moving under this consumer (another one is folding the same partitions); retry later`, { definition: p.view.name, retriable: true });
    }
  }

  async function process(sourceName: string, records: RawRecord[], popts: ProcessOptions = {}): Promise<BatchResult> {
    return await commit(await prepare(sourceName, records, popts), popts);
  }

  return { registry, online, offline, deadLetters, metrics, prepare, commit, process, recentDeadLetters: () => [...recent] };
}

function tooLarge(view: string, what: string, store: string, limit: number, fix: string): FreshetError {
  return new FreshetError("TOO_LARGE", `${what}, more than the ${store} store takes in one atomic step (${limit} bytes)${fix}`, { definition: view, retriable: false });
}

/** About how many bytes a fold sends: its tiles' keys and JSON states. */
function foldBytes(deltas: readonly TileDelta[]): number {
  let n = 0;
  for (const d of deltas) n += d.entityKey.length + d.tile.length + JSON.stringify(d.state).length + 16;
  return n;
}

/** Decodes every record once per source; failures become issues and `undefined`. */
async function decodeAll(source: StreamSourceDef, records: RawRecord[], issues: RecordIssue[], mapping = source.fieldMapping): Promise<(Row | undefined)[]> {
  const format = source.kind === "kafka" ? source.messageFormat : source.kind === "kinesis" ? source.recordFormat : undefined;
  const out: (Row | undefined)[] = new Array(records.length);
  for (let i = 0; i < records.length; i++) {
    const value = records[i].value;
    try {
      let body: unknown;
      if (value instanceof Uint8Array) body = format ? await format.decode(value) : JSON.parse(textDecoder.decode(value));
      else if (typeof value === "string") body = format ? await format.decode(textEncoder.encode(value)) : JSON.parse(value);
      else body = value;
      if (body === null || typeof body !== "object" || Array.isArray(body)) {
        throw new Error(`expected an object, got ${body === null ? "null" : Array.isArray(body) ? "an array" : typeof body}`);
      }
      out[i] = mapFields(body as Row, mapping);
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

/**
 * Keeps the latest row per entity key by {@link isNewer}: of equal
 * versions, the first in the batch wins, as in every store.
 *
 * @example
 * ```ts
 * dedupeLatest([a, b]) // one row per entityKey
 * ```
 */
export function dedupeLatest(rows: FeatureRow[]): FeatureRow[] {
  const best = new Map<string, FeatureRow>();
  for (const r of rows) {
    const cur = best.get(r.entityKey);
    if (!cur || isNewer(r, cur)) best.set(r.entityKey, r);
  }
  return [...best.values()];
}

/**
 * Logs dead letters without flooding the log: a warning at most once per
 * interval, with how many letters (by reason) arrived since the last one,
 * and the latest letter's source, view, field and message.
 */
function deadLetterReporter(logger: Logger | undefined, now: () => number, intervalMs: number) {
  let last = Number.NEGATIVE_INFINITY;
  let held = 0;
  const reasons = new Map<string, number>();
  return (source: string, sink: string, issues: RecordIssue[]): void => {
    if (!logger || issues.length === 0) return;
    held += issues.length;
    for (const i of issues) reasons.set(i.reason, (reasons.get(i.reason) ?? 0) + 1);
    const t = now();
    if (t - last < intervalMs) return;
    last = t;
    const by = [...reasons].map(([r, n]) => `${r} ${n}`).join(", ");
    const i = issues[issues.length - 1];
    const message = i.message.length > 300 ? `${i.message.slice(0, 300)}...` : i.message;
    logger.warn(`[freshet] ${held} record(s) dead-lettered to ${sink} since the last report (${by}); latest: source "${source}"${i.view ? `, view "${i.view}"` : ""}, ${i.path ?? "record"}: ${message}`);
    held = 0;
    reasons.clear();
  };
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
