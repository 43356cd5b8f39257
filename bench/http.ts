/**
 * P3, P4 and P6: the HTTP push receiver and the online feature server, on
 * Node, Bun and Deno, against a real redis-server started here on a free
 * port. Each runtime's server is `freshet serve` (adapters/cli.ts) run by
 * that runtime as a child process; the load comes from `wrk` (C, one
 * thread), so that on a 2-core machine the load generator takes as little
 * CPU from the server as possible.
 *
 * - P3: POST /push with 1 row per request, requests/s, against a bare Hono
 *   app answering 200 (bench/bare-hono.ts) on the same runtime and adapter,
 *   with the same wrk script (same bodies, same connections).
 * - P4: POST /push with 500 rows per request, rows/s, against pipelined
 *   HSET of rows of the same width on the same Redis: redis-benchmark, one
 *   HSET per row of the 11 fields Freshet writes (f0..f9 and _ts, values as
 *   wide as Freshet's), `-P 500`, as many clients as wrk's connections,
 *   random keys over as many keys as the run writes (new hashes, as
 *   Freshet's distinct entities are).
 * - P6: POST /get-online-features, 10 features x 1 entity, p99 latency over
 *   one connection (bench/http-latency.ts), against a bare Hono app on the
 *   same runtime and adapter doing one raw HMGET of the same 11 fields
 *   (bench/bare-hono.ts --hmget), timed by the same client: the HTTP round
 *   trip plus the HMGET.
 *
 * Every pushed row has a distinct entity key and a current event time, and
 * Redis is flushed before each Freshet run, so rows are written, not skipped
 * as stale; the written fraction is read from the server's /metrics and
 * reported.
 *
 *   npx tsx bench/http.ts [--runs 5] [--duration 8] [--runtime node,bun] [--small] [--results dir]
 */
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import process from "node:process";
import { Redis } from "ioredis";
import { startRedis, type RedisService } from "../tests/services/redis.ts";
import { ensureBinary, freePort, startChild, waitFor, type Child } from "../tests/services/system.ts";
import { FEATURES } from "./feature_repo.ts";
import {
  benchMain, cpuNote, fmt, isMain, pairedEntry, paired, ROOT, run, sleep, tsCommand, withCpu,
  type BenchOptions, type Entry, type Runtime,
} from "./lib.ts";

const P3_CONNECTIONS = 32;
const P4_CONNECTIONS = 8;
const P4_ROWS = 500;

// ---- servers --------------------------------------------------------------------

interface Server {
  kind: "freshet" | "bare";
  runtime: Runtime;
  url: string;
  pid?: number;
  child: Child;
}

/** `store` is the freshet store URL; for the bare app, `extra` are more arguments (--read-body). */
async function startServer(rt: Runtime, kind: Server["kind"], store: string, dataDir: string, extra: string[] = []): Promise<Server> {
  const port = await freePort();
  const [cmd, args] = kind === "freshet"
    ? tsCommand(rt, "adapters/cli.ts", ["serve", "bench/feature_repo.ts", "--store", store, "--port", String(port), "--host", "127.0.0.1", "--data-dir", dataDir])
    : tsCommand(rt, "bench/bare-hono.ts", ["--port", String(port), ...extra]);
  const child = startChild(cmd, args, { cwd: ROOT });
  const url = `http://127.0.0.1:${port}`;
  await waitFor(`${kind} server on ${rt}`, async () => {
    try {
      const res = await fetch(`${url}/health`);
      await res.arrayBuffer();
      return res.ok;
    } catch {
      return false;
    }
  }, { timeoutMs: 90_000, intervalMs: 200, child: child.proc, output: child.output });
  return { kind, runtime: rt, url, pid: child.proc.pid, child };
}

// ---- wrk --------------------------------------------------------------------------

interface WrkResult {
  requests: number;
  duration_us: number;
  connect: number;
  read: number;
  write: number;
  status: number;
  timeout: number;
  p50_us: number;
  p99_us: number;
  mean_us: number;
  max_us: number;
  /** CPU share of wrk itself (1 = one core). Latencies above are wrk's, corrected for coordinated omission. */
  cpu?: number;
}

