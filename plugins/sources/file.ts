/**
 * @module
 * Batch sources in files, for backfills: JSON Lines, CSV and Parquet, read
 * in chunks of rows without loading the whole file, and a progress logger
 * for `materialize`.
 *
 * @example
 * ```ts
 * await materialize(store, view, {
 *   read: readFileSource(history),
 *   total: await countFileRows(history),
 *   onProgress: progressLogger(),
 * })
 * ```
 */
import { open } from "node:fs/promises";
import type { AsyncBuffer, FileMetaData } from "hyparquet";
import { type FileSource, FreshetError, type MaterializeProgress, missingPackage, type Row } from "../../core/index.ts";

const PLUGIN = "file";
// csv-parse and hyparquet are optional peer dependencies, loaded by the first CSV or Parquet file read.
const hyparquet = () => import("hyparquet").catch(missingPackage("hyparquet", "Parquet files", PLUGIN));

/** A row that could not be read: a bad JSON line, a malformed CSV record. */
export interface InvalidRow {
  /** 1-based line (JSON Lines) or record number (CSV). */
  line: number;
  /** What was wrong with it. */
  message: string;
}

/** Options of {@link readFileSource}. */
export interface ReadFileSourceOptions {
  /** Rows per chunk. Default 5000. */
  chunkSize?: number;
  /** Called for each row that could not be read, e.g. to log it. */
  onInvalid?: (row: InvalidRow) => void;
}

/**
 * A row that could not be read is passed on as this empty row: it has no
 * timestamp, so `materialize` counts it as invalid and moves on, and the
 * counts of read and invalid rows stay true.
 */
const UNREADABLE: Row = Object.freeze({}) as Row;

/**
 * Reads a file batch source as chunks of rows, streaming:
 *
 * - JSON Lines line by line;
 * - CSV record by record, with a header row naming the columns; as in
 *   pandas, values that look like numbers become numbers (unless they would
 *   lose digits), `true`/`false` booleans, and empty ones null;
 * - Parquet by row group (at most 65536 rows at a time); timestamps become
 *   ISO strings and 64-bit integers numbers, so rows look as they would in
 *   JSON and one schema fits the stream and the backfill.
 *
 * A bad line or record does not stop the read: it is yielded as an empty
 * row, which `materialize` counts as invalid, and `onInvalid` hears of it.
 * A missing or unreadable file throws a FreshetError naming the source.
 *
 * @example
 * ```ts
 * for await (const rows of readFileSource(fileSource({ name: "h", path: "data/driver_stats.csv" }))) console.log(rows.length)
 * ```
 */
export function readFileSource(source: FileSource, opts: ReadFileSourceOptions = {}): AsyncIterable<Row[]> {
  const chunkSize = Math.max(1, opts.chunkSize ?? 5000);
  const read = { jsonl: readJsonLines, csv: readCsv, parquet: readParquet }[source?.fileFormat];
  if (!read) {
    throw new FreshetError("INVALID_CONFIG", `unknown fileFormat ${JSON.stringify(source?.fileFormat)}: declare the source with fileSource(...)`, { plugin: PLUGIN, definition: source?.name });
  }
  return withSourceErrors(source, read(source.path, chunkSize, opts.onInvalid));
}

/** Names the source and the file in an error: a missing file is a configuration error, an unreadable one bad input. */
function sourceError(source: FileSource, e: unknown): FreshetError {
  if (e instanceof FreshetError) return e;
  const missing = (e as { code?: string })?.code === "ENOENT";
  const msg = missing ? `${source.path} does not exist; check the fileSource path` : `cannot read ${source.path} as ${source.fileFormat}: ${(e as Error)?.message ?? e}`;
  return new FreshetError(missing ? "INVALID_CONFIG" : "INVALID_INPUT", msg, { plugin: PLUGIN, definition: source.name, cause: e });
}

async function* withSourceErrors(source: FileSource, rows: AsyncGenerator<Row[]>): AsyncGenerator<Row[]> {
  try {
    yield* rows;
  } catch (e) {
    throw sourceError(source, e);
  }
}

/** Yields the lines of a file in blocks, decoding as it goes. */
async function* lineBlocks(path: string): AsyncGenerator<string[]> {
  const fh = await open(path, "r");
  try {
    const buf = new Uint8Array(1 << 16);
    const decoder = new TextDecoder();
    let rest = "";
    for (;;) {
      const { bytesRead } = await fh.read(buf, 0, buf.length, null);
      if (bytesRead === 0) break;
      const lines = (rest + decoder.decode(buf.subarray(0, bytesRead), { stream: true })).split("\n");
      rest = lines.pop()!;
      if (lines.length) yield lines;
    }
    rest += decoder.decode();
    if (rest) yield [rest];
  } finally {
    await fh.close();
  }
}

