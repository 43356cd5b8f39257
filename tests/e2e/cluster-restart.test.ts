// @runtimes node
// Reliability scenario 18, Redis Cluster: Kafka -> a 3-master Redis Cluster
// started by the harness, with the master of the metadata slot SIGKILLed
// under load, twice over:
// - restarted on its port (3 masters, append-only files with fsync always):
//   the consumer pauses while the cluster is down (no acknowledgement, no
//   commit) and resumes by itself when it is back;
// - failed over (6 nodes, one replica each, no persistence, the store with
//   replicaAcks: 1): the replica takes the slots, the consumer follows the
//   slots (MOVED) and waits for a replica again (WAIT) until the old master
//   is back as the new one's replica.
// Either way nothing is lost at the end (every sequence number is there),
// latest-wins holds (each of 40 keys holds its newest event) and the
// applied marks held per bucket (the lifetime count and sum of each key
// equal the events produced, exactly: nothing folded twice across the
// redeliveries the outage caused).
import { after, before, test } from "node:test";
import assert from "node:assert/strict";
import type { Admin, Kafka, Producer } from "kafkajs";
import * as v from "valibot";
import { entity, featureRepo, kafkaSource, streamFeatureView } from "../../mod.ts";
import { kafkaConsumer } from "../../plugins/sources/kafka.ts";
import { redisStore } from "../../plugins/stores/redis/redis.ts";
import { clusterLayout } from "../../plugins/stores/redis/cluster.ts";
import { memoryDeadLetters } from "../../plugins/stores/memory.ts";
import type { SourceBatch, StreamSource } from "../../core/index.ts";
import { type KafkaService, startKafka } from "../services/kafka.ts";
import { type RedisClusterService, startRedisCluster } from "../services/redis-cluster.ts";
import { caughtUp, connectProducer, missingSeqs, offsets, produceSteadily, recordingLogger, sleep, startConsume, testKafka, unique, until } from "../fixtures/kafka-harness.ts";

let kafkaSvc: KafkaService;
let kafka: Kafka;
let producer: Producer;
let admin: Admin;

before(async () => {
  kafkaSvc = await startKafka({ brokers: 1 });
  kafka = testKafka(kafkaSvc.brokers);
  producer = await connectProducer(kafka);
  admin = kafka.admin();
  await admin.connect();
});

after(async () => {
  await producer?.disconnect();
  await admin?.disconnect();
  await kafkaSvc?.stop();
});

const KEYS = 40;

test("scenario 18: a Redis Cluster master SIGKILLed and restarted under load: the consumer pauses and resumes, nothing is lost, latest-wins and applied marks hold per bucket", { timeout: 120_000 }, async () => {
  const cluster = await startRedisCluster({ masters: 3, appendonly: true, nodeTimeoutMs: 1500 });
  try {
    await scenario18(cluster, "restart");
  } finally {
    await cluster.stop();
  }
});

test("scenario 18 with replicas: a master SIGKILLed under load fails over to its replica and comes back as a replica: nothing acknowledged is lost (replicaAcks: 1), latest-wins and applied marks hold per bucket", { timeout: 150_000 }, async () => {
  const cluster = await startRedisCluster({ masters: 3, replicas: 1, appendonly: false, nodeTimeoutMs: 1500 });
  try {
    await scenario18(cluster, "failover");
  } finally {
    await cluster.stop();
  }
});

