/**
 * P9: Kinesis -> Redis, events/s over 4 shards on kinesis-local
 * (etspaceman's kinesis-mock, tests/services/kinesis.ts), against a raw
 * GetRecords loop over the same shards reading the same records (the
 * ceiling).
 *
 * - The stream is filled once (PutRecords, 500 per call; kinesis-local
 *   takes about 1-2.5 ms of its CPU per record, so this is the slow part),
 *   then every run reads it all from TRIM_HORIZON.
 * - Freshet: kinesisConsumer + consume() + the processor (a view with a
 *   valibot schema, a UDF, a watermark and dedupe: bench/stream-repo.ts)
 *   into redisStore, with its leases and fenced checkpoints in that Redis
 *   (`meta: store.meta`), in a fresh application each run, Redis flushed
 *   first so every record is written, not skipped as stale.
 * - Ceiling: per shard, GetShardIterator(TRIM_HORIZON) then GetRecords in a
 *   loop, JSON.parse of every record and nothing else, paced like the
 *   consumer: the next call on a shard goes at least 200 ms after the
 *   previous answer (Kinesis allows 5 calls/s per shard; the consumer's
 *   MIN_CALL_INTERVAL_MS). The same loop unpaced is reported for
 *   information only.
 * - Both use the same GetRecords Limit (default 1000 records per call, so
 *   that each shard takes several calls: 4 shards x 10 000 records would
 *   otherwise be read in one call per shard, and the figure would be one
 *   round trip).
 * - The rate is measured from the first GetRecords request to the moment
 *   the last record was parsed (ceiling) or acknowledged, i.e. written to
 *   Redis and checkpointed (Freshet). Process start, ListShards, leases,
 *   checkpoint reads and GetShardIterator come before that and are not
 *   counted; the rate with them counted is in the notes.
 * - Each side runs in a child process of the runtime under test (Node by
 *   default), A B A B.
 *
 *   npx tsx bench/kinesis.ts [--runs 5] [--small] [--results dir] [--runtime node,bun]
 *   environment: BENCH_KINESIS_RECORDS (default 24000, small 2000), BENCH_KINESIS_LIMIT (default 1000)
 */
import { cpus, loadavg } from "node:os";
import process from "node:process";
import type { KinesisClient } from "@aws-sdk/client-kinesis";
import { Redis } from "ioredis";
import { createStream, startKinesis } from "../tests/services/kinesis.ts";
import { startRedis } from "../tests/services/redis.ts";
import { cpuSeconds, fmt, median, pairedEntry, runQueueSeconds, type BenchOptions, type Entry, type Pair, type Runtime } from "./lib.ts";
import { benchEvent, streamRepo } from "./stream-repo.ts";
import { arg, childPid, quietLogger, runWorker, streamRuntimes, thisRuntime } from "./worker.ts";

const SHARDS = 4;
const PACE_MS = 200;
const credentials = { accessKeyId: "AKIDLOCAL", secretAccessKey: "local-secret" };
const FILE = "bench/kinesis.ts";

interface WorkerResult {
  runtime: Runtime;
  mode: "raw" | "freshet";
  records: number;
  /** ms from the first GetRecords request to the last record done. */
  elapsedMs: number;
  /** ms from the worker's start (before ListShards) to the last record done. */
  totalMs: number;
  rate: number;
  rateWithStartup: number;
  calls: number;
  /** Mean GetRecords round trip, ms. */
  meanCallMs: number;
  /** Mean ms from an answer to the next GetRecords call on the same shard (the pacing asks for 200). */
  meanGapMs: number;
  /** ms from the first GetRecords to the first of the last shard to start (the first call of each shard; they all come before any second call). */
  startSpreadMs: number;
  counts?: { written: number; stale: number; late: number; invalid: number };
  /** CPU share of the worker over its life (1 = one core), and its CPU seconds from the first GetRecords to the last record. */
  cpu?: number;
  cpuSeconds?: number;
}

// ---- workers ------------------------------------------------------------------------

async function kinesisSdk() {
  const sdk = await import("@aws-sdk/client-kinesis");
  const { NodeHttpHandler } = await import("@smithy/node-http-handler");
  return { sdk, NodeHttpHandler };
}

