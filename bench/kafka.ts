/**
 * P1, P2, P5 and P8: Kafka -> Redis on librdkafka's mock cluster (kcat,
 * tests/services/kafka.ts) and a redis-server of our own, with the view of
 * bench/stream-repo.ts (valibot schema, UDF, watermark, dedupe).
 *
 * Every consumer under test runs in a child process of the runtime under
 * test (Node by default; `--runtime node,bun,deno` for more), with a fresh
 * consumer group per run; the bench process produces and measures.
 *
 * - P1: Freshet end to end (kafkaConsumer + consume + processor +
 *   redisStore) against the ceiling: a raw kafkajs consumer (eachBatch, 4
 *   partitions at once, as Freshet's default) that only JSON.parses each
 *   message, on the same topic of the same broker. events/s, from the first
 *   fetched batch to the last record parsed (raw) or written and committed
 *   (Freshet): the group join (about 3 s on the mock cluster) is not counted.
 * - P2: the same Freshet run against a hand-written kafkajs consumer doing
 *   one awaited HSET per message (eachMessage), the code a user writes
 *   without Freshet. Runs are raw, Freshet, naive, raw, Freshet, naive, ...
 *   and P1 and P2 share the Freshet measurement of their run.
 * - P5: freshness. The bench produces at a steady 5 000 events/s (a send
 *   every 10 ms), every event stamped with its produce time and its own
 *   entity key; Redis keyspace notifications (`__keyevent@0__:hset`, fired
 *   by the write script's HSET) tell when each key became visible. p50 and
 *   p99 of send-to-visible, after a 3 s warm-up, with lingerMs 10 (on the
 *   mock cluster a fetch that finds nothing waits its whole maxWaitTime:
 *   see the note it writes). For information, once: Freshet with its
 *   default lingerMs, and a raw kafkajs consumer as a control.
 * - P8: resident memory of the consumer process (VmRSS, sampled every
 *   second) while it ingests 1M events. The mock cluster keeps a bounded log
 *   per topic (~150k messages), so the bench produces while the consumer
 *   consumes, at most 50k events ahead of it, and checks at the end that
 *   nothing was lost: written + stale + late + invalid = produced, and the
 *   group's committed offsets equal the high watermarks (lag 0).
 *
 *   npx tsx bench/kafka.ts [p1 p5 p8] [--runs 5] [--small] [--results dir] [--runtime node,bun]
 *   environment: BENCH_KAFKA_RECORDS (P1/P2, default 100000, small 2000),
 *   BENCH_P5_SECONDS (default 15, small 2), BENCH_P5_RATE (5000), BENCH_P5_TICK_MS (10),
 *   BENCH_P5_LINGER (10), BENCH_KAFKA_LINGER (Freshet's default lingerMs, 500),
 *   BENCH_P8_RECORDS (default 1000000, small 20000)
 *
 * Freshet's workers also report where a batch's time goes (store write,
 * commit, the rest) and every run's CPU per event of the consumer, the
 * broker (kcat) and Redis: the analysis of a missed goal starts there.
 */
import { Buffer } from "node:buffer";
import { cpus, loadavg } from "node:os";
import process from "node:process";
import type { Admin, Kafka, Producer } from "kafkajs";
import { Redis } from "ioredis";
import { startKafka, type KafkaService } from "../tests/services/kafka.ts";
import { startRedis, type RedisService } from "../tests/services/redis.ts";
import { absoluteEntry, cpuSeconds, fmt, median, pairedEntry, percentile, sleep, type BenchOptions, type Entry, type Pair, type Runtime } from "./lib.ts";
import { benchEvent, STREAM_VIEW, streamRepo } from "./stream-repo.ts";
import { arg, childPid, quietLogger, rssMB, runWorker, startWorker, streamRuntimes, thisRuntime } from "./worker.ts";

const FILE = "bench/kafka.ts";
/** P1/P2: distinct users in the topic (events cycle over them, newer each time). */
const USERS = 10_000;
const P5_RATE = Number(process.env.BENCH_P5_RATE ?? 5000);
const P5_TICK_MS = Number(process.env.BENCH_P5_TICK_MS ?? 10);
const P5_WARMUP_S = 3;
/** How long P5 waits for the last events after the last send. */
const TAIL_WAIT_MS = 20_000;
/** lingerMs (kafkajs maxWaitTimeInMs) of the P5 consumer: see the P5 note on the mock cluster's fetch. */
const P5_LINGER_MS = Number(process.env.BENCH_P5_LINGER ?? 10);
const P8_USERS = 100_000;
const P8_MAX_AHEAD = 50_000;
/** Freshet's default lingerMs (kafkajs maxWaitTimeInMs), also given to the raw consumer. */
const LINGER_MS = Number(process.env.BENCH_KAFKA_LINGER ?? 500);

interface Counts {
  written: number;
  stale: number;
  late: number;
  invalid: number;
}

interface WorkerResult {
  runtime: Runtime;
  mode: "raw" | "naive" | "freshet";
  records: number;
  /** ms from the first fetched batch to the last record done. */
  elapsedMs: number;
  /** ms from the worker's start to its first batch (connect, group join, first fetch). */
  startupMs: number;
  rate: number;
  counts?: Counts;
  lag?: Record<string, number>;
  /** Freshet: batches, records, and the summed ms of whole batches, store writes and acks (commits). */
  trace?: { batches: number; records: number; batchMs: number; writeMs: number; ackMs: number };
  /** CPU share of the worker over its whole life (1 = one core). */
  cpu: number;
  /** The worker's CPU time per event between its first batch and the last event, µs. */
  cpuUsPerEvent?: number;
  rssMB: number;
}