const DONE_LUA = `
function done(summary, latency, requests)
  local e = summary.errors
  io.write(string.format('WRK_RESULT {"requests":%d,"duration_us":%d,"connect":%d,"read":%d,"write":%d,"status":%d,"timeout":%d,"p50_us":%d,"p99_us":%d,"mean_us":%.3f,"max_us":%d}\\n',
    summary.requests, summary.duration, e.connect, e.read, e.write, e.status, e.timeout,
    latency:percentile(50), latency:percentile(99), latency.mean, latency.max))
end
`;

/**
 * A wrk script that POSTs /push bodies of `rows` rows in Feast's columnar
 * shape: distinct user_ids (from `base` up), 10 numeric features and the
 * current time (epoch seconds) as event time, built per request.
 */
export function pushScript(rows: number, base: number): string {
  return `
local rows, nf, base = ${rows}, ${FEATURES.length}, ${base}
local counter = 0
local headers = { ["Content-Type"] = "application/json" }
function request()
  local first = base + counter * rows
  counter = counter + 1
  local ids, col, tss = {}, {}, {}
  local ts = os.time()
  for i = 1, rows do ids[i] = first + i; tss[i] = ts end
  local parts = { '{"push_source_name":"bench_push","to":"online","df":{"user_id":[', table.concat(ids, ","), "]" }
  for j = 0, nf - 1 do
    for i = 1, rows do col[i] = (first + i + j) % 1000 end
    parts[#parts + 1] = ',"f' .. j .. '":[' .. table.concat(col, ",") .. "]"
  end
  parts[#parts + 1] = ',"event_timestamp":[' .. table.concat(tss, ",") .. "]}}"
  return wrk.format("POST", "/push", headers, table.concat(parts))
end
${DONE_LUA}`;
}

export function staticScript(method: string, body: string): string {
  return `
wrk.method = "${method}"
wrk.body = '${body.replace(/\\/g, "\\\\").replace(/'/g, "\\'")}'
wrk.headers["Content-Type"] = "application/json"
${DONE_LUA}`;
}

let scriptDir: string | undefined;
let scriptSeq = 0;
export async function wrk(url: string, script: string, connections: number, seconds: number): Promise<WrkResult> {
  scriptDir ??= mkdtempSync(join(tmpdir(), "freshet-bench-wrk-"));
  const file = join(scriptDir, `s${scriptSeq++}.lua`);
  writeFileSync(file, script);
  const secs = Math.max(1, Math.round(seconds));
  // Through bash, whose `times` prints wrk's CPU time: is the load generator the bottleneck?
  const out = await run("bash", ["-c", 'wrk "$@"; rc=$?; times; exit $rc', "wrk", "-t1", `-c${connections}`, `-d${secs}s`, "--timeout", "10s", "-s", file, url], { timeoutMs: (secs + 60) * 1000 });
  const line = out.split("\n").find((l) => l.startsWith("WRK_RESULT "));
  if (!line) throw new Error(`wrk printed no result:\n${out}`);
  const r = JSON.parse(line.slice("WRK_RESULT ".length)) as WrkResult;
  const times = out.trim().split("\n").slice(-1)[0].match(/(\d+)m([\d.]+)s/g);
  if (times?.length === 2) {
    const secsOf = (t: string) => { const m = /(\d+)m([\d.]+)s/.exec(t)!; return Number(m[1]) * 60 + Number(m[2]); };
    r.cpu = (secsOf(times[0]) + secsOf(times[1])) / (r.duration_us / 1e6);
  }
  return r;
}
export const wrkCpu = (r: WrkResult) => (r.cpu === undefined ? "" : `, wrk cpu ${Math.round(r.cpu * 100)}%`);

export const okRequests = (r: WrkResult) => r.requests - r.status;
export const errorNote = (r: WrkResult) => {
  const n = r.status + r.connect + r.read + r.write + r.timeout;
  return n ? `, ${n} errors (status ${r.status}, connect ${r.connect}, read ${r.read}, write ${r.write}, timeout ${r.timeout})` : "";
};
export function assertFewErrors(r: WrkResult, what: string) {
  const bad = r.status + r.connect + r.read + r.write + r.timeout;
  if (r.requests === 0 || bad > Math.max(2, r.requests * 0.01)) throw new Error(`${what}: ${bad} errors out of ${r.requests} requests${errorNote(r)}`);
}

