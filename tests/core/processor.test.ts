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
  it("keeps the latest row per entity; ties go to created time, then position", async () => {
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
    assert.equal((await read(3)).value, 8, "same times: the later position wins");
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

  it("applies the watermark: later than max event time minus the delay is late and dead-lettered", async () => {
    const { processor, dlq, read } = setup({ watermarkDelay: "10s" });
    const r = await processor.process("trips", [
      rec(enc({ driver_id: 1, trips: 1, event_timestamp: iso(T + 60_000) }), 0),
      rec(enc({ driver_id: 2, trips: 2, event_timestamp: iso(T + 55_000) }), 1),
      rec(enc({ driver_id: 3, trips: 3, event_timestamp: iso(T) }), 2),
    ]);
    assert.deepEqual([r.written, r.late, r.invalid], [2, 1, 0]);
    assert.equal(dlq.letters[0].reason, "late");
    assert.equal((dlq.letters[0].position as { offset: string }).offset, "2");
    assert.equal((await read(3)).status, "NOT_FOUND");
  });

  it("writes every on-time row to the offline log, the latest to online", async () => {
    const { processor, offline, repo } = setup();
    await processor.process("trips", [rec(enc({ driver_id: 1, trips: 1, event_timestamp: T }), 0), rec(enc({ driver_id: 1, trips: 2, event_timestamp: T + 1 }), 1)]);
    assert.equal(offline.rows(repo.view("stats").name).length, 2);
  });

  it("counts every outcome in metrics", async () => {
    const { processor } = setup({ watermarkDelay: 1 });
    await processor.process("trips", [
      rec(enc({ driver_id: 1, trips: 1, event_timestamp: T }), 0),
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
});