// ---- workers --------------------------------------------------------------------------

async function kafkajs(): Promise<typeof import("kafkajs")> {
  const m = await import("kafkajs");
  return ((m as unknown as { default?: typeof import("kafkajs") }).default ?? m) as typeof import("kafkajs");
}

const cpuNow = () => {
  const u = process.cpuUsage();
  return (u.user + u.system) / 1e6;
};
const say = (line: string) => process.stdout.write(line + "\n");

/** CPU seconds of this process at its first batch and when it was done: its CPU per event in the measured window. */
const cpuWindow = { first: 0, done: 0 };
const markFirst = () => (cpuWindow.first ||= cpuNow());
const markDone = () => (cpuWindow.done ||= cpuNow());

function finish(mode: WorkerResult["mode"], records: number, start: number, first: number, done: number, cpu0: number, extra: Partial<WorkerResult> = {}): WorkerResult {
  const elapsedMs = done - first;
  return {
    runtime: thisRuntime(), mode, records, elapsedMs, startupMs: first - start, rate: records / (elapsedMs / 1000),
    cpu: (cpuNow() - cpu0) / ((performance.now() - start) / 1000),
    cpuUsPerEvent: cpuWindow.done > cpuWindow.first && records > 0 ? ((cpuWindow.done - cpuWindow.first) * 1e6) / records : undefined,
    rssMB: process.memoryUsage().rss / 2 ** 20, ...extra,
  };
}

/**
 * The ceiling: kafkajs eachBatch, JSON.parse of every message, nothing else.
 * With --count 0 it runs until SIGTERM and, with --latency-from S, reports
 * the latency (message timestamp -> receipt) of the messages keyed S and up.
 */
async function rawWorker(argv: string[]): Promise<WorkerResult> {
  const start = performance.now();
  const cpu0 = cpuNow();
  const { Kafka, logLevel } = await kafkajs();
  const count = Number(arg(argv, "count"));
  const latencyFrom = Number(arg(argv, "latency-from", "-1"));
  const kafka = new Kafka({ clientId: "bench-raw", brokers: arg(argv, "brokers").split(","), logLevel: logLevel.NOTHING });
  const consumer = kafka.consumer({ groupId: arg(argv, "group"), maxWaitTimeInMs: Number(arg(argv, "linger", String(LINGER_MS))) });
  let n = 0, first = 0, done = 0;
  const latencies: number[] = [];
  let finished!: () => void;
  const all = new Promise<void>((r) => (finished = r));
  process.on("SIGTERM", () => finished());
  consumer.on(consumer.events.GROUP_JOIN, () => say("JOINED"));
  await consumer.connect();
  await consumer.subscribe({ topics: [arg(argv, "topic")], fromBeginning: true });
  await consumer.run({
    partitionsConsumedConcurrently: 4,
    eachBatch: async ({ batch }) => {
      if (!first) {
        first = performance.now();
        markFirst();
      }
      const now = Date.now();
      for (const m of batch.messages) {
        const row = JSON.parse(m.value!.toString());
        if (typeof row !== "object" || row === null) throw new Error("not an object");
        if (latencyFrom >= 0 && Number(m.key) >= latencyFrom) latencies.push(now - Number(m.timestamp));
      }
      n += batch.messages.length;
      if (count > 0 && n >= count && !done) {
        done = performance.now();
        markDone();
        finished();
      }
    },
  });
  await all;
  done ||= performance.now();
  markDone();
  await consumer.disconnect();
  if (count > 0 && n !== count) throw new Error(`the raw consumer read ${n} messages, expected ${count}`);
  const latency = latencies.length
    ? { p50: percentile(latencies, 50), p99: percentile(latencies, 99), max: Math.max(...latencies), n: latencies.length }
    : undefined;
  return { ...finish("raw", n, start, first || done, done, cpu0), ...(latency ? { latency } : {}) };
}

/** What a user writes without Freshet: one awaited HSET per message. */
async function naiveWorker(argv: string[]): Promise<WorkerResult> {
  const start = performance.now();
  const cpu0 = cpuNow();
  const { Kafka, logLevel } = await kafkajs();
  const count = Number(arg(argv, "count"));
  const redis = new Redis(arg(argv, "redis"));
  const kafka = new Kafka({ clientId: "bench-naive", brokers: arg(argv, "brokers").split(","), logLevel: logLevel.NOTHING });
  const consumer = kafka.consumer({ groupId: arg(argv, "group") });
  let n = 0, first = 0, done = 0;
  let finished!: () => void;
  const all = new Promise<void>((r) => (finished = r));
  consumer.on(consumer.events.GROUP_JOIN, () => say("JOINED"));
  await consumer.connect();
  await consumer.subscribe({ topics: [arg(argv, "topic")], fromBeginning: true });
  await consumer.run({
    eachMessage: async ({ message }) => {
      if (!first) {
        first = performance.now();
        markFirst();
      }
      const e = JSON.parse(message.value!.toString());
      const { user_id, ...fields } = e;
      await redis.hset(`naive:user:${user_id}`, fields);
      if (++n >= count && !done) {
        done = performance.now();
        markDone();
        finished();
      }
    },
  });
  await all;
  await consumer.disconnect();
  redis.disconnect();
  if (n !== count) throw new Error(`the naive consumer wrote ${n} messages, expected ${count}`);
  return finish("naive", n, start, first, done, cpu0);
}

