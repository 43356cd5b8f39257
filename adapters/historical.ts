/**
 * @module
 * `freshet historical <repo> --entities <file> --features view:feature,...
 * --out <file.parquet|.csv|.jsonl>`: a point-in-time correct training set
 * from the offline log, with progress on stderr. Kept apart from cli.ts's
 * own flags: cli.ts hands it the arguments after the command.
 */
import { open, rename, rm } from "node:fs/promises";
import { dirname, join, basename } from "node:path";
import process from "node:process";
import { parseArgs } from "node:util";
import { fileSource, FreshetError, missingPackage, getHistoricalFeatures, type HistoricalProgress, type Row } from "../mod.ts";
import { loadRepo } from "./host.ts";

export const HISTORICAL_USAGE = `freshet historical <feature_repo.ts> --entities <file> --features <view:feature,...> --out <file>

  --entities <file>       entity rows: .parquet, .csv or .jsonl, with the join keys and a timestamp
  --features <refs>       comma-separated feature refs, view:feature (view:* for all of a view)
  --out <file>            .parquet, .csv or .jsonl
  --timestamp-field <f>   the entity rows' timestamp column, default event_timestamp
  --full-feature-names    name output columns view__feature
  --engine auto|stream    auto (default): DuckDB over the Parquet log when it loads; stream: the streaming join
  --data-dir <dir>        FRESHET_DATA_DIR, default ./data (the offline log is <dir>/offline)
`;

/** Runs `freshet historical` with the arguments after the command. Exported for tests. */
export async function historicalCommand(argv: string[], log: (line: string) => void = (l) => console.error(l)): Promise<{ rows: number; out: string }> {
  const { values, positionals } = parseArgs({
    args: argv,
    allowPositionals: true,
    options: {
      entities: { type: "string" },
      features: { type: "string" },
      out: { type: "string" },
      "timestamp-field": { type: "string" },
      "full-feature-names": { type: "boolean" },
      engine: { type: "string" },
      "data-dir": { type: "string" },
      help: { type: "boolean", short: "h" },
    },
  });
  if (values.help) {
    console.log(HISTORICAL_USAGE);
    return { rows: 0, out: "" };
  }
  const [repoPath] = positionals;
  const need = (name: string, v: string | undefined) => {
    if (!v) throw new FreshetError("INVALID_CONFIG", `freshet historical needs --${name}\n${HISTORICAL_USAGE}`);
    return v;
  };
  if (!repoPath) throw new FreshetError("INVALID_CONFIG", `freshet historical needs a feature repo path\n${HISTORICAL_USAGE}`);
  const entitiesPath = need("entities", values.entities);
  const features = need("features", values.features).split(",").map((s) => s.trim()).filter(Boolean);
  const out = need("out", values.out);
  const outFormat = formatOf(out, "--out");
  const engine = values.engine ?? "auto";
  if (engine !== "auto" && engine !== "stream") throw new FreshetError("INVALID_CONFIG", `--engine ${engine} is not one of auto, stream`);
  const dataDir = values["data-dir"] ?? process.env.FRESHET_DATA_DIR ?? "./data";

  const registry = await loadRepo(repoPath);
  const { readFileSource } = await import("../plugins/sources/file.ts");
  const { fileOffline } = await import("../plugins/stores/file/index.ts");
  formatOf(entitiesPath, "--entities");
  const started = Date.now();
  const entityRows: Row[] = [];
  for await (const chunk of readFileSource(fileSource({ name: "entities", path: entitiesPath }))) {
    for (const r of chunk) entityRows.push(r);
  }
  log(`[freshet] historical: ${entityRows.length} entity rows from ${entitiesPath}`);
  const offline = fileOffline({ dir: dataDir });
  let last = 0;
  const onProgress = (p: HistoricalProgress) => {
    const t = Date.now();
    if (!p.done && t - last < 1000) return;
    last = t;
    log(`[freshet] historical ${p.view} (${p.engine}): ${p.done ? "done" : `${p.featureRows} feature rows read`}${p.done && p.engine === "stream" ? `, ${p.featureRows} feature rows read` : ""}`);
  };
  const result = await getHistoricalFeatures({
    registry,
    offline,
    entityRows,
    features,
    timestampField: values["timestamp-field"],
    fullFeatureNames: values["full-feature-names"],
    engine,
    onProgress,
  });
  await writeRows(out, outFormat, result.rows);
  const found = result.columns.length ? result.rows.filter((r) => result.columns.some((c) => r[c] !== null)).length : 0;
  log(`[freshet] historical: wrote ${result.rows.length} rows (${found} with a value) x ${result.columns.length} features to ${out} in ${((Date.now() - started) / 1000).toFixed(1)} s`);
  return { rows: result.rows.length, out };
}

