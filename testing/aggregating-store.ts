/**
 * The conformance suite of the aggregation contract:
 * `testAggregatingStore(name, factory)`. The factory gets the suite's clock
 * (`now`), so that windows and tile expiry are read at chosen instants.
 */
import { after, describe, it } from "node:test";
import assert from "node:assert/strict";
import * as v from "valibot";
import { type AggregatingStore, entity, featureRepo, foldTiles, type OnlineStore, pushSource, type Registry, streamFeatureView } from "../mod.ts";
import { matchesReference, prng, reference, REFERENCE_AGGREGATIONS, type RefEvent } from "./agg-reference.ts";

/** What a factory gives the suite. */
export interface AggregatingStoreUnderTest {
  /** The store under test. */
  store: OnlineStore & AggregatingStore;
  /** A second client on the same data, for racing folds. */
  reopen?: () => Promise<OnlineStore & AggregatingStore>;
  /** Removes what the test made (files, keys). */
  cleanup?: () => Promise<void>;
}

const user = entity({ name: "user", joinKeys: ["user_id"] });
const src = pushSource({ name: "agg_conf_push", timestampField: "ts" });
const schema = v.object({ user_id: v.number(), amount: v.nullable(v.number()), category: v.string(), user: v.string(), ts: v.string() });
/** The aggregation views the suite folds into. */
export const aggregationRepo: Registry = featureRepo({
  project: "aggconf",
  definitions: [
    streamFeatureView({ name: "agg_conf", entities: [user], source: src, schema, ttl: 0, watermarkDelay: 15, aggregations: REFERENCE_AGGREGATIONS as never }),
    streamFeatureView({ name: "agg_conf_other", entities: [user], source: src, schema, ttl: 0, aggregations: [{ column: "amount", function: "sum", timeWindow: 60, slideInterval: 10 }] }),
  ],
});
const view = aggregationRepo.view("agg_conf");
const other = aggregationRepo.view("agg_conf_other");
const aggs = view.aggregations!;
const names = aggs.map((a) => a.name);
// Ahead of the real clock (a whole hour): Redis expires keys on its own clock, by event time.
const T0 = Math.ceil(Date.now() / 3_600_000) * 3_600_000 + 3_600_000;

/**
 * Runs the aggregation conformance suite.
 *
 * @example
 * ```ts
 * testAggregatingStore("memory", async (now) => ({ store: memoryStore({ now }) }))
 * ```
 */