/** A client configured as kinesisConsumer configures its own, timing GetRecords calls. */
async function timedClient(endpoint: string) {
  const { sdk, NodeHttpHandler } = await kinesisSdk();
  const client: KinesisClient = new sdk.KinesisClient({
    region: "us-east-1", endpoint, credentials, maxAttempts: 1,
    requestHandler: new NodeHttpHandler({ connectionTimeout: 5_000, requestTimeout: 30_000 }),
  });
  const timing = { first: undefined as number | undefined, firstCpu: 0, calls: 0, callMs: 0, starts: [] as number[], gaps: 0, gapMs: 0 };
  // Which shard an iterator reads, and when that shard's last answer came: the gap from an answer to the next call on its shard.
  const shardOf = new Map<string, string>();
  const answered = new Map<string, number>();
  client.middlewareStack.add((next, context) => async (args) => {
    const command = (context as { commandName?: string }).commandName;
    const input = args.input as { ShardId?: string; ShardIterator?: string };
    if (command === "GetShardIteratorCommand") {
      const out = await next(args);
      const it = (out.output as { ShardIterator?: string }).ShardIterator;
      if (it && input.ShardId) shardOf.set(it, input.ShardId);
      return out;
    }
    if (command !== "GetRecordsCommand") return next(args);
    const t = performance.now();
    const shard = shardOf.get(input.ShardIterator ?? "");
    shardOf.delete(input.ShardIterator ?? "");
    const last = shard === undefined ? undefined : answered.get(shard);
    if (last !== undefined) {
      timing.gaps++;
      timing.gapMs += t - last;
    }
    if (timing.starts.length < SHARDS) timing.starts.push(t);
    if (timing.first === undefined) {
      timing.first = t;
      timing.firstCpu = cpuNow();
    }
    try {
      const out = await next(args);
      const it = (out.output as { NextShardIterator?: string }).NextShardIterator;
      if (shard !== undefined) {
        answered.set(shard, performance.now());
        if (it) shardOf.set(it, shard);
      }
      return out;
    } finally {
      timing.calls++;
      timing.callMs += performance.now() - t;
    }
  }, { step: "initialize", name: "freshetBenchTiming" });
  return { sdk, client, timing };
}

const cpuNow = () => {
  const u = process.cpuUsage();
  return (u.user + u.system) / 1e6;
};

async function rawWorker(argv: string[]): Promise<WorkerResult> {
  const endpoint = arg(argv, "endpoint");
  const stream = arg(argv, "stream");
  const count = Number(arg(argv, "count"));
  const limit = Number(arg(argv, "limit"));
  const pace = Number(arg(argv, "pace"));
  const start = performance.now();
  const cpu0 = cpuNow();
  const { sdk, client, timing } = await timedClient(endpoint);
  const decoder = new TextDecoder("utf-8", { fatal: true });
  let total = 0;
  let doneAt = 0;
  let doneCpu = 0;
  const stop = new AbortController();
  try {
    const shards = (await client.send(new sdk.ListShardsCommand({ StreamName: stream }))).Shards ?? [];
    await Promise.all(shards.map(async (s) => {
      let iterator = (await client.send(new sdk.GetShardIteratorCommand({ StreamName: stream, ShardId: s.ShardId, ShardIteratorType: "TRIM_HORIZON" }))).ShardIterator;
      while (iterator && !stop.signal.aborted) {
        const res = await client.send(new sdk.GetRecordsCommand({ ShardIterator: iterator, Limit: limit }));
        const answeredAt = performance.now();
        const records = res.Records ?? [];
        for (const r of records) {
          const row = JSON.parse(decoder.decode(r.Data));
          if (typeof row !== "object" || row === null) throw new Error("not an object");
        }
        total += records.length;
        if (total >= count) {
          if (!doneAt) {
            doneAt = performance.now();
            doneCpu = cpuNow();
          }
          stop.abort();
          break;
        }
        iterator = res.NextShardIterator;
        // The consumer's pacing: the next call at least PACE_MS after this answer (its poll interval when empty).
        const wait = (records.length === 0 ? Math.max(pace, 1000) : pace) - (performance.now() - answeredAt);
        if (pace > 0 && wait > 0) await new Promise((r) => setTimeout(r, wait));
      }
    }));
  } finally {
    client.destroy();
  }
  if (total !== count) throw new Error(`the raw loop read ${total} records, expected ${count}`);
  const elapsedMs = doneAt - timing.first!;
  return {
    runtime: thisRuntime(), mode: "raw", records: total, elapsedMs, totalMs: doneAt - start,
    rate: total / (elapsedMs / 1000), rateWithStartup: total / ((doneAt - start) / 1000),
    calls: timing.calls, meanCallMs: timing.callMs / Math.max(1, timing.calls), startSpreadMs: timing.starts[timing.starts.length - 1] - timing.starts[0], meanGapMs: timing.gapMs / Math.max(1, timing.gaps), cpu: (cpuNow() - cpu0) / ((performance.now() - start) / 1000), cpuSeconds: doneCpu - timing.firstCpu,
  };
}

