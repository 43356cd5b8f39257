// Reliability scenario 4 (poison records) and out-of-order events, through
// Kafka: every bad record becomes a dead letter with its reason and its
// topic/partition/offset, and the records after it are written.
//
// The 10 MB record of reliability.md: librdkafka's mock broker keeps at most
// 5 MiB per partition log and silently drops anything bigger (a 6 MiB
// message empties the partition: low watermark = high watermark), so the
// largest record it can carry is a little under 5 MiB. This test sends 4 MiB.
import { test } from "node:test";
import assert from "node:assert/strict";
import { Buffer } from "node:buffer";
import * as v from "valibot";
import * as avscNs from "avsc";
import type { IHeaders } from "kafkajs";
import { entity, featureRepo, kafkaSource, streamFeatureView, type DeadLetter } from "../../mod.ts";
import { kafkaConsumer, kafkaDeadLetters } from "../../plugins/sources/kafka.ts";
import { avroFormat } from "../../plugins/formats/avro.ts";
import { jsonFormat } from "../../plugins/formats/json.ts";
import { redisStore } from "../../plugins/stores/redis/redis.ts";
import { memoryDeadLetters } from "../../plugins/stores/memory.ts";
import { caughtUp, produce, recordingLogger, startConsume, unique, until, useKafkaTestBed } from "../fixtures/kafka-harness.ts";

const avsc = ((avscNs as unknown as { default?: typeof avscNs }).default ?? avscNs) as typeof avscNs;
const GROUP = { sessionTimeout: 6000, heartbeatInterval: 1000 };

const bed = useKafkaTestBed();

/** Reads `count` messages of a topic from the beginning (a throwaway group). */
async function readTopic(topic: string, count: number): Promise<{ offset: string; key: string; value: string; headers: Record<string, string> }[]> {
  const consumer = bed.kafka.consumer({ groupId: unique("reader"), maxWaitTimeInMs: 100, sessionTimeout: 6000, heartbeatInterval: 1000 });
  const out: { offset: string; key: string; value: string; headers: Record<string, string> }[] = [];
  await consumer.connect();
  try {
    await consumer.subscribe({ topics: [topic], fromBeginning: true });
    await consumer.run({
      eachMessage: async ({ message }) => {
        const headers: Record<string, string> = {};
        for (const [k, h] of Object.entries(message.headers as IHeaders)) headers[k] = String(h);
        out.push({ offset: message.offset, key: String(message.key), value: String(message.value), headers });
      },
    });
    await until(`${count} messages on ${topic}`, () => out.length >= count, 30_000);
  } finally {
    await consumer.disconnect();
  }
  return out;
}