/**
 * Freshet end to end. With --count 0 it runs until SIGTERM. Prints JOINED
 * when the group assigned it partitions, and `PROGRESS <acked>` every
 * --progress ms when asked.
 */
async function freshetWorker(argv: string[]): Promise<WorkerResult> {
  const start = performance.now();
  const cpu0 = cpuNow();
  const { consume, createProcessor, kafkaSource } = await import("../mod.ts");
  const { kafkaConsumer } = await import("../plugins/sources/kafka.ts");
  const { redisStore } = await import("../plugins/stores/redis/redis.ts");
  const { memoryDeadLetters } = await import("../plugins/stores/memory.ts");
  const count = Number(arg(argv, "count"));
  const progressMs = Number(arg(argv, "progress", "0"));
  const def = kafkaSource({
    name: "bench_kafka", kafkaBootstrapServers: arg(argv, "brokers"), topic: arg(argv, "topic"), groupId: arg(argv, "group"),
    timestampField: "event_timestamp", lingerMs: Number(arg(argv, "linger", String(LINGER_MS))),
  });
  const { registry } = streamRepo(def);
  const store = redisStore({ url: arg(argv, "redis"), project: "bench" });
  const processor = createProcessor({ registry, online: store, deadLetters: memoryDeadLetters() });
  const consumer = kafkaConsumer(def, { logger: quietLogger, onEvent: (e) => e.type === "assigned" && say(`JOINED ${e.partitions.join(",")}`) });
  const ac = new AbortController();
  process.on("SIGTERM", () => ac.abort());
  const counts: Counts = { written: 0, stale: 0, late: 0, invalid: 0 };
  let acked = 0, first = 0, done = 0;
  // Where the time goes, per batch: the store write, the commit (ack), and the rest of the pipeline.
  const trace = { batches: 0, records: 0, batchMs: 0, writeMs: 0, ackMs: 0 };
  const write = store.write.bind(store);
  store.write = async (view, rows) => {
    const t = performance.now();
    try {
      return await write(view, rows);
    } finally {
      trace.writeMs += performance.now() - t;
    }
  };
  const timed = {
    ...consumer,
    run: (onBatch: Parameters<typeof consumer.run>[0], signal: AbortSignal) => consumer.run(async (b) => {
      const t = performance.now();
      if (!first) {
        first = t;
        markFirst();
      }
      const ack = b.ack.bind(b);
      b.ack = async () => {
        const ta = performance.now();
        try {
          await ack();
        } finally {
          trace.ackMs += performance.now() - ta;
        }
      };
      try {
        return await onBatch(b);
      } finally {
        trace.batches++;
        trace.records += b.records.length;
        trace.batchMs += performance.now() - t;
      }
    }, signal),
  };
  // With the count acknowledged: where the memory is (MB: heap used, heap total, external incl. array buffers), for P8's notes.
  const memory = () => {
    const m = process.memoryUsage();
    return [m.heapUsed, m.heapTotal, m.external].map((b) => Math.round(b / 1e5) / 10).join(" ");
  };
  const progress = progressMs > 0 ? setInterval(() => say(`PROGRESS ${acked} ${memory()}`), progressMs) : undefined;
  try {
    await consume(timed, processor, {
      signal: ac.signal,
      logEveryMs: 0,
      onBatch(r, b) {
        acked += b.records.length;
        for (const k of ["written", "stale", "late", "invalid"] as const) counts[k] += r[k];
        if (count > 0 && acked >= count && !done) {
          done = performance.now();
          markDone();
          ac.abort();
        }
      },
    });
  } finally {
    clearInterval(progress);
    await store.close();
  }
  done ||= performance.now();
  markDone();
  say(`PROGRESS ${acked}`);
  if (count > 0 && acked !== count) throw new Error(`Freshet acknowledged ${acked} records, expected ${count}`);
  return finish("freshet", acked, start, first || done, done, cpu0, { counts, lag: consumer.lag(), trace });
}

// ---- the bench side -----------------------------------------------------------------------

/** "400 batches of 250 records: 61 ms each, of which store write 41 ms, commit 12 ms" (summed over the partitions in flight). */
function traceNote(r: WorkerResult): string {
  const t = r.trace;
  if (!t || !t.batches) return "";
  const per = (x: number) => fmt(x / t.batches);
  return `${t.batches} batches of ${fmt(t.records / t.batches)} records, ${per(t.batchMs)} ms each: store write ${per(t.writeMs)} ms, commit ${per(t.ackMs)} ms, rest ${per(t.batchMs - t.writeMs - t.ackMs)} ms`;
}