// ---- Freshet's own counts -----------------------------------------------------------

export async function recordCounts(url: string): Promise<Record<string, number>> {
  const text = await (await fetch(`${url}/metrics`)).text();
  const counts: Record<string, number> = {};
  for (const line of text.split("\n")) {
    if (!line.startsWith("freshet_records_total{")) continue;
    const m = /outcome="(\w+)"[^}]*\}\s+([\d.e+]+)/.exec(line);
    if (m) counts[m[1]] = (counts[m[1]] ?? 0) + Number(m[2]);
  }
  return counts;
}

/**
 * Waits until the server has finished the requests wrk left in flight when
 * it stopped (its record counters stop moving), so that they neither land
 * after the next FLUSHALL nor go missing from the written fraction.
 */
export async function quiesce(url: string): Promise<Record<string, number>> {
  let last = JSON.stringify(await recordCounts(url));
  for (let i = 0; i < 100; i++) {
    await sleep(100);
    const now = await recordCounts(url);
    const text = JSON.stringify(now);
    if (text === last) return now;
    last = text;
  }
  throw new Error(`${url} kept writing 10 s after the load stopped`);
}

export function writtenNote(before: Record<string, number>, after: Record<string, number>): { note: string; written: number; total: number } {
  const delta: Record<string, number> = {};
  let total = 0;
  for (const k of new Set([...Object.keys(before), ...Object.keys(after)])) {
    const d = (after[k] ?? 0) - (before[k] ?? 0);
    if (d) delta[k] = d;
    total += d;
  }
  const written = delta.written ?? 0;
  const others = Object.entries(delta).filter(([k]) => k !== "written").map(([k, v]) => `${k} ${v}`).join(", ");
  return { note: `written ${total ? ((100 * written) / total).toFixed(1) : "0"}% of ${total} rows${others ? ` (${others})` : ""}`, written, total };
}

// ---- the benchmarks -----------------------------------------------------------------

interface Ctx {
  opts: BenchOptions;
  redis: RedisService;
  redisPid?: number;
  client: Redis;
  log: (m: string) => void;
  notes: string[];
  base: number;
  storeCeiling?: string;
}

/** P3: 1 row per request, requests/s, Freshet over bare Hono. */
async function p3(ctx: Ctx, rt: Runtime, bare: Server, freshet: Server): Promise<Entry> {
  const { opts, log } = ctx;
  log(`P3 ${rt}: 1 row per request, ${P3_CONNECTIONS} connections, ${opts.duration}s per run`);
  if (opts.warmup > 0) {
    await wrk(bare.url, pushScript(1, (ctx.base += 1e8)), P3_CONNECTIONS, opts.warmup);
    await ctx.client.flushall();
    await wrk(freshet.url, pushScript(1, (ctx.base += 1e8)), P3_CONNECTIONS, opts.warmup);
    await quiesce(freshet.url);
  }
  let writtenAll = 0, totalAll = 0;
  const pairs = await paired(opts.runs, async () => {
    const { result: r, cpu } = await withCpu({ server: bare.pid }, () => wrk(bare.url, pushScript(1, (ctx.base += 1e8)), P3_CONNECTIONS, opts.duration));
    assertFewErrors(r, `P3 bare ${rt}`);
    return { value: okRequests(r) / (r.duration_us / 1e6), notes: cpuNote(cpu) + wrkCpu(r) + errorNote(r) };
  }, async () => {
    await ctx.client.flushall();
    const before = await recordCounts(freshet.url);
    const { result: r, cpu } = await withCpu({ server: freshet.pid, redis: ctx.redisPid }, () => wrk(freshet.url, pushScript(1, (ctx.base += 1e8)), P3_CONNECTIONS, opts.duration));
    assertFewErrors(r, `P3 freshet ${rt}`);
    const w = writtenNote(before, await quiesce(freshet.url));
    writtenAll += w.written;
    totalAll += w.total;
    return { value: okRequests(r) / (r.duration_us / 1e6), notes: `${w.note}, wrk p99 ${(r.p99_us / 1000).toFixed(2)} ms, ${cpuNote(cpu)}${wrkCpu(r)}${errorNote(r)}` };
  }, log);
  const e = pairedEntry("P3", rt, "requests/s", ">= 0.5", pairs);
  ctx.notes.push(`P3 ${rt}: ${totalAll ? ((100 * writtenAll) / totalAll).toFixed(1) : 0}% of ${totalAll} pushed rows written; ${P3_CONNECTIONS} connections; per run: ${pairs.map((p) => p.notes).join(" | ")}`);
  return e;
}

