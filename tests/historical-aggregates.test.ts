/**
 * Aggregate features in historical retrieval: every function of the
 * reference set, on random logs (equal timestamps, created times, nulls,
 * redelivered batches, rows of other entities), at random instants and on
 * tile boundaries, against the brute-force reference of testing/agg-reference.ts
 * over the log's events at or before each row's time; and against what the
 * online store actually served at each instant when the same events were
 * pushed through the processor in event-time order.
 */
import { describe, it, after } from "node:test";
import assert from "node:assert/strict";
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import * as v from "valibot";
import { createProcessor, entity, featureRepo, type FeatureRow, getHistoricalFeatures, pushSource, type Row, streamFeatureView } from "../mod.ts";
import { fileOffline } from "../plugins/stores/file/index.ts";
import { memoryDeadLetters, memoryOffline, memoryStore } from "../plugins/stores/memory.ts";
import { matchesReference, prng, reference, REFERENCE_AGGREGATIONS, type RefEvent } from "../testing/agg-reference.ts";

const dirs: string[] = [];
after(async () => {
  for (const d of dirs) await rm(d, { recursive: true, force: true });
});
const tempDir = async () => {
  const d = await mkdtemp(join(tmpdir(), "freshet-hagg-"));
  dirs.push(d);
  return d;
};

const user = entity({ name: "user", joinKeys: ["user_id"] });
const src = pushSource({ name: "hagg_push", timestampField: "ts" });
const schema = v.object({ user_id: v.number(), amount: v.nullable(v.number()), category: v.string(), user: v.string(), ts: v.string() });
const repo = featureRepo({
  project: "hagg",
  definitions: [streamFeatureView({ name: "hagg", entities: [user], source: src, schema, ttl: 0, offline: true, aggregations: REFERENCE_AGGREGATIONS as never })],
});
const view = repo.view("hagg");
const aggs = view.aggregations!;
const names = aggs.map((a) => a.name);
const T0 = Date.parse("2026-03-01T23:58:00Z"); // over a day boundary: two partitions

/** Random batches: a 1 s grid with some ms offsets (equal event times), created times or none, null amounts, some batches logged twice (a redelivery). */
function randomLog(rand: () => number, keys: number): { batches: FeatureRow[][]; appended: FeatureRow[][] } {
  const batches: FeatureRow[][] = [];
  const appended: FeatureRow[][] = [];
  let pos = 0;
  for (let b = 0; b < 30; b++) {
    const batch: FeatureRow[] = [];
    const n = 1 + Math.floor(rand() * 40);
    for (let i = 0; i < n; i++) {
      const eventTime = T0 + Math.floor(rand() * 240) * 1000 + (rand() < 0.2 ? Math.floor(rand() * 1000) : 0);
      const c = rand();
      batch.push({
        entityKey: `user_id=${1 + Math.floor(rand() * keys)}`,
        values: { amount: rand() < 0.1 ? null : Math.round(rand() * 200 - 50), category: `c${Math.floor(rand() * 6)}`, user: `u${Math.floor(rand() * 30)}` },
        eventTime,
        ...(c < 0.5 ? {} : { createdTime: eventTime + Math.floor(c * 3) }),
        // Most rows have a source position (a stream), some none (a push without webhook-id).
        ...(rand() < 0.8 ? { position: { kind: "kafka", topic: "t", partition: 0, offset: String(pos++) } } : {}),
      } as FeatureRow);
    }
    batches.push(batch);
    appended.push(batch);
    if (rand() < 0.25) appended.push(batch.map((r) => ({ ...r })));
  }
  return { batches, appended };
}