async function* readJsonLines(path: string, chunkSize: number, onInvalid?: (r: InvalidRow) => void): AsyncGenerator<Row[]> {
  let chunk: Row[] = [];
  let lineNo = 0;
  for await (const lines of lineBlocks(path)) {
    for (const line of lines) {
      lineNo++;
      if (!line.trim()) continue;
      let row: unknown;
      try {
        row = JSON.parse(line);
      } catch (e) {
        row = undefined;
        onInvalid?.({ line: lineNo, message: (e as Error).message });
      }
      if (row !== null && typeof row === "object" && !Array.isArray(row)) chunk.push(row as Row);
      else {
        if (row !== undefined) onInvalid?.({ line: lineNo, message: "not a JSON object" });
        chunk.push(UNREADABLE);
      }
      if (chunk.length >= chunkSize) {
        yield chunk;
        chunk = [];
      }
    }
  }
  if (chunk.length) yield chunk;
}

const NUMERIC = /^[+-]?(?:0|[1-9]\d*)(?:\.\d+)?(?:[eE][+-]?\d+)?$|^[+-]?\.\d+$/;

/**
 * A CSV value as pandas would read it: numbers, booleans, null for empty.
 * Done after parsing rather than through csv-parse's `cast` callback, which
 * is several times slower (it builds a context object per field).
 */
function castCsv(value: string): unknown {
  if (value === "") return null;
  const c = value.charCodeAt(0);
  // Only strings that start like a number are worth the regular expression.
  if ((c >= 48 && c <= 57) || c === 45 || c === 43 || c === 46) {
    if (NUMERIC.test(value)) {
      const n = Number(value);
      // Ids beyond 2^53 would lose digits: keep them as text.
      return Number.isInteger(n) && !Number.isSafeInteger(n) ? value : n;
    }
    return value;
  }
  if (value === "true" || value === "TRUE" || value === "True") return true;
  if (value === "false" || value === "FALSE" || value === "False") return false;
  return value;
}

function castRecord(record: Record<string, string>): Row {
  const row: Row = record;
  for (const k in record) row[k] = castCsv(record[k]);
  return row;
}

async function* readCsv(path: string, chunkSize: number, onInvalid?: (r: InvalidRow) => void): AsyncGenerator<Row[]> {
  let skipped = 0;
  const { parse: csvParse } = await import("csv-parse/stream").catch(missingPackage("csv-parse", "CSV files", PLUGIN));
  const parser = csvParse({
    columns: true,
    bom: true,
    // Explicit, so that a file with mixed line endings (a header written on Unix, rows on Windows) still parses.
    record_delimiter: ["\r\n", "\n"],
    trim: false,
    skip_empty_lines: true,
    skip_records_with_error: true,
    on_skip(err) {
      skipped++;
      onInvalid?.({ line: Number(err?.lines ?? 0), message: err?.message ?? "malformed record" });
      return undefined;
    },
  });
  const fh = await open(path, "r");
  const bytes = new ReadableStream<Uint8Array>({
    async pull(controller) {
      // csv-parse wants Buffers, which is what FileHandle.read allocates on every runtime.
      const { bytesRead, buffer } = await fh.read();
      if (bytesRead === 0) controller.close();
      else controller.enqueue(buffer.subarray(0, bytesRead));
    },
  }, { highWaterMark: 4 });
  try {
    let chunk: Row[] = [];
    for await (const record of bytes.pipeThrough(parser) as unknown as AsyncIterable<Record<string, string>>) {
      for (; skipped > 0; skipped--) chunk.push(UNREADABLE);
      chunk.push(castRecord(record));
      if (chunk.length >= chunkSize) {
        yield chunk;
        chunk = [];
      }
    }
    for (; skipped > 0; skipped--) chunk.push(UNREADABLE);
    if (chunk.length) yield chunk;
  } finally {
    await fh.close();
  }
}

/** Parquet reads of at most this many rows at once, so that a huge row group does not have to fit in memory as objects. */
const PARQUET_WINDOW = 65_536;

/** A Parquet file's bytes (hyparquet's file reader, which reads each range it is asked for) and its footer. */
async function openParquet(path: string): Promise<{ file: AsyncBuffer; metadata: FileMetaData }> {
  const { asyncBufferFromFile, parquetMetadataAsync } = await hyparquet();
  const file = await asyncBufferFromFile(path);
  return { file, metadata: await parquetMetadataAsync(file) };
}

/** Parquet values as JSON would carry them. */
function jsonish(row: Row): Row {
  for (const k in row) {
    const v = row[k];
    if (typeof v === "bigint") row[k] = v >= BigInt(Number.MIN_SAFE_INTEGER) && v <= BigInt(Number.MAX_SAFE_INTEGER) ? Number(v) : String(v);
    else if (v instanceof Date) row[k] = Number.isNaN(v.getTime()) ? null : v.toISOString();
  }
  return row;
}