async function freshetWorker(argv: string[]): Promise<WorkerResult> {
  const endpoint = arg(argv, "endpoint");
  const stream = arg(argv, "stream");
  const count = Number(arg(argv, "count"));
  const limit = Number(arg(argv, "limit"));
  const redisUrl = arg(argv, "redis");
  const application = arg(argv, "app");
  const start = performance.now();
  const cpu0 = cpuNow();
  const { consume, createProcessor, kinesisSource } = await import("../mod.ts");
  const { kinesisConsumer } = await import("../plugins/sources/kinesis.ts");
  const { redisStore } = await import("../plugins/stores/redis/redis.ts");
  const { memoryDeadLetters } = await import("../plugins/stores/memory.ts");
  const { client, timing } = await timedClient(endpoint);
  const def = kinesisSource({ name: "bench_kinesis", streamName: stream, endpoint, region: "us-east-1", credentials, timestampField: "event_timestamp", limit });
  const { registry } = streamRepo(def);
  const store = redisStore({ url: redisUrl, project: "bench" });
  const processor = createProcessor({ registry, online: store, deadLetters: memoryDeadLetters() });
  const consumer = kinesisConsumer(def, { meta: store.meta, client, application, workerId: `bench-${application}`, logger: quietLogger });
  const ac = new AbortController();
  const counts = { written: 0, stale: 0, late: 0, invalid: 0 };
  let acked = 0;
  let doneAt = 0;
  let doneCpu = 0;
  try {
    await consume(consumer, processor, {
      signal: ac.signal,
      logEveryMs: 0,
      onBatch(r, b) {
        acked += b.records.length;
        for (const k of ["written", "stale", "late", "invalid"] as const) counts[k] += r[k];
        if (acked >= count && !doneAt) {
          doneAt = performance.now();
          doneCpu = cpuNow();
          ac.abort();
        }
      },
    });
  } finally {
    client.destroy();
    await store.close();
  }
  if (acked !== count) throw new Error(`Freshet acknowledged ${acked} records, expected ${count}`);
  if (counts.written !== count) throw new Error(`Freshet wrote ${counts.written} of ${count} records (${JSON.stringify(counts)}): the figure would flatter`);
  const elapsedMs = doneAt - timing.first!;
  return {
    runtime: thisRuntime(), mode: "freshet", records: acked, elapsedMs, totalMs: doneAt - start,
    rate: acked / (elapsedMs / 1000), rateWithStartup: acked / ((doneAt - start) / 1000),
    calls: timing.calls, meanCallMs: timing.callMs / Math.max(1, timing.calls), startSpreadMs: timing.starts[timing.starts.length - 1] - timing.starts[0], meanGapMs: timing.gapMs / Math.max(1, timing.gaps), counts, cpu: (cpuNow() - cpu0) / ((performance.now() - start) / 1000), cpuSeconds: doneCpu - timing.firstCpu,
  };
}

// ---- the bench ----------------------------------------------------------------------

