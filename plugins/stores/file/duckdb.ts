/**
 * @module
 * Point-in-time lookups over the Parquet offline log with DuckDB: one ASOF
 * JOIN of the entity rows onto the view's rows, after a dedupe of the rows
 * with equal (entity, event time) that keeps the greatest created time and,
 * among equals, the first appended (`_log_seq`), as online. DuckDB streams
 * and spills, so the feature rows are never all in memory here.
 * `@duckdb/node-api` is an optional dependency: without it `duckdbAsOf`
 * resolves undefined and the caller uses the streaming join.
 */
import { mkdtemp, rm, stat } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { type AsOfEntity, type AsOfMatch, type FeatureView, parseEntityKey } from "../../../core/index.ts";
import { logFiles } from "./offline.ts";

/** The `@duckdb/node-api` module, as loaded. */
export type DuckModule = typeof import("@duckdb/node-api");
let loaded: Promise<DuckModule | undefined> | undefined;

/** Loads DuckDB once; undefined when it is not installed or cannot load on this runtime. */
export function loadDuckDB(): Promise<DuckModule | undefined> {
  loaded ??= import("@duckdb/node-api").then((m) => m as DuckModule, () => undefined);
  return loaded;
}

const q = (name: string) => `"${name.replace(/"/g, '""')}"`;
const lit = (s: string) => `'${s.replace(/'/g, "''")}'`;

/**
 * For each entity, the latest row of `view` in the log under `root` at or
 * before its time, within the view's ttl, or undefined. Resolves undefined
 * when DuckDB is not available or the log holds files DuckDB is not asked to
 * read (JSON Lines, the single-file log of earlier versions).
 */
export async function duckdbAsOf(root: string, view: FeatureView, features: string[], entities: AsOfEntity[]): Promise<(AsOfMatch | undefined)[] | undefined> {
  const duck = await loadDuckDB();
  if (!duck) return undefined;
  const out: (AsOfMatch | undefined)[] = new Array(entities.length).fill(undefined);
  if (entities.length === 0) return out;
  let min = Infinity, max = -Infinity;
  for (const e of entities) {
    if (e.time < min) min = e.time;
    if (e.time > max) max = e.time;
  }
  const start = view.ttlMs > 0 ? min - view.ttlMs : undefined;
  if (await stat(join(root, `${encodeURIComponent(view.name)}.jsonl`)).then(() => true, () => false)) return undefined;
  // A writer may compact while DuckDB reads: the compacted file is in place before the small ones go, so reading again finds every row.
  for (let attempt = 1; ; attempt++) {
    const parts = await logFiles(root, view.name, { start, end: max + 1 });
    if (parts.some((p) => p.files.some((f) => !f.endsWith(".parquet")))) return undefined;
    const globs = parts.filter((p) => p.files.length).map((p) => join(p.dir, "*.parquet"));
    if (globs.length === 0) return out;
    try {
      return await query(duck, globs, view, features, entities, min, max, start, out);
    } catch (e) {
      if (attempt >= 5 || !/No such file|No files found|Cannot open file/i.test(String((e as Error)?.message ?? e))) throw e;
    }
  }
}

/**
 * Writes columns as one Parquet file with DuckDB (appender, then COPY), or
 * resolves false when DuckDB is not available. JSON columns hold JSON text.
 */
export async function writeParquetDuckDB(path: string, columns: { name: string; data: unknown[]; type: "DOUBLE" | "BOOLEAN" | "STRING" | "JSON" }[]): Promise<boolean> {
  const duck = await loadDuckDB();
  if (!duck) return false;
  const instance = await duck.DuckDBInstance.create(":memory:");
  const con = await instance.connect();
  try {
    const sqlType = { DOUBLE: "DOUBLE", BOOLEAN: "BOOLEAN", STRING: "VARCHAR", JSON: "JSON" } as const;
    await con.run(`CREATE TEMP TABLE out (${columns.map((c, i) => `c${i} ${sqlType[c.type]}`).join(", ")})`);
    const n = columns.length ? columns[0].data.length : 0;
    await appendColumns(duck, con, "out", n, columns.map((c) => c.type === "JSON" ? (i: number) => (c.data[i] === null ? null : JSON.stringify(c.data[i])) : (i: number) => c.data[i] ?? null));
    await con.run(`COPY (SELECT ${columns.map((c, i) => `c${i} AS ${q(c.name)}`).join(", ")} FROM out) TO ${lit(path)} (FORMAT parquet)`);
    return true;
  } finally {
    con.closeSync?.();
    instance.closeSync?.();
  }
}