/**
 * For the analysis of P3, once per runtime: where the CPU of one push goes.
 * The P3 load against four servers: bare Hono, bare Hono that reads and
 * parses the body, Freshet on the memory store, Freshet on Redis; for each,
 * requests/s and the server's CPU time per request.
 */
async function p3Analysis(ctx: Ctx, rt: Runtime, bare: Server, freshet: Server, dataDir: string): Promise<void> {
  const { opts, log } = ctx;
  let body: Server | undefined, memory: Server | undefined;
  try {
    body = await startServer(rt, "bare", "", dataDir, ["--read-body"]);
    memory = await startServer(rt, "freshet", "memory:", dataDir);
    const parts: string[] = [];
    for (const [name, s] of [["bare Hono", bare], ["bare Hono + read and parse the body", body], ["Freshet on the memory store", memory], ["Freshet on Redis", freshet]] as const) {
      await ctx.client.flushall();
      if (opts.warmup > 0) await wrk(s.url, pushScript(1, (ctx.base += 1e8)), P3_CONNECTIONS, opts.warmup);
      const { result: r, cpu } = await withCpu({ server: s.pid }, () => wrk(s.url, pushScript(1, (ctx.base += 1e8)), P3_CONNECTIONS, opts.duration));
      if (s.kind === "freshet") await quiesce(s.url);
      const rps = okRequests(r) / (r.duration_us / 1e6);
      parts.push(`${name}: ${fmt(rps, 0)} req/s, ${cpu.server === undefined ? "?" : Math.round((cpu.server * 1e6) / rps)} us server CPU per request${wrkCpu(r)}`);
    }
    const note = `P3 analysis ${rt} (one run each, 1 row per request): ${parts.join("; ")}`;
    log("  " + note);
    ctx.notes.push(note);
  } finally {
    await body?.child.stop();
    await memory?.child.stop();
  }
}

/**
 * The P4 baseline: `n` rows, each one HSET of the same 11 fields as a row
 * Freshet writes (f0..f9 with 3-digit values and _ts with an epoch-ms
 * value), pipelined 500 deep over P4_CONNECTIONS clients, keys drawn at
 * random from `n` (mostly new hashes). Returns rows/s.
 */
async function redisBenchmark(port: number, n: number): Promise<number> {
  const fields = FEATURES.flatMap((f) => [f, "123"]).concat("_ts", String(Date.now()));
  const out = await run("redis-benchmark", ["-h", "127.0.0.1", "-p", String(port), "-c", String(P4_CONNECTIONS), "-P", String(P4_ROWS), "-n", String(n), "-r", String(n), "-q", "HSET", "bench:bench_stats:__rand_int__", ...fields], { timeoutMs: 300_000 });
  const all = [...out.matchAll(/: ([\d.]+) requests per second/g)];
  if (!all.length) throw new Error(`cannot read redis-benchmark output:\n${out}`);
  return Number(all[all.length - 1][1]);
}