/** PutRecords in calls of 500, retrying only the records the server refused; returns how many were put. */
async function fill(client: KinesisClient, stream: string, n: number, log: (m: string) => void): Promise<number> {
  const { PutRecordsCommand } = await import("@aws-sdk/client-kinesis");
  const enc = new TextEncoder();
  const ts = Date.now();
  const t0 = performance.now();
  let put = 0;
  for (let i = 0; i < n; i += 500) {
    let pending = Array.from({ length: Math.min(500, n - i) }, (_, k) => ({ PartitionKey: `user-${i + k}`, Data: enc.encode(benchEvent(i + k, i + k, ts)) }));
    for (let attempt = 0; pending.length; attempt++) {
      if (attempt > 20) throw new Error("PutRecords keeps refusing records");
      const res = await client.send(new PutRecordsCommand({ StreamName: stream, Records: pending }));
      const failed = pending.filter((_, k) => res.Records?.[k]?.ErrorCode);
      put += pending.length - failed.length;
      pending = failed;
    }
    if ((i / 500) % 20 === 19) log(`  put ${put} of ${n} records (${Math.round(put / ((performance.now() - t0) / 1000))}/s)`);
  }
  log(`  put ${put} records over ${SHARDS} shards in ${((performance.now() - t0) / 1000).toFixed(1)} s`);
  return put;
}