/** CPU seconds used so far by the mock broker and by redis-server. */
async function serviceCpu(c: Ctx): Promise<{ broker?: number; redis: number }> {
  const info = String(await c.flush.info("cpu"));
  const num = (k: string) => Number(new RegExp(`^${k}:([\\d.]+)`, "m").exec(info)?.[1] ?? 0);
  return { broker: cpuSeconds(c.brokerPid), redis: num("used_cpu_user") + num("used_cpu_sys") };
}

/** Runs a worker, and measures the CPU the broker and Redis spent meanwhile, in µs per event. */
async function measured(c: Ctx, rt: Runtime, args: string[], n: number, timeout: number): Promise<WorkerResult & { brokerUs?: number; redisUs: number }> {
  const before = await serviceCpu(c);
  const r = await runWorker<WorkerResult>(rt, FILE, args, timeout);
  const after = await serviceCpu(c);
  return {
    ...r,
    brokerUs: before.broker !== undefined && after.broker !== undefined ? ((after.broker - before.broker) * 1e6) / n : undefined,
    redisUs: ((after.redis - before.redis) * 1e6) / n,
  };
}

const cpuLine = (r: WorkerResult & { brokerUs?: number; redisUs: number }) =>
  `CPU per event: consumer ${fmt(r.cpuUsPerEvent ?? NaN)} µs, broker ${fmt(r.brokerUs ?? NaN)} µs, redis ${fmt(r.redisUs)} µs`;

const uid = () => `${Date.now().toString(36)}${Math.random().toString(36).slice(2, 6)}`;

async function connectProducer(kafka: Kafka): Promise<Producer> {
  const { Partitioners } = await kafkajs();
  const p = kafka.producer({ createPartitioner: Partitioners.DefaultPartitioner, allowAutoTopicCreation: true });
  await p.connect();
  return p;
}

/** Sum of high watermarks, and whether any low watermark rose above 0 (the mock cluster trimmed its log). */
async function topicSize(admin: Admin, topic: string): Promise<{ high: number; trimmed: boolean; perPartition: Record<number, number> }> {
  const offsets = await admin.fetchTopicOffsets(topic);
  const perPartition: Record<number, number> = {};
  for (const o of offsets) perPartition[o.partition] = Number(o.high);
  return { high: offsets.reduce((s, o) => s + Number(o.high), 0), trimmed: offsets.some((o) => Number(o.low) > 0), perPartition };
}

/** Committed offsets of a group equal the high watermarks on every partition. */
async function groupLag(admin: Admin, groupId: string, topic: string): Promise<number> {
  const [c] = await admin.fetchOffsets({ groupId, topics: [topic] });
  const { perPartition } = await topicSize(admin, topic);
  let lag = 0;
  for (const [p, high] of Object.entries(perPartition)) {
    const committed = Number(c?.partitions.find((x) => x.partition === Number(p))?.offset ?? -1);
    lag += high - Math.max(0, committed);
  }
  return lag;
}

interface Ctx {
  opts: BenchOptions;
  kafka: KafkaService;
  redis: RedisService;
  client: Kafka;
  producer: Producer;
  admin: Admin;
  flush: Redis;
  brokerPid?: number;
  log: (m: string) => void;
}

const workerArgs = (c: Ctx, topic: string, group: string, count: number, extra: string[] = []) =>
  ["--brokers", c.kafka.brokers.join(","), "--topic", topic, "--group", group, "--count", String(count), "--redis", c.redis.url, ...extra];