/** P4: 500 rows per request, rows/s, Freshet over redis-benchmark's pipelined HSET of rows of the same width. */
async function p4(ctx: Ctx, rt: Runtime, freshet: Server): Promise<Entry> {
  const { opts, log, redis } = ctx;
  log(`P4 ${rt}: ${P4_ROWS} rows per request, ${P4_CONNECTIONS} connections, ${opts.duration}s per run`);
  // Size redis-benchmark's run to about the same duration as a wrk run.
  let n = 100_000;
  if (!opts.small) {
    await ctx.client.flushall();
    const rate = await redisBenchmark(redis.port, n);
    n = Math.max(n, Math.round((rate * opts.duration) / 100_000) * 100_000);
  }
  if (opts.warmup > 0) {
    await ctx.client.flushall();
    await wrk(freshet.url, pushScript(P4_ROWS, (ctx.base += 1e8)), P4_CONNECTIONS, opts.warmup);
    await quiesce(freshet.url);
  }
  let writtenAll = 0, totalAll = 0;
  const pairs = await paired(opts.runs, async () => {
    await ctx.client.flushall();
    const { result, cpu } = await withCpu({ redis: ctx.redisPid }, () => redisBenchmark(redis.port, n));
    return { value: result, notes: `-n ${n}, ${cpuNote(cpu)}` };
  }, async () => {
    await ctx.client.flushall();
    const before = await recordCounts(freshet.url);
    const { result: r, cpu } = await withCpu({ server: freshet.pid, redis: ctx.redisPid }, () => wrk(freshet.url, pushScript(P4_ROWS, (ctx.base += 1e8)), P4_CONNECTIONS, opts.duration));
    assertFewErrors(r, `P4 freshet ${rt}`);
    const w = writtenNote(before, await quiesce(freshet.url));
    writtenAll += w.written;
    totalAll += w.total;
    // Rows/s counts rows Freshet answered for (200), as wrk saw them.
    return { value: (okRequests(r) * P4_ROWS) / (r.duration_us / 1e6), notes: `${w.note}, ${fmt(okRequests(r) / (r.duration_us / 1e6), 1)} req/s, wrk p99 ${(r.p99_us / 1000).toFixed(1)} ms, ${cpuNote(cpu)}${wrkCpu(r)}${errorNote(r)}` };
  }, log);
  const e = pairedEntry("P4", rt, "rows/s", ">= 0.8", pairs);
  if (!opts.small) ctx.storeCeiling ??= await storeCeiling(ctx);
  ctx.notes.push(`P4 ${rt}: ${totalAll ? ((100 * writtenAll) / totalAll).toFixed(1) : 0}% of ${totalAll} pushed rows written; baseline redis-benchmark HSET of the same 11 fields per row, -P ${P4_ROWS}, ${P4_CONNECTIONS} clients, -r n; Freshet ${P4_CONNECTIONS} connections; per run: ${pairs.map((p) => p.notes).join(" | ")}`);
  return e;
}

/**
 * For the analysis of P4, once: rows/s of `redisStore().write()` alone, 500
 * rows per call and P4's concurrency, from this (Node) process: no HTTP, no
 * processor. What Redis and the write script allow, whatever the server does.
 */
async function storeCeiling(ctx: Ctx): Promise<string> {
  const { redisStore } = await import("../plugins/stores/redis/redis.ts");
  const { benchStats } = await import("./feature_repo.ts");
  const store = redisStore({ url: ctx.redis.url, project: "bench_ceiling" });
  await ctx.client.flushall();
  await ctx.client.config("RESETSTAT");
  let id = 0, rows = 0, allRows = 0;
  const batch = () => {
    const t = Date.now();
    return Array.from({ length: P4_ROWS }, () => {
      const values: Record<string, unknown> = {};
      for (const [j, f] of FEATURES.entries()) values[f] = (id + j) % 1000;
      return { entityKey: `user_id=${++id}`, values, eventTime: t };
    });
  };
  const runFor = async (seconds: number) => {
    const end = performance.now() + seconds * 1000;
    await Promise.all(Array.from({ length: P4_CONNECTIONS }, async () => {
      while (performance.now() < end) {
        const w = await store.write(benchStats, batch());
        rows += w.written;
        allRows += P4_ROWS;
      }
    }));
  };
  await runFor(Math.min(1, ctx.opts.duration));
  rows = 0;
  const { result: seconds, cpu } = await withCpu({ redis: ctx.redisPid, bench: process.pid }, async () => {
    const t0 = performance.now();
    await runFor(ctx.opts.duration);
    return (performance.now() - t0) / 1000;
  });
  const inside = /cmdstat_evalsha:calls=(\d+),usec=(\d+)/.exec(await ctx.client.info("commandstats"));
  await store.close?.();
  await ctx.client.flushall();
  const note = `P4 analysis: redisStore().write() alone (Node, ${P4_CONNECTIONS} writes of ${P4_ROWS} rows in flight, no HTTP, no processor): ${fmt(rows / seconds, 0)} rows/s, ${cpuNote(cpu)}` +
    (inside ? `; Redis spent ${(Number(inside[2]) / allRows).toFixed(1)} us per row inside the write script (commandstats: EVALSHA usec over the ${allRows} rows of ${inside[1]} calls, warm-up included)` : "");
  ctx.log("  " + note);
  ctx.notes.push(note);
  return note;
}