export async function runKinesis(opts: BenchOptions, log: (m: string) => void = (m) => console.log(m)) {
  const records = Number(process.env.BENCH_KINESIS_RECORDS ?? (opts.small ? 2000 : 24_000));
  const limit = Number(process.env.BENCH_KINESIS_LIMIT ?? 1000);
  const entries: Entry[] = [];
  const notes: string[] = [];
  const failures: string[] = [];
  const { kinesisClient } = await import("../tests/services/kinesis.ts");
  const [kinesis, redis] = await Promise.all([startKinesis("kinesis-local"), startRedis()]);
  const client = kinesisClient(kinesis.endpoint);
  const admin = new Redis(redis.url, { maxRetriesPerRequest: 1 });
  try {
    const stream = `bench-${Date.now().toString(36)}`;
    await createStream(client, stream, SHARDS);
    log(`P9: filling ${stream} (${SHARDS} shards) with ${records} JSON events on kinesis-local`);
    const put = await fill(client, stream, records, log);
    const common = ["--endpoint", kinesis.endpoint, "--stream", stream, "--count", String(put), "--limit", String(limit)];
    const timeout = 120_000 + put * 10;
    const serverPid = childPid((cmd) => cmd.includes("main.js"));
    const redisCpu = async () => {
      const info = String(await admin.info("cpu"));
      const num = (k: string) => Number(new RegExp(`^${k}:([\\d.]+)`, "m").exec(info)?.[1] ?? 0);
      return num("used_cpu_user") + num("used_cpu_sys");
    };
    /** Runs a worker; adds the CPU that kinesis-local, Redis and the worker itself spent per record. */
    const measured = async (rt: Runtime, args: string[]) => {
      const s0 = cpuSeconds(serverPid), q0 = runQueueSeconds(serverPid), r0 = await redisCpu();
      const r = await runWorker<WorkerResult>(rt, FILE, args, timeout);
      const s1 = cpuSeconds(serverPid), q1 = runQueueSeconds(serverPid), r1 = await redisCpu();
      const per = (x: number) => (x * 1e6) / r.records;
      // kinesis-local answers on one thread: the time it was runnable with no core free, per event.
      const serverQueuedUs = q0 !== undefined && q1 !== undefined ? per(q1 - q0) : NaN;
      return { ...r, serverUs: s0 !== undefined && s1 !== undefined ? per(s1 - s0) : NaN, serverQueuedUs, redisUs: per(r1 - r0), consumerUs: per(r.cpuSeconds ?? NaN) };
    };
    for (const rt of streamRuntimes(opts.runtimes)) {
      try {
        // Warm-up: kinesis-local's JIT and caches, once, unmeasured.
        await runWorker<WorkerResult>(rt, FILE, ["raw", ...common, "--pace", "0"], timeout);
        const load0 = loadavg()[0];
        log(`P9 ${rt}: ${put} records, GetRecords Limit ${limit}, paced ${PACE_MS} ms after each answer per shard; ${opts.runs} paired run(s)`);
        const pairs: Pair[] = [];
        const unpaced: number[] = [];
        const detail: string[] = [];
        for (let i = 0; i < opts.runs; i++) {
          const raw = await measured(rt, ["raw", ...common, "--pace", String(PACE_MS)]);
          await admin.flushall();
          const fr = await measured(rt, ["freshet", ...common, "--redis", redis.url, "--app", `bench-${i}-${Date.now().toString(36)}`]);
          const free = await measured(rt, ["raw", ...common, "--pace", "0"]);
          unpaced.push(free.rate);
          pairs.push({ baseline: raw.rate, value: fr.rate });
          const line = `run ${i + 1}/${opts.runs}: raw paced ${fmt(raw.rate)}/s (${raw.calls} calls, ${fmt(raw.meanCallMs)} ms each, next call ${fmt(raw.meanGapMs)} ms after an answer, shards' first calls within ${fmt(raw.startSpreadMs)} ms; ${fmt(raw.rateWithStartup)}/s with startup)` +
            `  freshet ${fmt(fr.rate)}/s (${fr.calls} calls, ${fmt(fr.meanCallMs)} ms each, next call ${fmt(fr.meanGapMs)} ms after an answer, shards' first calls within ${fmt(fr.startSpreadMs)} ms; ${fmt(fr.rateWithStartup)}/s with startup; cpu ${Math.round((fr.cpu ?? 0) * 100)}%)` +
            `  ratio ${fmt(fr.rate / raw.rate, 3)}  [raw unpaced ${fmt(free.rate)}/s, ${free.calls} calls, ${fmt(free.meanCallMs)} ms each]`;
          const cpu = `CPU per event: kinesis-local ${fmt(raw.serverUs)} µs raw paced, ${fmt(fr.serverUs)} µs Freshet (and waiting for a core ${fmt(raw.serverQueuedUs)} µs raw paced, ${fmt(fr.serverQueuedUs)} µs Freshet); redis ${fmt(fr.redisUs)} µs and consumer ${fmt(fr.consumerUs)} µs Freshet, consumer ${fmt(raw.consumerUs)} µs raw paced`;
          log("  " + line);
          log("    " + cpu);
          detail.push(line, `run ${i + 1} ${cpu}`);
        }
        const loadEnd = loadavg()[0];
        const e = pairedEntry("P9", rt, "events/s, Kinesis -> Redis, 4 shards", ">= 0.9", pairs);
        entries.push(e);
        notes.push(
          `P9 ${rt}: ${put} records on kinesis-local over ${SHARDS} shards, GetRecords Limit ${limit}. Freshet = kinesisConsumer + consume + processor (schema, UDF, watermark, dedupe) into redisStore, checkpoints and leases in the same Redis. ` +
            `Baseline = raw GetRecords loop + JSON.parse over the same shards, paced like the consumer: the next call on a shard goes >= ${PACE_MS} ms after the previous answer. ` +
            `Rates are from the first GetRecords request to the last record parsed (raw) or written and checkpointed (Freshet): startup (process, ListShards, leases, checkpoint reads, GetShardIterator) is not counted; the per-run lines give the rate with it.`,
          `P9 ${rt}: raw loop UNPACED (information only, not the baseline): median ${fmt(median(unpaced))} events/s; paced ceiling median ${fmt(e.baseline)}; Freshet median ${fmt(e.value)} (${fmt((e.value / median(unpaced)), 3)} of the unpaced rate).`,
          ...detail.map((d) => `P9 ${rt} ${d}`),
          `P9 ${rt}: machine load average (1 min) ${load0.toFixed(2)} at the start, ${loadEnd.toFixed(2)} at the end (${cpus().length} cores; other work shares them)`,
        );
      } catch (e) {
        failures.push(`${rt}: ${(e as Error)?.stack ?? e}`);
        log(`!! P9 failed on ${rt}: ${(e as Error)?.message ?? e}`);
      }
    }
  } finally {
    admin.disconnect();
    client.destroy();
    await Promise.all([kinesis.stop(), redis.stop()]);
  }
  return { entries, notes, failures };
}

const argv = process.argv.slice(2);
if (argv[0] === "--worker") {
  const { workerMain } = await import("./worker-main.ts");
  workerMain({ raw: rawWorker, freshet: freshetWorker }, argv);
} else {
  const { benchMain, isMain } = await import("./lib.ts");
  if (isMain(import.meta.url)) await benchMain("kinesis", runKinesis, argv);
}