async function p1p2(c: Ctx, rt: Runtime): Promise<{ entries: Entry[]; notes: string[] }> {
  const { opts, log } = c;
  const n = Number(process.env.BENCH_KAFKA_RECORDS ?? (opts.small ? 2000 : 100_000));
  const topic = `bench-p1-${uid()}`;
  const ts = Date.now();
  const t0 = performance.now();
  for (let i = 0; i < n; i += 1000) {
    const messages = [];
    for (let s = i; s < Math.min(n, i + 1000); s++) messages.push({ key: String(s % USERS), value: benchEvent(s, s % USERS, ts - n + s) });
    await c.producer.send({ topic, acks: -1, messages });
  }
  const size = await topicSize(c.admin, topic);
  if (size.high !== n || size.trimmed) throw new Error(`topic ${topic} holds ${size.high} messages${size.trimmed ? " (trimmed)" : ""}, expected ${n}`);
  log(`P1/P2 ${rt}: ${n} events (${USERS} users) produced to ${topic} (4 partitions) in ${((performance.now() - t0) / 1000).toFixed(1)} s; ${opts.runs} run(s) of raw, Freshet, naive`);
  const timeout = 120_000 + n * 2;
  const p1: Pair[] = [];
  const p2: Pair[] = [];
  const detail: string[] = [];
  for (let i = 0; i < opts.runs; i++) {
    const raw = await measured(c, rt, ["raw", ...workerArgs(c, topic, `raw-${uid()}`, n)], n, timeout);
    await c.flush.flushall();
    const fr = await measured(c, rt, ["freshet", ...workerArgs(c, topic, `freshet-${uid()}`, n)], n, timeout);
    const { written, stale, late, invalid } = fr.counts!;
    if (written + stale + late + invalid !== n || late + invalid > 0) throw new Error(`Freshet's counts ${JSON.stringify(fr.counts)} do not account for ${n} events`);
    await c.flush.flushall();
    const naive = await measured(c, rt, ["naive", ...workerArgs(c, topic, `naive-${uid()}`, n)], n, timeout);
    p1.push({ baseline: raw.rate, value: fr.rate });
    p2.push({ baseline: naive.rate, value: fr.rate });
    const line = `run ${i + 1}/${opts.runs}: raw ${fmt(raw.rate)}/s (cpu ${Math.round(raw.cpu * 100)}%)  freshet ${fmt(fr.rate)}/s (cpu ${Math.round(fr.cpu * 100)}%, written ${written}, stale ${stale}; startup ${fmt(fr.startupMs / 1000)} s not counted; ${traceNote(fr)})  naive ${fmt(naive.rate)}/s (cpu ${Math.round(naive.cpu * 100)}%)  P1 ${fmt(fr.rate / raw.rate, 3)}  P2 ${fmt(fr.rate / naive.rate, 3)}x`;
    const cpu = `      raw: ${cpuLine(raw)}; freshet: ${cpuLine(fr)}; naive: ${cpuLine(naive)}`;
    log("  " + line);
    log(cpu);
    detail.push(`P1/P2 ${rt} ${line}`, `P1/P2 ${rt} run ${i + 1} ${cpu.trim()}`);
  }
  const e1 = pairedEntry("P1", rt, "events/s, Kafka -> Redis (schema, UDF, dedupe, watermark)", ">= 0.8", p1);
  const e2 = pairedEntry("P2", rt, "events/s, vs one awaited HSET per message", ">= 10", p2);
  return {
    entries: [e1, e2],
    notes: [
      `P1/P2 ${rt}: ${n} JSON events (~130 bytes, ${USERS} users, newer each time) on one 4-partition topic of the mock cluster, each run a fresh consumer group from the beginning. Rates from the first fetched batch to the last record done (group join ~3 s not counted). ` +
        `Freshet: kafkaConsumer (batchSize 500, lingerMs ${LINGER_MS}, 4 partitions at once) + consume + processor + redisStore, every record written (Redis flushed before each run). ` +
        `P1 ceiling: kafkajs eachBatch (4 partitions at once, maxWaitTimeInMs ${LINGER_MS}, kafkajs auto-commit) + JSON.parse only. P2 baseline: kafkajs eachMessage + one awaited ioredis HSET per message.`,
      ...detail,
    ],
  };
}

interface FreshnessRun {
  p50: number;
  p99: number;
  line: string;
}

/**
 * One freshness run: a fresh topic and group, the consumer started and
 * joined, then P5_WARMUP_S + `seconds` of events at P5_RATE. "freshet":
 * latency to the keyspace notification of each key; "raw": the control, a
 * raw kafkajs consumer measuring message timestamp -> receipt itself.
 */
async function freshnessRun(c: Ctx, rt: Runtime, mode: "freshet" | "raw", linger: number, seconds: number, watch: { sentAt: Float64Array; seenAt: Float64Array }): Promise<FreshnessRun> {
  const topic = `bench-p5-${uid()}`;
  const total = (P5_WARMUP_S + seconds) * P5_RATE;
  const from = P5_WARMUP_S * P5_RATE;
  watch.sentAt = new Float64Array(total);
  watch.seenAt = new Float64Array(total);
  const { sentAt, seenAt } = watch;
  // Creates the topic (4 partitions) before the consumer subscribes; user_id -1 is not counted.
  await c.producer.send({ topic, acks: -1, messages: [{ key: "x", value: benchEvent(0, -1, Date.now()) }] });
  await c.flush.flushall();
  const w = startWorker(rt, FILE, [mode, ...workerArgs(c, topic, `p5-${uid()}`, 0, ["--linger", String(linger), "--latency-from", String(from)])]);
  let line = "";
  let p50 = NaN, p99 = NaN;
  try {
    await w.line("JOINED", 90_000);
    await sleep(500);
    const start = performance.now();
    let seq = 0;
    let sendMs = 0, sends = 0, maxSend = 0;
    while (seq < total) {
      const due = Math.min(total, Math.floor(((performance.now() - start) / 1000) * P5_RATE) + 1);
      if (due > seq) {
        const messages = [];
        const now = performance.now();
        const ts = Date.now();
        for (; seq < due; seq++) {
          sentAt[seq] = now;
          messages.push({ key: String(seq), value: benchEvent(seq, seq, ts) });
        }
        await c.producer.send({ topic, acks: -1, messages });
        const took = performance.now() - now;
        sendMs += took;
        sends++;
        if (took > maxSend) maxSend = took;
      }
      const next = start + (Math.floor(((seq / P5_RATE) * 1000) / P5_TICK_MS) + 1) * P5_TICK_MS;
      const wait = next - performance.now();
      if (wait > 0) await sleep(wait);
    }
    const producedIn = (performance.now() - start) / 1000;
    const produced = `produced ${total} at ${fmt(total / producedIn)}/s (send ${fmt(sendMs / Math.max(1, sends))} ms mean, ${fmt(maxSend)} ms max)`;
    line = produced;
    if (mode === "raw") await sleep(2000); // the tail; the worker reports its latencies when stopped
    else {
      // Wait for the tail to arrive. Events still not visible then count at their age: a lower bound.
      const tailWait = c.opts.small ? 5000 : TAIL_WAIT_MS;
      const deadline = performance.now() + tailWait;
      while (performance.now() < deadline && seenAt.some((x) => x === 0)) await sleep(50);
      const cutoff = performance.now();
      const lat: number[] = [];
      let missing = 0;
      for (let s = from; s < total; s++) {
        if (seenAt[s] === 0) missing++;
        lat.push((seenAt[s] || cutoff) - sentAt[s]);
      }
      let warmMissing = 0;
      const warm: number[] = [];
      for (let s = 0; s < from; s++) seenAt[s] === 0 ? warmMissing++ : warm.push(seenAt[s] - sentAt[s]);
      p50 = percentile(lat, 50);
      p99 = percentile(lat, 99);
      // p99 by second of the run (warm-up included): a backlog that never drains shows as a plateau.
      const bySecond: number[] = [];
      for (let sec = 0; sec * P5_RATE < total; sec++) {
        const xs: number[] = [];
        for (let s = sec * P5_RATE; s < Math.min(total, (sec + 1) * P5_RATE); s++) if (seenAt[s]) xs.push(seenAt[s] - sentAt[s]);
        bySecond.push(Math.round(percentile(xs, 99)));
      }
      line = `p50 ${fmt(p50)} ms, p99 ${fmt(p99)} ms, max ${fmt(Math.max(...lat))} ms over ${lat.length} events` +
        `${missing ? ` (${missing} NOT VISIBLE ${tailWait / 1000} s after the last send: counted at their age then, so these figures are lower bounds)` : ""}; ${produced}; ` +
        `warm-up p99 ${fmt(percentile(warm, 99))} ms${warmMissing ? `, ${warmMissing} unseen` : ""}; p99 by second: ${bySecond.join(" ")}`;
    }
  } finally {
    await w.child.stop("SIGTERM", 15_000);
  }
  const r = (await w.result.catch(() => undefined)) as (WorkerResult & { latency?: { p50: number; p99: number; max: number; n: number } }) | undefined;
  if (mode === "raw") {
    if (!r?.latency) throw new Error("the raw control reported no latencies");
    return { p50: r.latency.p50, p99: r.latency.p99, line: `p50 ${fmt(r.latency.p50)} ms, p99 ${fmt(r.latency.p99)} ms, max ${fmt(r.latency.max)} ms over ${r.latency.n} events (kafka message timestamp -> eachBatch, 1 ms resolution)` };
  }
  if (r) line += `; consumer: ${traceNote(r)}; cpu ${Math.round(r.cpu * 100)}%`;
  return { p50, p99, line };
}

