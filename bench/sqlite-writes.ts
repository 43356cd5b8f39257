/**
 * P11: the SQLite store's `write` of 500-row batches of latest-wins rows, in
 * rows/s, against the raw driver doing the same upserts of the same rows in
 * one transaction, in the same process, A B A B (raw, then store).
 *
 * Configurations (each one process on its runtime, with the driver the
 * store picks there): Node 20 + libsql, Node 24 + node:sqlite and Node 24 +
 * libsql (when `node_modules/node24/bin/node` exists, or BENCH_NODE24 names
 * a Node 24 binary), Bun + bun:sqlite, Deno + node:sqlite.
 *
 * Both sides, per measurement: a fresh database file in WAL mode with
 * `synchronous = FULL` and the same busy timeout (the store's defaults), the
 * same table shape as the store's layout (WITHOUT ROWID, primary key (view,
 * entity), the partial expiry index), filled untimed with the entity space;
 * then the same batches: 500 distinct entities each, every row newer than
 * the stored one (so every row is written, checked on both sides). The raw
 * side is the plain way to do it: one prepared `INSERT ... ON CONFLICT DO
 * UPDATE ... WHERE strictly newer` run per row between BEGIN IMMEDIATE and
 * COMMIT, values as JSON text. The store does that plus validation, ttl,
 * the bounded purge and its seam (on libsql, one json_each statement).
 *
 *   npx tsx bench/sqlite-writes.ts [--runs 5] [--runtime node,bun,deno] [--small] [--results dir]
 *
 * The measuring part runs on each runtime:
 *   <runtime> bench/sqlite-writes.ts --worker --driver libsql --batches 100 --entities 20000 --runs 5
 */
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import process from "node:process";
import type { FeatureRow } from "../core/index.ts";
import type { BenchOptions, Entry, Pair, Runtime } from "./lib.ts";
import { benchEntry } from "./entry.ts";

const BATCH = 500;

const DDL = [
  "CREATE TABLE raw_features (view TEXT NOT NULL, entity TEXT NOT NULL, ts INTEGER NOT NULL, ct INTEGER NOT NULL, expires_at INTEGER, vals TEXT NOT NULL, PRIMARY KEY (view, entity)) WITHOUT ROWID",
  "CREATE INDEX raw_features_expiry ON raw_features (expires_at) WHERE expires_at IS NOT NULL",
];
const RAW_UPSERT = "INSERT INTO raw_features (view, entity, ts, ct, expires_at, vals) VALUES (?1, ?2, ?3, ?4, ?5, ?6) " +
  "ON CONFLICT (view, entity) DO UPDATE SET ts = excluded.ts, ct = excluded.ct, expires_at = excluded.expires_at, vals = excluded.vals " +
  "WHERE excluded.ts > raw_features.ts OR (excluded.ts = raw_features.ts AND excluded.ct > raw_features.ct)";
const NO_CT = -9007199254740991;

type Driver = "bun:sqlite" | "node:sqlite" | "libsql";
interface Stmt {
  run(...p: unknown[]): { changes: number | bigint };
  all(...p: unknown[]): unknown[];
}
interface Conn {
  prepare(sql: string): Stmt;
  exec(sql: string): unknown;
  close(): unknown;
}

/** Opens a raw connection with the driver's own API. */
async function openRaw(driver: Driver, path: string): Promise<Conn> {
  if (driver === "bun:sqlite") {
    const { Database } = await import("bun:sqlite" as string);
    return new Database(path, { create: true });
  }
  if (driver === "node:sqlite") {
    const { DatabaseSync } = await import("node:sqlite" as string);
    return new DatabaseSync(path);
  }
  const { createRequire } = await import("node:module");
  const Database = createRequire(import.meta.url)("libsql");
  return new Database(path);
}