function formatOf(path: string, flag: string): "parquet" | "csv" | "jsonl" {
  const ext = path.toLowerCase().split(".").pop();
  if (ext === "parquet") return "parquet";
  if (ext === "csv") return "csv";
  if (ext === "jsonl" || ext === "ndjson") return "jsonl";
  throw new FreshetError("INVALID_CONFIG", `${flag} ${path}: use a .parquet, .csv or .jsonl file`);
}

/** Writes rows whole or not at all (a temporary file renamed into place). */
async function writeRows(path: string, format: "parquet" | "csv" | "jsonl", rows: Row[]): Promise<void> {
  const columns: string[] = [];
  const seen = new Set<string>();
  for (const r of rows.slice(0, 1000)) for (const k of Object.keys(r)) if (!seen.has(k)) (seen.add(k), columns.push(k));
  for (const r of rows) for (const k of Object.keys(r)) if (!seen.has(k)) (seen.add(k), columns.push(k));
  const tmp = join(dirname(path), `.${basename(path)}.tmp`);
  const fh = await open(tmp, "w");
  try {
    if (format === "parquet") {
      const { parquetWriteBuffer } = await import("hyparquet-writer").catch(missingPackage("hyparquet-writer", "--out <file>.parquet", "historical"));
      const columnData = columns.map((name) => {
        const data = rows.map((r) => r[name] ?? null);
        let kind: string | undefined;
        for (const v of data) {
          if (v === null) continue;
          const k = typeof v === "number" ? "DOUBLE" : typeof v === "boolean" ? "BOOLEAN" : typeof v === "string" ? "STRING" : "JSON";
          kind = kind === undefined || kind === k ? k : "JSON";
        }
        return { name, data, type: (kind ?? "STRING") as "DOUBLE" | "BOOLEAN" | "STRING" | "JSON" };
      });
      // DuckDB writes it about 3x faster than hyparquet-writer when it loads (P12).
      const { writeParquetDuckDB } = await import("../plugins/stores/file/duckdb.ts");
      if (await writeParquetDuckDB(tmp, columnData)) {
        const written = await open(tmp, "r+");
        await written.sync().finally(() => written.close());
      } else await fh.writeFile(new Uint8Array(parquetWriteBuffer({ columnData: columnData as never, createdBy: "freshet" })));
    } else {
      const enc = format === "csv" ? csvLine : (r: Row) => JSON.stringify(r);
      let buf = format === "csv" ? csvLine(Object.fromEntries(columns.map((c) => [c, c]))) + "\n" : "";
      for (const r of rows) {
        buf += (format === "csv" ? csvLine(Object.fromEntries(columns.map((c) => [c, r[c] ?? null]))) : enc(r)) + "\n";
        if (buf.length > 1 << 20) {
          await fh.write(buf);
          buf = "";
        }
      }
      await fh.write(buf);
    }
    await fh.sync();
  } catch (e) {
    await fh.close();
    await rm(tmp, { force: true });
    throw e;
  }
  await fh.close();
  await rename(tmp, path);
}

