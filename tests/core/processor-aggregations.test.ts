// The processor on aggregation views: exactly-once folds by applied marks
// (redeliveries, overlapping redeliveries, restarts, two consumers), late
// events dead-lettered and still logged offline, reads through
// get-online-features by name, and a randomized run against the brute-force
// reference on the memory and SQLite stores.
import { after, describe, it } from "node:test";
import assert from "node:assert/strict";
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import * as v from "valibot";
import { type AggregatingStore, createProcessor, entity, featureRepo, kafkaSource, type OnlineStore, pushSource, type RawRecord, streamFeatureView } from "../../mod.ts";
import { pushApp } from "../../plugins/sources/push.ts";
import { memoryDeadLetters, memoryOffline, memoryStore } from "../../plugins/stores/memory.ts";
import { sqliteStore } from "../../plugins/stores/sqlite/index.ts";
import { matchesReference, prng, reference, type RefEvent } from "../../testing/agg-reference.ts";

const dirs: string[] = [];
after(async () => {
  for (const d of dirs) await rm(d, { recursive: true, force: true });
});

const user = entity({ name: "user", joinKeys: ["user_id"] });
const schema = v.object({ user_id: v.number(), amount: v.nullable(v.number()), category: v.string(), ts: v.number() });
const kafka = kafkaSource({ name: "purchases_kafka", kafkaBootstrapServers: "127.0.0.1:1", topic: "purchases", timestampField: "ts", watermarkDelay: 30 });
const push = pushSource({ name: "purchases_push", timestampField: "ts", watermarkDelay: 30 });
const AGGS = [
  { column: "amount", function: "count", timeWindow: "10m", slideInterval: "1m" },
  { column: "amount", function: "sum", timeWindow: "1h", slideInterval: "5m" },
  { column: "amount", function: "mean", timeWindow: "1h", slideInterval: "5m" },
  { column: "amount", function: "max", timeWindow: "1d", slideInterval: "1h" },
  { column: "amount", function: "min", timeWindow: "10m", slideInterval: "1m" },
  { column: "category", function: "lastDistinctN", timeWindow: "1d", slideInterval: "1h", n: 5, name: "last_5_categories" },
  { column: "category", function: "lastN", timeWindow: "10m", slideInterval: "1m", n: 3 },
] as const;
const repo = featureRepo({
  project: "agg_proc",
  definitions: [
    streamFeatureView({ name: "purchase_stats", entities: [user], source: kafka, schema, ttl: 0, offline: true, aggregations: AGGS as never }),
    streamFeatureView({ name: "push_stats", entities: [user], source: push, schema, ttl: 0, aggregations: [{ column: "amount", function: "sum", timeWindow: "1h", slideInterval: "5m" }, { column: "amount", function: "count", timeWindow: "1h", slideInterval: "5m" }] }),
  ],
});
const view = repo.view("purchase_stats");
const names = view.aggregations!.map((a) => a.name);

const rec = (partition: number, offset: number, row: Record<string, unknown>): RawRecord => ({
  value: JSON.stringify(row),
  position: { kind: "kafka", topic: "purchases", partition, offset: String(offset) },
});

function setup(store: OnlineStore & AggregatingStore = memoryStore(), clock = () => Date.now()) {
  const offline = memoryOffline();
  const dlq = memoryDeadLetters();
  const processor = createProcessor({ registry: repo, online: store, offline, deadLetters: dlq, now: clock });
  return { store, offline, dlq, processor };
}

