/**
 * P12: point-in-time historical retrieval, entity rows x feature rows, from an
 * entity file to a training-set file, on Node.
 *
 * - Feature rows: the offline log in the layout `fileOffline` writes (Hive
 *   `date=` partitions of Parquet files, its columns), generated with DuckDB
 *   for speed (writing 10M rows through `append` is not what P12 measures).
 *   Event times are unique per entity, so that the answer does not depend on
 *   tie-breaking and the hand-written query is exact too.
 * - Freshet: `freshet historical` as a user runs it (historicalCommand):
 *   entity Parquet in (hyparquet), getHistoricalFeatures (DuckDB engine),
 *   training-set Parquet out (DuckDB COPY when it loads, else hyparquet-writer).
 * - Baseline: a DuckDB ASOF JOIN written by hand over the same files, with
 *   the view's ttl, `COPY`'d straight to Parquet.
 * - Same answer: both outputs compared row by row in DuckDB (EXCEPT ALL both ways).
 *
 * Sizes: BENCH_P12_ENTITIES (default 1M, small 5k) and BENCH_P12_FEATURES
 * (default 10M, small 50k), BENCH_P12_KEYS (default 100k, small 500).
 */
import { mkdir, mkdtemp, rm, symlink, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import process from "node:process";
import { DuckDBInstance } from "@duckdb/node-api";
import { historicalCommand } from "../adapters/historical.ts";
import { fmt, pairedEntry, type BenchOptions, type Entry, type Pair } from "./lib.ts";

const DAY = 86_400_000;
const T0 = Date.UTC(2026, 0, 1);
const TTL_MS = 2 * DAY;

async function duck() {
  const inst = await DuckDBInstance.create(":memory:");
  const con = await inst.connect();
  return {
    run: async (sql: string) => (await con.runAndReadAll(sql)).getRowObjectsJS(),
    close() {
      con.closeSync();
      inst.closeSync();
    },
  };
}

export async function runHistorical(opts: BenchOptions, log: (m: string) => void = (m) => console.log(m)) {
  const entries: Entry[] = [];
  const notes: string[] = [];
  const failures: string[] = [];
  const E = Number(process.env.BENCH_P12_ENTITIES ?? (opts.small ? 5_000 : 1_000_000));
  const F = Number(process.env.BENCH_P12_FEATURES ?? (opts.small ? 50_000 : 10_000_000));
  const K = Number(process.env.BENCH_P12_KEYS ?? (opts.small ? 500 : 100_000));
  const DAYS = 10;
  const dir = await mkdtemp(join(tmpdir(), "freshet-p12-"));
  const db = await duck();
  try {
    const root = join(dir, "offline", "bench_stats");
    const perKey = Math.ceil(F / K);
    const step = Math.floor((DAYS * DAY) / perKey);
    await mkdir(join(dir, "offline"), { recursive: true });
    log(`P12: writing ${F} feature rows (${K} entities, ${DAYS} days) in the offline log layout, and ${E} entity rows`);
    const t = Date.now();
    // Row i: entity i % K at T0 + (i / K) * step + a jitter below step: unique times per entity.
    await db.run(`COPY (
      SELECT (i % ${K})::BIGINT AS driver_id,
             round(random() * 1000) / 1000 AS conv_rate,
             (random() * 100)::BIGINT::DOUBLE AS trips,
             make_timestamp(((${T0} + (i // ${K}) * ${step} + (hash(i) % ${step - 1}))::BIGINT) * 1000) AS event_timestamp,
             NULL::TIMESTAMP AS created_timestamp,
             'driver_id=' || (i % ${K})::VARCHAR AS _entity_key,
             lpad(i::VARCHAR, 13, '0') || '.bench.' || lpad(i::VARCHAR, 10, '0') AS _log_seq,
             NULL::VARCHAR AS _position,
             strftime(event_timestamp, '%Y-%m-%d') AS date
      FROM range(${F}) t(i)
    ) TO '${root}' (FORMAT parquet, PARTITION_BY (date), FILENAME_PATTERN 'gen-{i}')`);
    const entities = join(dir, "entities.parquet");
    await db.run(`COPY (
      SELECT i AS row_id, (hash(i * 7) % ${Math.ceil(K * 1.05)})::BIGINT AS driver_id,
             strftime(make_timestamp(((${T0} + hash(i * 13) % ${DAYS * DAY + DAY})::BIGINT) * 1000), '%Y-%m-%dT%H:%M:%S.%gZ') AS event_timestamp
      FROM range(${E}) t(i)
    ) TO '${entities}' (FORMAT parquet)`);
    log(`P12: data ready in ${((Date.now() - t) / 1000).toFixed(1)} s`);
    const repoFile = join(dir, "feature_repo.ts");
    const mod = new URL("../mod.ts", import.meta.url).pathname;
    await writeFile(join(dir, "package.json"), '{"type":"module"}');
    await writeFile(repoFile, `import * as v from "valibot";
import { entity, featureRepo, pushSource, streamFeatureView } from ${JSON.stringify(mod)};
const driver = entity({ name: "driver", joinKeys: ["driver_id"] });
const src = pushSource({ name: "bench_push", timestampField: "event_timestamp" });
export default featureRepo({ project: "bench", definitions: [driver, src, streamFeatureView({ name: "bench_stats", entities: [driver], source: src, ttl: ${TTL_MS}, offline: true, schema: v.object({ driver_id: v.number(), conv_rate: v.number(), trips: v.number() }) })] });
`);
    // valibot from the project's node_modules
    await rm(join(dir, "node_modules"), { recursive: true, force: true });
    await symlink(new URL("../node_modules", import.meta.url).pathname, join(dir, "node_modules"));

    const outF = join(dir, "freshet.parquet");
    const outB = join(dir, "baseline.parquet");
    const freshet = async () => {
      const t0 = performance.now();
      const r = await historicalCommand([repoFile, "--data-dir", dir, "--entities", entities, "--features", "bench_stats:conv_rate,bench_stats:trips", "--out", outF], () => {});
      const s = (performance.now() - t0) / 1000;
      return { value: r.rows / s, notes: `${s.toFixed(2)} s` };
    };
    const baseline = async () => {
      const b = await duck();
      try {
        const t0 = performance.now();
        await b.run(`COPY (
          WITH e AS (SELECT row_id, driver_id, event_timestamp, CAST(event_timestamp AS TIMESTAMP) AS ts FROM read_parquet('${entities}')),
               f AS (SELECT driver_id, event_timestamp AS fts, conv_rate, trips FROM read_parquet('${root}/*/*.parquet', hive_partitioning = true))
          SELECT e.row_id, e.driver_id, e.event_timestamp,
                 CASE WHEN e.ts - f.fts <= INTERVAL ${TTL_MS / 1000} SECOND THEN f.conv_rate END AS conv_rate,
                 CASE WHEN e.ts - f.fts <= INTERVAL ${TTL_MS / 1000} SECOND THEN f.trips END AS trips
          FROM e ASOF LEFT JOIN f ON e.driver_id = f.driver_id AND e.ts >= f.fts
          ORDER BY e.row_id
        ) TO '${outB}' (FORMAT parquet)`);
        const s = (performance.now() - t0) / 1000;
        return { value: E / s, notes: `${s.toFixed(2)} s` };
      } finally {
        b.close();
      }
    };
    const pairs: Pair[] = [];
    for (let i = 0; i < opts.runs; i++) {
      const a = await baseline();
      const b = await freshet();
      pairs.push({ baseline: a.value, value: b.value, notes: `baseline ${a.notes}, freshet ${b.notes}` });
      log(`  run ${i + 1}/${opts.runs}: baseline ${fmt(a.value)} rows/s (${a.notes})  freshet ${fmt(b.value)} rows/s (${b.notes})  ratio ${fmt(b.value / a.value, 3)}`);
    }
    const cmp = `SELECT row_id, driver_id, event_timestamp, conv_rate, trips FROM read_parquet('%')`;
    const diff = await db.run(`SELECT
      (SELECT count(*) FROM (${cmp.replace("%", outF)} EXCEPT ALL ${cmp.replace("%", outB)})) AS only_freshet,
      (SELECT count(*) FROM (${cmp.replace("%", outB)} EXCEPT ALL ${cmp.replace("%", outF)})) AS only_baseline,
      (SELECT count(*) FROM read_parquet('${outB}') WHERE trips IS NOT NULL) AS found`);
    const { only_freshet, only_baseline, found } = diff[0] as Record<string, bigint>;
    const same = only_freshet === 0n && only_baseline === 0n;
    if (!same) failures.push(`P12: the answers differ: ${only_freshet} rows only in Freshet's, ${only_baseline} only in the baseline's`);
    const e = pairedEntry("P12", "node", `entity rows/s, ${E} entity rows x ${F} feature rows, file to file`, ">= 1.0", pairs);
    entries.push(e);
    notes.push(
      `P12 node: ${E} entity rows x ${F} feature rows (${K} entities, ${DAYS} days, ttl 2d); same answer: ${same ? "yes" : "NO"} (${found} rows with a value). ` +
        `Freshet = freshet historical (entity Parquet read by hyparquet, entity rows into DuckDB by its appender, DuckDB dedupe of equal versions + ASOF JOIN, output written by DuckDB COPY); ` +
        `baseline = one hand-written DuckDB ASOF JOIN COPY'd to Parquet (no dedupe of equal versions, no JS on either end).`,
    );
  } catch (e) {
    failures.push(`P12: ${(e as Error)?.stack ?? e}`);
  } finally {
    db.close();
    await rm(dir, { recursive: true, force: true });
  }
  return { entries, notes, failures };
}