test("poison records: each is dead-lettered to a Kafka topic with reason and position, and the records after it are written", { timeout: 90_000 }, async () => {
  const topic = unique("poison");
  const dlqTopic = `${topic}.dead-letters`;
  const now = Date.now();
  const good = (seq: number) => JSON.stringify({ seq, ts: now, n: seq * 2 });
  const big = "x".repeat(4 * 1024 * 1024);
  // Offset = index: everything goes to partition 0, in this order.
  const records: { value: string | null; reason?: DeadLetter["reason"]; path?: string; message?: RegExp }[] = [
    { value: good(0) },
    { value: '{"seq": 1, "ts":', reason: "decode", message: /invalid JSON/ },
    { value: JSON.stringify({ seq: 2, ts: now, n: "two" }), reason: "schema", path: "n" },
    { value: JSON.stringify({ ts: now, n: 3 }), reason: "join_key", path: "seq" },
    { value: JSON.stringify({ seq: 4, ts: now, n: 13 }), reason: "udf", message: /unlucky 13/ },
    { value: JSON.stringify({ seq: 5, ts: "not a time", n: 10 }), reason: "timestamp", path: "ts" },
    { value: good(6) },
    { value: big, reason: "decode", message: /invalid JSON/ },
    { value: good(8) },
    { value: null, reason: "decode", message: /empty message/ },
    { value: "[1, 2]", reason: "decode", message: /expected an object, got an array/ },
    { value: good(11) },
  ];
  // One send per record: the big one has a message set of its own.
  for (const r of records) await produce(bed.producer, topic, [{ partition: 0, value: r.value }]);

  const source = kafkaSource({ name: "poisoned", kafkaBootstrapServers: bed.kafkaSvc.brokers, topic, groupId: unique("g"), timestampField: "ts", batchSize: 3, deadLetterTopic: dlqTopic, messageFormat: jsonFormat() });
  const view = streamFeatureView({
    name: "poisoned_view",
    entities: [entity({ name: "event", joinKeys: ["seq"] })],
    source,
    ttl: 0,
    // ts is left out of the schema: the processor takes it from the raw row, so a bad one is a timestamp error.
    schema: v.object({ seq: v.optional(v.number()), n: v.number() }),
    udf: function unlucky(rows) {
      return rows.map((r) => {
        if (r.n === 13) throw new Error("unlucky 13");
        return r;
      });
    },
  });
  const registry = featureRepo({ project: "kafka_poison", definitions: [source, view] });
  const online = redisStore({ url: bed.redis.url, project: unique("p") });
  const deadLetters = kafkaDeadLetters({ brokers: source.kafkaBootstrapServers, topic: source.deadLetterTopic!, logger: recordingLogger() });
  const run = startConsume(kafkaConsumer(source, { ...GROUP, logger: recordingLogger() }), { registry, online, deadLetters });
  try {
    await until("all offsets committed", () => caughtUp(bed.admin, source.groupId!, topic), 30_000, 200);
    // Every good record is written, including those right after a poison one.
    const rows = await online.read(view, ["seq=0", "seq=6", "seq=8", "seq=11"], ["n"]);
    assert.deepEqual(rows.map((r) => r.n.value), [0, 12, 16, 22]);
    const m = run.processor.metrics;
    assert.equal(m.sum("freshet_records_total", { outcome: "written" }), 4);
    assert.equal(m.sum("freshet_records_total", { outcome: "invalid" }), 8);
  } finally {
    await run.stop();
    await online.close();
    await deadLetters.close?.();
  }

  const expected = records.map((r, offset) => ({ ...r, offset })).filter((r) => r.reason);
  const letters = await readTopic(dlqTopic, expected.length);
  assert.equal(letters.length, expected.length);
  const byOffset = new Map(letters.map((l) => [l.headers["source-offset"], l]));
  for (const e of expected) {
    const l = byOffset.get(String(e.offset));
    assert.ok(l, `a dead letter for offset ${e.offset}`);
    assert.equal(l.headers.reason, e.reason, `offset ${e.offset}`);
    assert.equal(l.headers["source-topic"], topic);
    assert.equal(l.headers["source-partition"], "0");
    assert.equal(l.headers.source, "poisoned");
    assert.equal(l.key, `${topic}/0/${e.offset}`);
    const letter = JSON.parse(l.value) as DeadLetter;
    assert.equal(letter.reason, e.reason);
    assert.deepEqual(letter.position, { kind: "kafka", topic, partition: 0, offset: String(e.offset) });
    if (e.path) assert.equal(letter.path, e.path, `offset ${e.offset} path`);
    if (e.message) assert.match(letter.message, e.message, `offset ${e.offset} message`);
    if (e.value === big) {
      // Cut to fit the dead-letter topic; the original stays at its position.
      assert.equal(l.headers["payload-truncated"], String(big.length));
      assert.ok(l.value.length <= 1_000_000 && letter.payload.length > 900_000, `payload ${letter.payload.length}`);
    } else if (e.value !== null) {
      assert.equal(letter.payload, e.value);
      assert.equal(l.headers["payload-truncated"], undefined);
    }
  }
});