describe("processor on aggregation views", () => {
  it("a redelivered batch adds nothing twice, and an overlapping one adds only its new records", async () => {
    const { store, processor } = setup();
    const t = Date.now() - 60_000;
    const batch = [0, 1, 2].map((i) => rec(0, 10 + i, { user_id: 1, amount: 10 * (i + 1), category: `c${i}`, ts: t + i }));
    const first = await processor.process("purchases_kafka", batch);
    assert.equal(first.written, 3);
    const again = await processor.process("purchases_kafka", batch);
    assert.deepEqual([again.written, again.stale], [0, 3]);
    // A new consumer (after a crash) starts from the committed offset 11: 11 and 12 were folded, 13 is new.
    const { processor: restarted } = { processor: createProcessor({ registry: repo, online: store, offline: memoryOffline(), deadLetters: memoryDeadLetters() }) };
    const overlap = await restarted.process("purchases_kafka", [batch[1], batch[2], rec(0, 13, { user_id: 1, amount: 5, category: "c9", ts: t + 3 })]);
    assert.deepEqual([overlap.written, overlap.stale], [1, 2]);
    const [r] = await store.read(view, ["user_id=1"], names);
    assert.equal(r.count_amount_600s.value, 4);
    assert.equal(r.sum_amount_3600s.value, 65);
    assert.equal(r.mean_amount_3600s.value, 65 / 4);
    assert.equal(r.max_amount_86400s.value, 30);
    assert.equal(r.min_amount_600s.value, 5);
    assert.deepEqual(r.last_5_categories.value, ["c9", "c2", "c1", "c0"]);
    assert.deepEqual(r.lastN_category_600s.value, ["c9", "c2", "c1"]);
    assert.equal(await store.getAppliedMark("purchase_stats:kafka:purchases:0"), "13");
  });

  it("two consumers folding the same partition (a rebalance) fold each record once", async () => {
    const store = memoryStore();
    const a = setup(store).processor;
    const b = setup(store).processor;
    const t = Date.now() - 60_000;
    const recs = Array.from({ length: 20 }, (_, i) => rec(3, i, { user_id: 2, amount: i, category: "x", ts: t + i }));
    await a.process("purchases_kafka", recs.slice(0, 10)); // b does not know this mark yet
    await b.process("purchases_kafka", recs.slice(5, 15)); // the store refuses b's stale mark; b filters again
    await a.process("purchases_kafka", recs.slice(0, 20));
    const [r] = await store.read(view, ["user_id=2"], ["count_amount_600s", "sum_amount_3600s"]);
    assert.equal(r.count_amount_600s.value, 20);
    assert.equal(r.sum_amount_3600s.value, (19 * 20) / 2);
  });

  it("late events are dead-lettered with reason late, left out of the aggregates, and still appended offline", async () => {
    const { store, processor, offline, dlq } = setup();
    const t = Date.now() - 120_000;
    await processor.process("purchases_kafka", [rec(1, 0, { user_id: 3, amount: 1, category: "a", ts: t })]);
    const res = await processor.process("purchases_kafka", [rec(1, 1, { user_id: 3, amount: 100, category: "late", ts: t - 31_000 }), rec(1, 2, { user_id: 3, amount: 2, category: "b", ts: t - 29_000 })]);
    assert.deepEqual([res.written, res.late], [1, 1]);
    assert.equal(dlq.letters.length, 1);
    assert.equal(dlq.letters[0].reason, "late");
    assert.match(dlq.letters[0].message, /behind the watermark.*not folded into the aggregates/);
    assert.equal(offline.rows("purchase_stats").length, 3, "the late event is in the offline log");
    const [r] = await store.read(view, ["user_id=3"], ["sum_amount_3600s", "last_5_categories"]);
    assert.equal(r.sum_amount_3600s.value, 3);
    assert.deepEqual(r.last_5_categories.value, ["a", "b"]);
  });

  it("refuses an online store that keeps no tiles, saying which stores do", () => {
    const plain: OnlineStore = { name: "plain", meta: memoryStore().meta, write: async () => ({ written: 0, stale: 0, expired: 0 }), read: async () => [] };
    assert.throws(() => createProcessor({ registry: repo, online: plain, offline: memoryOffline(), deadLetters: memoryDeadLetters() }), /has aggregations, and the online store "plain" does not keep tiles: use the memory, SQLite, Redis or Upstash store/);
  });

  it("serves aggregates through get-online-features by name in Feast's shape, with statuses for empty windows; a webhook-id retry adds nothing", async () => {
    const { processor } = setup();
    const app = pushApp({ processor });
    const post = (path: string, body: unknown, headers: Record<string, string> = {}) =>
      app.request(path, { method: "POST", body: JSON.stringify(body), headers: { "content-type": "application/json", ...headers } });
    const t = Date.now() - 1_000;
    const body = { push_source_name: "purchases_push", df: { user_id: [7, 7], amount: [12, 30], category: ["a", "b"], ts: [t - 10, t] } };
    assert.equal((await post("/push", body, { "webhook-id": "msg_1" })).status, 200);
    const dup = await post("/push", body, { "webhook-id": "msg_1" });
    assert.equal((await dup.json()).status, "duplicate");
    const res = await post("/get-online-features", { entities: { user_id: [7, 8] }, features: ["push_stats:sum_amount_3600s", "push_stats:count_amount_3600s"] });
    assert.equal(res.status, 200);
    const got = await res.json();
    assert.deepEqual(got.metadata.feature_names, ["user_id", "sum_amount_3600s", "count_amount_3600s"]);
    assert.deepEqual(got.results[1].values, [42, null]);
    assert.deepEqual(got.results[1].statuses, ["PRESENT", "NOT_FOUND"]);
    assert.deepEqual(got.results[2].values, [2, 0]);
    assert.deepEqual(got.results[2].statuses, ["PRESENT", "PRESENT"]);
    assert.equal(got.results[1].event_timestamps[0], new Date(t).toISOString().replace(".000Z", "Z"));
    const bad = await post("/get-online-features", { entities: { user_id: [7] }, features: ["push_stats:amount"] });
    assert.equal(bad.status, 422);
    assert.match((await bad.json()).error.message, /has no feature "amount"; it has sum_amount_3600s, count_amount_3600s/);
  });

  for (const kind of ["memory", "sqlite"] as const) {
    it(`randomized on ${kind}: two partitions, shuffled events within the watermark, redeliveries and restarts; every window equals the reference`, async () => {
      let store: OnlineStore & AggregatingStore;
      let clockAt = 0;
      const clock = () => clockAt;
      if (kind === "memory") store = memoryStore({ now: clock });
      else {
        const d = await mkdtemp(join(tmpdir(), "freshet-agg-proc-"));
        dirs.push(d);
        store = sqliteStore({ path: join(d, "f.db"), now: clock });
      }
      const rnd = prng(kind === "memory" ? 21 : 22);
      const T = Math.floor(Date.now() / 3_600_000) * 3_600_000 - 3 * 3_600_000;
      const parts = [0, 1].map(() => [] as { rec: RawRecord; ev: RefEvent }[]);
      let t = T;
      for (let i = 0; i < 600; i++) {
        t += Math.floor(rnd() * 20_000);
        const p = Math.floor(rnd() * 2);
        const ts = t - Math.floor(rnd() * 25_000); // within the 30 s watermark delay
        const row = { user_id: Math.floor(rnd() * 4), amount: rnd() < 0.05 ? null : Math.floor(rnd() * 100), category: `c${Math.floor(rnd() * 8)}`, ts };
        parts[p].push({ rec: rec(p, parts[p].length, row), ev: { entityKey: `user_id=${row.user_id}`, eventTime: ts, row } });
      }
      let processor = createProcessor({ registry: repo, online: store, offline: memoryOffline(), deadLetters: memoryDeadLetters(), now: () => clockAt });
      const acked = [0, 0];
      const next = [0, 0];
      let restarts = 0;
      while (acked[0] < parts[0].length || acked[1] < parts[1].length) {
        const p = acked[0] >= parts[0].length ? 1 : acked[1] >= parts[1].length ? 0 : Math.floor(rnd() * 2);
        if (rnd() < 0.15) {
          // A crash: a new process, and every partition is delivered again from its committed offset.
          processor = createProcessor({ registry: repo, online: store, offline: memoryOffline(), deadLetters: memoryDeadLetters(), now: () => clockAt });
          next[0] = acked[0];
          next[1] = acked[1];
          restarts++;
        }
        const from = next[p];
        const to = Math.min(parts[p].length, from + 1 + Math.floor(rnd() * 25));
        if (from >= to) continue;
        clockAt = Math.max(clockAt, ...parts[p].slice(from, to).map((x) => x.ev.eventTime));
        const res = await processor.process("purchases_kafka", parts[p].slice(from, to).map((x) => x.rec));
        assert.equal(res.late + res.invalid, 0, JSON.stringify(res.deadLettered));
        next[p] = to;
        if (rnd() < 0.7) acked[p] = to;
      }
      assert.ok(restarts > 0);
      const events = [...parts[0], ...parts[1]].map((x) => x.ev);
      for (const at of [clockAt, clockAt + 30_000, clockAt + 400_000, clockAt + 2 * 3_600_000]) {
        clockAt = at;
        const reads = await store.read(view, ["user_id=0", "user_id=1", "user_id=2", "user_id=3"], names);
        for (let k = 0; k < 4; k++) {
          for (const a of view.aggregations!) {
            // Within one partition events arrive in order; across partitions, ties of last-N are broken by arrival, which the reference cannot know: compare as sets then.
            const want = reference(a, events.filter((e) => e.entityKey === `user_id=${k}`).sort((x, y) => x.eventTime - y.eventTime), `user_id=${k}`, at);
            let got = reads[k][a.name].value;
            let exp = want;
            if (a.function === "lastN" || a.function === "lastDistinctN") {
              got = got === null ? null : [...(got as string[])].sort();
              exp = exp === null ? null : [...(exp as string[])].sort();
            }
            const problem = matchesReference(a, got, exp);
            assert.equal(problem, undefined, `${a.name} of user ${k} at ${at}: ${problem}`);
          }
        }
      }
      await store.close?.();
    });
  }
});