async function scenario18(cluster: RedisClusterService, mode: "restart" | "failover"): Promise<void> {
  const topic = unique("cluster");
  const groupId = unique("g");
  const project = unique("s18").replace(/-/g, "_");
  const N = 3000;
  const src = kafkaSource({ name: "events", kafkaBootstrapServers: kafkaSvc.brokers, topic, groupId, timestampField: "ts", batchSize: 50, lingerMs: 50 });
  const schema = v.object({ seq: v.number(), k: v.number(), ts: v.number(), n: v.number() });
  const bySeq = streamFeatureView({ name: "events_by_seq", entities: [entity({ name: "event", joinKeys: ["seq"] })], source: src, ttl: 0, schema });
  const key = entity({ name: "key", joinKeys: ["k"] });
  const latest = streamFeatureView({ name: "latest_by_key", entities: [key], source: src, ttl: 0, schema });
  const totals = streamFeatureView({
    name: "totals_by_key", entities: [key], source: src, ttl: 0, schema,
    aggregations: [{ column: "n", function: "count", timeWindow: "lifetime" }, { column: "n", function: "sum", timeWindow: "lifetime" }],
  });
  const registry = featureRepo({ project, definitions: [src, bySeq, latest, totals] });
  const online = redisStore({ url: cluster.url, project, connectTimeoutMs: 500, commandTimeoutMs: 1000, replicaAcks: mode === "failover" ? 1 : 0 });
  const log = recordingLogger();
  const consumer = kafkaConsumer(src, { sessionTimeout: 6000, heartbeatInterval: 500, partitionsConsumedConcurrently: 4, logger: log });
  let handed = 0;
  const counting: StreamSource = { ...consumer, run: (onBatch, signal) => consumer.run((b: SourceBatch) => (handed++, onBatch(b)), signal) };
  const run = startConsume(counting, { registry, online, deadLetters: memoryDeadLetters() }, { logger: log, retry: { initialMs: 100, maxMs: 500 } });

  // Event seq: key seq % KEYS, event time rising with seq, so the newest event of key k is the highest seq with that key.
  const t0 = Date.now() - 60_000;
  const event = (seq: number) => JSON.stringify({ seq, k: seq % KEYS, ts: t0 + seq, n: seq * 2 });
  const loading = produceSteadily(producer, topic, N, event, 80).done;
  try {
    await until("600 records written", () => run.acked >= 600, 40_000, 20);
    // The master that holds the metadata slot: every batch needs it, so the outage stops every batch.
    const meta = clusterLayout({ project }).idemKey("x");
    const slot = Number(cluster.cli(cluster.nodes[0].port, "cluster", "keyslot", meta).trim());
    const victim = cluster.nodes.find((n) => cluster.masters().find((m) => m.slots.some(([a, b]) => slot >= a && slot <= b))!.port === n.port)!;
    const mastersBefore = cluster.masters().map((m) => m.port).sort();
    await victim.kill();
    const downAt = Date.now();
    await sleep(800); // batches past their last write may still be acknowledged
    const ackedBefore = run.acked;
    if (mode === "restart") {
      const before = await offsets(admin, groupId, topic);
      const handedBefore = handed;
      while (Date.now() - downAt < 4000) {
        await sleep(300);
        assert.deepEqual((await offsets(admin, groupId, topic)).committed, before.committed, "no commit while the master is down");
      }
      assert.equal(run.acked, ackedBefore, "nothing acknowledged while the master is down");
      assert.ok(handed - handedBefore <= 4, `${handed - handedBefore} batches handed on during the outage`);
    } else {
      // The replica takes over the victim's slots; the new master has no replica until the victim is back.
      await until("the replica took over", () => {
        try {
          const now = cluster.masters().map((m) => m.port).sort();
          return now.length === 3 && !now.includes(victim.port) && now.join() !== mastersBefore.join();
        } catch {
          return false;
        }
      }, 30_000, 200);
      await sleep(1500);
    }
    assert.ok(run.processor.metrics.sum("freshet_batches_total", { result: "retry" }) > 0, "batches were retried (STORE_UNAVAILABLE), not dead-lettered");
    assert.ok(log.lines.some((l) => l.level === "warn" && /source paused/.test(l.msg)));

    await victim.start();
    await cluster.waitOk();
    if (mode === "failover") assert.ok(!cluster.masters().some((m) => m.port === victim.port), "the old master came back as a replica");
    await loading;
    await until("all offsets committed after the restart", () => caughtUp(admin, groupId, topic), 60_000, 200);
    assert.ok(run.acked > ackedBefore);

    assert.deepEqual(await missingSeqs(online, bySeq, N), [], "every sequence number is in the cluster");
    const keys = Array.from({ length: KEYS }, (_, k) => `k=${k}`);
    const newest = await online.read(latest, keys, ["seq"]);
    const sums = await online.read(totals, keys, ["count_n_lifetime", "sum_n_lifetime"]);
    for (let k = 0; k < KEYS; k++) {
      const seqs = Array.from({ length: N / KEYS }, (_, i) => i * KEYS + k);
      assert.equal(newest[k].seq.value, seqs[seqs.length - 1], `latest-wins: key ${k} holds its newest event`);
      assert.equal(sums[k].count_n_lifetime.value, seqs.length, `count of key ${k}: every event folded once`);
      assert.equal(sums[k].sum_n_lifetime.value, seqs.reduce((a, s) => a + s * 2, 0), `sum of key ${k}`);
    }
    // The marks are per bucket: each one in the slot of its bucket, none beyond what was consumed.
    const marks = new Set<string>();
    for (let k = 0; k < KEYS; k++) for (let p = 0; p < 4; p++) marks.add(online.markKey!(totals, `k=${k}`, `totals_by_key:kafka:${topic}:${p}`));
    const { high } = await offsets(admin, groupId, topic);
    let seen = 0;
    for (const m of marks) {
      const value = await online.getAppliedMark(m);
      if (value === undefined) continue;
      seen++;
      const p = Number(m.split(":")[3].split("#")[0]);
      assert.ok(Number(value) < high[p], `mark ${m} = ${value} is below the high watermark ${high[p]}`);
    }
    assert.ok(seen > 4, `${seen} per-bucket marks`);
    assert.equal(log.lines.filter((l) => /dead.letter/i.test(l.msg)).length, 0, "nothing dead-lettered");
  } finally {
    await loading.catch(() => {});
    await run.stop();
    await online.close();
  }
}