/** The reference: the log's events (a redelivered row once: the first one appended), at or before t, through agg-reference. */
function expected(appended: FeatureRow[][], entityRows: Row[]): Row[] {
  const events: RefEvent[] = [];
  const seen = new Set<string>();
  for (const batch of appended) {
    for (const r of batch) {
      if (r.position) {
        const k = JSON.stringify([r.position, r.entityKey]);
        if (seen.has(k)) continue;
        seen.add(k);
      }
      events.push({ entityKey: r.entityKey, eventTime: r.eventTime, createdTime: r.createdTime, row: r.values });
    }
  }
  return entityRows.map((e) => {
    const t = Date.parse(e.ts as string);
    const key = `user_id=${e.user_id}`;
    const upTo = events.filter((x) => x.entityKey === key && x.eventTime <= t);
    const out: Row = {};
    for (const a of aggs) out[a.name] = reference(a, upTo, key, t) as Row[string];
    return out;
  });
}

function randomEntityRows(rand: () => number, keys: number, log: FeatureRow[], n: number): Row[] {
  const out: Row[] = [];
  for (let i = 0; i < n; i++) {
    let id = 1 + Math.floor(rand() * (keys + 2));
    let t = T0 - 30_000 + Math.floor(rand() * 330_000);
    const pick = rand();
    if (pick < 0.5) {
      // At an event's time, one ms before or after it, and on tile boundaries.
      const r = log[Math.floor(rand() * log.length)];
      id = Number(r.entityKey.slice("user_id=".length));
      t = r.eventTime + [0, 0, -1, 1][Math.floor(rand() * 4)];
    } else if (pick < 0.7) t = Math.floor(t / 10_000) * 10_000 + [0, -1, 9_999][Math.floor(rand() * 3)];
    out.push({ user_id: id, ts: new Date(t).toISOString(), label: i });
  }
  return out;
}

function compare(got: Row[], want: Row[], entityRows: Row[], seed: number): void {
  let checked = 0;
  for (let i = 0; i < want.length; i++) {
    for (const a of aggs) {
      const problem = matchesReference(a, got[i][a.name], want[i][a.name]);
      assert.equal(problem, undefined, `seed ${seed}, entity row ${i} (${JSON.stringify(entityRows[i])}), ${a.name}: ${problem}`);
      checked++;
    }
    assert.equal(got[i].label, entityRows[i].label);
  }
  assert.ok(checked > 0);
}

describe("historical aggregates: exact against the brute-force reference", () => {
  for (const seed of [11, 12, 13]) {
    it(`seed ${seed}: the file log (Parquet, two partitions), streaming and auto engines, every function`, async () => {
      const rand = prng(seed);
      const { batches, appended } = randomLog(rand, 4);
      const offline = fileOffline({ dir: await tempDir(), writerId: "w", compactAfter: 4 });
      for (const b of appended) await offline.append(view, b);
      await offline.close();
      const entityRows = randomEntityRows(rand, 4, batches.flat(), 120);
      const want = expected(appended, entityRows);
      for (const engine of ["stream", "auto"] as const) {
        const res = await getHistoricalFeatures({ registry: repo, offline, entityRows, features: ["hagg:*"], timestampField: "ts", engine });
        assert.deepEqual(res.columns, names);
        assert.equal(res.engines.hagg, "stream (aggregates)");
        compare(res.rows, want, entityRows, seed);
      }
      // Plain features and aggregates of one view in one request: DuckDB (when it loads) for the first, the fold for the others.
      const mixed = await getHistoricalFeatures({ registry: repo, offline, entityRows, features: ["hagg:category", "hagg:sum_amount_60s"], timestampField: "ts" });
      assert.match(mixed.engines.hagg, /^(duckdb|stream), stream \(aggregates\)$/);
      assert.deepEqual(mixed.columns, ["category", "sum_amount_60s"]);
      for (let i = 0; i < entityRows.length; i++) assert.equal(mixed.rows[i].sum_amount_60s, want[i].sum_amount_60s);
    });
  }

  it("the memory log, and a replayed batch changes no answer", async () => {
    const rand = prng(21);
    const { batches, appended } = randomLog(rand, 3);
    const offline = memoryOffline();
    for (const b of appended) await offline.append(view, b);
    const entityRows = randomEntityRows(rand, 3, batches.flat(), 80);
    const want = expected(appended, entityRows);
    const first = await getHistoricalFeatures({ registry: repo, offline, entityRows, features: ["hagg:*"], timestampField: "ts" });
    compare(first.rows, want, entityRows, 21);
    for (const b of batches) await offline.append(view, b.filter((r) => r.position));
    const again = await getHistoricalFeatures({ registry: repo, offline, entityRows, features: ["hagg:*"], timestampField: "ts" });
    assert.deepEqual(again.rows, first.rows);
  });

  it("an aggregation over a column the view does not log is refused naming it", async () => {
    const narrow = featureRepo({
      project: "hagg2",
      definitions: [streamFeatureView({ name: "hagg_narrow", entities: [user], source: src, schema, ttl: 0, features: ["category"], aggregations: [{ column: "amount", function: "sum", timeWindow: 60 }] })],
    });
    await assert.rejects(getHistoricalFeatures({ registry: narrow, offline: memoryOffline(), entityRows: [{ user_id: 1, ts: T0 }], features: ["hagg_narrow:sum_amount_60s"], timestampField: "ts" }), /reads column "amount", which view "hagg_narrow" does not log offline/);
  });
});