async function p5(c: Ctx, rt: Runtime): Promise<{ entries: Entry[]; notes: string[] }> {
  const { opts, log } = c;
  const seconds = Number(process.env.BENCH_P5_SECONDS ?? (opts.small ? 2 : 15));
  const sub = new Redis(c.redis.url);
  await c.flush.config("SET", "notify-keyspace-events", "Eh");
  const p99s: number[] = [];
  const detail: string[] = [];
  log(`P5 ${rt}: ${P5_RATE} events/s (a send every ${P5_TICK_MS} ms) for ${P5_WARMUP_S} s warm-up + ${seconds} s measured, ${opts.runs} run(s); lingerMs ${P5_LINGER_MS}`);
  const watch = { sentAt: new Float64Array(0), seenAt: new Float64Array(0) };
  try {
    const prefix = `freshet:bench:${STREAM_VIEW}:user_id=`;
    sub.on("message", (_ch: string, key: string) => {
      const now = performance.now();
      if (!key.startsWith(prefix)) return;
      const seq = Number(key.slice(prefix.length));
      if (seq < watch.seenAt.length && watch.seenAt[seq] === 0) watch.seenAt[seq] = now;
    });
    await sub.subscribe("__keyevent@0__:hset");
    for (let run = 0; run < opts.runs; run++) {
      const r = await freshnessRun(c, rt, "freshet", P5_LINGER_MS, seconds, watch);
      p99s.push(Math.round(r.p99 * 10) / 10);
      log(`  run ${run + 1}/${opts.runs}: ${r.line}`);
      detail.push(`P5 ${rt} run ${run + 1}/${opts.runs}: ${r.line}`);
    }
    // For information, once each: Freshet with its default lingerMs, and the raw kafkajs control.
    const info: [string, () => Promise<FreshnessRun>][] = [
      [`Freshet with the default lingerMs ${LINGER_MS}`, () => freshnessRun(c, rt, "freshet", LINGER_MS, seconds, watch)],
      [`control: raw kafkajs consumer (eachBatch, JSON.parse only), maxWaitTimeInMs ${P5_LINGER_MS}`, () => freshnessRun(c, rt, "raw", P5_LINGER_MS, seconds, watch)],
      [`control: raw kafkajs consumer, maxWaitTimeInMs ${LINGER_MS}`, () => freshnessRun(c, rt, "raw", LINGER_MS, seconds, watch)],
    ];
    for (const [what, f] of opts.small ? [] : info) {
      const r = await f();
      log(`  (info) ${what}: ${r.line}`);
      detail.push(`P5 ${rt} (information, not the figure) ${what}: ${r.line}`);
    }
  } finally {
    await c.flush.config("SET", "notify-keyspace-events", "");
    sub.disconnect();
  }
  const value = median(p99s);
  return {
    entries: [absoluteEntry("P5", rt, "p99 ms, produce -> visible in Redis at 5k events/s", "<= 50", p99s, value)],
    notes: [
      `P5 ${rt}: the bench sends ${P5_RATE / (1000 / P5_TICK_MS)} events every ${P5_TICK_MS} ms (kafkajs producer, acks -1, no producer linger), each with its own key, stamped when its send starts; ` +
        `"visible" = the keyspace notification of the write script's HSET reaching a subscriber in the bench process (Redis notify-keyspace-events Eh). ` +
        `Consumer: Freshet with lingerMs ${P5_LINGER_MS} (= kafkajs maxWaitTimeInMs; minBytes 1), batchSize 500, 4 partitions at once. lingerMs matters on the mock cluster: a fetch that finds no new data is held for the whole maxWaitTime even when data arrives meanwhile ` +
        `(a real broker answers as soon as minBytes is there), so with Freshet's default of ${LINGER_MS} ms the latency is about the linger itself (see the information lines). ` +
        `Also a mock quirk: a fetch returns one record batch (one producer send) per partition, so a consumer that falls behind catches up one send per fetch. The first ${P5_WARMUP_S} s of each run are warm-up and not counted. value = median of the runs' p99.`,
      ...detail,
    ],
  };
}

