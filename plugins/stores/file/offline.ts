/**
 * @module
 * The offline log: every accepted row of a view, partitioned by event date in
 * the Hive layout, in Parquet (default) or JSON Lines, readable as it is by
 * DuckDB, pandas, Spark and Trino.
 *
 * ```
 * <dir>/offline/<view>/date=2026-01-01/<writer>-00000001.parquet   one file per append and partition
 * <dir>/offline/<view>/date=2026-01-01/<writer>-c00000002.parquet  a compaction of a writer's small files
 * <dir>/offline/<view>/date=2026-01-01/<writer>.jsonl              format "jsonl": one file per writer, appended
 * <dir>/offline/_writers/<writer>.lock                              a writer's liveness lock
 * <dir>/offline/_locks/<view>__date=2026-01-01.lock                  held while a process compacts that partition
 * ```
 *
 * `<writer>` is unique per process (host, pid and a random part), so any
 * number of processes and machines can write into one shared directory.
 * Columns: the join keys, the features, `event_timestamp` and
 * `created_timestamp` (UTC timestamps, ms), and `_entity_key`, `_log_seq`
 * (the append order, for first-of-equals), `_position` (the source position,
 * JSON).
 */
import { mkdirSync } from "node:fs";
import { mkdir, open, readdir, rename, unlink } from "node:fs/promises";
import { hostname } from "node:os";
import { join, relative, resolve, sep } from "node:path";
import process from "node:process";
import type { AsyncBuffer, FileMetaData } from "hyparquet";
import {
  type AsOfEntity,
  type AsOfMatch,
  entityKeyOf,
  type FeatureRow,
  type FeatureView,
  FreshetError,
  missingPackage,
  type OfflineStore,
  parseEntityKey,
  parseEventTime,
  type Position,
  type Row,
  storeUnavailable,
  toIso,
} from "../../../core/index.ts";
import { type Appender, appender, readLineBlocks } from "./jsonl.ts";
import { type DirLock, lockGone, tryLock } from "./lock.ts";

/** The folder of the writers' liveness locks, under the log's root (not a view: views' folders hold date= partitions only). */
const WRITERS = "_writers";
/** The folder of the partitions' compaction locks, under the log's root: `<view>__date=YYYY-MM-DD.lock`. */
const LOCKS = "_locks";
/** A Parquet file of the log: its writer, and whether it is a compaction. */
const FILE_NAME = /^(.+)-(c?)\d{8}\.parquet$/;

// hyparquet and hyparquet-writer are optional peer dependencies, loaded when the offline log first writes or reads Parquet.
const hyparquet = () => import("hyparquet").catch(missingPackage("hyparquet", "the Parquet offline log", "file"));
const hyparquetWriter = () => import("hyparquet-writer").catch(missingPackage("hyparquet-writer", "the Parquet offline log", "file"));

/** Options of {@link fileOffline}. */
export interface FileOfflineOptions {
  /** The directory; the log of a view goes under `<dir>/offline/<view>/`. */
  dir: string;
  /** "parquet" (default) or "jsonl". */
  format?: "parquet" | "jsonl";
  /** Unique name of this writer in file names. Default host, pid and a random part. */
  writerId?: string;
  /** Rows per chunk yielded by `read`. Default 1000. */
  chunkSize?: number;
  /** A writer compacts its own small Parquet files of a partition once it has this many. Default 16; 0 never. */
  compactAfter?: number;
  /** Files of at least this many rows are not compacted, and a compaction writes at most about this many. Default 500000. */
  compactRows?: number;
  /** Answer point-in-time lookups with DuckDB (`@duckdb/node-api`) when it loads. Default true. */
  duckdb?: boolean;
}

/** The offline log of {@link fileOffline}: an {@link OfflineStore} that also compacts on demand. */
export interface FileOffline extends OfflineStore {
  /** The folder that holds one sub-folder per view. */
  readonly root: string;
  /** The writer id in this process's file names. */
  readonly writerId: string;
  /**
   * Compacts this writer's small files of every partition it wrote to now,
   * and, for the views given, every partition of theirs, adopting the small
   * files of writers that are gone (see {@link fileOffline}).
   */
  compact(views?: FeatureView[]): Promise<void>;
  /** Waits for appends and compactions in flight. */
  close(): Promise<void>;
}