/** The measuring worker: prints one `P11_RESULT` JSON line. */
async function worker(argv: string[]): Promise<void> {
  const arg = (n: string) => {
    const i = argv.indexOf(`--${n}`);
    if (i < 0 || i + 1 >= argv.length) throw new Error(`sqlite-writes worker: --${n} is required`);
    return argv[i + 1];
  };
  const driver = arg("driver") as Driver;
  const batches = Number(arg("batches"));
  const entities = Number(arg("entities"));
  const runs = Number(arg("runs"));
  const { sqliteStore } = await import("../plugins/stores/sqlite/index.ts");
  const { benchStats: view, FEATURES } = await import("./feature_repo.ts");

  // The rows: a fill of every entity, then `batches` batches of 500 distinct
  // entities, each batch newer than everything before it.
  const t0 = Date.now() - 60_000;
  const values = (i: number) => Object.fromEntries(FEATURES.map((f, j) => [f, (i + j) % 1000]));
  const fill: FeatureRow[][] = [];
  for (let s = 0; s < entities; s += 5000) {
    fill.push(Array.from({ length: Math.min(5000, entities - s) }, (_, k) => ({ entityKey: `user_id=${s + k}`, values: values(s + k), eventTime: t0 })));
  }
  let seed = 42;
  const rand = () => ((seed = (Math.imul(seed, 1103515245) + 12345) >>> 0) / 2 ** 32);
  const timed: FeatureRow[][] = [];
  for (let b = 0; b < batches; b++) {
    const picked = new Set<number>();
    while (picked.size < Math.min(BATCH, entities)) picked.add(Math.floor(rand() * entities));
    timed.push([...picked].map((e) => ({ entityKey: `user_id=${e}`, values: values(e + b), eventTime: t0 + 1 + b })));
  }
  const rows = batches * Math.min(BATCH, entities);

  const dir = mkdtempSync(join(tmpdir(), "freshet-bench-p11-"));
  let n = 0;
  const cpuSince = () => {
    const c = process.cpuUsage();
    const w = performance.now();
    return () => ((process.cpuUsage().user - c.user + process.cpuUsage().system - c.system) / 1000) / (performance.now() - w);
  };

  let sqliteVersion = "";
  const measureRaw = async () => {
    const path = join(dir, `raw-${n++}.db`);
    const db = await openRaw(driver, path);
    try {
      db.exec("PRAGMA busy_timeout = 5000");
      db.exec("PRAGMA journal_mode = WAL");
      db.exec("PRAGMA synchronous = FULL");
      for (const s of DDL) db.exec(s);
      sqliteVersion = String((db.prepare("SELECT sqlite_version() AS v").all()[0] as { v: string }).v);
      const upsert = db.prepare(RAW_UPSERT);
      const ttl = view.ttlMs;
      const writeBatch = (batch: FeatureRow[]) => {
        let changed = 0;
        db.exec("BEGIN IMMEDIATE");
        try {
          for (const r of batch) {
            changed += Number(upsert.run(view.name, r.entityKey, r.eventTime, r.createdTime ?? NO_CT, ttl > 0 ? r.eventTime + ttl : null, JSON.stringify(r.values)).changes);
          }
          db.exec("COMMIT");
        } catch (e) {
          db.exec("ROLLBACK");
          throw e;
        }
        return changed;
      };
      for (const b of fill) writeBatch(b);
      const cpu = cpuSince();
      const start = performance.now();
      let written = 0;
      for (const b of timed) written += writeBatch(b);
      const secs = (performance.now() - start) / 1000;
      const share = cpu();
      if (written !== rows) throw new Error(`raw wrote ${written} of ${rows} rows`);
      return { value: rows / secs, cpu: share };
    } finally {
      db.close();
      rmSync(path, { force: true });
      rmSync(path + "-wal", { force: true });
      rmSync(path + "-shm", { force: true });
    }
  };
  const measureStore = async () => {
    const path = join(dir, `store-${n++}.db`);
    const store = sqliteStore({ path, localDriver: driver });
    try {
      const db = await store.ready();
      if (db.name !== driver) throw new Error(`the store opened ${db.name}, not ${driver}`);
      for (const b of fill) await store.write(view, b);
      const cpu = cpuSince();
      const start = performance.now();
      let written = 0;
      for (const b of timed) written += (await store.write(view, b)).written;
      const secs = (performance.now() - start) / 1000;
      const share = cpu();
      if (written !== rows) throw new Error(`the store wrote ${written} of ${rows} rows`);
      return { value: rows / secs, cpu: share };
    } finally {
      await store.close?.();
      rmSync(path, { force: true });
      rmSync(path + "-wal", { force: true });
      rmSync(path + "-shm", { force: true });
    }
  };

  // One untimed pair to warm up the JIT and the file system.
  await measureRaw();
  await measureStore();
  const pairs: { raw: number; store: number; rawCpu: number; storeCpu: number }[] = [];
  for (let i = 0; i < runs; i++) {
    const a = await measureRaw();
    const b = await measureStore();
    pairs.push({ raw: a.value, store: b.value, rawCpu: a.cpu, storeCpu: b.cpu });
  }
  rmSync(dir, { recursive: true, force: true });
  const runtime = "Bun" in globalThis ? "bun" : "Deno" in globalThis ? "deno" : "node";
  const version = runtime === "bun" ? String((globalThis as { Bun?: { version: string } }).Bun?.version) : runtime === "deno" ? String((globalThis as { Deno?: { version: { deno: string } } }).Deno?.version.deno) : process.versions.node;
  console.log("P11_RESULT " + JSON.stringify({ runtime, version, driver, sqlite: sqliteVersion, rows, pairs }));
}

/** A configuration to measure: a runtime, the binary that runs it, and the driver. */
interface Config {
  runtime: Runtime;
  label: string;
  cmd: [string, string[]];
  driver: Driver;
}