async function p8(c: Ctx, rt: Runtime): Promise<{ entries: Entry[]; notes: string[] }> {
  const { opts, log } = c;
  const n = Number(process.env.BENCH_P8_RECORDS ?? (opts.small ? 20_000 : 1_000_000));
  const ahead = Math.min(P8_MAX_AHEAD, Math.max(5000, n / 4));
  const topic = `bench-p8-${uid()}`;
  const group = `p8-${uid()}`;
  await c.producer.send({ topic, acks: -1, messages: [] }).catch(() => {});
  await c.admin.fetchTopicMetadata({ topics: [topic] }).catch(() => {});
  await c.flush.flushall();
  log(`P8 ${rt}: ${n} events (${P8_USERS} users) produced while Freshet consumes, at most ${ahead} ahead; RSS of the consumer process every second`);
  let acked = 0;
  /** The worker's last heap used, heap total and external, MB. */
  let heap: [number, number, number] | undefined;
  const w = startWorker(rt, FILE, ["freshet", ...workerArgs(c, topic, group, n, ["--progress", "250"])], (l) => {
    if (!l.startsWith("PROGRESS ")) return;
    const [, a, ...mem] = l.split(" ");
    acked = Number(a);
    if (mem.length === 3) heap = mem.map(Number) as [number, number, number];
  });
  const samples: { t: number; mb: number; acked: number; heap?: [number, number, number] }[] = [];
  const t0 = performance.now();
  const sampler = setInterval(() => {
    const mb = rssMB(w.pid);
    if (mb !== undefined) samples.push({ t: (performance.now() - t0) / 1000, mb, acked, heap });
  }, 1000);
  let result: WorkerResult;
  try {
    await w.line("JOINED", 90_000);
    // One event per ms, ending now: never past the processor's future-skew bound (5 min), whatever n is.
    const ts = Date.now();
    let produced = 0;
    let startedAt = 0;
    while (produced < n) {
      if (produced - acked >= ahead) {
        await sleep(20);
        continue;
      }
      const messages = [];
      const end = Math.min(n, produced + 1000);
      for (let s = produced; s < end; s++) messages.push({ key: String(s % P8_USERS), value: Buffer.from(benchEvent(s, s % P8_USERS, ts - n + s)) });
      await c.producer.send({ topic, acks: -1, messages });
      startedAt ||= performance.now();
      produced = end;
    }
    const producedIn = (performance.now() - startedAt) / 1000;
    result = await Promise.race([w.result as Promise<WorkerResult>, sleep(600_000).then(() => { throw new Error(`P8: the consumer did not finish; ${acked} of ${n} acknowledged`); })]);
    const ingestS = result.elapsedMs / 1000;
    const size = await topicSize(c.admin, topic);
    const lagCommitted = await groupLag(c.admin, group, topic);
    const { written, stale, late, invalid } = result.counts!;
    const sum = written + stale + late + invalid;
    // RSS over the ingestion (first acknowledged batch to the last): thirds.
    const during = samples.filter((s) => s.acked > 0 && s.acked < n);
    const third = Math.floor(during.length / 3);
    const mean = (xs: { mb: number }[]) => xs.reduce((a, s) => a + s.mb, 0) / Math.max(1, xs.length);
    const middle = mean(during.slice(third, 2 * third));
    const last = mean(during.slice(2 * third));
    const judged = third >= 2;
    const flat = !judged || last <= middle * 1.1;
    const peak = Math.max(...samples.map((s) => s.mb));
    const low = Math.min(...during.map((s) => s.mb), peak);
    const checks = [
      sum === n ? `written ${written} + stale ${stale} + late ${late} + invalid ${invalid} = ${sum} = produced` : `COUNTS DO NOT ADD UP: written ${written} + stale ${stale} + late ${late} + invalid ${invalid} = ${sum}, produced ${n}`,
      size.high === n ? `topic high watermarks sum to ${n}` : `TOPIC HOLDS ${size.high} (expected ${n})`,
      lagCommitted === 0 ? "committed offsets = high watermarks (lag 0)" : `LAG ${lagCommitted} records left uncommitted`,
      Object.values(result.lag ?? {}).every((l) => l === 0) ? "consumer.lag() all 0" : `consumer.lag() ${JSON.stringify(result.lag)}`,
      size.trimmed ? "the mock cluster trimmed old messages (they had been consumed)" : "",
    ].filter(Boolean);
    const series = samples.map((s) => Math.round(s.mb)).join(" ");
    const atPeak = samples.find((s) => s.mb === peak)?.heap;
    const breakdown = atPeak ? `; at the peak: heap used ${atPeak[0]} MB of heap total ${atPeak[1]} MB, external ${atPeak[2]} MB, the rest (code, stacks, allocator) ${fmt(peak - atPeak[1] - atPeak[2])} MB; before ingestion: RSS ${fmt(samples[0]?.mb ?? 0)} MB, heap total ${samples[0]?.heap?.[1] ?? "?"} MB` : "";
    const shape = !judged
      ? `too few samples during ingestion (${during.length}) to judge flatness`
      : `during ingestion mean of the middle third ${fmt(middle)} MB, last third ${fmt(last)} MB: ${flat ? "flat (last <= middle + 10%)" : "NOT FLAT (last third > middle third + 10%)"}`;
    const line = `peak ${fmt(peak)} MB; ${shape}; ` +
      `${n} events in ${fmt(ingestS)} s (${fmt(result.rate)}/s consumed, produced in ${fmt(producedIn)} s); ${checks.join("; ")}`;
    log("  " + line);
    if (!flat) log(`!! P8 ${rt}: RSS is not flat after warm-up`);
    if (sum !== n || lagCommitted !== 0) throw new Error(`P8: ${checks.join("; ")}`);
    const entry = { ...absoluteEntry("P8", rt, "peak RSS MB of the consumer while ingesting 1M events", "<= 120", [low, peak], Math.round(peak * 10) / 10), runs: 1, min: Math.round(low * 10) / 10, max: Math.round(peak * 10) / 10 };
    return {
      entries: [entry],
      notes: [
        `P8 ${rt}: ${line}`,
        `P8 ${rt}: value = peak VmRSS of the consumer process (Freshet defaults: batchSize 500, 4 partitions at once; kafkajs maxBytesPerPartition 1 MiB); min = lowest sample during ingestion; ${flat ? "" : "NOT FLAT; "}RSS MB each second: ${series}${breakdown}`,
      ],
    };
  } finally {
    clearInterval(sampler);
    await w.child.stop("SIGTERM", 15_000);
  }
}

