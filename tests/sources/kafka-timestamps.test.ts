// Reliability scenario 14, timestamp poisoning, through Kafka into a real
// redis-server and through HTTP push (pushApp on the same Redis store):
// far-future times (9999-12-31, one year ahead), values outside the date
// range (1e20, year 10000), microsecond epochs (read by magnitude: one now,
// one a year ahead), an impossible calendar date (2026-02-31) and a created
// time far in the future. Each bad one is refused (a dead letter with reason
// "timestamp" and its field, once; or a 422 naming the field), the records
// after it are written, year 0050 is stored as year 50 (not 1950), and the
// entity is never frozen: a later real update is written and readable, and
// reads do not fail.
import { test } from "node:test";
import assert from "node:assert/strict";
import * as v from "valibot";
import { createProcessor, entity, featureRepo, kafkaSource, pushSource, streamFeatureView, type DeadLetter } from "../../mod.ts";
import { kafkaConsumer } from "../../plugins/sources/kafka.ts";
import { pushApp } from "../../plugins/sources/push.ts";
import { redisStore } from "../../plugins/stores/redis/redis.ts";
import { memoryDeadLetters } from "../../plugins/stores/memory.ts";
import { caughtUp, produce, recordingLogger, startConsume, unique, until, useKafkaTestBed } from "../fixtures/kafka-harness.ts";

const GROUP = { sessionTimeout: 6000, heartbeatInterval: 1000 };
const bed = useKafkaTestBed();

const device = entity({ name: "device", joinKeys: ["id"] });
// ts and created are left out of the schemas: the processor takes them from the raw row as they came.
const schema = v.object({ id: v.string(), v: v.number() });
const YEAR = 365 * 86_400_000;
const YEAR_50 = Date.parse("0050-06-01T12:00:00.000Z");

/** The poison values, each with the check its refusal must show. */
function poison(now: number) {
  return {
    farFutureIso: { ts: "9999-12-31T23:59:59.999Z", message: /ahead of the (current time|broker timestamp)/ },
    // epoch seconds just under 1e11: the year 5138 (larger numbers read as ms, µs or ns, not as far-future seconds)
    farFutureSeconds: { ts: 99_999_999_999, message: /event time 5138-11-16T09:46:39.000Z is .* ahead of/ },
    oneYearAhead: { ts: new Date(now + YEAR).toISOString(), message: /ahead of the (current time|broker timestamp)/ },
    huge: { ts: 1e20, message: /1e20 is outside the supported range \(years 0001 to 9999\)/ },
    year10000: { ts: "10000-01-01T00:00:00Z", message: /cannot parse "10000-01-01T00:00:00Z"/ },
    microsAhead: { ts: (now + YEAR) * 1000, message: /ahead of the (current time|broker timestamp)/ },
    impossibleDate: { ts: "2026-02-31T10:00:00Z", message: /"2026-02-31T10:00:00Z" is not a calendar date: February 2026 has 28 days/ },
  } as const;
}