async function* readParquet(path: string, chunkSize: number, _onInvalid?: unknown): AsyncGenerator<Row[]> {
  const { file, metadata } = await openParquet(path);
  const { parquetReadObjects } = await hyparquet();
  let groupStart = 0;
  for (const group of metadata.row_groups) {
    const groupEnd = groupStart + Number(group.num_rows);
    const window = Math.max(chunkSize, PARQUET_WINDOW);
    for (let rowStart = groupStart; rowStart < groupEnd; rowStart += window) {
      const rows = await parquetReadObjects({ file, metadata, rowStart, rowEnd: Math.min(groupEnd, rowStart + window) }) as Row[];
      for (let i = 0; i < rows.length; i += chunkSize) yield rows.slice(i, i + chunkSize).map(jsonish);
    }
    groupStart = groupEnd;
  }
}

/**
 * Counts the rows of a file source, for a progress percentage: exact for
 * Parquet (from its footer), the number of lines for JSON Lines and CSV
 * (minus the header), which a blank line or a quoted line break makes
 * approximate. One pass over the bytes, no parsing.
 *
 * @example
 * ```ts
 * const total = await countFileRows(history)
 * ```
 */
export async function countFileRows(source: FileSource): Promise<number> {
  try {
    return await countRows(source);
  } catch (e) {
    throw sourceError(source, e);
  }
}

async function countRows(source: FileSource): Promise<number> {
  if (source.fileFormat === "parquet") {
    return Number((await openParquet(source.path)).metadata.num_rows);
  }
  const fh = await open(source.path, "r");
  let lines = 0;
  let last = 10;
  try {
    const buf = new Uint8Array(1 << 16);
    for (;;) {
      const { bytesRead } = await fh.read(buf, 0, buf.length, null);
      if (bytesRead === 0) break;
      for (let i = 0; i < bytesRead; i++) if (buf[i] === 10) lines++;
      last = buf[bytesRead - 1];
    }
  } finally {
    await fh.close();
  }
  if (last !== 10) lines++;
  return source.fileFormat === "csv" ? Math.max(0, lines - 1) : lines;
}

/**
 * Returns an `onProgress` callback for `materialize` that logs counts at
 * most every `everyMs`, and always once when done:
 * `[freshet] materialize driver_hourly_stats: 120000 rows read, 118000 in range, 37 invalid, 5000 written, 113000 stale (42%, 61000 rows/s, ETA 3s)`.
 * With `bar: true` (a terminal) each line starts with a bar, for a writer
 * that redraws one line: `[########............] 42% ...`.
 *
 * @example
 * ```ts
 * await materialize(processor, view, { read: readFileSource(history), onProgress: progressLogger() })
 * ```
 */
export function progressLogger(log: (line: string, done: boolean) => void = console.error, everyMs = 1000, opts: { bar?: boolean; now?: () => number } = {}): (p: MaterializeProgress) => void {
  const now = opts.now ?? Date.now;
  const started = now();
  let last = started;
  return function logProgress(p: MaterializeProgress): void {
    const t = now();
    if (!p.done && t - last < everyMs) return;
    last = t;
    const name = p.view;
    const secs = Math.max(t - started, 1) / 1000;
    const rate = Math.round(p.read / secs);
    let line = `materialize${name ? ` ${name}` : ""}: ${p.read} rows read, ${p.inRange} in range, ${p.invalid} invalid, ${p.written} written`;
    if (p.stale) line += `, ${p.stale} stale`;
    if (p.expired) line += `, ${p.expired} expired`;
    const pct = p.done ? 100 : p.total ? Math.min(100, Math.floor((p.read / p.total) * 100)) : undefined;
    if (p.done) line += ` (done in ${secs.toFixed(1)}s, ${rate} rows/s)`;
    else if (p.total) line += ` (${pct}%, ${rate} rows/s, ETA ${eta(rate > 0 ? Math.max(0, p.total - p.read) / rate : Number.NaN)})`;
    else line += ` (${rate} rows/s)`;
    if (opts.bar && pct !== undefined) {
      const filled = Math.round(pct / 5);
      line = `[${"#".repeat(filled)}${".".repeat(20 - filled)}] ${line}`;
    }
    log(`[freshet] ${line}`, p.done === true);
  };
}

/** Seconds as `42s`, `3m05s` or `2h10m`; `?` when unknown. */
function eta(s: number): string {
  if (!Number.isFinite(s)) return "?";
  const r = Math.ceil(s);
  if (r < 60) return `${r}s`;
  if (r < 3600) return `${Math.floor(r / 60)}m${String(r % 60).padStart(2, "0")}s`;
  return `${Math.floor(r / 3600)}h${String(Math.floor((r % 3600) / 60)).padStart(2, "0")}m`;
}