export async function runSqliteWrites(opts: BenchOptions, log: (m: string) => void = (m) => console.log(m)) {
  const { node24, pairedEntry, run, tsCommand, versions, fmt } = await import("./lib.ts");
  const entries: Entry[] = [];
  const notes: string[] = [];
  const failures: string[] = [];
  const batches = opts.small ? 4 : 100;
  const entities = opts.small ? 2000 : 20_000;
  const file = "bench/sqlite-writes.ts";
  const workerArgs = (driver: Driver) => ["--worker", "--driver", driver, "--batches", String(batches), "--entities", String(entities), "--runs", String(opts.runs)];
  const configs: Config[] = [];
  const n24 = node24();
  for (const rt of opts.runtimes) {
    if (rt === "node") {
      const major = Number(process.versions.node.split(".")[0]);
      const nodeDriver: Driver = major >= 22 ? "node:sqlite" : "libsql";
      configs.push({ runtime: "node", label: `Node ${major}`, cmd: tsCommand("node", file, workerArgs(nodeDriver)), driver: nodeDriver });
      // On Node 22+ itself, libsql too; on Node 20, a Node 24 binary when there is one.
      if (major >= 22) configs.push({ runtime: "node", label: `Node ${major}`, cmd: tsCommand("node", file, workerArgs("libsql")), driver: "libsql" });
      else if (n24) {
        configs.push({ runtime: "node", label: "Node 24", cmd: [n24, ["--import", "tsx", file, ...workerArgs("node:sqlite")]], driver: "node:sqlite" });
        configs.push({ runtime: "node", label: "Node 24", cmd: [n24, ["--import", "tsx", file, ...workerArgs("libsql")]], driver: "libsql" });
      }
    } else if (rt === "bun") configs.push({ runtime: "bun", label: "Bun", cmd: tsCommand("bun", file, workerArgs("bun:sqlite")), driver: "bun:sqlite" });
    else configs.push({ runtime: "deno", label: "Deno", cmd: tsCommand("deno", file, workerArgs("node:sqlite")), driver: "node:sqlite" });
  }
  if (opts.runtimes.includes("node") && !n24 && Number(process.versions.node.split(".")[0]) < 22) {
    const note = `P11: no Node 24 binary (node_modules/node24/bin/node, or BENCH_NODE24): Node ${process.versions.node} only`;
    log(note);
    notes.push(note);
  }
  for (const c of configs) {
    log(`P11 ${c.label} ${c.driver}: ${batches} batches of ${BATCH} rows over ${entities} entities, ${opts.runs} pair(s) raw/store`);
    try {
      const out = await run(c.cmd[0], c.cmd[1], { timeoutMs: 600_000 });
      const line = out.split("\n").find((l) => l.startsWith("P11_RESULT "));
      if (!line) throw new Error(`the worker printed no result:\n${out}`);
      const r = JSON.parse(line.slice("P11_RESULT ".length)) as { version: string; driver: string; sqlite: string; rows: number; pairs: { raw: number; store: number; rawCpu: number; storeCpu: number }[] };
      const pairs: Pair[] = r.pairs.map((p) => ({ baseline: p.raw, value: p.store, notes: `raw cpu ${Math.round(p.rawCpu * 100)}%, store cpu ${Math.round(p.storeCpu * 100)}%` }));
      r.pairs.forEach((p, i) => log(`  run ${i + 1}/${r.pairs.length}: raw ${fmt(p.raw)} rows/s  store ${fmt(p.store)} rows/s  ratio ${fmt(p.store / p.raw, 3)}  (cpu raw ${Math.round(p.rawCpu * 100)}%, store ${Math.round(p.storeCpu * 100)}%)`));
      const e = pairedEntry("P11", c.runtime, `rows/s, ${BATCH}-row batches, ${c.driver} on ${c.label}`, ">= 0.8", pairs);
      const v: Record<string, string> = { ...versions(), sqlite: r.sqlite };
      if (c.runtime === "node") v.node = r.version;
      e.versions = v;
      entries.push(e);
      const cpus = r.pairs.map((p) => `${Math.round(p.rawCpu * 100)}/${Math.round(p.storeCpu * 100)}%`).join(" ");
      notes.push(`P11 ${c.label} ${c.driver} (SQLite ${r.sqlite}): store/raw ${r.pairs.map((p) => fmt(p.store / p.raw, 3)).join(", ")}; rows/s raw ${r.pairs.map((p) => fmt(p.raw)).join(", ")}; store ${r.pairs.map((p) => fmt(p.store)).join(", ")}; process CPU raw/store ${cpus} of one core`);
    } catch (e) {
      failures.push(`${c.label} ${c.driver}: ${(e as Error)?.stack ?? e}`);
      log(`!! P11 failed on ${c.label} ${c.driver}: ${(e as Error)?.message ?? e}`);
    }
  }
  return { entries, notes, failures };
}

await benchEntry(import.meta.url, "sqlite-writes", runSqliteWrites, worker);