/**
 * P6: /get-online-features 10 features x 1 entity, p99 over one connection,
 * over the p99 of a bare Hono app (same runtime, adapter and client) doing
 * one raw HMGET of the same fields.
 */
async function p6(ctx: Ctx, rt: Runtime, freshet: Server, bare: Server, dataDir: string): Promise<Entry> {
  const { opts, log, client, redis } = ctx;
  log(`P6 ${rt}: get-online-features 10 features x 1 entity, 1 connection, ${opts.duration}s per run`);
  await client.flushall();
  const df: Record<string, unknown[]> = { user_id: [42], event_timestamp: [new Date().toISOString()] };
  for (const [i, f] of FEATURES.entries()) df[f] = [i / 10];
  const pushed = await fetch(`${freshet.url}/push`, { method: "POST", headers: { "content-type": "application/json" }, body: JSON.stringify({ push_source_name: "bench_push", df, to: "online" }) });
  const pushedBody = await pushed.json() as { written?: number };
  if (pushed.status !== 200 || pushedBody.written !== 1) throw new Error(`P6 setup: push answered ${pushed.status} ${JSON.stringify(pushedBody)}`);
  // Whatever the key layout, the one feature key in the flushed database is the entity's hash (metadata keys have "#").
  const keys = (await client.keys("*")).filter((k) => !k.includes(":#"));
  if (keys.length !== 1) throw new Error(`P6 setup: expected one key in Redis, found ${keys.length}: ${keys.slice(0, 3).join(", ")}${keys.length > 3 ? ", ..." : ""}`);
  const stored = await client.hgetall(keys[0]);
  const fields = [...Object.keys(stored).filter((f) => f !== "_ts" && f !== "_ct").sort(), "_ts"];
  if (fields.length !== FEATURES.length + 1) throw new Error(`P6 setup: expected ${FEATURES.length} feature fields in ${keys[0]}, found ${Object.keys(stored).join(",")}`);

  const body = JSON.stringify({ entities: { user_id: [42] }, features: FEATURES.map((f) => `bench_stats:${f}`) });
  const check = await (await fetch(`${freshet.url}/get-online-features`, { method: "POST", headers: { "content-type": "application/json" }, body })).json() as { results: { statuses: string[] }[] };
  const statuses = check.results.slice(1).map((r) => r.statuses[0]);
  if (statuses.length !== FEATURES.length || statuses.some((s) => s !== "PRESENT")) throw new Error(`P6 setup: get-online-features answered ${JSON.stringify(check)}`);

  // Both sides are timed the same way, by a closed loop on the runtime under test over a raw
  // socket (http-latency.ts; wrk's latencies are corrected for coordinated omission, which
  // would not compare with a closed loop), one request at a time.
  const measure = (script: string, args: string[]) => async () => {
    const [cmd, a] = tsCommand(rt, script, [...args, "--duration", String(opts.duration), "--warmup-ops", opts.small ? "200" : "5000"]);
    const out = await run(cmd, a, { timeoutMs: (opts.duration + 90) * 1000 });
    return JSON.parse(out.trim().split("\n").pop()!) as { count: number; p50_us: number; p99_us: number };
  };
  const http = (url: string) => measure("bench/http-latency.ts", ["--url", url, "--body", body]);
  const hmget = await startServer(rt, "bare", "", dataDir, ["--hmget", redis.url, "--key", keys[0], "--fields", fields.join(",")]);
  try {
    const baseUrl = `${hmget.url}/get-online-features`;
    const check = await (await fetch(baseUrl, { method: "POST", headers: { "content-type": "application/json" }, body })).json() as { values: (string | null)[] };
    if (check.values.length !== fields.length || check.values.some((v) => v === null)) throw new Error(`P6 setup: the bare HMGET app answered ${JSON.stringify(check)}`);
    const url = `${freshet.url}/get-online-features`;
    if (opts.warmup > 0) {
      await wrk(baseUrl, staticScript("POST", body), 1, opts.warmup);
      await wrk(url, staticScript("POST", body), 1, opts.warmup);
    }
    const pairs = await paired(opts.runs, async () => {
      const { result: r, cpu } = await withCpu({ server: hmget.pid, redis: ctx.redisPid }, http(baseUrl));
      return { value: r.p99_us / 1000, notes: `${r.count} requests, p50 ${(r.p50_us / 1000).toFixed(3)} ms, ${cpuNote(cpu)}` };
    }, async () => {
      const { result: r, cpu } = await withCpu({ server: freshet.pid, redis: ctx.redisPid }, http(url));
      return { value: r.p99_us / 1000, notes: `${r.count} requests, p50 ${(r.p50_us / 1000).toFixed(3)} ms, ${cpuNote(cpu)}` };
    }, log);
    const e = pairedEntry("P6", rt, "p99 ms", "<= 1.3", pairs);
    const runsNote = `P6 ${rt}: baseline bare Hono + one raw HMGET of ${fields.length} fields (10 features + _ts) on ${keys[0]}; closed loop, 1 connection, timed on ${rt}; per run: ${pairs.map((p) => p.notes).join(" | ")}`;
    if (!opts.small) {
      // For the analysis: the two parts of the baseline apart: bare Hono answering without Redis, and the HMGET alone.
      const floor = await http(`${bare.url}/get-online-features`)();
      const raw = await measure("bench/raw-hmget.ts", ["--url", redis.url, "--key", keys[0], "--fields", fields.join(",")])();
      const floorNote = `P6 analysis ${rt}: same client and request to bare Hono without Redis: p50 ${(floor.p50_us / 1000).toFixed(3)} ms, p99 ${(floor.p99_us / 1000).toFixed(3)} ms; raw HMGET alone (ioredis on ${rt}, closed loop): p50 ${(raw.p50_us / 1000).toFixed(3)} ms, p99 ${(raw.p99_us / 1000).toFixed(3)} ms; baseline p99 ${fmt(e.baseline!, 3)} ms`;
      log("  " + floorNote);
      ctx.notes.push(floorNote);
    }
    ctx.notes.push(runsNote);
    return e;
  } finally {
    await hmget.child.stop();
  }
}