test("timestamp poisoning through Kafka: each bad time is dead-lettered once with reason and field, the records after it are written, year 0050 stays year 50, and the entity is not frozen", { timeout: 60_000 }, async () => {
  const topic = unique("ts-poison");
  const now = Date.now();
  const bad = poison(now);
  type Msg = { id: string; v: number; ts: unknown; created?: unknown };
  const msgs: { m: Msg; path?: "ts" | "created"; message?: RegExp }[] = [
    { m: { id: "dev1", v: 1, ts: new Date(now - 60_000).toISOString() } },
    ...Object.values(bad).map((b, i) => ({ m: { id: "dev1", v: 100 + i, ts: b.ts }, path: "ts" as const, message: b.message })),
    // a created time far in the future, on a row whose event time is fine
    { m: { id: "dev1", v: 200, ts: new Date(now - 55_000).toISOString(), created: "9999-01-01T00:00:00Z" }, path: "created", message: /^created time: event time 9999-01-01T00:00:00.000Z is .* ahead of/ },
    // a microsecond epoch of a recent instant: read as µs, stored at its millisecond
    { m: { id: "micro", v: 3, ts: (now - 30_000) * 1000 + 123 } },
    // year 0050: a valid time, stored as year 50
    { m: { id: "ancient", v: 50, ts: "0050-06-01T12:00:00Z" } },
    { m: { id: "dev1", v: 9, ts: new Date(now - 40_000).toISOString(), created: new Date(now - 40_000).toISOString() } },
  ];
  // One send: the poison records share a batch with the good ones.
  await produce(bed.producer, topic, msgs.map((x) => ({ partition: 0, value: JSON.stringify(x.m) })));

  const source = kafkaSource({ name: "ts_poison", kafkaBootstrapServers: bed.kafkaSvc.brokers, topic, groupId: unique("g"), timestampField: "ts", createdTimestampColumn: "created", watermarkDelay: "1m" });
  // dropLate: a poison time that moved the watermark would make the next real update late, and drop it.
  const view = streamFeatureView({ name: "ts_poison_view", entities: [device], source, ttl: 0, dropLate: true, schema });
  const registry = featureRepo({ project: "kafka_ts_poison", definitions: [source, view] });
  const project = unique("p");
  const online = redisStore({ url: bed.redis.url, project });
  const dlq = memoryDeadLetters();
  const run = startConsume(kafkaConsumer(source, { ...GROUP, logger: recordingLogger() }), { registry, online, deadLetters: dlq });
  try {
    await until("the first batch committed", () => caughtUp(bed.admin, source.groupId!, topic), 30_000, 200);
    const expected = msgs.map((x, offset) => ({ ...x, offset })).filter((x) => x.path);
    assert.equal(dlq.letters.length, expected.length, `one dead letter per bad record: ${JSON.stringify(dlq.letters.map((l) => [l.position, l.message]))}`);
    for (const e of expected) {
      const letters = dlq.letters.filter((l) => l.position.kind === "kafka" && l.position.offset === String(e.offset));
      assert.equal(letters.length, 1, `offset ${e.offset} (${JSON.stringify(e.m.ts)}) dead-lettered once`);
      const [l] = letters as [DeadLetter];
      assert.equal(l.reason, "timestamp", `offset ${e.offset}`);
      assert.equal(l.path, e.path, `offset ${e.offset}`);
      assert.equal(l.view, "ts_poison_view");
      assert.deepEqual(l.position, { kind: "kafka", topic, partition: 0, offset: String(e.offset) });
      assert.match(l.message, e.message!, `offset ${e.offset}`);
      assert.deepEqual(JSON.parse(l.payload), e.m, "the original record");
    }
    const rows = await online.read(view, ["id=dev1", "id=micro", "id=ancient"], ["v"]);
    assert.deepEqual(rows.map((r) => [r.v.status, r.v.value, r.v.eventTime]), [
      ["PRESENT", 9, now - 40_000],
      ["PRESENT", 3, now - 30_000],
      ["PRESENT", 50, YEAR_50],
    ]);
    assert.equal(new Date(rows[2].v.eventTime!).getUTCFullYear(), 50, "year 50, not 1950");
    const m = run.processor.metrics;
    const count = (outcome: string) => m.sum("freshet_records_total", { outcome });
    assert.deepEqual({ written: count("written"), stale: count("stale"), invalid: count("invalid"), late: count("late") }, { written: 3, stale: 1, invalid: expected.length, late: 0 });
    // The watermark is the greatest VALID event time: no poison value moved it.
    assert.equal(await online.meta.getWatermark(`ts_poison_view:kafka:${topic}:0`), now - 30_000);

    // A later real update of the same entity, in a batch of its own: written (not late, not stale) and readable.
    const acked = run.acked;
    await produce(bed.producer, topic, [{ partition: 0, value: JSON.stringify({ id: "dev1", v: 10, ts: new Date(now - 5_000).toISOString() }) }]);
    await until("the update acknowledged", () => run.acked > acked, 20_000, 20);
    const [after] = await online.read(view, ["id=dev1"], ["v"]);
    assert.deepEqual([after.v.status, after.v.value, after.v.eventTime], ["PRESENT", 10, now - 5_000]);
    assert.equal(dlq.letters.length, expected.length, "nothing more dead-lettered");
    assert.equal(count("written"), 4);

    // Reads through HTTP on the same store do not fail, and show year 50 as year 50.
    const app = pushApp({ processor: createProcessor({ registry, online, deadLetters: memoryDeadLetters() }) });
    const res = await app.request("/get-online-features", { method: "POST", headers: { "content-type": "application/json" }, body: JSON.stringify({ entities: { id: ["dev1", "micro", "ancient", "nobody"] }, features: ["ts_poison_view:v"] }) });
    assert.equal(res.status, 200);
    const body = await res.json();
    assert.deepEqual(body.results[1].values, [10, 3, 50, null]);
    assert.deepEqual(body.results[1].statuses, ["PRESENT", "PRESENT", "PRESENT", "NOT_FOUND"]);
    assert.equal(body.results[1].event_timestamps[2], "0050-06-01T12:00:00Z");
  } finally {
    await run.stop();
    await online.close();
  }
});