const DAY = 86_400_000;
const RESERVED = new Set(["event_timestamp", "created_timestamp", "_entity_key", "_log_seq", "_position", "date"]);

/** Turns a join key's string back into a number when the view's schema says it is one. */
function joinKeyValues(view: FeatureView, entityKey: string): Row {
  const out: Row = parseEntityKey(entityKey);
  for (const k of view.joinKeys) {
    const type = schemaType(view, k);
    const s = out[k];
    if (type === "number" && typeof s === "string" && s !== "" && String(Number(s)) === s) out[k] = Number(s);
  }
  return out;
}

function schemaType(view: FeatureView, field: string): string | undefined {
  const e = view.schema.entries?.[field] as { type?: string; wrapped?: { type?: string } } | undefined;
  const t = e?.type;
  return t === "optional" || t === "nullable" || t === "nullish" ? e?.wrapped?.type : t;
}

/** `date=YYYY-MM-DD` of an event time (UTC). */
export function partitionOf(eventTime: number): string {
  return `date=${new Date(Math.floor(eventTime / DAY) * DAY).toISOString().slice(0, 10)}`;
}

function safeName(s: string): string {
  return s.replace(/[^A-Za-z0-9_.-]/g, "_");
}

function defaultWriterId(): string {
  const rnd = Array.from(crypto.getRandomValues(new Uint8Array(4)), (b) => b.toString(16).padStart(2, "0")).join("");
  return safeName(`${hostname() || "host"}-${process.pid}-${rnd}`);
}

type ColumnType = "DOUBLE" | "BOOLEAN" | "STRING" | "JSON" | "TIMESTAMP";

/** The Parquet type of a column from its values, the view's schema deciding for an all-null column. */
function columnType(values: unknown[], declared: string | undefined): ColumnType {
  let kind: string | undefined;
  for (const v of values) {
    if (v === null || v === undefined) continue;
    const k = typeof v === "number" ? "DOUBLE" : typeof v === "boolean" ? "BOOLEAN" : typeof v === "string" ? "STRING" : "JSON";
    if (kind === undefined) kind = k;
    else if (kind !== k) return "JSON";
  }
  if (kind) return kind as ColumnType;
  return declared === "number" ? "DOUBLE" : declared === "boolean" ? "BOOLEAN" : "STRING";
}

/** Encodes logged rows (as plain objects with ms times) as one Parquet file. */
async function encodeParquet(view: FeatureView, rows: Row[], kv: { key: string; value: string }[] = []): Promise<Uint8Array> {
  const { parquetWriteBuffer } = await hyparquetWriter();
  const names = [...view.joinKeys, ...view.features.filter((f) => !RESERVED.has(f) && !view.joinKeys.includes(f))];
  const columnData: { name: string; data: unknown[]; type: ColumnType | "INT64" }[] = names.map((name) => {
    const data = rows.map((r) => r[name] ?? null);
    if (view.joinKeys.includes(name)) {
      // A numeric join key is a safe integer (entityKeyOf): INT64, so that readers join on it as an integer.
      return data.every((x) => typeof x === "number") ? { name, data: data.map((x) => BigInt(x as number)), type: "INT64" } : { name, data: data.map((x) => String(x)), type: "STRING" };
    }
    return { name, data, type: columnType(data, schemaType(view, name)) };
  });
  columnData.push(
    { name: "event_timestamp", data: rows.map((r) => new Date(r.event_timestamp as number)), type: "TIMESTAMP" },
    { name: "created_timestamp", data: rows.map((r) => (r.created_timestamp == null ? null : new Date(r.created_timestamp as number))), type: "TIMESTAMP" },
    { name: "_entity_key", data: rows.map((r) => r._entity_key), type: "STRING" },
    { name: "_log_seq", data: rows.map((r) => r._log_seq), type: "STRING" },
    { name: "_position", data: rows.map((r) => r._position ?? null), type: "STRING" },
  );
  return new Uint8Array(parquetWriteBuffer({ columnData: columnData as never, kvMetadata: kv, createdBy: "freshet", rowGroupSize: 100_000 }));
}

