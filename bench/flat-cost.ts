/**
 * The flat-cost table of issue 9 (beside P11): what one 1-row `write` costs
 * the file store (plugins/stores/file) and the SQLite store when they
 * already hold 1k, 100k and 1M entities. It must be flat: the old file
 * store rewrote its whole JSON file per flush (2.4 ms at 1k, 232 ms at 200k).
 *
 * Per store, in one process on the runtime under test: one fresh store per
 * size, all open at once, each filled untimed in batches of 5000 rows (the
 * file store is then compacted, untimed, so the timed writes start on a
 * fresh log; the time that took is printed, as writes wait during a
 * compaction); then rounds of one write to each size in turn (A B C A B C),
 * each round a single-row write to an existing entity (random, newer) and
 * one to a new entity, each awaited and timed alone: `writes` rounds,
 * after 100 untimed warm-up rounds. Both stores run
 * with their durable defaults: the file store fdatasyncs its log per write
 * group, SQLite commits with synchronous = FULL in WAL mode.
 *
 * Entries (id P11, the embedded-store benchmark): value is the median ms
 * of a 1-row write at the largest size, baseline the median at the
 * smallest, ratio value / baseline, goal "<= 1.5" (flat within noise); min
 * and max are that ratio for existing and new entities taken apart, and
 * the table of medians and p99 per size is in the notes.
 *
 *   npx tsx bench/flat-cost.ts [--runtime node] [--small] [--results dir]
 *
 * The measuring part runs on each runtime:
 *   <runtime> bench/flat-cost.ts --worker --store file --sizes 1000,100000,1000000 --writes 1000
 */
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import process from "node:process";
import type { FeatureRow, OnlineStore } from "../core/index.ts";
import type { BenchOptions, Entry, Runtime } from "./lib.ts";
import { benchEntry } from "./entry.ts";

const FILL_BATCH = 5000;
const GOAL = "<= 1.5";

type StoreName = "file" | "sqlite";

interface SizeResult {
  size: number;
  fillSecs: number;
  compactSecs: number | null;
  /** ms, sorted, of the writes to existing entities and to new ones. */
  existing: { p50: number; p99: number; max: number };
  fresh: { p50: number; p99: number; max: number };
  all: { p50: number; p99: number };
  /** Process CPU over the timed writes (all sizes together), as a share of one core. */
  cpu: number;
  /** The process's RSS with every size open and filled. */
  rssMb: number;
  driver: string;
}

const pct = (sorted: Float64Array, p: number) => sorted[Math.min(sorted.length - 1, Math.max(0, Math.ceil((p / 100) * sorted.length) - 1))];
const round = (x: number) => Math.round(x * 1000) / 1000;
const summary = (xs: number[]) => {
  const s = Float64Array.from(xs).sort();
  return { p50: round(pct(s, 50)), p99: round(pct(s, 99)), max: round(s[s.length - 1]) };
};

async function worker(argv: string[]): Promise<void> {
  const arg = (n: string) => {
    const i = argv.indexOf(`--${n}`);
    if (i < 0 || i + 1 >= argv.length) throw new Error(`flat-cost worker: --${n} is required`);
    return argv[i + 1];
  };
  const storeName = arg("store") as StoreName;
  const sizes = arg("sizes").split(",").map(Number);
  const writes = Number(arg("writes"));
  const { benchStats: view, FEATURES } = await import("./feature_repo.ts");
  const { fileStore } = await import("../plugins/stores/file/index.ts");
  const { sqliteStore } = await import("../plugins/stores/sqlite/index.ts");
  const values = (i: number) => Object.fromEntries(FEATURES.map((f, j) => [f, (i + j) % 1000]));
  let seed = 7;
  const rand = () => ((seed = (Math.imul(seed, 1103515245) + 12345) >>> 0) / 2 ** 32);

  const results: SizeResult[] = [];
  interface Open {
    size: number;
    dir: string;
    store: OnlineStore & { compact?: () => Promise<void> };
    fillSecs: number;
    compactSecs: number | null;
    existing: number[];
    fresh: number[];
  }
  const t0 = Date.now() - 60_000;
  const open: Open[] = [];
  let driver: string = storeName;
  try {
    // Every size is open at once, filled, then measured interleaved (one write
    // to each size in turn), so a slow moment of the shared machine falls on
    // every size alike instead of on whichever was measured then.
    for (const size of sizes) {
      const dir = mkdtempSync(join(tmpdir(), `freshet-bench-flat-${storeName}-`));
      let store: Open["store"];
      if (storeName === "file") store = fileStore({ dir });
      else {
        const s = sqliteStore({ path: join(dir, "freshet.db") });
        driver = `sqlite (${(await s.ready()).name})`;
        store = s;
      }
      const o: Open = { size, dir, store, fillSecs: 0, compactSecs: null, existing: [], fresh: [] };
      open.push(o);
      const f0 = performance.now();
      for (let s = 0; s < size; s += FILL_BATCH) {
        const rows: FeatureRow[] = Array.from({ length: Math.min(FILL_BATCH, size - s) }, (_, k) => ({ entityKey: `user_id=${s + k}`, values: values(s + k), eventTime: t0 }));
        const r = await store.write(view, rows);
        if (r.written !== rows.length) throw new Error(`fill wrote ${r.written} of ${rows.length}`);
      }
      o.fillSecs = (performance.now() - f0) / 1000;
      if (store.compact) {
        const c0 = performance.now();
        await store.compact();
        o.compactSecs = (performance.now() - c0) / 1000;
      }
    }
    const warmup = Math.min(100, writes);
    let cpu0 = process.cpuUsage();
    let w0 = performance.now();
    for (let i = 0; i < warmup + writes; i++) {
      if (i === warmup) {
        cpu0 = process.cpuUsage();
        w0 = performance.now();
      }
      for (const o of open) {
        for (const kind of ["existing", "new"] as const) {
          const e = kind === "existing" ? Math.floor(rand() * o.size) : o.size + i;
          const row: FeatureRow = { entityKey: `user_id=${e}`, values: values(e + i + 1), eventTime: t0 + 1 + i };
          const a = performance.now();
          const r = await o.store.write(view, [row]);
          const ms = performance.now() - a;
          if (r.written !== 1) throw new Error(`a 1-row write to ${kind} entity ${e} wrote ${r.written}`);
          if (i >= warmup) (kind === "existing" ? o.existing : o.fresh).push(ms);
        }
      }
    }
    const cpu1 = process.cpuUsage(cpu0);
    const cpu = (cpu1.user + cpu1.system) / 1000 / (performance.now() - w0);
    const rssMb = Math.round(process.memoryUsage().rss / 2 ** 20);
    for (const o of open) {
      const all = summary([...o.existing, ...o.fresh]);
      results.push({
        size: o.size, fillSecs: round(o.fillSecs), compactSecs: o.compactSecs === null ? null : round(o.compactSecs),
        existing: summary(o.existing), fresh: summary(o.fresh), all: { p50: all.p50, p99: all.p99 },
        cpu: round(cpu), rssMb, driver,
      });
    }
  } finally {
    for (const o of open) {
      await o.store.close?.();
      rmSync(o.dir, { recursive: true, force: true });
    }
  }
  const runtime = "Bun" in globalThis ? "bun" : "Deno" in globalThis ? "deno" : "node";
  console.log("FLAT_RESULT " + JSON.stringify({ runtime, store: storeName, results }));
}

