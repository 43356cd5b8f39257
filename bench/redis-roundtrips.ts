/**
 * P7: Redis round trips per batch. Batches of 1, 100, 1000 and 5000 rows go
 * through the processor (schema, watermark, dedupe) into `redisStore`, with
 * a file offline store, on Node, Bun and Deno. Two independent counts:
 *
 * - `INFO commandstats` deltas: EVALSHA + EVAL calls per batch (script
 *   calls), and the commands the script ran inside Redis (HMGET, HSET, ...);
 * - MONITOR: every command a client sent, by its source, so that a command
 *   outside the script (a stray HGET, a retried EVAL) counts as a round trip.
 *
 * The value is the largest number of client commands seen for one batch.
 * Goal: 1 (one script call per batch; 2 would be allowed with a Redis
 * offline store, and ours is a file).
 *
 *   npx tsx bench/redis-roundtrips.ts [--runs 5] [--runtime node] [--small] [--results dir]
 *
 * The measuring part runs in a worker process on each runtime:
 *   <runtime> bench/redis-roundtrips.ts --worker --url redis://... --sizes 1,100 --repeats 5
 */
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import process from "node:process";
import type { RawRecord } from "../core/index.ts";
import { benchEntry } from "./entry.ts";

const SIZES = [1, 100, 1000, 5000];

interface SizeResult {
  size: number;
  /** Per measured batch: EVALSHA + EVAL calls (INFO commandstats). */
  scriptCalls: number[];
  /** Per measured batch: commands sent by clients other than the benchmark's own (MONITOR). */
  clientCommands: number[];
  /** The client commands seen, by name, over all measured batches of this size. */
  commandNames: Record<string, number>;
  /** Commands run inside Redis per batch (commandstats, scripts' included), averaged. */
  perBatch: Record<string, number>;
  written: number[];
  /** Wall time per batch (with MONITOR on, which slows Redis down: not a throughput figure). */
  ms: number[];
}

type Stats = Record<string, number>;

function parseCommandstats(info: string): Stats {
  const out: Stats = {};
  for (const m of info.matchAll(/^cmdstat_([^:]+):calls=(\d+)/gm)) out[m[1]] = Number(m[2]);
  return out;
}

/** The measuring worker: runs on the runtime under test, prints one JSON line. */
async function worker(argv: string[]): Promise<void> {
  const arg = (n: string) => {
    const i = argv.indexOf(`--${n}`);
    if (i < 0 || i + 1 >= argv.length) throw new Error(`redis-roundtrips worker: --${n} is required`);
    return argv[i + 1];
  };
  const url = arg("url");
  const sizes = arg("sizes").split(",").map(Number);
  const repeats = Number(arg("repeats"));
  const { Redis } = await import("ioredis");
  const { createProcessor } = await import("../mod.ts");
  const { redisStore } = await import("../plugins/stores/redis/redis.ts");
  const { fileOffline, fileDeadLetters } = await import("../plugins/stores/file/index.ts");
  const repo = (await import("./feature_repo.ts")).default;
  const { FEATURES } = await import("./feature_repo.ts");

  const dir = mkdtempSync(join(tmpdir(), "freshet-bench-p7-"));
  const online = redisStore({ url, project: repo.project });
  const offline = fileOffline({ dir });
  const deadLetters = fileDeadLetters(join(dir, "dead-letters.jsonl"));
  const processor = createProcessor({ registry: repo, online, offline, deadLetters });

  const stats = new Redis(url, { maxRetriesPerRequest: 1 });
  // A clean database: every row of every batch is a new entity, so none is skipped as stale.
  await stats.flushall();
  const statsId = String(await stats.client("ID"));
  const statsAddr = /addr=(\S+)/.exec(String(await stats.client("INFO")))![1];
  const seen: { source: string; name: string }[] = [];
  let sentinelSeen: (() => void) | undefined;
  let sentinel = "";
  const monitor = await monitorRedis(url, (args, source) => {
    if (args[0]?.toLowerCase() === "echo" && args[1] === sentinel) return sentinelSeen?.();
    if (source === "lua" || source === statsAddr) return;
    seen.push({ source, name: String(args[0]).toLowerCase() });
  });
  /** Resolves once MONITOR has delivered everything Redis ran before now. */
  const drain = async (tag: string) => {
    sentinel = `freshet-bench-${statsId}-${tag}`;
    const got = new Promise<void>((r) => (sentinelSeen = r));
    await stats.echo(sentinel);
    await Promise.race([got, new Promise((_, rej) => setTimeout(() => rej(new Error("MONITOR did not deliver the sentinel")), 5000))]);
  };

  let nextId = 1;
  const batch = (n: number): RawRecord[] => {
    const ts = Date.now();
    return Array.from({ length: n }, (_, index) => {
      const value: Record<string, unknown> = { user_id: nextId++, event_timestamp: ts };
      for (const [j, f] of FEATURES.entries()) value[f] = (index + j) % 100;
      return { value, position: { kind: "memory", index } } as RawRecord;
    });
  };

  // Warm-up: connects, and loads the script (EVALSHA answers NOSCRIPT once, then EVAL).
  const warm = await processor.process("bench_push", batch(10));
  if (warm.written !== 10) throw new Error(`warm-up wrote ${warm.written} of 10 rows: ${JSON.stringify(warm)}`);
  await drain("warm");

  const results: SizeResult[] = [];
  for (const size of sizes) {
    const r: SizeResult = { size, scriptCalls: [], clientCommands: [], commandNames: {}, perBatch: {}, written: [], ms: [] };
    const totals: Stats = {};
    for (let k = 0; k < repeats; k++) {
      const records = batch(size);
      const before = parseCommandstats(String(await stats.info("commandstats")));
      seen.length = 0;
      const t0 = performance.now();
      const res = await processor.process("bench_push", records);
      r.ms.push(performance.now() - t0);
      await drain(`${size}-${k}`);
      const after = parseCommandstats(String(await stats.info("commandstats")));
      r.written.push(res.written);
      for (const [name, calls] of Object.entries(after)) {
        const d = calls - (before[name] ?? 0);
        if (d && !["info", "echo", "monitor", "client"].includes(name)) totals[name] = (totals[name] ?? 0) + d;
      }
      r.scriptCalls.push((after.evalsha ?? 0) - (before.evalsha ?? 0) + (after.eval ?? 0) - (before.eval ?? 0));
      r.clientCommands.push(seen.length);
      for (const s of seen) r.commandNames[s.name] = (r.commandNames[s.name] ?? 0) + 1;
    }
    for (const [name, n] of Object.entries(totals)) r.perBatch[name] = Math.round((n / repeats) * 100) / 100;
    results.push(r);
  }
  const runtime = "Bun" in globalThis ? "bun" : "Deno" in globalThis ? "deno" : "node";
  console.log("P7_RESULT " + JSON.stringify({ runtime, results }));
  monitor.close();
  stats.disconnect();
  await online.close?.();
  await offline.close?.();
  await deadLetters.close?.();
  rmSync(dir, { recursive: true, force: true });
}

