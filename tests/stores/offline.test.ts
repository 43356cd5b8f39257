/**
 * The file offline log: Hive layout by event date, Parquet and JSON Lines,
 * per-writer file names, compaction that survives a crash, read back by
 * DuckDB and by `read`, and two writer processes into one directory.
 */
import { describe, it, after } from "node:test";
import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import { copyFile, mkdir, mkdtemp, readdir, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import process from "node:process";
import { pathToFileURL } from "node:url";
import { DuckDBInstance } from "@duckdb/node-api";
import * as v from "valibot";
import { createProcessor, entity, featureRepo, type FeatureRow, pushSource, streamFeatureView } from "../../mod.ts";
import { compactCommand } from "../../adapters/historical.ts";
import { fileOffline } from "../../plugins/stores/file/index.ts";
import { memoryDeadLetters, memoryStore } from "../../plugins/stores/memory.ts";
import { conformanceRepo } from "../../testing/online-store.ts";

const dirs: string[] = [];
const tempDir = async () => {
  const d = await mkdtemp(join(tmpdir(), "freshet-offline-"));
  dirs.push(d);
  return d;
};
after(async () => {
  for (const d of dirs) await rm(d, { recursive: true, force: true });
});

const view = conformanceRepo.view("conf_stats");
const DAY = 86_400_000;
const T0 = Date.UTC(2026, 0, 1);
const row = (id: number, eventTime: number, trips: number, createdTime?: number): FeatureRow => ({
  entityKey: `driver_id=${id}`,
  values: { conv_rate: id % 3 ? 0.5 : null, trips, label: id % 2 ? `l${id}` : null },
  eventTime,
  ...(createdTime === undefined ? {} : { createdTime }),
  position: { kind: "kafka", topic: "t", partition: id % 2, offset: String(id) },
});

const ROOT = new URL("../../", import.meta.url).pathname;
const MOD = pathToFileURL(join(ROOT, "plugins/stores/file/index.ts")).href;
const CONF = pathToFileURL(join(ROOT, "testing/online-store.ts")).href;

/** Runs `code` (an ES module body) in a child process of this runtime: its output, exit, and a SIGKILL. */
function child(code: string): { done: Promise<string>; output: () => string; kill: () => void } {
  const g = globalThis as { Bun?: unknown; Deno?: unknown };
  const args = g.Deno ? ["eval", code] : g.Bun ? ["-e", code] : ["--import", "tsx", "--input-type=module", "-e", code];
  const p = spawn(process.execPath, args, { cwd: ROOT, stdio: ["ignore", "pipe", "pipe"] });
  let out = "";
  p.stdout.on("data", (d) => (out += d));
  p.stderr.on("data", (d) => (out += d));
  const done = new Promise<string>((resolve, reject) => p.on("exit", (c, sig) => (c === 0 ? resolve(out) : reject(new Error(`child exited ${c ?? sig}: ${out}`)))));
  return { done, output: () => out, kill: () => p.kill("SIGKILL") };
}

async function duck<T = Record<string, unknown>>(sql: string): Promise<T[]> {
  const inst = await DuckDBInstance.create(":memory:");
  const con = await inst.connect();
  try {
    return (await con.runAndReadAll(sql)).getRowObjectsJS() as T[];
  } finally {
    con.closeSync();
    inst.closeSync();
  }
}

async function readAll(log: ReturnType<typeof fileOffline>, range = {}): Promise<FeatureRow[]> {
  const out: FeatureRow[] = [];
  for await (const c of log.read(view, range)) out.push(...c);
  return out;
}

const sortRows = (rows: FeatureRow[]) => [...rows].sort((a, b) => a.eventTime - b.eventTime || (a.entityKey < b.entityKey ? -1 : 1));
const strip = ({ logSeq: _, ...r }: FeatureRow) => r;

describe("fileOffline: Parquet in the Hive layout", () => {
  it("writes <view>/date=YYYY-MM-DD/<writer>-N.parquet that DuckDB reads as it is, and reads it back", async () => {
    const dir = await tempDir();
    const log = fileOffline({ dir, writerId: "w1", compactAfter: 0 });
    const rows = Array.from({ length: 10 }, (_, i) => row(100 + i, T0 + i * 0.3 * DAY, i, i % 2 ? T0 + i * 0.3 * DAY + 5 : undefined));
    await log.append(view, rows.slice(0, 6));
    await log.append(view, rows.slice(6));
    const root = join(dir, "offline", "conf_stats");
    assert.deepEqual((await readdir(root)).sort(), ["date=2026-01-01", "date=2026-01-02", "date=2026-01-03"]);
    assert.deepEqual(await readdir(join(root, "date=2026-01-01")), ["w1-00000001.parquet"]);

    const got = await duck<{ driver_id: bigint; trips: number; conv_rate: number | null; label: string | null; event_timestamp: Date; created_timestamp: Date | null; _position: string; date: unknown }>(
      `SELECT * FROM read_parquet('${root}/*/*.parquet', hive_partitioning = true) ORDER BY event_timestamp`,
    );
    assert.equal(got.length, 10);
    assert.deepEqual(got.map((r) => r.driver_id), rows.map((_, i) => BigInt(100 + i)), "a numeric join key is an INT64");
    assert.equal(got[1].event_timestamp.getTime(), T0 + 0.3 * DAY);
    assert.equal(got[1].created_timestamp!.getTime(), T0 + 0.3 * DAY + 5);
    assert.equal(got[0].created_timestamp, null, "a row without a created time has none (not the append time)");
    assert.equal(got[1].conv_rate, 0.5);
    assert.equal(got[2].conv_rate, null);
    assert.equal(got[1].label, "l101");
    assert.deepEqual(JSON.parse(got[1]._position), { kind: "kafka", topic: "t", partition: 1, offset: "101" });
    assert.equal(new Date(got[9].date as string).toISOString().slice(0, 10), "2026-01-03", "the Hive partition column");

    const back = sortRows(await readAll(log));
    assert.deepEqual(back.map(strip), rows);
    assert.ok(back.every((r) => typeof r.logSeq === "string"));
    assert.equal(new Set(back.map((r) => r.logSeq)).size, 10);
    const ranged = await readAll(log, { start: T0 + DAY, end: T0 + 2 * DAY });
    assert.deepEqual(sortRows(ranged).map((r) => r.entityKey), [104, 105, 106].map((i) => `driver_id=${i}`));
    await log.close();
  });

  it("names files after a writer id unique per process by default", async () => {
    const dir = await tempDir();
    const a = fileOffline({ dir });
    const b = fileOffline({ dir });
    assert.notEqual(a.writerId, b.writerId);
    assert.match(a.writerId, new RegExp(`-${process.pid}-[0-9a-f]{8}$`));
    await a.append(view, [row(1, T0, 1)]);
    await b.append(view, [row(1, T0, 1)]);
    const files = await readdir(join(dir, "offline", "conf_stats", "date=2026-01-01"));
    assert.equal(files.length, 2);
    assert.equal((await readAll(a)).length, 2, "every writer's files are read");
  });

  it("ignores hidden temporary files, as DuckDB's glob does", async () => {
    const dir = await tempDir();
    const log = fileOffline({ dir, writerId: "w" });
    await log.append(view, [row(1, T0, 1)]);
    const part = join(dir, "offline", "conf_stats", "date=2026-01-01");
    await writeFile(join(part, ".w-00000009.parquet.tmp"), "half a file");
    assert.equal((await readAll(log)).length, 1);
    assert.equal((await duck<{ n: bigint }>(`SELECT count(*) AS n FROM '${part}/*.parquet'`))[0].n, 1n);
  });

  it("compacts a writer's small files into one, and loses nothing when killed between the rename and the deletes", async () => {
    const dir = await tempDir();
    const log = fileOffline({ dir, writerId: "w", compactAfter: 4 });
    const rows = Array.from({ length: 11 }, (_, i) => row(i, T0 + i * 1000, i));
    const part = join(dir, "offline", "conf_stats", "date=2026-01-01");
    for (const r of rows.slice(0, 3)) await log.append(view, [r]);
    const before = await readdir(part);
    assert.equal(before.length, 3);
    // Keep copies of the small files, to play a compaction that died before deleting them.
    await mkdir(join(dir, "keep"));
    for (const f of before) await copyFile(join(part, f), join(dir, "keep", f));
    for (const r of rows.slice(3)) await log.append(view, [r]);
    await log.close();
    const after = await readdir(part);
    assert.ok(after.length < 11, `compacted: ${after.join(" ")}`);
    assert.ok(after.some((f) => /^w-c\d+\.parquet$/.test(f)));
    assert.deepEqual(sortRows(await readAll(log)).map(strip), rows);

    // The crash: the compacted file is in place and the files it replaced are still there.
    for (const f of before) await copyFile(join(dir, "keep", f), join(part, f));
    assert.deepEqual(sortRows(await readAll(log)).map(strip), rows, "read skips the replaced files: nothing twice");
    const dup = await duck<{ n: bigint; seqs: bigint }>(`SELECT count(*) AS n, count(DISTINCT _log_seq) AS seqs FROM '${part}/*.parquet'`);
    assert.equal(dup[0].seqs, 11n, "a raw reader sees the same rows twice (same _log_seq) only until the next compaction");
    // A later writer's compaction deletes them.
    const next = fileOffline({ dir, writerId: "w2", compactAfter: 2 });
    await next.append(view, [row(50, T0 + 50_000, 50)]);
    await next.append(view, [row(51, T0 + 51_000, 51)]);
    await next.close();
    for (const f of before) assert.ok(!(await readdir(part)).includes(f), `${f} deleted`);
    const n = await duck<{ n: bigint }>(`SELECT count(*) AS n FROM '${part}/*.parquet'`);
    assert.equal(n[0].n, 13n);
  });

  it("reads the single-file JSON Lines log of earlier versions", async () => {
    const dir = await tempDir();
    await mkdir(join(dir, "offline"), { recursive: true });
    await writeFile(join(dir, "offline", "conf_stats.jsonl"), '{"driver_id":1,"trips":1,"event_timestamp":"2026-01-01T00:00:00Z","created":"2026-01-01T00:00:01Z"}\n{"driver_id":2,"tri');
    const log = fileOffline({ dir });
    await log.append(view, [row(3, T0 + 5, 3)]);
    const got = sortRows(await readAll(log));
    assert.deepEqual(got.map((r) => r.entityKey), ["driver_id=1", "driver_id=3"]);
    assert.equal(got[0].createdTime, T0 + 1000);
  });
});

describe("fileOffline: JSON Lines", () => {
  it("appends <view>/date=YYYY-MM-DD/<writer>.jsonl, read by DuckDB and by read, skipping a torn line", async () => {
    const dir = await tempDir();
    const log = fileOffline({ dir, format: "jsonl", writerId: "j1" });
    const rows = Array.from({ length: 6 }, (_, i) => row(i, T0 + i * 0.4 * DAY, i, i === 2 ? T0 + 3 : undefined));
    await Promise.all([log.append(view, rows.slice(0, 3)), log.append(view, rows.slice(3))]);
    await log.close();
    const root = join(dir, "offline", "conf_stats");
    assert.deepEqual(await readdir(join(root, "date=2026-01-01")), ["j1.jsonl"]);
    const got = await duck<{ n: bigint }>(`SELECT count(*) AS n FROM read_json_auto('${root}/*/*.jsonl', hive_partitioning = true)`);
    assert.equal(got[0].n, 6n);
    await writeFile(join(root, "date=2026-01-01", "j1.jsonl"), '{"driver_id":9,"tri', { flag: "a" });
    assert.deepEqual(sortRows(await readAll(log)).map(strip), rows);
  });

  it("refuses an unknown format", () => {
    assert.throws(() => fileOffline({ dir: "x", format: "csv" as never }), /format "csv" is not one of "parquet", "jsonl"/);
  });
});

describe("the processor's offline rows", () => {
  it("logs every accepted row, late ones too, with its source position", async () => {
    const driver = entity({ name: "driver", joinKeys: ["driver_id"] });
    const src = pushSource({ name: "p", timestampField: "ts" });
    const repo = featureRepo({
      project: "p",
      definitions: [streamFeatureView({ name: "late_view", entities: [driver], source: src, ttl: "1d", watermarkDelay: "1m", offline: true, schema: v.object({ driver_id: v.number(), x: v.number(), ts: v.string() }) })],
    });
    const dir = await tempDir();
    const offline = fileOffline({ dir, writerId: "p" });
    const processor = createProcessor({ registry: repo, online: memoryStore(), offline, deadLetters: memoryDeadLetters() });
    const now = Date.now();
    await processor.process("p", [{ value: { driver_id: 1, x: 1, ts: new Date(now).toISOString() }, position: { kind: "push", requestId: "r1", index: 0 } }]);
    const late = await processor.process("p", [{ value: { driver_id: 1, x: 2, ts: new Date(now - 3_600_000).toISOString() }, position: { kind: "push", requestId: "r2", index: 0 } }]);
    assert.equal(late.lateArrivals, 1);
    const rows: FeatureRow[] = [];
    for await (const c of offline.read(repo.view("late_view"), {})) rows.push(...c);
    assert.deepEqual(rows.map((r) => r.values.x).sort(), [1, 2]);
    assert.deepEqual(rows.find((r) => r.values.x === 2)!.position, { kind: "push", requestId: "r2", index: 0 });
  });
});

describe("two writer processes into one directory", () => {
  it("DuckDB reads every row of both, nothing lost or duplicated, while each compacts its own files", async () => {
    const dir = await tempDir();
    const N = 400;
    const code = (w: number) => `
      const { fileOffline } = await import(${JSON.stringify(MOD)});
      const { conformanceRepo } = await import(${JSON.stringify(CONF)});
      const view = conformanceRepo.view("conf_stats");
      const log = fileOffline({ dir: ${JSON.stringify(dir)}, compactAfter: 8 });
      for (let b = 0; b < ${N / 10}; b++) {
        const rows = [];
        for (let i = 0; i < 10; i++) {
          const n = b * 10 + i;
          rows.push({ entityKey: "driver_id=" + (${w} * 100000 + n), values: { conv_rate: 0.5, trips: n, label: null }, eventTime: ${T0} + (n % 3) * ${DAY} + n, position: { kind: "memory", index: n } });
        }
        await log.append(view, rows);
      }
      await log.close();
      console.log("done " + log.writerId);
    `;
    const run = (w: number) => child(code(w)).done;
    const outs = await Promise.all([run(1), run(2)]);
    assert.ok(outs.every((o) => o.includes("done ")), outs.join("\n"));
    const root = join(dir, "offline", "conf_stats");
    const counts = await duck<{ n: bigint; keys: bigint; seqs: bigint; writers: bigint }>(
      `SELECT count(*) AS n, count(DISTINCT _entity_key) AS keys, count(DISTINCT _log_seq) AS seqs, count(DISTINCT split_part(_log_seq, '.', 2)) AS writers FROM read_parquet('${root}/*/*.parquet', hive_partitioning = true)`,
    );
    assert.deepEqual(counts[0], { n: BigInt(2 * N), keys: BigInt(2 * N), seqs: BigInt(2 * N), writers: 2n });
    const files = (await Promise.all((await readdir(root)).map((p) => readdir(join(root, p))))).flat();
    assert.ok(files.length < (2 * N) / 10 * 3, `compacted: ${files.length} files`);
  });
});

/** A writer process that appends `batches` small files of `rows` rows to two partitions, says "ready", and waits to be SIGKILLed. */
async function killedWriter(dir: string, batches: number, rows: number, first = 0): Promise<void> {
  const w = child(`
    const { fileOffline } = await import(${JSON.stringify(MOD)});
    const { conformanceRepo } = await import(${JSON.stringify(CONF)});
    const view = conformanceRepo.view("conf_stats");
    const log = fileOffline({ dir: ${JSON.stringify(dir)}, compactAfter: 0 });
    for (let b = 0; b < ${batches}; b++) {
      const rows = [];
      for (let i = 0; i < ${rows}; i++) {
        const n = ${first} + b * ${rows} + i;
        rows.push({ entityKey: "driver_id=" + n, values: { conv_rate: n / 7, trips: n, label: "x" + n }, eventTime: ${T0} + (b % 2) * ${DAY} + i, position: { kind: "memory", index: n } });
      }
      await log.append(view, rows);
    }
    console.log("ready " + log.writerId);
    setInterval(() => {}, 1000);
  `);
  const t = Date.now();
  while (!w.output().includes("ready")) {
    if (Date.now() - t > 60_000) throw new Error(`the writer did not get ready: ${w.output()}`);
    await new Promise((r) => setTimeout(r, 20));
  }
  w.kill();
  await w.done.catch(() => {});
}

const logRows = (root: string) => duck<Record<string, unknown>>(`SELECT * EXCLUDE (date) FROM read_parquet('${root}/*/*.parquet', hive_partitioning = true) ORDER BY _log_seq`);
const partitionFiles = async (root: string) => (await Promise.all((await readdir(root)).map(async (p) => (await readdir(join(root, p))).map((f) => `${p}/${f}`)))).flat().sort();

describe("the small files of a writer that is gone", () => {
  it("a SIGKILLed writer's small files are adopted by the next writer into a partition it appends to, and by compact(views) elsewhere; DuckDB reads the same rows before and after; a live writer's files are left alone", async () => {
    const dir = await tempDir();
    const root = join(dir, "offline", "conf_stats");
    await killedWriter(dir, 12, 5);
    const alive = fileOffline({ dir, writerId: "alive", compactAfter: 0 });
    await alive.append(view, [row(900, T0 + 50, 900), row(901, T0 + 51, 901)]);
    await alive.append(view, [row(902, T0 + 52, 902)]);
    const before = await logRows(root);
    assert.equal(before.length, 63);
    const filesBefore = await partitionFiles(root);
    assert.equal(filesBefore.length, 14, filesBefore.join(" "));

    const next = fileOffline({ dir, writerId: "next", compactAfter: 4 });
    await next.append(view, [row(1000, T0 + 100, 1000)]);
    await next.close();
    let files = await partitionFiles(root);
    assert.deepEqual(files.filter((f) => f.startsWith("date=2026-01-01/")), ["date=2026-01-01/alive-00000001.parquet", "date=2026-01-01/alive-00000002.parquet", "date=2026-01-01/next-c00000002.parquet"], "the killed writer's 6 files and next's own one compacted as one; the live writer's left alone");
    assert.equal(files.filter((f) => f.startsWith("date=2026-01-02/")).length, 6, "a partition nobody appends to waits for compact");
    await next.compact([view]);
    files = await partitionFiles(root);
    assert.deepEqual(files.filter((f) => f.startsWith("date=2026-01-02/")), ["date=2026-01-02/next-c00000003.parquet"]);

    const afterRows = await logRows(root);
    assert.equal(afterRows.length, 64);
    assert.deepEqual(afterRows.filter((r) => r._entity_key !== "driver_id=1000"), before, "every row, once, unchanged");
    const read = await readAll(next);
    assert.equal(read.length, 64);
    assert.equal(new Set(read.map((r) => r.logSeq)).size, 64);

    // Once the live writer closes, it is gone too: its files are adopted.
    await alive.close();
    await fileOffline({ dir, writerId: "third" }).compact([view]);
    files = await partitionFiles(root);
    assert.equal(files.filter((f) => f.startsWith("date=2026-01-01/")).length, 1, files.join(" "));
    assert.deepEqual(await logRows(root), afterRows);
  });

  it("freshet compact adopts them in every partition of the view", async () => {
    const dir = await tempDir();
    const root = join(dir, "offline", "conf_stats");
    await killedWriter(dir, 6, 3);
    const before = await logRows(root);
    assert.equal((await partitionFiles(root)).length, 6);
    const repoFile = join(dir, "repo.ts");
    await writeFile(repoFile, `export { conformanceRepo as default } from ${JSON.stringify(CONF)};\n`);
    const lines: string[] = [];
    await compactCommand([repoFile, "--view", "conf_stats", "--data-dir", dir], (l) => lines.push(l));
    assert.deepEqual((await partitionFiles(root)).map((f) => f.replace(/\/.*-c/, "/-c")), ["date=2026-01-01/-c00000001.parquet", "date=2026-01-02/-c00000002.parquet"]);
    assert.match(lines.join("\n"), /compact: conf_stats: 6 files before, 2 after/);
    assert.deepEqual(await logRows(root), before);
  });

  it("two processes compacting the same orphaned files at once: every row once (the partition's compaction lock)", async () => {
    const dir = await tempDir();
    const root = join(dir, "offline", "conf_stats");
    await killedWriter(dir, 20, 1000);
    const before = await logRows(root);
    assert.equal(before.length, 20_000);
    const go = join(dir, "go");
    const compactor = () => child(`
      const { existsSync } = await import("node:fs");
      const { fileOffline } = await import(${JSON.stringify(MOD)});
      const { conformanceRepo } = await import(${JSON.stringify(CONF)});
      const log = fileOffline({ dir: ${JSON.stringify(dir)} });
      console.log("waiting");
      while (!existsSync(${JSON.stringify(go)})) await new Promise((r) => setTimeout(r, 5));
      await log.compact([conformanceRepo.view("conf_stats")]);
      console.log("compacted");
    `);
    const a = compactor(), b = compactor();
    // Both are up and waiting (each has loaded the store module) before the start.
    while (!a.output().includes("waiting") || !b.output().includes("waiting")) await new Promise((r) => setTimeout(r, 10));
    await writeFile(go, "");
    await Promise.all([a.done, b.done]);
    const files = await partitionFiles(root);
    assert.ok(files.length <= 4, `compacted: ${files.join(" ")}`);
    assert.ok(files.every((f) => /-c\d+\.parquet$/.test(f)), files.join(" "));
    const afterRows = await logRows(root);
    assert.equal(afterRows.length, 20_000, "nothing duplicated or lost");
    assert.deepEqual(afterRows, before);
  });
});