/** Writes `bytes` to `path` whole or not at all: a hidden temporary file, fsync, rename, fsync of the folder. */
async function writeAtomic(dir: string, name: string, bytes: Uint8Array): Promise<void> {
  const tmp = join(dir, `.${name}.tmp`);
  const fh = await open(tmp, "w");
  try {
    await fh.writeFile(bytes);
    await fh.sync();
  } finally {
    await fh.close();
  }
  await rename(tmp, join(dir, name));
  await syncDir(dir);
}

async function syncDir(dir: string): Promise<void> {
  try {
    const d = await open(dir, "r");
    try {
      await d.sync();
    } finally {
      await d.close();
    }
  } catch {
    // Not every runtime and file system lets a folder be fsynced; the rename is still atomic.
  }
}

async function openParquet(path: string): Promise<{ file: AsyncBuffer; metadata: FileMetaData; close(): Promise<void> }> {
  const fh = await open(path, "r");
  try {
    const { size } = await fh.stat();
    const file: AsyncBuffer = {
      byteLength: size,
      async slice(start: number, end = size): Promise<ArrayBuffer> {
        const out = new Uint8Array(end - start);
        let off = 0;
        while (off < out.length) {
          const { bytesRead } = await fh.read(out, off, out.length - off, start + off);
          if (bytesRead === 0) break;
          off += bytesRead;
        }
        return out.buffer;
      },
    };
    const metadata = await (await hyparquet()).parquetMetadataAsync(file);
    return { file, metadata, close: () => fh.close() };
  } catch (e) {
    await fh.close();
    throw e;
  }
}

/** The files a compacted file replaced, from its footer. */
function replacedBy(metadata: FileMetaData): string[] {
  const v = metadata.key_value_metadata?.find((e) => e.key === "freshet.replaces")?.value;
  try {
    return v ? JSON.parse(v) : [];
  } catch {
    return [];
  }
}

/** Reads a Parquet file of the log as plain rows, in windows so that a large file is not all in memory as objects. */
async function* readParquetRows(path: string): AsyncGenerator<Row[]> {
  const { file, metadata, close } = await openParquet(path);
  const { parquetReadObjects } = await hyparquet();
  try {
    const total = Number(metadata.num_rows);
    for (let rowStart = 0; rowStart < total; rowStart += 65_536) {
      yield await parquetReadObjects({ file, metadata, rowStart, rowEnd: Math.min(total, rowStart + 65_536) }) as Row[];
    }
  } finally {
    await close();
  }
}

function msOf(v: unknown): number | undefined {
  if (v === null || v === undefined) return undefined;
  if (v instanceof Date) return v.getTime();
  if (typeof v === "bigint") return Number(v);
  return parseEventTime(v);
}

/** A logged row (Parquet or JSON Lines, or the single-file log of earlier versions) as a feature row. */
function toFeatureRow(view: FeatureView, obj: Row, legacySeq: string): FeatureRow | undefined {
  const eventTime = msOf(obj.event_timestamp);
  if (eventTime === undefined) return undefined;
  let entityKey = typeof obj._entity_key === "string" ? obj._entity_key : undefined;
  if (entityKey === undefined) {
    const ek = entityKeyOf(view.joinKeys, obj);
    if ("missing" in ek) return undefined;
    entityKey = ek.key;
  }
  const values: Row = {};
  for (const f of view.features) {
    let v = obj[f];
    if (typeof v === "bigint") v = Number.isSafeInteger(Number(v)) ? Number(v) : String(v);
    values[f] = v === undefined ? null : v;
  }
  const createdTime = msOf(obj.created_timestamp ?? obj.created);
  let position: Position | undefined;
  if (typeof obj._position === "string") {
    try {
      position = JSON.parse(obj._position);
    } catch { /* leave it out */ }
  } else if (obj._position && typeof obj._position === "object") position = obj._position as Position;
  const row: FeatureRow = { entityKey, values, eventTime, logSeq: typeof obj._log_seq === "string" ? obj._log_seq : legacySeq };
  if (createdTime !== undefined) row.createdTime = createdTime;
  if (position) row.position = position;
  return row;
}

