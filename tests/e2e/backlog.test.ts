// @runtimes node
// Reliability scenario 11, backlog catch-up, end to end: a low-rate stream
// with 100 minutes of perfectly ordered history (600 events, one every 10 s,
// 7 keys round-robin, all on partition 0), produced with kcat, consumed from
// the earliest offset by a real `freshet consume` process into a real
// redis-server, in batches of 500, with the strictest settings
// (watermarkDelay 5m, dropLate). No record may be late: the watermark is the
// greatest event time seen BEFORE a batch, so a batch's own history never
// makes itself late. (The old per-batch watermark, max of the batch minus
// 5m, dead-lettered 538 of these 600.) The Redis contents must equal those
// of the same stream consumed one record at a time (a second topic, batchSize 1).
// Then an event 10 minutes behind the last one, alone in its batch, is
// dead-lettered as late by the running process; and after a restart (the
// watermark restored from Redis) another one past the restored watermark is
// dead-lettered as late, while one within the delay is written.
import { test } from "node:test";
import assert from "node:assert/strict";
import { existsSync, mkdtempSync, readFileSync, rmSync, symlinkSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { Redis } from "ioredis";
import * as v from "valibot";
import { createProcessor, entity, featureRepo, kafkaSource, streamFeatureView, type DeadLetter, type RawRecord } from "../../mod.ts";
import { redisStore } from "../../plugins/stores/redis/redis.ts";
import { memoryDeadLetters } from "../../plugins/stores/memory.ts";
import { caughtUp, offsets, unique, until, useKafkaTestBed } from "../fixtures/kafka-harness.ts";
import { kcatProduce, root, scrape, startCli, sumMetric, type Sample } from "../fixtures/cli-harness.ts";
import { offlineLogRows } from "../fixtures/offline-log.ts";

const bed = useKafkaTestBed();

const N = 600;
const KEYS = 7;
const STEP_MS = 10_000;
const DELAY_MS = 5 * 60_000;

function writeRepo(dir: string, o: { project: string; brokers: string[]; big: { topic: string; groupId: string }; one: { topic: string; groupId: string } }): string {
  // The repo imports valibot through a node_modules link, and freshet by its path, as a user's repo would.
  symlinkSync(join(root, "node_modules"), join(dir, "node_modules"), "dir");
  const path = join(dir, "feature_repo.ts");
  writeFileSync(path, `import * as v from "valibot";
import { entity, featureRepo, kafkaSource, streamFeatureView } from ${JSON.stringify(join(root, "mod.ts"))};

const key = entity({ name: "key", joinKeys: ["k"] });
const schema = v.object({ k: v.string(), seq: v.pipe(v.number(), v.integer()), label: v.string(), ts: v.string() });
const common = { kafkaBootstrapServers: ${JSON.stringify(o.brokers)}, timestampField: "ts", watermarkDelay: "5m", lingerMs: 100 } as const;
const big = kafkaSource({ name: "backlog_big", topic: ${JSON.stringify(o.big.topic)}, groupId: ${JSON.stringify(o.big.groupId)}, batchSize: 500, ...common });
const one = kafkaSource({ name: "backlog_one", topic: ${JSON.stringify(o.one.topic)}, groupId: ${JSON.stringify(o.one.groupId)}, batchSize: 1, ...common });
const view = (name: string, source: typeof big) => streamFeatureView({ name, entities: [key], source, ttl: "1d", dropLate: true, offline: true, schema });

export default featureRepo({ project: ${JSON.stringify(o.project)}, definitions: [big, one, view("backlog_big_view", big), view("backlog_one_view", one)] });
`);
  return path;
}

const readLetters = (file: string): DeadLetter[] =>
  existsSync(file) ? readFileSync(file, "utf8").split("\n").filter(Boolean).map((l) => JSON.parse(l) as DeadLetter) : [];
const readOffline = offlineLogRows;

/** Every hash of one view's entities, with its absolute expiry: what Redis holds for the view. */
async function dumpView(redis: Redis, project: string, view: string): Promise<Record<string, { hash: Record<string, string>; expireAt: number }>> {
  const prefix = `freshet:${project}:${view}:`;
  const keys: string[] = [];
  let cursor = "0";
  do {
    const [next, batch] = await redis.scan(cursor, "MATCH", `${prefix}*`, "COUNT", 1000);
    cursor = next;
    keys.push(...batch);
  } while (cursor !== "0");
  const out: Record<string, { hash: Record<string, string>; expireAt: number }> = {};
  for (const k of keys.sort()) out[k.slice(prefix.length)] = { hash: await redis.hgetall(k), expireAt: Number(await redis.call("PEXPIRETIME", k)) };
  return out;
}

function outcomes(samples: Sample[], source: string) {
  const count = (outcome: string) => sumMetric(samples, "freshet_records_total", { source, outcome });
  return {
    written: count("written"),
    stale: count("stale"),
    expired: count("expired"),
    late: count("late"),
    invalid: count("invalid"),
    lateArrivals: sumMetric(samples, "freshet_late_arrivals_total", { source }),
  };
}

test("backlog catch-up: 100 minutes of in-order history in batches of 500 with dropLate: nothing late, all 600 accounted, Redis equal to one record at a time; a real late event after a restart is dead-lettered", { timeout: 120_000 }, async () => {
  const dir = mkdtempSync(join(tmpdir(), "freshet-backlog-"));
  const project = unique("backlog").replace(/-/g, "_");
  const big = { topic: unique("backlog-big"), groupId: unique("g-big") };
  const one = { topic: unique("backlog-one"), groupId: unique("g-one") };
  const repo = writeRepo(dir, { project, brokers: bed.kafkaSvc.brokers, big, one });
  const dataDir = join(dir, "data");
  const letters = join(dataDir, "dead-letters.jsonl");
  const redis = new Redis(bed.redis.url, { maxRetriesPerRequest: 1 });
  const args = ["consume", repo, "--store", bed.redis.url, "--data-dir", dataDir, "--port", "0", "--host", "127.0.0.1"];

  // Whole seconds, the last event 10 minutes ago: 600 events at 10 s, from 110 to 10 minutes ago.
  const t0 = Math.floor(Date.now() / 1000) * 1000 - 110 * 60_000;
  const at = (seq: number) => t0 + seq * STEP_MS;
  const line = (seq: number, k = `k${seq % KEYS}`, ts = at(seq)) => JSON.stringify({ k, seq, label: `${k}@${seq}`, ts: new Date(ts).toISOString() });
  const lines = Array.from({ length: N }, (_, i) => line(i));
  const last = at(N - 1);
  // One kcat session per topic: the whole backlog is one message set, so the consumer sees it at once.
  await Promise.all([kcatProduce(bed.kafkaSvc.brokers, big.topic, lines), kcatProduce(bed.kafkaSvc.brokers, one.topic, lines)]);
  for (const t of [big.topic, one.topic]) assert.equal((await offsets(bed.admin, "nobody", t)).high[0], N, `${t} holds the 600 events on partition 0`);

  try {
    const wmKeyBig = `freshet:${project}:#wm:backlog_big_view:kafka:${big.topic}:0`;
    const liveLateTs = last - DELAY_MS - 5 * 60_000; // 10 minutes behind the greatest event time: past the 5m delay
    // ---- phase 1: the backlog, consumed from the start; then, in the same process, one real late event alone in its batch.
    const cli = await startCli(args);
    let samples: Sample[];
    let samples1b: Sample[];
    let dead: DeadLetter[];
    let wmBigAfterBacklog: string | null;
    try {
      await until("both groups at the high watermark", async () => (await caughtUp(bed.admin, big.groupId, big.topic)) && (await caughtUp(bed.admin, one.groupId, one.topic)), 45_000, 200);
      samples = await scrape(cli.port);
      dead = readLetters(letters); // written before the commit: complete once the offsets are
      wmBigAfterBacklog = await redis.get(wmKeyBig);
      // ---- phase 1b: the process knows the greatest event time (the last event): one 10 minutes behind it is late.
      await kcatProduce(bed.kafkaSvc.brokers, big.topic, [line(N, "late_live", liveLateTs)], { lingerMs: 0 });
      await until("the live late event committed", () => caughtUp(bed.admin, big.groupId, big.topic), 30_000, 200);
      samples1b = await scrape(cli.port);
    } finally {
      assert.equal(await cli.stop(), 0, `clean exit on SIGTERM:\n${cli.output()}`);
    }

    // No record late, none invalid: the dead-letter file is empty and the counters say so.
    assert.equal(dead.length, 0, `no dead letters; got ${dead.length}, e.g. ${JSON.stringify(dead[0])}`);
    const bigCounts = outcomes(samples, "backlog_big");
    const oneCounts = outcomes(samples, "backlog_one");
    assert.equal(bigCounts.late, 0, "no record late in batches of 500");
    assert.equal(bigCounts.lateArrivals, 0, "no late arrival either");
    assert.equal(oneCounts.late + oneCounts.lateArrivals, 0);
    // All 600 accounted as written or stale (latest-wins inside a batch of 500 leaves 7 rows per batch).
    for (const [name, c] of [["batches of 500", bigCounts], ["one at a time", oneCounts]] as const) {
      assert.equal(c.written + c.stale, N, `${name}: written + stale = 600 (${JSON.stringify(c)})`);
      assert.equal(c.expired + c.invalid, 0, `${name}: ${JSON.stringify(c)}`);
    }
    assert.equal(oneCounts.written, N, "one at a time, every record is newer than the last");
    // The big side really ran in large batches (else this test would prove nothing about batching).
    const bigBatches = sumMetric(samples, "freshet_batches_total", { source: "backlog_big" });
    const oneBatches = sumMetric(samples, "freshet_batches_total", { source: "backlog_one" });
    assert.ok(bigBatches >= 2 && bigBatches <= 3, `600 records in 2 or 3 batches of at most 500, got ${bigBatches}`);
    assert.equal(oneBatches, N);
    assert.ok(bigCounts.written <= bigBatches * KEYS);

    // The offline log holds every record of both, identically.
    const offBig = await readOffline(dataDir, "backlog_big_view");
    const offOne = await readOffline(dataDir, "backlog_one_view");
    assert.equal(offBig.length, N, "every record in the offline log");
    // (Apart from where each came from and when it was appended.)
    const strip = (rows: Record<string, unknown>[]) => rows.map(({ _log_seq: _s, _position: _p, ...r }) => r);
    assert.deepEqual(strip(offBig), strip(offOne));
    assert.deepEqual(offBig.map((r) => r.event_timestamp), lines.map((l) => JSON.parse(l).ts), "in order, every event time");

    // Redis: the same hashes (features, _ts), the same expiry, the same watermark, as one record at a time.
    const a = await dumpView(redis, project, "backlog_big_view");
    const b = await dumpView(redis, project, "backlog_one_view");
    assert.equal(Object.keys(a).length, KEYS);
    assert.deepEqual(a, b, "Redis contents of the batch-500 view equal those of the batch-1 view");
    for (let k = 0; k < KEYS; k++) {
      const lastSeq = N - 1 - ((N - 1 - k) % KEYS);
      const entry = a[`k=k${k}`];
      assert.ok(entry, `k${k} is stored`);
      assert.equal(entry.hash._ts, String(at(lastSeq)), `k${k} holds its last event`);
      assert.equal(JSON.parse(entry.hash.label), `k${k}@${lastSeq}`);
      assert.equal(entry.expireAt, at(lastSeq) + 86_400_000, "expires at event time + ttl");
    }
    const wmBig = wmBigAfterBacklog;
    const wmOne = await redis.get(`freshet:${project}:#wm:backlog_one_view:kafka:${one.topic}:0`);
    // The stored watermark is the greatest event time seen, in batches of 500 as one at a time.
    assert.equal(wmOne, String(last));
    assert.equal(wmBig, String(last));

    // Phase 1b: the late event, alone in its batch, is dead-lettered against the greatest event time seen (the last one).
    const d1 = outcomes(samples1b, "backlog_big");
    assert.equal(sumMetric(samples1b, "freshet_batches_total", { source: "backlog_big" }) - bigBatches, 1, "a batch of its own");
    assert.deepEqual({ late: d1.late, written: d1.written - bigCounts.written, stale: d1.stale - bigCounts.stale, lateArrivals: d1.lateArrivals }, { late: 1, written: 0, stale: 0, lateArrivals: 0 });
    const dead1 = readLetters(letters);
    assert.equal(dead1.length, 1, JSON.stringify(dead1));
    assert.equal(dead1[0].reason, "late");
    assert.equal(dead1[0].view, "backlog_big_view");
    assert.deepEqual(dead1[0].position, { kind: "kafka", topic: big.topic, partition: 0, offset: String(N) });
    assert.match(dead1[0].message, new RegExp(`behind the watermark ${new Date(last - DELAY_MS).toISOString()} \\(the greatest event time seen on this partition, ${new Date(last).toISOString()}`));
    assert.equal(await redis.exists(`freshet:${project}:backlog_big_view:k=late_live`), 0, "written nowhere");
    assert.equal((await readOffline(dataDir, "backlog_big_view")).length, N);
    // That batch committed what it was judged by (|before): the greatest event time of the stream.
    const restored = Number(await redis.get(wmKeyBig));
    assert.equal(restored, last);

    // ---- phase 2: after a restart, one event past the restored watermark, alone in its batch, and one within the delay.
    const lateTs = restored - DELAY_MS - 5 * 60_000; // 10 minutes behind the greatest event time restored: past the 5m delay
    const okTs = restored - DELAY_MS + 60_000; // 4 minutes behind: within the delay
    await kcatProduce(bed.kafkaSvc.brokers, big.topic, [line(N + 1, "late_key", lateTs)], { lingerMs: 0 });
    await kcatProduce(bed.kafkaSvc.brokers, big.topic, [line(N + 2, "ok_key", okTs)], { lingerMs: 0 });
    const cli2 = await startCli(args);
    let samples2: Sample[];
    try {
      await until("the two new events committed", () => caughtUp(bed.admin, big.groupId, big.topic), 30_000, 200);
      samples2 = await scrape(cli2.port);
    } finally {
      assert.equal(await cli2.stop(), 0, `clean exit on SIGTERM:\n${cli2.output()}`);
    }
    assert.equal(sumMetric(samples2, "freshet_batches_total", { source: "backlog_big" }), 2, "each new event in a batch of its own");
    assert.deepEqual(outcomes(samples2, "backlog_big"), { written: 1, stale: 0, expired: 0, late: 1, invalid: 0, lateArrivals: 0 });
    const dead2 = readLetters(letters);
    assert.equal(dead2.length, 2, JSON.stringify(dead2));
    const late = dead2[1];
    assert.equal(late.reason, "late");
    assert.equal(late.source, "backlog_big");
    assert.equal(late.view, "backlog_big_view");
    assert.equal(late.path, "ts");
    assert.deepEqual(late.position, { kind: "kafka", topic: big.topic, partition: 0, offset: String(N + 1) });
    assert.match(late.message, new RegExp(`behind the watermark ${new Date(restored - DELAY_MS).toISOString()}`));
    assert.equal(JSON.parse(late.payload).k, "late_key");
    // The late event is written nowhere; the one within the delay is written online and offline.
    assert.equal(await redis.exists(`freshet:${project}:backlog_big_view:k=late_key`), 0);
    assert.equal(await redis.hget(`freshet:${project}:backlog_big_view:k=ok_key`, "_ts"), String(okTs));
    const off2 = await readOffline(dataDir, "backlog_big_view");
    assert.equal(off2.length, N + 1);
    assert.equal(off2[N].k, "ok_key");
    assert.equal(await redis.get(`freshet:${project}:#wm:backlog_big_view:kafka:${big.topic}:0`), String(restored), "older events do not move the watermark back");
  } finally {
    redis.disconnect();
    rmSync(dir, { recursive: true, force: true });
  }
});

// A restart right after the batch that carried the greatest event time: the first batch after the
// restart is judged by what the last committed batch was judged by (it may be that very batch,
// redelivered after a crash between its write and its ack); every batch after it by the greatest
// event time, restored from the store.
test("a restart right after the batch that carried the greatest event time still knows it", { timeout: 30_000 }, async () => {
  const source = kafkaSource({ name: "gap", kafkaBootstrapServers: bed.kafkaSvc.brokers, topic: "gap", timestampField: "ts", watermarkDelay: "5m" });
  const view = streamFeatureView({ name: "gap_view", entities: [entity({ name: "key", joinKeys: ["k"] })], source, ttl: 0, dropLate: true, schema: v.object({ k: v.string(), seq: v.number() }) });
  const registry = featureRepo({ project: "gap", definitions: [source, view] });
  const project = unique("gap").replace(/-/g, "_");
  const t0 = Date.now() - 110 * 60_000;
  const rec = (seq: number, ts = t0 + seq * STEP_MS): RawRecord => ({ value: JSON.stringify({ k: `k${seq % KEYS}`, seq, ts: new Date(ts).toISOString() }), position: { kind: "kafka", topic: "gap", partition: 0, offset: String(seq) } });
  const events = Array.from({ length: N }, (_, i) => rec(i));
  const first = redisStore({ url: bed.redis.url, project });
  try {
    const p1 = createProcessor({ registry, online: first, deadLetters: memoryDeadLetters() });
    assert.equal((await p1.process("gap", events.slice(0, 500))).late, 0);
    assert.equal((await p1.process("gap", events.slice(500))).late, 0);
  } finally {
    await first.close();
  }
  // A crash before the last batch's ack: its redelivery to a new process is judged as the first time.
  const second = redisStore({ url: bed.redis.url, project });
  try {
    const dlq = memoryDeadLetters();
    const p2 = createProcessor({ registry, online: second, deadLetters: dlq });
    assert.equal(await second.meta.getWatermark("gap_view:kafka:gap:0"), t0 + (N - 1) * STEP_MS, "the greatest event time is stored");
    const redelivered = await p2.process("gap", events.slice(500));
    assert.deepEqual([redelivered.late, redelivered.written], [0, 0], "the redelivered batch is not late, and changes nothing");
    // The next batch is judged by the greatest event time: 10 minutes behind it is late.
    const r = await p2.process("gap", [rec(N, t0 + (N - 1) * STEP_MS - DELAY_MS - 5 * 60_000)]);
    assert.equal(r.late, 1);
    assert.equal(dlq.letters.length, 1);
  } finally {
    await second.close();
  }
});
