import { describe, it } from "node:test";
import assert from "node:assert/strict";
import * as v from "valibot";
import { createProcessor, entity, featureRepo, FreshetError, kafkaSource, pushSource, streamFeatureView, type RawRecord } from "../../mod.ts";
import { memoryDeadLetters, memoryOffline, memoryStore } from "../../plugins/stores/memory.ts";

const driver = entity({ name: "driver", joinKeys: ["driver_id"] });
const schema = v.object({ driver_id: v.number(), trips: v.number(), event_timestamp: v.union([v.string(), v.number()]), created: v.optional(v.string()) });
const T = Date.UTC(2026, 0, 1, 12);
const iso = (ms: number) => new Date(ms).toISOString();
const enc = (o: unknown) => new TextEncoder().encode(typeof o === "string" ? o : JSON.stringify(o));
const rec = (value: RawRecord["value"], offset: number): RawRecord => ({ value, position: { kind: "kafka", topic: "t", partition: 0, offset: String(offset) } });

function setup(viewOpts: Record<string, unknown> = {}) {
  const src = kafkaSource({ name: "trips", kafkaBootstrapServers: "x:9092", topic: "t", timestampField: "event_timestamp", createdTimestampColumn: "created" });
  const repo = featureRepo({ project: "p", definitions: [streamFeatureView({ name: "stats", entities: [driver], source: src, schema, ttl: 0, offline: true, ...viewOpts })] });
  const online = memoryStore();
  const offline = memoryOffline();
  const dlq = memoryDeadLetters();
  const processor = createProcessor({ registry: repo, online, offline, deadLetters: dlq });
  const read = async (id: number) => (await online.read(repo.view("stats"), [`driver_id=${id}`], ["trips"]))[0].trips;
  return { repo, online, offline, dlq, processor, read };
}

