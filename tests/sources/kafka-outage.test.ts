// Reliability scenario 3 through Kafka: redis-server is stopped under load
// and started again. The consumer pauses (no new batches, no commits while
// Redis is down), and afterwards every sequence number is in Redis and the
// committed offsets reach the high watermarks.
import { after, before, test } from "node:test";
import assert from "node:assert/strict";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import type { Admin, Kafka, Producer } from "kafkajs";
import { kafkaConsumer } from "../../plugins/sources/kafka.ts";
import { redisStore } from "../../plugins/stores/redis/redis.ts";
import { memoryDeadLetters } from "../../plugins/stores/memory.ts";
import type { SourceBatch, StreamSource } from "../../core/index.ts";
import { startKafka, type KafkaService } from "../services/kafka.ts";
import { startRedis, type RedisService } from "../services/redis.ts";
import { caughtUp, connectProducer, missingSeqs, offsets, produceSteadily, recordingLogger, seqEvent, seqRepo, sleep, startConsume, testKafka, unique, until } from "../fixtures/kafka-harness.ts";

let kafkaSvc: KafkaService;
let redis: RedisService;
let kafka: Kafka;
let producer: Producer;
let admin: Admin;
let dir: string;

before(async () => {
  dir = mkdtempSync(join(tmpdir(), "freshet-outage-"));
  // An append-only file, so that what was written before the outage is still there after the restart.
  // One broker: kafkajs then has one fetch loop, and it is blocked for the whole outage, so only the
  // heartbeats the source sends while batches wait can keep the member in the group.
  [kafkaSvc, redis] = await Promise.all([startKafka({ brokers: 1 }), startRedis({ args: ["--appendonly", "yes", "--appendfsync", "always", "--dir", dir] })]);
  kafka = testKafka(kafkaSvc.brokers);
  producer = await connectProducer(kafka);
  admin = kafka.admin();
  await admin.connect();
});

after(async () => {
  await producer?.disconnect();
  await admin?.disconnect();
  await Promise.all([kafkaSvc?.stop(), redis?.stop()]);
  rmSync(dir, { recursive: true, force: true });
});

test("redis stopped and restarted under load: the source pauses, nothing is committed while it is down, nothing is lost", { timeout: 90_000 }, async () => {
  const topic = unique("outage");
  const groupId = unique("g");
  const N = 3000;
  const concurrency = 4;
  const { source, view, registry } = seqRepo({ kafkaBootstrapServers: kafkaSvc.brokers, topic, groupId, batchSize: 50, lingerMs: 100 });
  const online = redisStore({ url: redis.url, project: unique("p"), connectTimeoutMs: 300, commandTimeoutMs: 1000 });
  const log = recordingLogger();
  // The outage (about 5 s) outlasts the session timeout: only heartbeats sent while batches wait keep the member in the group.
  let joins = 0;
  const consumer = kafkaConsumer(source, { sessionTimeout: 3000, heartbeatInterval: 500, partitionsConsumedConcurrently: concurrency, logger: log, onEvent: (e) => void (e.type === "assigned" && joins++) });
  let handed = 0;
  const counting: StreamSource = { ...consumer, run: (onBatch, signal) => consumer.run((b: SourceBatch) => (handed++, onBatch(b)), signal) };
  const run = startConsume(counting, { registry, online, deadLetters: memoryDeadLetters() }, { logger: log, retry: { initialMs: 100, maxMs: 500 } });

  // Load: 3000 events at about 500/s for the whole test.
  const load = produceSteadily(producer, topic, N, seqEvent, 100);
  const loading = load.done;
  try {
    await until("500 records written", () => run.acked >= 500, 30_000, 20);
    await redis.stop();
    const downAt = Date.now();
    // Batches already past their write may still commit; give them a moment, then nothing may move.
    await sleep(700);
    const before = await offsets(admin, groupId, topic);
    const ackedBefore = run.acked;
    const handedBefore = handed;
    while (Date.now() - downAt < 4500) {
      await sleep(300);
      assert.deepEqual((await offsets(admin, groupId, topic)).committed, before.committed, "no commit while Redis is down");
    }
    assert.equal(run.acked, ackedBefore, "nothing acknowledged while Redis is down");
    // Bounded: the batches in flight are retried; no new ones are fetched and handed on.
    assert.ok(handed - handedBefore <= concurrency, `${handed - handedBefore} batches handed on during the outage`);
    assert.ok(load.produced() > run.acked + 500, "the producer kept going while the consumer was paused");
    assert.ok(run.processor.metrics.sum("freshet_batches_total", { result: "retry" }) > 0);
    // Said once, however many partitions retried how often.
    const downLines = log.lines.filter((l) => l.level === "warn" && /store down: .*source paused/.test(l.msg));
    assert.equal(downLines.length, 1, `one "store down" line, got:\n${log.lines.map((l) => l.msg).join("\n")}`);

    await redis.restart();
    await loading;
    await until("all offsets committed after the restart", () => caughtUp(admin, groupId, topic), 30_000, 200);
    assert.deepEqual(await missingSeqs(online, view, N), [], "every sequence number is in Redis");
    const backLines = log.lines.filter((l) => /store is back after \d+ s \(\d+ failures meanwhile\)/.test(l.msg));
    assert.equal(backLines.length, 1, "one line says the store is back");
    assert.equal(joins, 1, "the member stayed in the group through the outage (it kept heartbeating while its batches waited)");
  } finally {
    await loading.catch(() => {});
    await run.stop();
    await online.close();
  }
});