async function* readJsonLines(path: string): AsyncGenerator<Row[]> {
  for await (const lines of readLineBlocks(path)) {
    const rows: Row[] = [];
    for (const line of lines) {
      if (!line.trim()) continue;
      try {
        rows.push(JSON.parse(line));
      } catch {
        // a torn line from a crash
      }
    }
    if (rows.length) yield rows;
  }
}

async function listDir(dir: string): Promise<string[]> {
  try {
    return (await readdir(dir)).sort();
  } catch (e) {
    if ((e as { code?: string })?.code === "ENOENT") return [];
    throw e;
  }
}

/** The partitions of a view that may hold event times in `[start, end)`, and their data files (hidden and temporary files skipped). */
export async function logFiles(root: string, view: string, range: { start?: number; end?: number } = {}): Promise<{ partition: string; dir: string; files: string[] }[]> {
  const base = join(root, encodeURIComponent(view));
  const out: { partition: string; dir: string; files: string[] }[] = [];
  for (const p of await listDir(base)) {
    const m = /^date=(\d{4}-\d\d-\d\d)$/.exec(p);
    if (!m) continue;
    const dayStart = Date.parse(`${m[1]}T00:00:00Z`);
    if (range.end !== undefined && dayStart >= range.end) continue;
    if (range.start !== undefined && dayStart + DAY <= range.start) continue;
    const dir = join(base, p);
    const files = (await listDir(dir)).filter((f) => !f.startsWith(".") && !f.startsWith("_") && (f.endsWith(".parquet") || f.endsWith(".jsonl")));
    out.push({ partition: p, dir, files });
  }
  return out;
}

/**
 * The offline log in files, partitioned by event date in the Hive layout
 * (see the module doc). An append resolves once its rows are durable: in
 * Parquet each append writes new files (hidden temporary file, fsync,
 * rename), so a reader never sees half a file; in JSON Lines it appends to
 * this writer's file of the partition. Every row is kept, late and expired
 * ones too; a redelivered batch is logged again (at-least-once), which the
 * point-in-time join tolerates.
 *
 * Compaction: once a writer has `compactAfter` small files in a partition it
 * rewrites them as one (atomically, listing the replaced files in its
 * footer) and then deletes them. A crash in between leaves both; `read`
 * skips the replaced files and the next compaction deletes them, so no row
 * is lost and none is read twice. A compaction holds the partition's lock
 * (`<dir>/offline/_locks/<view>__date=....lock`, taken over when its holder
 * died on this host), so two processes never rewrite the same files.
 *
 * Writers that are gone: each writer holds a liveness lock
 * (`<dir>/offline/_writers/<writer>.lock`) from its first Parquet file until
 * `close`. The small files of a writer whose lock is released, or whose
 * process died on this host (SIGKILL, crash, reboot), are adopted: the first
 * append of a process to a partition, and `compact(views)` over every
 * partition of those views, compact them with its own. A writer on another
 * host that died cannot be told from a live one here: its files wait for a
 * `compact` on that host, or for its lock file to be removed by hand.
 * Writer ids must be unique (the default is).
 *
 * `asOf` answers point-in-time lookups with a DuckDB ASOF JOIN over the
 * Parquet files when `@duckdb/node-api` loads (Node, Bun, Deno), and
 * declines otherwise (JSON Lines, no DuckDB), so that the core's streaming
 * join runs over `read`.
 *
 * @example
 * ```ts
 * const log = fileOffline({ dir: ".freshet" })
 * for await (const rows of log.read(view, { start: Date.parse("2024-01-01") })) console.log(rows.length)
 * ```
 */