/**
 * MONITOR over a plain socket: each line `+<time> [<db> <source>] "<cmd>" "<arg>"...`.
 * By hand rather than ioredis's monitor mode, which on Bun under load can
 * take the first monitor line for the reply of another command ("Command
 * queue state error").
 */
async function monitorRedis(url: string, onCommand: (args: string[], source: string) => void): Promise<{ close(): void }> {
  const { connect } = await import("node:net");
  const u = new URL(url);
  const socket = connect(Number(u.port || 6379), u.hostname);
  let buf = "";
  let ready!: () => void;
  const started = new Promise<void>((r) => (ready = r));
  socket.setEncoding("utf8");
  socket.on("data", (chunk: string) => {
    buf += chunk;
    let i;
    while ((i = buf.indexOf("\r\n")) >= 0) {
      const line = buf.slice(0, i);
      buf = buf.slice(i + 2);
      if (line === "+OK") {
        ready();
        continue;
      }
      const m = /^\+\S+ \[\d+ (\S+)\] (.*)$/.exec(line);
      if (!m) continue;
      const args = [...m[2].matchAll(/"((?:[^"\\]|\\.)*)"/g)].map((a) => a[1].replace(/\\(.)/g, "$1"));
      onCommand(args, m[1]);
    }
  });
  socket.write("MONITOR\r\n");
  await started;
  return { close: () => socket.destroy() };
}

/** Runs the worker on every runtime of `opts` against one redis-server; returns the entries and notes. */
export async function runRoundtrips(opts: import("./lib.ts").BenchOptions, log: (m: string) => void = (m) => console.log(m)) {
  const { absoluteEntry, run, tsCommand } = await import("./lib.ts");
  const { startRedis } = await import("../tests/services/redis.ts");
  const redis = await startRedis();
  const entries: import("./lib.ts").Entry[] = [];
  const notes: string[] = [];
  const failures: string[] = [];
  try {
    for (const rt of opts.runtimes) {
      log(`P7 ${rt}: batches of ${SIZES.join(", ")} rows through the processor into redisStore, ${opts.runs} batch(es) per size`);
      try {
        const [cmd, args] = tsCommand(rt, "bench/redis-roundtrips.ts", ["--worker", "--url", redis.url, "--sizes", SIZES.join(","), "--repeats", String(opts.runs)]);
        const out = await run(cmd, args, { timeoutMs: 180_000 });
        const line = out.split("\n").find((l) => l.startsWith("P7_RESULT "));
        if (!line) throw new Error(`the worker printed no result:\n${out}`);
        const { results } = JSON.parse(line.slice("P7_RESULT ".length)) as { results: SizeResult[] };
        const perBatch = results.flatMap((r) => r.clientCommands.map((c, i) => Math.max(c, r.scriptCalls[i])));
        for (const r of results) {
          const bad = r.written.filter((w) => w !== r.size);
          const line = `  ${String(r.size).padStart(5)} rows: script calls ${r.scriptCalls.join(",")}; client commands ${r.clientCommands.join(",")} (${Object.entries(r.commandNames).map(([k, v]) => `${k} x${v}`).join(", ") || "none"}); inside Redis per batch: ${Object.entries(r.perBatch).map(([k, v]) => `${k} ${v}`).join(", ")}; written ${r.written.join(",")}${bad.length ? " (NOT ALL WRITTEN)" : ""}`;
          log(line);
          notes.push(`P7 ${rt} ${line.trim()}`);
          if (bad.length) throw new Error(`batches of ${r.size} wrote ${bad.join(",")} rows: the measurement would flatter`);
        }
        entries.push(absoluteEntry("P7", rt, "Redis calls per batch (max over 1-5000 rows)", "== 1", perBatch, Math.max(...perBatch)));
      } catch (e) {
        failures.push(`${rt}: ${(e as Error)?.stack ?? e}`);
        log(`!! P7 failed on ${rt}: ${(e as Error)?.message ?? e}`);
      }
    }
  } finally {
    await redis.stop();
  }
  return { entries, notes, failures };
}

await benchEntry(import.meta.url, "redis-roundtrips", runRoundtrips, worker);
