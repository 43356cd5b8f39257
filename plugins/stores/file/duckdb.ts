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
import { parquetWriteBuffer } from "hyparquet-writer";
import type { AsOfEntity, AsOfMatch, FeatureView } from "../../../core/index.ts";
import { logFiles } from "./offline.ts";

type DuckModule = typeof import("@duckdb/node-api");
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

async function query(duck: DuckModule, globs: string[], view: FeatureView, features: string[], entities: AsOfEntity[], _min: number, max: number, start: number | undefined, out: (AsOfMatch | undefined)[]): Promise<(AsOfMatch | undefined)[]> {
  const tmp = await mkdtemp(join(tmpdir(), "freshet-asof-"));
  const instance = await duck.DuckDBInstance.create(":memory:", { temp_directory: join(tmp, "spill") });
  const con = await instance.connect();
  try {
    const entFile = join(tmp, "entities.parquet");
    const { writeFile } = await import("node:fs/promises");
    await writeFile(entFile, new Uint8Array(parquetWriteBuffer({
      columnData: [
        { name: "_row", data: Int32Array.from(entities, (_, i) => i), type: "INT32" },
        { name: "k", data: entities.map((e) => e.entityKey), type: "STRING" },
        { name: "t", data: Float64Array.from(entities, (e) => e.time), type: "DOUBLE" },
      ] as never,
      rowGroupSize: 1_000_000,
    })));
    const list = `[${globs.map(lit).join(", ")}]`;
    const described = await con.runAndReadAll(`DESCRIBE SELECT * FROM read_parquet(${list}, union_by_name = true)`);
    const present = new Map<string, string>();
    for (const r of described.getRowObjectsJS()) present.set(String(r.column_name), String(r.column_type));
    const cols = features.map((f) => (present.has(f) ? `f.${q(f)}` : `NULL`) + ` AS ${q("v_" + f)}`).join(", ");
    const fcols = features.filter((f) => present.has(f)).map((f) => q(f)).join(", ");
    const where = [`event_timestamp <= epoch_ms(${Math.floor(max)}::BIGINT)`];
    if (start !== undefined && Number.isFinite(start)) where.push(`event_timestamp >= epoch_ms(${Math.floor(start)}::BIGINT)`);
    const ttl = view.ttlMs > 0 ? view.ttlMs : undefined;
    const sql = `
      WITH e AS (SELECT _row, k, CAST(t AS BIGINT) AS t FROM read_parquet(${lit(entFile)})),
      f AS (
        SELECT _entity_key AS k, epoch_ms(event_timestamp) AS t${fcols ? ", " + fcols : ""}
        FROM read_parquet(${list}, union_by_name = true)
        WHERE ${where.join(" AND ")} AND _entity_key IN (SELECT k FROM e)
        QUALIFY row_number() OVER (PARTITION BY _entity_key, event_timestamp ORDER BY created_timestamp DESC NULLS LAST, _log_seq) = 1
      )
      SELECT e._row AS _row, f.t AS _ft${cols ? ", " + cols : ""}
      FROM e ASOF JOIN f ON e.k = f.k AND e.t >= f.t
      ${ttl ? `WHERE e.t - f.t <= ${ttl}` : ""}`;
    const result = await con.run(sql);
    const json = features.map((f) => present.get(f) === "JSON");
    for (;;) {
      const chunk = await result.fetchChunk();
      if (!chunk || chunk.rowCount === 0) break;
      const columns = chunk.getColumns();
      const rows = columns[0] as number[];
      const ft = columns[1] as (bigint | number)[];
      for (let i = 0; i < rows.length; i++) {
        const values: Record<string, unknown> = {};
        for (let j = 0; j < features.length; j++) {
          let v = columns[2 + j][i] as unknown;
          if (typeof v === "bigint") v = Number.isSafeInteger(Number(v)) ? Number(v) : String(v);
          if (json[j] && typeof v === "string") v = JSON.parse(v);
          values[features[j]] = v ?? null;
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