const PARTS: Record<string, (c: Ctx, rt: Runtime) => Promise<{ entries: Entry[]; notes: string[] }>> = { p1: p1p2, p5, p8 };

export async function runKafka(opts: BenchOptions, log: (m: string) => void = (m) => console.log(m)) {
  const parts = opts.names.map((s) => s.toLowerCase()).filter((s) => s in PARTS || s === "p2");
  const which = parts.length ? [...new Set(parts.map((p) => (p === "p2" ? "p1" : p)))] : Object.keys(PARTS);
  const entries: Entry[] = [];
  const notes: string[] = [];
  const failures: string[] = [];
  const [kafka, redis] = await Promise.all([startKafka(), startRedis()]);
  const { Kafka, logLevel } = await kafkajs();
  const client = new Kafka({ clientId: "freshet-bench", brokers: kafka.brokers, logLevel: logLevel.NOTHING });
  const producer = await connectProducer(client);
  const admin = client.admin();
  await admin.connect();
  const flush = new Redis(redis.url, { maxRetriesPerRequest: 1 });
  const c: Ctx = { opts, kafka, redis, client, producer, admin, flush, brokerPid: childPid((cmd) => cmd[0].endsWith("kcat")), log };
  try {
    for (const rt of streamRuntimes(opts.runtimes)) {
      for (const p of which) {
        try {
          const load0 = loadavg()[0];
          const t0 = performance.now();
          const r = await PARTS[p](c, rt);
          entries.push(...r.entries);
          notes.push(...r.notes, `${p === "p1" ? "P1/P2" : p.toUpperCase()} ${rt}: took ${fmt((performance.now() - t0) / 1000)} s; machine load average (1 min) ${load0.toFixed(2)} at the start, ${loadavg()[0].toFixed(2)} at the end (${cpus().length} cores; other work shares them)`);
        } catch (e) {
          failures.push(`${p} ${rt}: ${(e as Error)?.stack ?? e}`);
          log(`!! ${p.toUpperCase()} failed on ${rt}: ${(e as Error)?.message ?? e}`);
        }
      }
    }
  } finally {
    flush.disconnect();
    await producer.disconnect().catch(() => {});
    await admin.disconnect().catch(() => {});
    await Promise.all([kafka.stop(), redis.stop()]);
  }
  return { entries, notes, failures };
}

const argv = process.argv.slice(2);
if (argv[0] === "--worker") {
  const { workerMain } = await import("./worker-main.ts");
  workerMain({ raw: rawWorker, naive: naiveWorker, freshet: freshetWorker }, argv);
} else {
  const { benchMain, isMain } = await import("./lib.ts");
  if (isMain(import.meta.url)) await benchMain("kafka", runKafka, argv);
}