test("bad Avro records are dead letters and the good ones around them are written", { timeout: 60_000 }, async () => {
  const schema = { type: "record", name: "E", fields: [{ name: "seq", type: "long" }, { name: "n", type: "long" }, { name: "ts", type: "long" }] };
  const type = avsc.Type.forSchema(schema as avscNs.Schema);
  const frame = (id: number, body: Uint8Array) => {
    const b = Buffer.alloc(5 + body.length);
    b.writeUInt32BE(id, 1);
    Buffer.from(body).copy(b, 5);
    return b;
  };
  const now = Date.now();
  const ok = (seq: number) => frame(1, type.toBuffer({ seq, n: seq * 2, ts: now }));
  const topic = unique("poison-avro");
  const cases: { value: Uint8Array; message?: RegExp }[] = [
    { value: ok(0) },
    { value: Buffer.from('{"seq": 1}'), message: /bad magic byte 0x7b/ },
    { value: Buffer.from([0, 0, 0]), message: /truncated Confluent header/ },
    { value: frame(77, type.toBuffer({ seq: 3, n: 6, ts: now })), message: /unknown schema id 77/ },
    { value: ok(4).subarray(0, 7), message: /truncated Avro body \(schema id 1\)/ },
    { value: Buffer.concat([ok(5), Buffer.from([9, 9, 9])]), message: /trailing bytes/ },
    { value: ok(6) },
  ];
  await produce(bed.producer, topic, cases.map((c) => ({ partition: 0, value: c.value })));
  const source = kafkaSource({ name: "avro_poisoned", kafkaBootstrapServers: bed.kafkaSvc.brokers, topic, groupId: unique("g"), timestampField: "ts", messageFormat: avroFormat({ schemas: { 1: schema } }) });
  const view = streamFeatureView({ name: "avro_poisoned_view", entities: [entity({ name: "event", joinKeys: ["seq"] })], source, ttl: 0, schema: v.object({ seq: v.number(), n: v.number(), ts: v.number() }) });
  const registry = featureRepo({ project: "kafka_poison_avro", definitions: [source, view] });
  const online = redisStore({ url: bed.redis.url, project: unique("p") });
  const dlq = memoryDeadLetters();
  const run = startConsume(kafkaConsumer(source, { ...GROUP, logger: recordingLogger() }), { registry, online, deadLetters: dlq });
  try {
    await until("all offsets committed", () => caughtUp(bed.admin, source.groupId!, topic), 30_000, 200);
    const rows = await online.read(view, ["seq=0", "seq=6"], ["n"]);
    assert.deepEqual(rows.map((r) => r.n.value), [0, 12]);
    const bad = cases.map((c, offset) => ({ ...c, offset })).filter((c) => c.message);
    assert.equal(dlq.letters.length, bad.length);
    for (const c of bad) {
      const letter = dlq.letters.find((l) => l.position.kind === "kafka" && l.position.offset === String(c.offset));
      assert.ok(letter, `offset ${c.offset}`);
      assert.equal(letter.reason, "decode");
      assert.match(letter.message, c.message!);
      assert.match(letter.message, /^cannot decode with avro-confluent: /);
    }
  } finally {
    await run.stop();
    await online.close();
  }
});