export function testAggregatingStore(name: string, factory: (now: () => number) => Promise<AggregatingStoreUnderTest>): void {
  describe(`AggregatingStore conformance: ${name}`, () => {
    let clock = T0;
    const now = () => clock;
    const opened: AggregatingStoreUnderTest[] = [];
    const extra: OnlineStore[] = [];
    const open = async () => {
      const s = await factory(now);
      opened.push(s);
      return s;
    };
    after(async () => {
      for (const s of extra) await s.close?.();
      for (const s of opened) {
        await s.store.close?.();
        await s.cleanup?.();
      }
    });
    const ev = (entityKey: string, eventTime: number, row: Record<string, unknown>, createdTime?: number): RefEvent => ({ entityKey, eventTime, createdTime, row: { amount: 1, category: "a", user: "x", ...row } });
    // The mark key of an entity's tiles: per part of the store where it keeps marks so (a Redis Cluster), as the processor keys it.
    const markOf = (store: AggregatingStore, entityKey: string, key: string) => store.markKey ? store.markKey(view, entityKey, key) : key;

    it("folds tiles and reads every function by name, with statuses for empty windows and unknown entities", async () => {
      const { store } = await open();
      clock = T0 + 35_000;
      const events = [ev("user_id=1", T0 + 1_000, { amount: 10, category: "a" }), ev("user_id=1", T0 + 12_000, { amount: 4, category: "b" }), ev("user_id=1", T0 + 31_000, { amount: 7, category: "a" })];
      const r = await store.foldTiles(view, foldTiles(aggs, events, view.watermarkDelayMs));
      assert.equal(r.ok, true);
      const [u1, u2] = await store.read(view, ["user_id=1", "user_id=2"], names);
      // The store's clock only moves forward from here: expired tiles may be dropped as they are read.
      for (const a of aggs) assert.equal(matchesReference(a, u1[a.name].value, reference(a, events, "user_id=1", clock)), undefined, a.name);
      assert.deepEqual(u1.sum_amount_60s, { value: 21, status: "PRESENT", eventTime: T0 + 31_000 });
      assert.deepEqual(u1.lastN_category_60s.value, ["a", "b", "a"]);
      assert.deepEqual(u1.lastDistinctN_category_60s.value, ["a", "b"]);
      assert.deepEqual(u2.count_amount_60s, { value: 0, status: "PRESENT" });
      assert.deepEqual(u2.sum_amount_60s, { value: null, status: "NOT_FOUND" });
      assert.deepEqual(u2.count_distinct_user_60s, { value: 0, status: "PRESENT" });
      clock = T0 + 40_000;
      const [one] = await store.read(view, ["user_id=1"], ["variance_amount_60s", "sum_amount_30s"]);
      assert.equal(one.variance_amount_60s.value, 9, "variance of 10, 4 and 7");
      assert.equal(one.sum_amount_30s.value, 7, "a tumbling 30 s window at 40 s holds 30-60 s");
      clock = T0 + 100_000;
      const [late] = await store.read(view, ["user_id=1"], ["count_amount_60s", "max_amount_60s", "count_amount_lifetime", "max_amount_lifetime"]);
      assert.deepEqual(late.count_amount_60s, { value: 0, status: "PRESENT" }, "every tile left the 60 s window");
      assert.equal(late.max_amount_60s.status, "NOT_FOUND");
      assert.equal(late.count_amount_lifetime.value, 3);
      assert.equal(late.max_amount_lifetime.value, 10);
    });

    it("checks and advances applied marks in the same step as the tiles and the commit metadata", async () => {
      const { store } = await open();
      clock = T0 + 5_000;
      const deltas = foldTiles(aggs, [ev("user_id=7", T0 + 1_000, { amount: 3 })], view.watermarkDelayMs);
      const key = markOf(store, "user_id=7", "agg_conf:kafka:t:0");
      const first = await store.foldTiles(view, deltas, { marks: [{ key, position: "41" }], watermarks: { [key]: T0 + 1_000 }, done: { key: "push:aggconf:w1", fingerprint: "f", ttlMs: 60_000 } });
      assert.equal(first.ok, true);
      assert.equal(await store.getAppliedMark(key), "41");
      assert.equal(await store.meta.getWatermark(key), T0 + 1_000);
      assert.deepEqual(await store.meta.begin("push:aggconf:w1", "f", 1000), { state: "done", fingerprint: "f" });
      // A redelivery judged against no mark is refused whole: nothing is added, no metadata moves.
      const again = await store.foldTiles(view, deltas, { marks: [{ key, position: "41" }], watermarks: { [key]: T0 + 9_000 } });
      assert.deepEqual(again, { ok: false, marks: { [key]: "41" } });
      assert.equal(await store.meta.getWatermark(key), T0 + 1_000);
      const [r] = await store.read(view, ["user_id=7"], ["sum_amount_60s", "count_amount_lifetime"]);
      assert.equal(r.sum_amount_60s.value, 3);
      assert.equal(r.count_amount_lifetime.value, 1);
      const next = await store.foldTiles(view, deltas, { marks: [{ key, expected: "41", position: "42" }] });
      assert.equal(next.ok, true);
      assert.equal(await store.getAppliedMark(key), "42");
      const [r2] = await store.read(view, ["user_id=7"], ["sum_amount_60s"]);
      assert.equal(r2.sum_amount_60s.value, 6);
      assert.equal(await store.getAppliedMark(markOf(store, "user_id=7", "agg_conf:kafka:t:1")), undefined);
    });

    it("keeps views apart, skips tiles already expired, and expires tiles by event time", async () => {
      const { store } = await open();
      clock = T0 + 200_000;
      const stale = foldTiles(aggs, [ev("user_id=3", T0 + 1_000, { amount: 5 })], view.watermarkDelayMs);
      const r = await store.foldTiles(view, stale);
      assert.equal(r.ok && r.expired, stale.filter((d) => d.expiresAt !== undefined).length, "every windowed tile is past its expiry");
      const [x] = await store.read(view, ["user_id=3"], ["count_amount_lifetime", "count_amount_60s"]);
      assert.equal(x.count_amount_lifetime.value, 1, "the lifetime tile never expires");
      await store.foldTiles(other, foldTiles(other.aggregations!, [ev("user_id=3", T0 + 195_000, { amount: 9 })]));
      const [o] = await store.read(other, ["user_id=3"], ["sum_amount_60s"]);
      const [w] = await store.read(view, ["user_id=3"], ["sum_amount_60s"]);
      assert.equal(o.sum_amount_60s.value, 9);
      assert.equal(w.sum_amount_60s.value, null);
    });

    it("clears the tiles wholly inside a range, for a backfill, and keeps the lifetime tile", async () => {
      const { store } = await open();
      clock = T0 + 50_000;
      await store.foldTiles(other, foldTiles(other.aggregations!, [ev("user_id=4", T0 + 5_000, { amount: 1 }), ev("user_id=4", T0 + 15_000, { amount: 2 }), ev("user_id=5", T0 + 25_000, { amount: 4 }), ev("user_id=5", T0 + 45_000, { amount: 8 })]));
      await store.clearTiles(other, { start: T0 + 10_000, end: T0 + 40_000 });
      const [a, b] = await store.read(other, ["user_id=4", "user_id=5"], ["sum_amount_60s"]);
      assert.equal(a.sum_amount_60s.value, 1);
      assert.equal(b.sum_amount_60s.value, 8);
      await store.foldTiles(view, foldTiles(aggs, [ev("user_id=4", T0 + 5_000, { amount: 3 })], view.watermarkDelayMs));
      await store.clearTiles(view, { start: -Infinity, end: T0 });
      const [kept] = await store.read(view, ["user_id=4"], ["count_amount_lifetime"]);
      assert.equal(kept.count_amount_lifetime.value, 1, "a bounded range keeps the lifetime tile");
      await store.clearTiles(view, { start: -Infinity, end: Infinity });
      const [gone] = await store.read(view, ["user_id=4"], ["count_amount_lifetime", "sum_amount_60s"]);
      assert.deepEqual([gone.count_amount_lifetime.value, gone.sum_amount_60s.value], [0, null], "the whole history clears everything");
    });

    it("two clients folding with the same expected mark: exactly one applies", async (t) => {
      const s = await open();
      if (!s.reopen) return t.skip("no second client");
      const second = await s.reopen();
      extra.push(second);
      clock = T0 + 5_000;
      const deltas = foldTiles(aggs, [ev("user_id=8", T0 + 1_000, { amount: 2 })], view.watermarkDelayMs);
      const key = markOf(s.store, "user_id=8", "agg_conf:kafka:t:9");
      const results = await Promise.all([s.store, second, s.store, second].map((st) => st.foldTiles(view, deltas, { marks: [{ key, position: "10" }] })));
      assert.equal(results.filter((r) => r.ok).length, 1);
      const [r] = await s.store.read(view, ["user_id=8"], ["sum_amount_60s"]);
      assert.equal(r.sum_amount_60s.value, 2);
    });

    it("concurrent folds of one entity's tiles from many partitions and two clients add up exactly", async (t) => {
      const s = await open();
      const second = s.reopen ? await s.reopen() : s.store;
      if (second !== s.store) extra.push(second);
      clock = T0 + 5_000;
      const folds = [];
      for (let p = 0; p < 24; p++) {
        const deltas = foldTiles(aggs, [ev("user_id=9", T0 + 1_000 + p, { amount: p, category: `c${p}` })], view.watermarkDelayMs);
        folds.push((p % 2 ? second : s.store).foldTiles(view, deltas, { marks: [{ key: markOf(s.store, "user_id=9", `agg_conf:kafka:many:${p}`), position: "1" }] }));
      }
      const results = await Promise.all(folds);
      assert.ok(results.every((r) => r.ok));
      const [r] = await s.store.read(view, ["user_id=9"], ["sum_amount_60s", "count_amount_60s", "max_amount_lifetime", "last_category_60s"]);
      assert.equal(r.sum_amount_60s.value, (23 * 24) / 2);
      assert.equal(r.count_amount_60s.value, 24);
      assert.equal(r.max_amount_lifetime.value, 23);
      assert.equal(r.last_category_60s.value, "c23");
      if (second === s.store) t.diagnostic("one client only");
    });

    for (const seed of [11, 12]) {
      it(`randomized against a brute-force reference, with out-of-order events, redeliveries and reads at many instants (seed ${seed})`, async () => {
        const { store } = await open();
        const rnd = prng(seed);
        const delayMs = view.watermarkDelayMs!;
        const events: RefEvent[] = [];
        let t = T0 + 1_000_000;
        for (let i = 0; i < 400; i++) {
          t += Math.floor(rnd() * 1500);
          events.push(ev(`user_id=${Math.floor(rnd() * 3)}`, Math.floor((t - rnd() * delayMs) / 1000) * 1000, {
            amount: rnd() < 0.1 ? null : Math.floor(rnd() * 200) - 50,
            category: `c${Math.floor(rnd() * 5)}`,
            user: `v${Math.floor(rnd() * 300)}`,
          }, rnd() < 0.3 ? Math.floor(rnd() * 3) : undefined));
        }
        const partition = `agg_conf:kafka:rand${seed}:0`;
        let acked = 0; // the next position a consumer starts from after a crash
        let next = 0;
        let high = -1; // the highest position folded
        let checked = 0;
        let refused = 0;
        while (acked < events.length) {
          if (rnd() < 0.25) next = acked; // a crash before the ack: the batch is delivered again
          const size = 1 + Math.floor(rnd() * 30);
          const from = next;
          const to = Math.min(events.length, from + size);
          next = to;
          // The store's clock never goes back (tiles may expire as they are read).
          clock = Math.max(clock, events[to - 1].eventTime + 2_000);
          // What a processor does: filter by the applied marks, fold the rest, check the marks as it folds.
          const marks = new Map<string, string | undefined>();
          for (let i = from; i < to; i++) {
            const key = markOf(store, events[i].entityKey, partition);
            if (!marks.has(key)) marks.set(key, await store.getAppliedMark(key));
          }
          const fresh = [];
          const moved = new Set<string>();
          for (let i = from; i < to; i++) {
            const key = markOf(store, events[i].entityKey, partition);
            const mark = marks.get(key);
            if (i > (mark === undefined ? -1 : Number(mark))) {
              fresh.push(events[i]);
              moved.add(key);
            }
          }
          if (fresh.length) {
            const r = await store.foldTiles(view, foldTiles(aggs, fresh, delayMs), { marks: [...moved].map((key) => ({ key, expected: marks.get(key), position: String(to - 1) })) });
            assert.equal(r.ok, true);
          } else refused++;
          high = Math.max(high, to - 1);
          if (rnd() < 0.8) acked = to;
          const seen = events.slice(0, high + 1);
          for (const at of [clock, clock + 4_000, clock + 11_000]) {
            clock = at;
            const reads = await store.read(view, ["user_id=0", "user_id=1", "user_id=2"], names);
            for (let k = 0; k < 3; k++) {
              for (const a of aggs) {
                const want = reference(a, seen, `user_id=${k}`, at);
                const problem = matchesReference(a, reads[k][a.name].value, want);
                assert.equal(problem, undefined, `${a.name} of user ${k} at ${at}: ${problem}`);
                checked++;
              }
            }
          }
        }
        assert.ok(checked > 1000 && refused > 0, `${checked} values checked, ${refused} batches redelivered whole`);
      });
    }
  });
}