/** Runs P3, P4 and P6 on every runtime of `opts`; returns the entries and notes. */
export async function runHttp(opts: BenchOptions, log: (m: string) => void = (m) => console.log(m)): Promise<{ entries: Entry[]; notes: string[]; failures: string[] }> {
  ensureBinary("wrk", "wrk");
  ensureBinary("redis-benchmark", "redis-tools");
  const redis = await startRedis();
  const client = new Redis(redis.url, { maxRetriesPerRequest: 1 });
  const info = await client.info("server");
  const redisPid = Number(/process_id:(\d+)/.exec(info)?.[1]) || undefined;
  const dataDir = mkdtempSync(join(tmpdir(), "freshet-bench-data-"));
  const ctx: Ctx = { opts, redis, redisPid, client, log, notes: [], base: 0 };
  const entries: Entry[] = [];
  const failures: string[] = [];
  try {
    for (const rt of opts.runtimes) {
      let bare: Server | undefined, freshet: Server | undefined;
      try {
        log(`== ${rt}: starting freshet serve and bare Hono`);
        freshet = await startServer(rt, "freshet", redis.url, dataDir);
        bare = await startServer(rt, "bare", redis.url, dataDir);
        entries.push(await p3(ctx, rt, bare, freshet));
        if (!opts.small) await p3Analysis(ctx, rt, bare, freshet, dataDir);
        entries.push(await p4(ctx, rt, freshet));
        entries.push(await p6(ctx, rt, freshet, bare, dataDir));
      } catch (e) {
        const msg = `${rt}: ${(e as Error)?.stack ?? e}\n${freshet ? "freshet output:\n" + freshet.child.output().slice(-2000) : ""}`;
        failures.push(msg);
        log(`!! http bench failed on ${msg}`);
      } finally {
        await bare?.child.stop();
        await freshet?.child.stop();
      }
    }
  } finally {
    client.disconnect();
    await redis.stop();
    rmSync(dataDir, { recursive: true, force: true });
    if (scriptDir) rmSync(scriptDir, { recursive: true, force: true });
    // Made again by the next wrk() (the workerd bench runs after this one in the same process).
    scriptDir = undefined;
  }
  return { entries, notes: ctx.notes, failures };
}

if (isMain(import.meta.url)) await benchMain("http", runHttp);