describe("historical aggregates equal what online served at each instant", () => {
  it("events pushed in event-time order through the processor; at each entity row's time, the online read then equals the historical answer later", async () => {
    const rand = prng(31);
    let clock = T0;
    const store = memoryStore({ now: () => clock });
    const offline = fileOffline({ dir: await tempDir(), writerId: "p" });
    const processor = createProcessor({ registry: repo, online: store, offline, deadLetters: memoryDeadLetters(), now: () => clock });
    const events: Row[] = [];
    for (let i = 0; i < 300; i++) {
      events.push({ user_id: 1 + Math.floor(rand() * 3), amount: rand() < 0.1 ? null : Math.round(rand() * 100), category: `c${Math.floor(rand() * 5)}`, user: `u${Math.floor(rand() * 20)}`, ts: T0 + Math.floor(rand() * 200) * 1000 });
    }
    events.sort((a, b) => (a.ts as number) - (b.ts as number));
    const entityRows: Row[] = [];
    const served: Row[] = [];
    let pos = 0;
    for (let i = 0; i < events.length;) {
      let j = i;
      while (j < events.length && events[j].ts === events[i].ts) j++;
      const batch = events.slice(i, j).map((e) => ({ ...e, ts: new Date(e.ts as number).toISOString() }));
      clock = events[i].ts as number;
      const res = await processor.process("hagg_push", batch.map((value) => ({ value, position: { kind: "kafka", topic: "t", partition: 0, offset: String(pos++) } })) as never);
      assert.equal(res.invalid + res.late, 0);
      // Read online now, or a little later (before the next event), for one of the users.
      clock = Math.min(j < events.length ? (events[j].ts as number) - 1 : clock + 5000, clock + Math.floor(rand() * 3000));
      const id = 1 + Math.floor(rand() * 3);
      const [got] = await store.read(view, [`user_id=${id}`], names);
      const row: Row = {};
      for (const n of names) row[n] = got[n].value as Row[string];
      entityRows.push({ user_id: id, ts: new Date(clock).toISOString() });
      served.push(row);
      i = j;
    }
    await offline.close();
    const res = await getHistoricalFeatures({ registry: repo, offline, entityRows, features: ["hagg:*"], timestampField: "ts" });
    for (let i = 0; i < entityRows.length; i++) {
      for (const a of aggs) {
        const problem = a.function === "count_distinct" || a.function === "variance" || a.function === "stddev" || a.function === "mean" ? matchesReference(a, res.rows[i][a.name], served[i][a.name]) : JSON.stringify(res.rows[i][a.name]) === JSON.stringify(served[i][a.name]) ? undefined : `historical ${JSON.stringify(res.rows[i][a.name])}, online served ${JSON.stringify(served[i][a.name])}`;
        assert.equal(problem, undefined, `entity row ${i} ${JSON.stringify(entityRows[i])}, ${a.name}`);
      }
    }
  });
});