const sizeLabel = (n: number) => (n >= 1e6 ? `${n / 1e6}M` : n >= 1e3 ? `${n / 1e3}k` : String(n));

export async function runFlatCost(opts: BenchOptions, log: (m: string) => void = (m) => console.log(m)) {
  const { machine, meets, run, today, tsCommand, versions } = await import("./lib.ts");
  const entries: Entry[] = [];
  const notes: string[] = [];
  const failures: string[] = [];
  const sizes = opts.small ? [100, 1000] : [1000, 100_000, 1_000_000];
  const writes = opts.small ? 20 : 1000;
  const lines: string[] = [];
  for (const rt of opts.runtimes as Runtime[]) {
    for (const store of ["file", "sqlite"] as StoreName[]) {
      log(`flat-cost ${rt} ${store}: 1-row writes at ${sizes.map(sizeLabel).join(", ")} entities, ${writes} to existing + ${writes} to new entities per size`);
      try {
        const [cmd, args] = tsCommand(rt, "bench/flat-cost.ts", ["--worker", "--store", store, "--sizes", sizes.join(","), "--writes", String(writes)]);
        const out = await run(cmd, args, { timeoutMs: 1_200_000 });
        const line = out.split("\n").find((l) => l.startsWith("FLAT_RESULT "));
        if (!line) throw new Error(`the worker printed no result:\n${out}`);
        const { results } = JSON.parse(line.slice("FLAT_RESULT ".length)) as { results: SizeResult[] };
        for (const r of results) {
          const l = `${rt.padEnd(4)}  ${r.driver.padEnd(20)}  ${sizeLabel(r.size).padStart(4)}  existing p50 ${r.existing.p50.toFixed(3)} ms p99 ${r.existing.p99.toFixed(3)} ms  new p50 ${r.fresh.p50.toFixed(3)} ms p99 ${r.fresh.p99.toFixed(3)} ms  (fill ${r.fillSecs.toFixed(1)} s${r.compactSecs === null ? "" : `, compaction ${r.compactSecs.toFixed(2)} s`})`;
          log("  " + l);
          lines.push(l);
        }
        const first = results[0], last = results[results.length - 1];
        const l = `${rt.padEnd(4)}  ${first.driver.padEnd(20)}  timed writes used ${Math.round(first.cpu * 100)}% of a core (the rest: waiting, on fsync or for a core); rss with all sizes open ${first.rssMb} MB`;
        log("  " + l);
        lines.push(l);
        const ratio = round(last.all.p50 / first.all.p50);
        const parts = [last.existing.p50 / first.existing.p50, last.fresh.p50 / first.fresh.p50].map(round);
        entries.push({
          id: "P11", runtime: rt,
          metric: `1-row write p50 ms at ${sizeLabel(last.size)} vs ${sizeLabel(first.size)} entities, ${first.driver} store`,
          value: last.all.p50, baseline: first.all.p50, ratio, goal: GOAL, met: meets(GOAL, ratio),
          runs: 2 * writes, min: Math.min(...parts), max: Math.max(...parts),
          date: today(), machine: machine(), versions: versions(),
        });
      } catch (e) {
        failures.push(`${rt} ${store}: ${(e as Error)?.stack ?? e}`);
        log(`!! flat-cost failed on ${rt} ${store}: ${(e as Error)?.message ?? e}`);
      }
    }
  }
  notes.push(...lines.map((l) => `flat-cost ${l}`));
  return { entries, notes, failures };
}

await benchEntry(import.meta.url, "flat-cost", runFlatCost, worker);