/** One CSV line (RFC 4180 quoting); null is an empty field. */
function csvLine(r: Row): string {
  return Object.values(r).map((v) => {
    if (v === null || v === undefined) return "";
    const s = typeof v === "object" ? JSON.stringify(v) : String(v);
    return /[",\n\r]/.test(s) ? `"${s.replace(/"/g, '""')}"` : s;
  }).join(",");
}

export const MATERIALIZE_OFFLINE_USAGE = `freshet materialize <feature_repo.ts> --from-offline [--view <name>] [--start <time>] [--end <time>]

  Rebuilds the online store from the offline log (<data-dir>/offline) instead of the batch sources.
  --store <url>, --data-dir <dir> as for the other commands (FRESHET_STORE, FRESHET_DATA_DIR).
`;

/** `freshet materialize <repo> --from-offline`: the online store rebuilt from what was ingested. Exported for tests. */
export async function materializeFromOfflineCommand(argv: string[], log: (line: string) => void = (l) => console.log(l)): Promise<void> {
  const { values, positionals } = parseArgs({
    args: argv,
    allowPositionals: true,
    options: {
      "from-offline": { type: "boolean" },
      view: { type: "string" },
      start: { type: "string" },
      end: { type: "string" },
      store: { type: "string" },
      "data-dir": { type: "string" },
      help: { type: "boolean", short: "h" },
    },
  });
  if (values.help) {
    console.log(MATERIALIZE_OFFLINE_USAGE);
    return;
  }
  const [repoPath] = positionals;
  if (!repoPath) throw new FreshetError("INVALID_CONFIG", `freshet materialize needs a feature repo path\n${MATERIALIZE_OFFLINE_USAGE}`);
  const { createHost } = await import("./host.ts");
  const { materializeFromOffline } = await import("../mod.ts");
  const { progressLogger } = await import("../plugins/sources/file.ts");
  const host = await createHost({
    repo: repoPath,
    store: values.store ?? process.env.FRESHET_STORE,
    dataDir: values["data-dir"] ?? process.env.FRESHET_DATA_DIR,
    upstashToken: process.env.UPSTASH_REDIS_REST_TOKEN,
    logger: console,
  });
  try {
    const views = values.view ? [host.registry.view(values.view)] : [...host.registry.views.values()].filter((v) => v.online);
    for (const view of views) {
      const p = await materializeFromOffline(host.processor, view, { start: values.start, end: values.end, offline: host.offline, onProgress: progressLogger() });
      log(`[freshet] materialized ${view.name} from the offline log: ${p.read} rows read, ${p.inRange} in range, ${p.written} written, ${p.stale} stale, ${p.expired} expired (outside the ttl)`);
    }
  } finally {
    await host.close();
  }
}

export const COMPACT_USAGE = `freshet compact <feature_repo.ts> [--view <name>] [--data-dir <dir>]

  Compacts the small Parquet files of the offline log (<data-dir>/offline) in every partition of the views
  with offline: true (or --view), adopting those of writers that are gone (closed, or died on this host).
  Safe beside running writers and another compact: each partition is compacted under its lock.
  --data-dir <dir>        FRESHET_DATA_DIR, default ./data
`;

/** `freshet compact <repo>`: the offline log's small files compacted, a gone writer's adopted. Exported for tests. */
export async function compactCommand(argv: string[], log: (line: string) => void = (l) => console.error(l)): Promise<void> {
  const { values, positionals } = parseArgs({
    args: argv,
    allowPositionals: true,
    options: { view: { type: "string" }, "data-dir": { type: "string" }, help: { type: "boolean", short: "h" } },
  });
  if (values.help) {
    console.log(COMPACT_USAGE);
    return;
  }
  const [repoPath] = positionals;
  if (!repoPath) throw new FreshetError("INVALID_CONFIG", `freshet compact needs a feature repo path\n${COMPACT_USAGE}`);
  const registry = await loadRepo(repoPath);
  const views = values.view ? [registry.view(values.view)] : [...registry.views.values()].filter((v) => v.offline);
  const { fileOffline, logFiles } = await import("../plugins/stores/file/offline.ts");
  const offline = fileOffline({ dir: values["data-dir"] ?? process.env.FRESHET_DATA_DIR ?? "./data" });
  const count = async () => {
    let n = 0;
    for (const v of views) for (const p of await logFiles(offline.root, v.name)) n += p.files.length;
    return n;
  };
  const started = Date.now();
  const before = await count();
  await offline.compact(views);
  await offline.close();
  log(`[freshet] compact: ${views.map((v) => v.name).join(", ") || "no view with offline: true"}: ${before} files before, ${await count()} after, in ${((Date.now() - started) / 1000).toFixed(1)} s`);
}