// Three sends to partition 0, so three batches (the mock broker returns one send per fetch):
// batch 1 (no watermark yet: a batch's own events never make each other late; max 105 s):
//   driver 1 arrives 100, 95, 105; driver 2 arrives 101, 99;
// batch 2 (watermark 105 - 10 = 95 s; max 110 s): driver 1 at 104 is within the watermark but
//   older than what the store holds (stale); driver 1 at 80 is past the watermark (late);
//   driver 2 at 110 is newer;
// batch 3 (watermark 110 - 10 = 100 s), alone: driver 3 at 90, a new entity, past the watermark.
const OOO_B = Date.UTC(2025, 5, 1);
const oooAt = (sec: number) => OOO_B + sec * 1000;
async function outOfOrder(dropLate: boolean) {
  const topic = unique(dropLate ? "out-of-order-drop" : "out-of-order-keep");
  const ev = (driver_id: number, sec: number, v: string) => ({ partition: 0, value: JSON.stringify({ driver_id, ts: oooAt(sec), v }) });
  await produce(bed.producer, topic, [ev(1, 100, "a"), ev(1, 95, "b"), ev(1, 105, "d"), ev(2, 101, "e"), ev(2, 99, "f")]);
  await produce(bed.producer, topic, [ev(1, 104, "g"), ev(1, 80, "c"), ev(2, 110, "h")]);
  await produce(bed.producer, topic, [ev(3, 90, "i")]);
  const source = kafkaSource({ name: "ooo", kafkaBootstrapServers: bed.kafkaSvc.brokers, topic, groupId: unique("g"), timestampField: "ts", batchSize: 6, watermarkDelay: "10s" });
  const view = streamFeatureView({ name: "ooo_view", entities: [entity({ name: "driver", joinKeys: ["driver_id"] })], source, ttl: 0, dropLate, schema: v.object({ driver_id: v.number(), v: v.string() }) });
  const registry = featureRepo({ project: "kafka_ooo", definitions: [source, view] });
  const online = redisStore({ url: bed.redis.url, project: unique("p") });
  const dlq = memoryDeadLetters();
  const batches: number[] = [];
  const run = startConsume(kafkaConsumer(source, { ...GROUP, logger: recordingLogger() }), { registry, online, deadLetters: dlq }, { onBatch: (_r, b) => batches.push(b.records.length) });
  try {
    await until("all offsets committed", () => caughtUp(bed.admin, source.groupId!, topic), 30_000, 200);
    await until("9 records acknowledged", () => run.acked >= 9, 5_000, 10);
    assert.deepEqual(batches, [5, 3, 1], "one batch per send");
    const rows = await online.read(view, ["driver_id=1", "driver_id=2", "driver_id=3"], ["v"]);
    const m = run.processor.metrics;
    const count = (outcome: string) => m.sum("freshet_records_total", { outcome });
    return { rows: rows.map((r) => [r.v.status, r.v.value ?? null, r.v.eventTime ?? null]), dlq, topic, counts: { written: count("written"), stale: count("stale"), late: count("late"), lateArrivals: m.sum("freshet_late_arrivals_total", {}) } };
  } finally {
    await run.stop();
    await online.close();
  }
}

test("out of order for one key, dropLate: the newest event wins, older ones within the watermark are stale, ones past it are dead-lettered as late", { timeout: 60_000 }, async () => {
  const { rows, dlq, topic, counts } = await outOfOrder(true);
  assert.deepEqual(rows, [["PRESENT", "d", oooAt(105)], ["PRESENT", "h", oooAt(110)], ["NOT_FOUND", null, null]]);
  assert.equal(dlq.letters.length, 2);
  for (const [late, offset] of [[dlq.letters[0], "6"], [dlq.letters[1], "8"]] as const) {
    assert.equal(late.reason, "late");
    assert.equal(late.path, "ts");
    assert.equal(late.view, "ooo_view");
    assert.deepEqual(late.position, { kind: "kafka", topic, partition: 0, offset });
    assert.match(late.message, /behind the watermark/);
  }
  assert.match(dlq.letters[0].message, new RegExp(`watermark ${new Date(oooAt(95)).toISOString()}`));
  assert.match(dlq.letters[1].message, new RegExp(`watermark ${new Date(oooAt(100)).toISOString()}`));
  assert.deepEqual(counts, { written: 3, stale: 4, late: 2, lateArrivals: 0 });
});

test("out of order for one key, default (late kept): past the watermark goes through latest-wins and counts as a late arrival, nothing is dead-lettered", { timeout: 60_000 }, async () => {
  const { rows, dlq, counts } = await outOfOrder(false);
  // driver 1 at 80 loses to 104 and 105 (stale); driver 3 at 90 is the entity's first value (written).
  assert.deepEqual(rows, [["PRESENT", "d", oooAt(105)], ["PRESENT", "h", oooAt(110)], ["PRESENT", "i", oooAt(90)]]);
  assert.equal(dlq.letters.length, 0);
  assert.deepEqual(counts, { written: 4, stale: 5, late: 0, lateArrivals: 2 });
});