describe("processor", () => {
  it("keeps the latest 20 dead letters (payloads cut to 500 characters) and the newest event time per view as a gauge (issue 14, the status page)", async () => {
    const { processor } = setup();
    const bad = Array.from({ length: 25 }, (_, i) => rec(enc({ driver_id: i, trips: "x".repeat(i === 24 ? 2000 : 1), event_timestamp: iso(T) }), i));
    await processor.process("trips", [...bad, rec(enc({ driver_id: 1, trips: 1, event_timestamp: iso(T + 5000) }), 25), rec(enc({ driver_id: 2, trips: 1, event_timestamp: iso(T) }), 26)]);
    const recent = processor.recentDeadLetters();
    assert.equal(recent.length, 20);
    assert.deepEqual(recent.map((d) => (d.position as { offset: string }).offset), Array.from({ length: 20 }, (_, i) => String(i + 5)), "the newest 20, oldest first");
    assert.equal(recent[19].payload.length, 503);
    assert.equal(recent[19].reason, "schema");
    assert.equal(processor.metrics.get("freshet_view_newest_event_seconds", { view: "stats" }), (T + 5000) / 1000);
    // An older event leaves it where it is.
    await processor.process("trips", [rec(enc({ driver_id: 3, trips: 1, event_timestamp: iso(T - 60_000) }), 27)]);
    assert.equal(processor.metrics.get("freshet_view_newest_event_seconds", { view: "stats" }), (T + 5000) / 1000);
  });

  it("keeps the latest row per entity; ties go to created time, then the first of equals wins", async () => {
    const { processor, read } = setup();
    const r = await processor.process("trips", [
      rec(enc({ driver_id: 1, trips: 1, event_timestamp: iso(T) }), 0),
      rec(enc({ driver_id: 1, trips: 3, event_timestamp: iso(T + 1000) }), 1),
      rec(enc({ driver_id: 1, trips: 2, event_timestamp: iso(T) }), 2),
      rec(enc({ driver_id: 2, trips: 5, event_timestamp: iso(T), created: iso(T + 9) }), 3),
      rec(enc({ driver_id: 2, trips: 4, event_timestamp: iso(T), created: iso(T + 1) }), 4),
      rec(enc({ driver_id: 3, trips: 7, event_timestamp: iso(T) }), 5),
      rec(enc({ driver_id: 3, trips: 8, event_timestamp: iso(T) }), 6),
    ]);
    assert.equal(r.written, 3);
    assert.equal(r.stale, 4);
    assert.equal((await read(1)).value, 3);
    assert.equal((await read(2)).value, 5);
    assert.equal((await read(3)).value, 7, "same times: the first of equals wins, as in every store");
    // ... and across batches: an equal row later is stale.
    const again = await processor.process("trips", [rec(enc({ driver_id: 3, trips: 9, event_timestamp: iso(T) }), 7)]);
    assert.deepEqual([again.written, again.stale], [0, 1]);
    assert.equal((await read(3)).value, 7);
  });

  it("logs dead letters rate-limited, with the counts held back by reason", async () => {
    const src = kafkaSource({ name: "trips", kafkaBootstrapServers: "x:9092", topic: "t", timestampField: "event_timestamp" });
    const repo = featureRepo({ project: "p", definitions: [streamFeatureView({ name: "stats", entities: [driver], source: src, schema, ttl: 0 })] });
    let clock = T;
    const warnings: string[] = [];
    const logger = { info() {}, error() {}, warn: (m: string) => warnings.push(m) };
    const processor = createProcessor({ registry: repo, online: memoryStore(), deadLetters: memoryDeadLetters(), logger, now: () => clock, deadLetterLogIntervalMs: 10_000 });
    const bad = (o: number) => rec(enc({ driver_id: 1, trips: "many", event_timestamp: iso(T) }), o);
    const good = (o: number) => rec(enc({ driver_id: 1, trips: 1, event_timestamp: iso(T) }), o);
    await processor.process("trips", [bad(0), good(1)]);
    assert.equal(warnings.length, 1, "the first dead letter is logged at once");
    assert.match(warnings[0], /^\[freshet\] 1 record\(s\) dead-lettered to memory since the last report \(schema 1\); latest: source "trips", view "stats", trips: /);
    // Within the interval: held back, not logged, but counted.
    for (let i = 0; i < 5; i++) await processor.process("trips", [bad(10 + 2 * i), rec(enc("{not json"), 11 + 2 * i)]);
    clock += 5_000;
    await processor.process("trips", [good(30)]);
    assert.equal(warnings.length, 1, "no flood: nothing more within 10 s");
    clock += 6_000;
    await processor.process("trips", [bad(40)]);
    assert.equal(warnings.length, 2);
    assert.match(warnings[1], /^\[freshet\] 11 record\(s\) dead-lettered to memory since the last report \(decode 5, schema 6\)/);
  });
  it("dead-letters every poison kind with reason, path and position, and writes the records after it", async () => {
    const { processor, dlq, read } = setup({
      udf: (rows: Record<string, unknown>[]) => rows.map((r) => {
        if (r.trips === 666) throw new Error("cursed");
        return r;
      }),
    });
    const big = JSON.stringify({ driver_id: 9, trips: 1, event_timestamp: iso(T), pad: "x".repeat(10 * 1024 * 1024) });
    const r = await processor.process("trips", [
      rec(enc("{not json"), 10),
      rec(enc({ driver_id: "one", trips: 1, event_timestamp: iso(T) }), 11),
      rec(enc({ trips: 1, event_timestamp: iso(T) }), 12),
      rec(enc({ driver_id: 4, trips: 666, event_timestamp: iso(T) }), 13),
      rec(enc({ driver_id: 5, trips: 1, event_timestamp: "not a time" }), 14),
      rec(enc(big), 15),
      rec(enc([1, 2]), 16),
      rec(new Uint8Array([0xff, 0xfe, 0x00]), 17),
      rec(enc({ driver_id: 6, trips: 6, event_timestamp: iso(T) }), 18),
    ]);
    const byOffset = Object.fromEntries(dlq.letters.map((l) => [(l.position as { offset: string }).offset, l]));
    assert.equal(byOffset["10"].reason, "decode");
    assert.equal(byOffset["11"].reason, "schema");
    assert.equal(byOffset["11"].path, "driver_id");
    assert.equal(byOffset["12"].reason, "schema");
    assert.equal(byOffset["12"].path, "driver_id");
    assert.equal(byOffset["13"].reason, "udf");
    assert.match(byOffset["13"].message, /cursed/);
    assert.equal(byOffset["14"].reason, "timestamp");
    assert.equal(byOffset["14"].path, "event_timestamp");
    assert.equal(byOffset["16"].reason, "decode");
    assert.equal(byOffset["17"].reason, "decode");
    assert.equal(byOffset["17"].encoding, "base64");
    assert.equal(byOffset["15"], undefined, "a 10 MB record that is valid is written, not dropped");
    assert.equal(dlq.letters.length, 7);
    assert.equal(r.invalid, 7);
    assert.equal(r.written, 2);
    assert.equal((await read(6)).value, 6);
    assert.equal((await read(9)).value, 1);
    assert.equal(byOffset["11"].payload, JSON.stringify({ driver_id: "one", trips: 1, event_timestamp: iso(T) }));
  });

  it("the watermark is state: a batch never makes its own events late, and a late event alone in its batch is late", async () => {
    const { processor, dlq, read, online } = setup({ watermarkDelay: "10s", dropLate: true });
    // One batch spanning far more than the delay, in order: nothing is late (the backlog case).
    const r = await processor.process("trips", [
      rec(enc({ driver_id: 3, trips: 3, event_timestamp: iso(T) }), 0),
      rec(enc({ driver_id: 2, trips: 2, event_timestamp: iso(T + 55_000) }), 1),
      rec(enc({ driver_id: 1, trips: 1, event_timestamp: iso(T + 60_000) }), 2),
    ]);
    assert.deepEqual([r.written, r.late, r.invalid], [3, 0, 0]);
    // Now the watermark is T+60s-10s: an event at T+40s alone in its batch is late.
    const late = await processor.process("trips", [rec(enc({ driver_id: 4, trips: 4, event_timestamp: iso(T + 40_000) }), 3)]);
    assert.deepEqual([late.written, late.late], [0, 1]);
    assert.equal(dlq.letters[0].reason, "late");
    assert.equal((dlq.letters[0].position as { offset: string }).offset, "3");
    assert.equal((await read(4)).status, "NOT_FOUND");
    // Within the delay is on time.
    assert.equal((await processor.process("trips", [rec(enc({ driver_id: 5, trips: 5, event_timestamp: iso(T + 51_000) }), 4)])).written, 1);
    // The watermark is in the store's metadata, next to the checkpoints.
    assert.equal(await online.meta.getWatermark("stats:kafka:t:0"), T + 60_000);
  });

  it("restores the watermark from the store after a restart, per partition", async () => {
    const { repo, online, offline, dlq } = setup({ watermarkDelay: "10s", dropLate: true });
    const p1 = createProcessor({ registry: repo, online, offline, deadLetters: dlq });
    await p1.process("trips", [rec(enc({ driver_id: 1, trips: 1, event_timestamp: iso(T + 60_000) }), 0)]);
    // The stored watermark trails by one batch (see the redelivery test below): the next batch commits it.
    await p1.process("trips", [rec(enc({ driver_id: 1, trips: 2, event_timestamp: iso(T + 61_000) }), 1)]);
    const p2 = createProcessor({ registry: repo, online, offline, deadLetters: dlq });
    const r = await p2.process("trips", [rec(enc({ driver_id: 2, trips: 2, event_timestamp: iso(T) }), 2)]);
    assert.equal(r.late, 1, "the second process knows the watermark");
    // Another partition has its own watermark.
    const other: RawRecord = { value: enc({ driver_id: 3, trips: 3, event_timestamp: iso(T) }), position: { kind: "kafka", topic: "t", partition: 1, offset: "0" } };
    assert.equal((await p2.process("trips", [other])).written, 1);
  });

  it("a batch redelivered after a crash between its write and its ack is judged as the first time: nothing late", async () => {
    const { repo, online, offline } = setup({ watermarkDelay: "5m", dropLate: true });
    const events = Array.from({ length: 60 }, (_, i) => rec(enc({ driver_id: i % 5, trips: i, event_timestamp: iso(T + i * 10_000) }), i));
    const dlq = memoryDeadLetters();
    const first = createProcessor({ registry: repo, online, offline, deadLetters: dlq });
    await first.process("trips", events.slice(0, 30));
    assert.equal((await first.process("trips", events.slice(30))).late, 0);
    // The process dies before the ack: a new one gets the same batch again.
    const second = createProcessor({ registry: repo, online, offline, deadLetters: dlq });
    const again = await second.process("trips", events.slice(30));
    assert.deepEqual([again.late, again.written, again.stale], [0, 0, 30]);
    assert.equal(dlq.letters.length, 0);
  });

  it("by default a late event is kept: latest-wins decides, it goes to the offline log, and it is counted as a late arrival", async () => {
    const { processor, dlq, read, offline, repo } = setup({ watermarkDelay: "10s" });
    await processor.process("trips", [rec(enc({ driver_id: 1, trips: 1, event_timestamp: iso(T + 60_000) }), 0)]);
    const r = await processor.process("trips", [
      rec(enc({ driver_id: 2, trips: 2, event_timestamp: iso(T) }), 1),
      rec(enc({ driver_id: 1, trips: 0, event_timestamp: iso(T) }), 2),
    ]);
    assert.deepEqual([r.written, r.stale, r.late, r.lateArrivals], [1, 1, 0, 2]);
    assert.equal(dlq.letters.length, 0);
    assert.equal((await read(2)).value, 2);
    assert.equal((await read(1)).value, 1, "the late older event did not replace the newer one");
    assert.equal(offline.rows(repo.view("stats").name).length, 3, "late rows are in the offline log");
    assert.equal(processor.metrics.get("freshet_late_arrivals_total", { source: "trips", view: "stats" }), 2);
  });

  it("backlog: consuming a long in-order history in big batches equals consuming it one record at a time", async () => {
    // 600 events, one every 10 s over 100 minutes, watermarkDelay 5m (the numbers).
    const events = Array.from({ length: 600 }, (_, i) => rec(enc({ driver_id: i % 7, trips: i, event_timestamp: iso(T + i * 10_000) }), i));
    const big = setup({ watermarkDelay: "5m", dropLate: true });
    let late = 0;
    let written = 0;
    for (let i = 0; i < events.length; i += 500) {
      const r = await big.processor.process("trips", events.slice(i, i + 500));
      late += r.late;
      written += r.written + r.stale;
    }
    assert.equal(late, 0, "no record of an in-order backlog is late");
    assert.equal(written, 600);
    const one = setup({ watermarkDelay: "5m", dropLate: true });
    for (const e of events) assert.equal((await one.processor.process("trips", [e])).late, 0);
    for (let id = 0; id < 7; id++) assert.deepEqual(await big.read(id), await one.read(id));
  });

  it("refuses far-future, out-of-range and impossible timestamps: dead letters, and no entity is frozen", async () => {
    const { processor, dlq, read } = setup();
    const now = Date.now();
    const r = await processor.process("trips", [
      rec(enc({ driver_id: 1, trips: 1, event_timestamp: "9999-12-31T00:00:00Z" }), 0),
      rec(enc({ driver_id: 1, trips: 2, event_timestamp: iso(now + 365 * 86_400_000) }), 1),
      rec(enc({ driver_id: 1, trips: 3, event_timestamp: 1e20 }), 2),
      rec(enc({ driver_id: 1, trips: 4, event_timestamp: "2026-02-31T00:00:00Z" }), 3),
      rec(enc({ driver_id: 1, trips: 5, event_timestamp: iso(now), created: iso(now + 86_400_000) }), 4),
      rec(enc({ driver_id: 2, trips: 6, event_timestamp: iso(now + 60_000) }), 5),
    ]);
    assert.deepEqual([r.invalid, r.written], [5, 1]);
    assert.deepEqual(dlq.letters.map((l) => [l.reason, l.path]), [["timestamp", "event_timestamp"], ["timestamp", "event_timestamp"], ["timestamp", "event_timestamp"], ["timestamp", "event_timestamp"], ["timestamp", "created"]]);
    // A real update still lands: the entity is not frozen.
    await processor.process("trips", [rec(enc({ driver_id: 1, trips: 7, event_timestamp: iso(now) }), 6)]);
    assert.equal((await read(1)).value, 7);
    assert.equal((await read(2)).value, 6, "a minute ahead is within the default 5-minute skew");
  });

  it("the future bound follows the broker's append time when it is later than now", async () => {
    const { processor } = setup();
    const now = Date.now();
    const r = await processor.process("trips", [{ ...rec(enc({ driver_id: 1, trips: 1, event_timestamp: iso(now + 3_600_000) }), 0), brokerTime: now + 3_500_000 }]);
    assert.equal(r.written, 1);
  });

  it("a row already outside the ttl is expired: not online, still offline", async () => {
    const { processor, offline, repo, read } = setup({ ttl: "1h" });
    const r = await processor.process("trips", [rec(enc({ driver_id: 1, trips: 1, event_timestamp: iso(Date.now() - 2 * 3_600_000) }), 0)]);
    assert.deepEqual([r.written, r.expired], [0, 1]);
    assert.equal((await read(1)).status, "NOT_FOUND");
    assert.equal(offline.rows(repo.view("stats").name).length, 1);
    assert.equal(processor.metrics.get("freshet_records_total", { source: "trips", view: "stats", outcome: "expired" }), 1);
  });

  it("a retried commit writes dead letters once and does not append offline rows twice", async () => {
    const { repo, dlq } = setup();
    const online = memoryStore();
    const offline = memoryOffline();
    let failures = 3;
    const flaky = { ...online, name: "flaky", meta: online.meta, read: online.read, write: (...a: Parameters<typeof online.write>) => failures-- > 0 ? Promise.reject(new FreshetError("STORE_UNAVAILABLE", "down")) : online.write(...a) };
    const processor = createProcessor({ registry: repo, online: flaky, offline, deadLetters: dlq });
    const prepared = await processor.prepare("trips", [rec(enc("{bad"), 0), rec(enc({ driver_id: 1, trips: 1, event_timestamp: iso(T) }), 1)]);
    for (let i = 0; i < 3; i++) await assert.rejects(processor.commit(prepared), (e: FreshetError) => e.retriable);
    const r = await processor.commit(prepared);
    assert.equal(r.written, 1);
    assert.equal(dlq.letters.length, 1, "one bad record and three store failures give one dead letter");
    assert.equal(offline.rows("stats").length, 1);
  });

  it("a UDF that filters rows: each kept row keeps its record, the dropped ones are counted as skipped", async () => {
    const { processor, read } = setup({ udf: (rows: Record<string, unknown>[]) => rows.filter((r) => Number(r.trips) % 2 === 0) });
    const r = await processor.process("trips", [0, 1, 2, 3].map((i) => rec(enc({ driver_id: i, trips: i, event_timestamp: iso(T) }), i)));
    assert.deepEqual([r.written, r.skipped, r.invalid], [2, 2, 0]);
    assert.equal((await read(2)).value, 2);
    assert.equal((await read(1)).status, "NOT_FOUND");
  });

  it("fails at startup when a view cannot be written: offline without an offline store", () => {
    const { repo } = setup();
    assert.throws(() => createProcessor({ registry: repo, online: memoryStore(), deadLetters: memoryDeadLetters() }), /offline: true but no offline store/);
  });

  it("writes every on-time row to the offline log, the latest to online", async () => {
    const { processor, offline, repo } = setup();
    await processor.process("trips", [rec(enc({ driver_id: 1, trips: 1, event_timestamp: T }), 0), rec(enc({ driver_id: 1, trips: 2, event_timestamp: T + 1 }), 1)]);
    assert.equal(offline.rows(repo.view("stats").name).length, 2);
  });

  it("counts every outcome in metrics", async () => {
    const { processor } = setup({ watermarkDelay: 1, dropLate: true });
    await processor.process("trips", [rec(enc({ driver_id: 1, trips: 1, event_timestamp: T }), 0)]);
    await processor.process("trips", [
      rec(enc({ driver_id: 1, trips: 0, event_timestamp: T - 500 }), 1),
      rec(enc({ driver_id: 2, trips: 0, event_timestamp: T - 5000 }), 2),
      rec(enc("{"), 3),
    ]);
    const m = processor.metrics;
    const c = (outcome: string) => m.get("freshet_records_total", { source: "trips", view: "stats", outcome });
    assert.deepEqual([c("written"), c("stale"), c("late"), c("invalid")], [1, 1, 1, 1]);
    assert.match(m.render(), /freshet_records_total\{[^}]*outcome="written"[^}]*\} 1/);
  });

  it("rejects a whole batch in reject mode and writes nothing", async () => {
    const push = pushSource({ name: "pp", timestampField: "event_timestamp" });
    const repo = featureRepo({ project: "p", definitions: [streamFeatureView({ name: "s", entities: [driver], source: push, schema, ttl: 0 })] });
    const online = memoryStore();
    const processor = createProcessor({ registry: repo, online, deadLetters: memoryDeadLetters() });
    const r = await processor.process("pp", [
      { value: { driver_id: 1, trips: 1, event_timestamp: T }, position: { kind: "push", requestId: "a", index: 0 } },
      { value: { driver_id: 2, trips: "x", event_timestamp: T }, position: { kind: "push", requestId: "a", index: 1 } },
    ], { onInvalid: "reject" });
    assert.equal(r.rejected?.[0].path, "trips");
    assert.equal(r.rejected?.[0].index, 1);
    assert.equal(online.size, 0);
  });

  it("an async udf can add features", async () => {
    const src = pushSource({ name: "pp", timestampField: "event_timestamp" });
    const repo = featureRepo({
      project: "p",
      definitions: [streamFeatureView({ name: "s", entities: [driver], source: src, schema, ttl: 0, features: ["trips", "double"], udf: async (rows) => rows.map((r) => ({ ...r, double: Number(r.trips) * 2 })) })],
    });
    const online = memoryStore();
    const processor = createProcessor({ registry: repo, online, deadLetters: memoryDeadLetters() });
    await processor.process("pp", [{ value: { driver_id: 1, trips: 21, event_timestamp: T }, position: { kind: "push", requestId: "a", index: 0 } }]);
    assert.equal((await online.read(repo.view("s"), ["driver_id=1"], ["double"]))[0].double.value, 42);
  });

  it("pauses on a retriable decode failure instead of dead-lettering, and routes dead letters per source", async () => {
    let registryDown = true;
    const format = { name: "flaky-registry", decode: (b: Uint8Array) => {
      if (registryDown) throw new FreshetError("SOURCE_UNAVAILABLE", "schema registry unreachable");
      return JSON.parse(new TextDecoder().decode(b));
    } };
    const a = kafkaSource({ name: "a", kafkaBootstrapServers: "x:9092", topic: "a", timestampField: "event_timestamp", messageFormat: format });
    const b = kafkaSource({ name: "b", kafkaBootstrapServers: "x:9092", topic: "b", timestampField: "event_timestamp" });
    const repo = featureRepo({ project: "p", definitions: [
      streamFeatureView({ name: "va", entities: [driver], source: a, schema, ttl: 0 }),
      streamFeatureView({ name: "vb", entities: [driver], source: b, schema, ttl: 0 }),
    ] });
    const fallback = memoryDeadLetters();
    const forA = memoryDeadLetters();
    const processor = createProcessor({ registry: repo, online: memoryStore(), deadLetters: fallback, sourceDeadLetters: { a: forA } });
    await assert.rejects(processor.process("a", [rec(enc({ driver_id: 1, trips: 1, event_timestamp: T }), 0)]), (e: FreshetError) => e.retriable);
    assert.equal(forA.letters.length + fallback.letters.length, 0, "nothing dead-lettered while the registry is down");
    registryDown = false;
    await processor.process("a", [rec(enc({ trips: 1, event_timestamp: T }), 1)]);
    await processor.process("b", [rec(enc({ trips: 1, event_timestamp: T }), 2)]);
    assert.deepEqual(forA.letters.map((l) => l.source), ["a"]);
    assert.deepEqual(fallback.letters.map((l) => l.source), ["b"]);
  });
  it("dead-letters a numeric join key that is not a safe integer (it would collide) and says to send a string", async () => {
    const { processor, dlq, read } = setup();
    // 2^53 + 1 parses as 2^53: without the check, both rows would land on one entity.
    const r = await processor.process("trips", [
      rec(enc('{"driver_id": 9007199254740993, "trips": 1, "event_timestamp": "' + iso(T) + '"}'), 0),
      rec(enc({ driver_id: 1.5, trips: 2, event_timestamp: iso(T) }), 1),
      rec(enc({ driver_id: 7, trips: 3, event_timestamp: iso(T) }), 2),
    ]);
    assert.deepEqual([r.written, r.invalid], [1, 2]);
    assert.deepEqual(dlq.letters.map((l) => [l.reason, l.path]), [["join_key", "driver_id"], ["join_key", "driver_id"]]);
    assert.match(dlq.letters[0].message, /send it as a string/);
    assert.match(dlq.letters[1].message, /not an integer/);
    assert.equal((await read(7)).value, 3);
  });

  it("reads a stored watermark once per key and batch, even when none is stored", async () => {
    const src = kafkaSource({ name: "trips", kafkaBootstrapServers: "x:9092", topic: "t", timestampField: "event_timestamp", watermarkDelay: "1m" });
    const repo = featureRepo({ project: "p", definitions: [streamFeatureView({ name: "stats", entities: [driver], source: src, schema, ttl: 0 })] });
    const online = memoryStore();
    let reads = 0;
    const get = online.meta.getWatermark.bind(online.meta);
    online.meta.getWatermark = async (k: string) => (reads++, get(k));
    const processor = createProcessor({ registry: repo, online, deadLetters: memoryDeadLetters() });
    await processor.process("trips", Array.from({ length: 50 }, (_, i) => rec(enc({ driver_id: i, trips: i, event_timestamp: iso(T + i) }), i)));
    assert.ok(reads > 0 && reads <= 2, `${reads} watermark reads for one key in one batch`);
  });
});