test("timestamp poisoning through HTTP push into Redis: 422 naming the field (df.event_timestamp[i], rows[i].event_timestamp, df.created[i]), nothing written, the entity stays updatable", { timeout: 60_000 }, async () => {
  const now = Date.now();
  const bad = poison(now);
  const source = pushSource({ name: "ts_push", timestampField: "event_timestamp", createdTimestampColumn: "created", watermarkDelay: "1m" });
  // Late events kept (the default): year 0050 is far behind the push watermark, and must still be stored.
  const view = streamFeatureView({ name: "ts_push_view", entities: [device], source, ttl: 0, schema });
  const registry = featureRepo({ project: "push_ts_poison", definitions: [source, view] });
  const online = redisStore({ url: bed.redis.url, project: unique("p") });
  const dlq = memoryDeadLetters();
  const processor = createProcessor({ registry, online, deadLetters: dlq });
  const app = pushApp({ processor });
  const post = async (path: string, body: unknown) => {
    const res = await app.request(path, { method: "POST", headers: { "content-type": "application/json" }, body: JSON.stringify(body) });
    return { status: res.status, body: await res.json() };
  };
  const read = async (id: string) => {
    const r = await post("/get-online-features", { entities: { id: [id] }, features: ["ts_push_view:v"] });
    assert.equal(r.status, 200, JSON.stringify(r.body));
    return [r.body.results[1].statuses[0], r.body.results[1].values[0], r.body.results[1].event_timestamps[0]];
  };
  const iso = (ms: number) => new Date(ms).toISOString().replace(".000Z", "Z");
  try {
    const first = await post("/push", { push_source_name: "ts_push", df: { id: ["dev1"], v: [1], event_timestamp: [new Date(now - 60_000).toISOString()] } });
    assert.equal(first.status, 200, JSON.stringify(first.body));
    assert.equal(first.body.written, 1);

    for (const [name, b] of Object.entries(bad)) {
      // columnar: the bad value is row 1, after a good row for another entity
      const col = await post("/push", { push_source_name: "ts_push", df: { id: ["other", "dev1"], v: [5, 100], event_timestamp: [new Date(now - 30_000).toISOString(), b.ts] } });
      assert.equal(col.status, 422, `${name}: ${JSON.stringify(col.body)}`);
      assert.equal(col.body.error.code, "invalid_rows");
      assert.equal(col.body.error.field, "df.event_timestamp[1]", name);
      assert.equal(col.body.error.issues.length, 1, name);
      assert.equal(col.body.error.issues[0].reason, "timestamp");
      assert.match(col.body.error.issues[0].message, b.message, name);
      // rows: the bad value is row 0
      const rows = await post("/push", { push_source_name: "ts_push", rows: [{ id: "dev1", v: 100, event_timestamp: b.ts }, { id: "other", v: 5, event_timestamp: new Date(now - 30_000).toISOString() }] });
      assert.equal(rows.status, 422, `${name}: ${JSON.stringify(rows.body)}`);
      assert.equal(rows.body.error.field, "rows[0].event_timestamp", name);
    }
    const created = await post("/push", { push_source_name: "ts_push", df: { id: ["dev1"], v: [200], event_timestamp: [new Date(now - 50_000).toISOString()], created: ["9999-01-01T00:00:00Z"] } });
    assert.equal(created.status, 422, JSON.stringify(created.body));
    assert.equal(created.body.error.field, "df.created[0]");
    assert.match(created.body.error.message, /created time: event time 9999-01-01T00:00:00.000Z is .* ahead of the current time/);

    // Nothing of the refused requests was written (not even their good rows), and nothing went to the dead letters (a 422 is the answer).
    assert.deepEqual(await read("dev1"), ["PRESENT", 1, iso(now - 60_000)]);
    assert.deepEqual(await read("other"), ["NOT_FOUND", null, "1970-01-01T00:00:00Z"]);
    assert.equal(dlq.letters.length, 0);

    // The valid edge cases: year 0050 is year 50; a recent microsecond epoch is read as µs.
    const ancient = await post("/push", { push_source_name: "ts_push", df: { id: ["ancient"], v: [50], event_timestamp: ["0050-06-01T12:00:00Z"] } });
    assert.equal(ancient.status, 200, JSON.stringify(ancient.body));
    assert.deepEqual([ancient.body.written, ancient.body.late], [1, 0]);
    assert.equal(processor.metrics.sum("freshet_late_arrivals_total", { view: "ts_push_view" }), 1, "behind the watermark: kept, counted as a late arrival");
    assert.deepEqual(await read("ancient"), ["PRESENT", 50, "0050-06-01T12:00:00Z"]);
    const [stored] = await online.read(view, ["id=ancient"], ["v"]);
    assert.equal(stored.v.eventTime, YEAR_50);
    assert.equal(new Date(stored.v.eventTime!).getUTCFullYear(), 50);
    const micro = await post("/push", { push_source_name: "ts_push", df: { id: ["micro"], v: [3], event_timestamp: [(now - 20_000) * 1000 + 999] } });
    assert.equal(micro.status, 200, JSON.stringify(micro.body));
    assert.deepEqual(await read("micro"), ["PRESENT", 3, new Date(now - 20_000).toISOString()]);

    // The entity is not frozen: later real updates are written and read back.
    for (const [vv, ago] of [[2, 10_000], [3, 5_000]] as const) {
      const up = await post("/push", { push_source_name: "ts_push", df: { id: ["dev1"], v: [vv], event_timestamp: [new Date(now - ago).toISOString()] } });
      assert.equal(up.status, 200, JSON.stringify(up.body));
      assert.equal(up.body.written, 1, "newer than what the store holds");
      assert.equal(up.body.late, 0);
      assert.deepEqual(await read("dev1"), ["PRESENT", vv, new Date(now - ago).toISOString()]);
    }
  } finally {
    await online.close();
  }
});