/** Appends `n` rows to `table`, column `c`'s value of row i being `columns[c](i)`, in data chunks of the vector size. */
async function appendColumns(duck: DuckModule, con: import("@duckdb/node-api").DuckDBConnection, table: string, n: number, columns: ((i: number) => unknown)[]): Promise<void> {
  const appender = await con.createAppender(table);
  try {
    const types = columns.map((_, c) => appender.columnType(c));
    const size = 2048;
    for (let from = 0; from < n; from += size) {
      const count = Math.min(size, n - from);
      const chunk = duck.DuckDBDataChunk.create(types, count);
      for (let c = 0; c < columns.length; c++) {
        const values = new Array(count);
        for (let i = 0; i < count; i++) values[i] = columns[c](from + i);
        chunk.setColumnValues(c, values);
      }
      appender.appendDataChunk(chunk);
    }
    appender.flushSync();
  } finally {
    appender.closeSync();
  }
}

async function query(duck: DuckModule, globs: string[], view: FeatureView, features: string[], entities: AsOfEntity[], _min: number, max: number, start: number | undefined, out: (AsOfMatch | undefined)[]): Promise<(AsOfMatch | undefined)[]> {
  const tmp = await mkdtemp(join(tmpdir(), "freshet-asof-"));
  const instance = await duck.DuckDBInstance.create(":memory:", { temp_directory: join(tmp, "spill") });
  const con = await instance.connect();
  try {
    const list = `[${globs.map(lit).join(", ")}]`;
    const files = `read_parquet(${list}, union_by_name = true)`;
    const described = await con.runAndReadAll(`DESCRIBE SELECT * FROM ${files}`);
    const present = new Map<string, string>();
    for (const r of described.getRowObjectsJS()) present.set(String(r.column_name), String(r.column_type));

    // Join on the join key columns themselves when their types allow (integers as BIGINT, strings as VARCHAR), else on _entity_key.
    const parsed = entities.map((e) => parseEntityKey(e.entityKey));
    const typed = view.joinKeys.every((k) => {
      const t = present.get(k);
      if (t === "VARCHAR") return true;
      if (t !== "BIGINT") return false;
      return parsed.every((p) => /^-?\d+$/.test(String(p[k])) && Number.isSafeInteger(Number(p[k])) && String(Number(p[k])) === String(p[k]));
    });
    const keys = typed ? view.joinKeys.map((k) => ({ name: k, col: q(k), type: present.get(k) === "BIGINT" ? "INT64" : "STRING" })) : [{ name: "_entity_key", col: "_entity_key", type: "STRING" }];
    // The entity rows go into a temporary table through the appender, a chunk of columns at a time (no file, no per-value call).
    await con.run(`CREATE TEMP TABLE ent (_row INTEGER, ${keys.map((k, j) => `k${j} ${k.type === "INT64" ? "BIGINT" : "VARCHAR"}`).join(", ")}, t DOUBLE)`);
    await appendColumns(duck, con, "ent", entities.length, [
      (i) => i,
      ...keys.map((k) => typed ? (k.type === "INT64" ? (i: number) => BigInt(String(parsed[i][k.name])) : (i: number) => String(parsed[i][k.name])) : (i: number) => entities[i].entityKey),
      (i) => entities[i].time,
    ]);
    const kOn = (a: string, b: string) => keys.map((_, j) => `${a}.k${j} = ${b}.k${j}`).join(" AND ");
    const kSel = keys.map((k, j) => `${k.col} AS k${j}`).join(", ");
    const kList = keys.map((_, j) => `k${j}`).join(", ");
    const fsel = features.filter((f) => present.has(f));
    const vals = fsel.map((f) => q(f)).join(", ");
    const where = [`event_timestamp <= make_timestamp(${Math.floor(max)}::BIGINT * 1000)`];
    if (start !== undefined && Number.isFinite(start)) where.push(`event_timestamp >= make_timestamp(${Math.floor(start)}::BIGINT * 1000)`);
    const hasCreated = present.has("created_timestamp");
    const created = hasCreated ? "created_timestamp" : "NULL::TIMESTAMP";
    const ttl = view.ttlMs > 0 ? view.ttlMs : undefined;
    const struct = fsel.length ? `struct_pack(${fsel.map((f) => `${q("v_" + f)} := ${q(f)}`).join(", ")})` : "NULL";
    // 1. The ASOF JOIN on event time: for each entity row, a row with the greatest event time at or before its time.
    await con.run(`CREATE TEMP TABLE m AS
      WITH e AS (SELECT _row, ${kList}, make_timestamp(CAST(t AS BIGINT) * 1000) AS ts FROM ent),
      f AS (SELECT ${kSel}, event_timestamp AS fts${vals ? ", " + vals : ""} FROM ${files} WHERE ${where.join(" AND ")})
      SELECT e._row, ${keys.map((_, j) => `f.k${j}`).join(", ")}, f.fts${fsel.length ? ", " + fsel.map((x) => `f.${q(x)}`).join(", ") : ""}
      FROM e ASOF JOIN f ON ${kOn("e", "f")} AND e.ts >= f.fts
      ${ttl ? `WHERE epoch_ms(e.ts) - epoch_ms(f.fts) <= ${ttl}` : ""}`);
    // 2. Matches whose (entity, event time) the log holds more than once (redeliveries, created times, equal versions).
    await con.run(`CREATE TEMP TABLE ties AS
      SELECT ${kSel}, event_timestamp AS fts FROM ${files}
      WHERE ${where.join(" AND ")} AND EXISTS (SELECT 1 FROM m WHERE ${keys.map((k, j) => `m.k${j} = ${k.col}`).join(" AND ")} AND m.fts = event_timestamp)
      GROUP BY ALL HAVING count(*) > 1`);
    const tieCount = Number((await con.runAndReadAll("SELECT count(*) AS n FROM ties")).getRowObjectsJS()[0].n);
    // 3. Only those: the greatest created time, then the first appended (_log_seq), as online.
    let final = `SELECT m._row AS _row, epoch_ms(m.fts) AS _ft${fsel.map((f) => `, m.${q(f)} AS ${q("v_" + f)}`).join("")} FROM m`;
    if (tieCount > 0) {
      await con.run(`CREATE TEMP TABLE best AS
        SELECT ${kSel}, event_timestamp AS fts, first(${struct} ORDER BY ${created} DESC NULLS LAST, _log_seq) AS best
        FROM ${files}
        WHERE ${where.join(" AND ")} AND EXISTS (SELECT 1 FROM ties WHERE ${keys.map((k, j) => `ties.k${j} = ${k.col}`).join(" AND ")} AND ties.fts = event_timestamp)
        GROUP BY ALL`);
      final = `SELECT m._row AS _row, epoch_ms(m.fts) AS _ft${fsel.map((f) => `, CASE WHEN b.fts IS NULL THEN m.${q(f)} ELSE b.best.${q("v_" + f)} END AS ${q("v_" + f)}`).join("")}
        FROM m LEFT JOIN best b ON ${kOn("m", "b")} AND m.fts = b.fts`;
    }
    const sql = final;
    const result = await con.run(sql);
    const json = fsel.map((f) => present.get(f) === "JSON");
    for (;;) {
      const chunk = await result.fetchChunk();
      if (!chunk || chunk.rowCount === 0) break;
      const columns = chunk.getColumns();
      const rows = columns[0] as number[];
      const ft = columns[1] as (bigint | number)[];
      for (let i = 0; i < rows.length; i++) {
        const values: Record<string, unknown> = {};
        for (const f of features) values[f] = null;
        for (let j = 0; j < fsel.length; j++) {
          let v = columns[2 + j][i] as unknown;
          if (typeof v === "bigint") v = Number.isSafeInteger(Number(v)) ? Number(v) : String(v);
          if (json[j] && typeof v === "string") v = JSON.parse(v);
          values[fsel[j]] = v ?? null;
        }
        out[rows[i]] = { values, eventTime: Number(ft[i]) };
      }
    }
    return out;
  } finally {
    con.closeSync?.();
    instance.closeSync?.();
    await rm(tmp, { recursive: true, force: true });
  }
}