export function fileOffline(opts: FileOfflineOptions): FileOffline {
  if (!opts || typeof opts.dir !== "string" || !opts.dir) {
    throw new FreshetError("INVALID_CONFIG", 'dir is required, e.g. fileOffline({ dir: ".freshet" })', { plugin: "file" });
  }
  const format = opts.format ?? "parquet";
  if (format !== "parquet" && format !== "jsonl") {
    throw new FreshetError("INVALID_CONFIG", `format ${JSON.stringify(format)} is not one of "parquet", "jsonl"`, { plugin: "file" });
  }
  const root = join(resolve(opts.dir), "offline");
  const writerId = opts.writerId ? safeName(opts.writerId) : defaultWriterId();
  const chunkSize = opts.chunkSize ?? 1000;
  const compactAfter = opts.compactAfter ?? 16;
  const compactRows = opts.compactRows ?? 500_000;
  const appenders = new Map<string, Appender>();
  /** This writer's small files per partition folder, with their row counts. */
  const small = new Map<string, { view: FeatureView; files: { name: string; rows: number }[] }>();
  const compacting = new Map<string, Promise<void>>();
  /** Partition folders where this process has looked for the small files of writers that are gone. */
  const adopted = new Set<string>();
  /** This writer's liveness lock: undefined before its first Parquet file, null when it could not be taken. */
  let registered: DirLock | null | undefined;
  let fileNo = 0;
  let rowNo = 0;
  let lastMs = 0;

  function seqOf(ms: number): string {
    return `${String(ms).padStart(13, "0")}.${writerId}.${(rowNo++).toString(36).padStart(10, "0")}`;
  }

  /** Registers this writer as alive (a lock file naming this process) before its first Parquet file; released by close. */
  function register(): void {
    if (registered !== undefined) return;
    try {
      mkdirSync(join(root, WRITERS), { recursive: true });
      registered = tryLock(join(root, WRITERS), `${writerId}.lock`) ?? null;
    } catch {
      registered = null;
    }
  }

  /** The small Parquet files of writers that are gone in a partition folder, by their liveness locks. */
  async function orphans(dir: string, names: string[]): Promise<{ name: string; rows: number }[]> {
    const gone = new Map<string, boolean>();
    const out: { name: string; rows: number }[] = [];
    for (const name of names) {
      const m = FILE_NAME.exec(name);
      if (!m || m[1] === writerId) continue;
      let g = gone.get(m[1]);
      if (g === undefined) gone.set(m[1], g = lockGone(join(root, WRITERS, `${m[1]}.lock`)));
      if (!g) continue;
      try {
        const { metadata, close } = await openParquet(join(dir, name));
        await close();
        if (Number(metadata.num_rows) < compactRows) out.push({ name, rows: Number(metadata.num_rows) });
      } catch {
        // unreadable or gone meanwhile: left alone
      }
    }
    return out;
  }

  /**
   * Compacts a partition folder under its compaction lock (another process
   * compacting there now: skipped this time): first deletes what an earlier
   * compaction replaced, then, with `adopt`, takes in the small files of
   * writers that are gone, then rewrites the small files as one.
   */
  async function compactPartition(dir: string, view?: FeatureView, adopt = false): Promise<void> {
    let lock: DirLock | undefined;
    try {
      mkdirSync(join(root, LOCKS), { recursive: true });
      lock = tryLock(join(root, LOCKS), `${relative(root, dir).split(sep).join("__")}.lock`);
    } catch {
      return;
    }
    if (!lock) return;
    try {
      await compactLocked(dir, view, adopt);
    } finally {
      lock.release();
    }
  }

  async function compactLocked(dir: string, view: FeatureView | undefined, adopt: boolean): Promise<void> {
    // Delete what an earlier compaction (maybe of a crashed writer) replaced but did not get to delete.
    await cleanReplaced(dir);
    const names = (await listDir(dir)).filter((f) => f.endsWith(".parquet") && !f.startsWith(".") && !f.startsWith("_"));
    let entry = small.get(dir);
    if (entry) {
      const present = new Set(names);
      entry.files = entry.files.filter((f) => present.has(f.name));
    }
    const adopted = adopt ? await orphans(dir, names) : [];
    if (adopted.length) {
      if (!entry) small.set(dir, entry = { view: view!, files: [] });
      entry.files.unshift(...adopted);
    }
    if (!entry) return;
    while (entry.files.length >= 2) {
      const take: { name: string; rows: number }[] = [];
      let n = 0;
      for (const f of entry.files) {
        if (take.length >= 2 && n + f.rows > compactRows) break;
        take.push(f);
        n += f.rows;
      }
      if (take.length < 2) break;
      const rows: Row[] = [];
      // The files replaced, and those the compacted ones among them replaced, so a crash at any point is recognised.
      const replaces = new Set<string>();
      for (const f of take) {
        replaces.add(f.name);
        if (FILE_NAME.exec(f.name)?.[2] === "c") {
          const { metadata, close } = await openParquet(join(dir, f.name));
          for (const r of replacedBy(metadata)) replaces.add(r);
          await close();
        }
        for await (const chunk of readParquetRows(join(dir, f.name))) {
          for (const r of chunk) {
            for (const k in r) if (typeof r[k] === "bigint") r[k] = Number.isSafeInteger(Number(r[k])) ? Number(r[k]) : String(r[k]);
            rows.push({ ...r, event_timestamp: msOf(r.event_timestamp), created_timestamp: msOf(r.created_timestamp) ?? null });
          }
        }
      }
      const name = `${writerId}-c${String(++fileNo).padStart(8, "0")}.parquet`;
      await writeAtomic(dir, name, await encodeParquet(entry.view, rows, [{ key: "freshet.replaces", value: JSON.stringify([...replaces]) }]));
      for (const f of take) await unlink(join(dir, f.name)).catch(() => {});
      entry.files = entry.files.filter((f) => !take.includes(f));
      if (n < compactRows) entry.files.unshift({ name, rows: n });
      if (entry.files.length < compactAfter) break;
    }
  }

  async function cleanReplaced(dir: string): Promise<void> {
    const names = (await listDir(dir)).filter((f) => /-c\d+\.parquet$/.test(f));
    for (const name of names) {
      let replaced: string[] = [];
      try {
        const { metadata, close } = await openParquet(join(dir, name));
        replaced = replacedBy(metadata);
        await close();
      } catch {
        continue;
      }
      for (const r of replaced) await unlink(join(dir, r)).catch(() => {});
    }
  }

  function scheduleCompaction(dir: string, view: FeatureView): void {
    const entry = small.get(dir);
    // The first append of this process to a partition also adopts what writers that are gone left there.
    const adopt = !adopted.has(dir);
    if (!entry || compactAfter <= 0 || (!adopt && entry.files.length < compactAfter) || compacting.has(dir)) return;
    adopted.add(dir);
    const run = compactPartition(dir, view, adopt)
      .catch(() => { /* rows stay in the small files; the next append tries again */ })
      .finally(() => compacting.delete(dir));
    compacting.set(dir, run);
  }

  return {
    name: "file-offline",
    root,
    writerId,
    async append(view, rows) {
      if (!rows.length) return;
      const now = Math.max(Date.now(), lastMs);
      lastMs = now;
      const byPartition = new Map<string, Row[]>();
      for (const r of rows) {
        const obj: Row = {
          ...joinKeyValues(view, r.entityKey),
          ...r.values,
          event_timestamp: r.eventTime,
          created_timestamp: r.createdTime ?? null,
          _entity_key: r.entityKey,
          _log_seq: seqOf(now),
          _position: r.position ? JSON.stringify(r.position) : null,
        };
        const p = partitionOf(r.eventTime);
        let list = byPartition.get(p);
        if (!list) byPartition.set(p, list = []);
        list.push(obj);
      }
      const base = join(root, encodeURIComponent(view.name));
      try {
        // File numbers are taken in partition order before any I/O, so they do not depend on which mkdir finishes first.
        const plan = [...byPartition].map(([p, list]) => ({ dir: join(base, p), list, name: format === "jsonl" ? "" : `${writerId}-${String(++fileNo).padStart(8, "0")}.parquet` }));
        await Promise.all(plan.map(async ({ dir, list, name }) => {
          if (format === "jsonl") {
            const path = join(dir, `${writerId}.jsonl`);
            let file = appenders.get(path);
            if (!file) appenders.set(path, file = appender(path));
            let text = "";
            for (const o of list) {
              text += JSON.stringify({ ...o, event_timestamp: toIso(o.event_timestamp as number), created_timestamp: o.created_timestamp == null ? null : toIso(o.created_timestamp as number) }) + "\n";
            }
            await file.append(text);
            return;
          }
          register();
          await mkdir(dir, { recursive: true });
          await writeAtomic(dir, name, await encodeParquet(view, list));
          let entry = small.get(dir);
          if (!entry) small.set(dir, entry = { view, files: [] });
          if (list.length < compactRows) entry.files.push({ name, rows: list.length });
        }));
      } catch (e) {
        throw storeUnavailable("file-offline", e, view.name);
      }
      for (const p of byPartition.keys()) scheduleCompaction(join(base, p), view);
    },
    async *read(view, range) {
      const start = range.start ?? -Infinity;
      const end = range.end ?? Infinity;
      let chunk: FeatureRow[] = [];
      let legacy = 0;
      const take = function* (obj: Row, seq: string) {
        const r = toFeatureRow(view, obj, seq);
        if (!r || r.eventTime < start || r.eventTime >= end) return;
        chunk.push(r);
        if (chunk.length >= chunkSize) {
          yield chunk;
          chunk = [];
        }
      };
      // The single-file log of earlier versions, when there is one.
      const legacyPath = join(root, `${encodeURIComponent(view.name)}.jsonl`);
      for await (const rows of readJsonLines(legacyPath)) {
        for (const o of rows) yield* take(o, `0000000000000.legacy.${(legacy++).toString(36).padStart(10, "0")}`);
      }
      for (const { dir, files } of await logFiles(root, view.name, { start: range.start, end: range.end })) {
        const parquet = files.filter((f) => f.endsWith(".parquet"));
        const skip = new Set<string>();
        for (const f of parquet.filter((n) => /-c\d+\.parquet$/.test(n))) {
          try {
            const { metadata, close } = await openParquet(join(dir, f));
            for (const r of replacedBy(metadata)) skip.add(r);
            await close();
          } catch { /* read it below, or fail there */ }
        }
        const queue = [...files];
        const seen = new Set(files);
        while (queue.length) {
          const f = queue.shift()!;
          if (skip.has(f)) continue;
          const rowsOf = f.endsWith(".parquet") ? readParquetRows(join(dir, f)) : readJsonLines(join(dir, f));
          try {
            for await (const rows of rowsOf) for (const o of rows) yield* take(o, `0000000000000.legacy.${(legacy++).toString(36).padStart(10, "0")}`);
          } catch (e) {
            if ((e as { code?: string })?.code !== "ENOENT") throw e;
            // Compacted away meanwhile: its rows are in a compacted file that was not listed yet.
            for (const n of await listDir(dir)) {
              if (!seen.has(n) && /-c\d+\.parquet$/.test(n)) {
                seen.add(n);
                queue.push(n);
              }
            }
          }
        }
      }
      if (chunk.length) yield chunk;
    },
    async asOf(view, features, entities) {
      if (format !== "parquet" || opts.duckdb === false) return undefined;
      const { duckdbAsOf } = await import("./duckdb.ts");
      return await duckdbAsOf(root, view, features, entities);
    },
    async compact(views = []) {
      await Promise.all(compacting.values());
      const done = new Set<string>();
      for (const view of views) {
        for (const { dir } of await logFiles(root, view.name)) {
          done.add(dir);
          adopted.add(dir);
          await compactPartition(dir, view, true);
        }
      }
      for (const dir of small.keys()) if (!done.has(dir)) await compactPartition(dir);
    },
    async close() {
      for (const f of appenders.values()) await f.idle();
      await Promise.all(compacting.values());
      // Gone: the small files left are adopted by the next writer into their partitions (or by compact).
      registered?.release();
      registered = undefined;
    },
  };
}

export type { AsOfEntity, AsOfMatch };
