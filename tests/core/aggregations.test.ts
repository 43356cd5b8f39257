import { describe, it } from "node:test";
import assert from "node:assert/strict";
import * as v from "valibot";
import {
  aggregation,
  entity,
  featureRepo,
  finalizeState,
  foldTiles,
  FreshetError,
  HLL_STANDARD_ERROR,
  hllAdd,
  hllCount,
  hllMerge,
  type HllState,
  mergeState,
  mergeTile,
  pushSource,
  readAggregates,
  resolveAggregation,
  type ResolvedAggregation,
  streamFeatureView,
  type Tile,
  tileExpiresAt,
  windowRange,
} from "../../mod.ts";
import { matchesReference, prng, reference, REFERENCE_AGGREGATIONS, type RefEvent } from "../../testing/agg-reference.ts";

const user = entity({ name: "user", joinKeys: ["user_id"] });
const push = pushSource({ name: "p", timestampField: "ts" });
const schema = v.object({ user_id: v.number(), amount: v.nullable(v.number()), category: v.string(), user: v.optional(v.string()), ts: v.string() });
const view = (aggregations: unknown[], o: Record<string, unknown> = {}) =>
  streamFeatureView({ name: "purchases", entities: [user], source: push, schema, ttl: 0, aggregations: aggregations as never, ...o });

function throwsWith(fn: () => unknown, pattern: RegExp) {
  assert.throws(fn, (e: unknown) => {
    assert.ok(e instanceof FreshetError, "a FreshetError");
    assert.equal(e.code, "INVALID_DEFINITION");
    assert.match(e.message, pattern);
    return true;
  });
}

describe("aggregation definitions", () => {
  it("names aggregations as Feast does, with several windows per column and a lifetime window", () => {
    const v0 = featureRepo({ project: "d", definitions: [view([
      { column: "amount", function: "sum", timeWindow: "1h", slideInterval: "5m" },
      { column: "amount", function: "sum", timeWindow: 600 },
      { column: "amount", function: "count", timeWindow: "lifetime" },
      { column: "category", function: "lastDistinctN", timeWindow: "1d", slideInterval: "1h", n: 5, name: "last_5_categories" },
    ])] }).view("purchases");
    assert.deepEqual(v0.aggregations!.map((a) => a.name), ["sum_amount_3600s", "sum_amount_600s", "count_amount_lifetime", "last_5_categories"]);
    assert.deepEqual(v0.aggregations![0], { name: "sum_amount_3600s", column: "amount", function: "sum", windowMs: 3_600_000, slideMs: 300_000, n: undefined });
    assert.equal(v0.aggregations![1].slideMs, 600_000, "slideInterval defaults to the window");
    assert.equal(v0.aggregations![2].windowMs, undefined);
    const d = featureRepo({ project: "d", definitions: [view([{ column: "amount", function: "sum", timeWindow: "1h", slideInterval: "5m" }])] }).describe();
    assert.deepEqual(d.featureViews[0].aggregations, [{ name: "sum_amount_3600s", column: "amount", function: "sum", timeWindowSeconds: 3600, slideIntervalSeconds: 300 }]);
    assert.equal(aggregation({ column: "amount", function: "max", timeWindow: "1d" }).function, "max");
  });
  it("refuses bad combinations at definition time, saying how to fix them", () => {
    throwsWith(() => view([{ column: "amount", function: "median", timeWindow: "1h" }]), /function "median" is not one of count, sum/);
    throwsWith(() => view([{ column: "amount", function: "sum", timeWindow: "1h", slideInterval: "7m" }]), /not a multiple of slideInterval.*pick a slideInterval that divides it/);
    throwsWith(() => view([{ column: "amount", function: "sum", timeWindow: "5m", slideInterval: "1h" }]), /slideInterval \(3600s\) is longer than timeWindow/);
    throwsWith(() => view([{ column: "amount", function: "sum", timeWindow: "soon" }]), /timeWindow "soon" is not a duration.*"lifetime"/);
    throwsWith(() => view([{ column: "amount", function: "sum", timeWindow: 0 }]), /not a positive duration/);
    throwsWith(() => view([{ column: "amount", function: "sum", timeWindow: "1500ms" }]), /whole seconds/);
    throwsWith(() => view([{ column: "amount", function: "sum", timeWindow: "lifetime", slideInterval: "1m" }]), /lifetime window has no slideInterval/);
    throwsWith(() => view([{ column: "category", function: "lastN", timeWindow: "1h" }]), /lastN needs n, an integer from 1 to 1000/);
    throwsWith(() => view([{ column: "amount", function: "sum", timeWindow: "1h", n: 3 }]), /n applies only to lastN and lastDistinctN/);
    throwsWith(() => view([{ column: "amount", function: "sum", timeWindow: "1h" }, { column: "amount", function: "sum", timeWindow: 3600 }]), /two aggregations are named "sum_amount_3600s"; give one of them a distinct name/);
    throwsWith(() => view([{ column: "amount", function: "sum", timeWindow: "1h", name: "bad name" }]), /name "bad name" must be letters/);
    throwsWith(() => view([{ column: "amount", function: "sum", timeWindow: "1d", slideInterval: "1s" }]), /too many to merge on read.*longer slideInterval/);
    throwsWith(() => view([]), /aggregations is empty/);
    throwsWith(() => featureRepo({ project: "d", definitions: [view([{ column: "price", function: "sum", timeWindow: "1h" }])] }), /reads column "price", which is not in the schema.*schema fields: user_id, amount/);
    throwsWith(() => featureRepo({ project: "d", definitions: [view([{ column: "ts", function: "count", timeWindow: "1h" }])] }), /join key or timestamp field/);
  });
});

const resolved = (a: Record<string, unknown>) => resolveAggregation("t", a as never);

describe("tile math", () => {
  it("defines the window at tile granularity: the last k tiles, the current one included", () => {
    const a = resolved({ column: "amount", function: "sum", timeWindow: 60, slideInterval: 10 });
    assert.deepEqual(windowRange(a, 125_000), { start: 70_000, end: 130_000 });
    assert.deepEqual(windowRange(a, 129_999), { start: 70_000, end: 130_000 });
    assert.deepEqual(windowRange(a, 130_000), { start: 80_000, end: 140_000 });
    assert.equal(tileExpiresAt([a], 10_000, 7, 5_000), 80_000 + 60_000 + 5_000);
    assert.equal(tileExpiresAt([resolved({ column: "amount", function: "count", timeWindow: "lifetime" })], 0, 0), undefined);
  });
  it("min and max come from the tiles still in the window as old tiles leave it", () => {
    const aggs = ["min", "max"].map((f) => resolved({ column: "amount", function: f, timeWindow: 30, slideInterval: 10 }));
    const tiles = new Map<string, Tile>();
    const ev = (t: number, amount: number) => ({ entityKey: "u", eventTime: t, row: { amount } });
    for (const d of foldTiles(aggs, [ev(1_000, 100), ev(12_000, 5), ev(25_000, 50)])) tiles.set(d.tile, mergeTile(aggs, tiles.get(d.tile), d.state));
    const read = (t: number) => Object.values(readAggregates(aggs, tiles, ["min_amount_30s", "max_amount_30s"], t)).map((x) => x.value);
    assert.deepEqual(read(29_000), [5, 100]);
    assert.deepEqual(read(30_000), [5, 50], "the tile with 100 left the window");
    assert.deepEqual(read(40_000), [50, 50], "the tile with 5 left too");
    const empty = readAggregates(aggs, tiles, ["min_amount_30s"], 60_000).min_amount_30s;
    assert.deepEqual(empty, { value: null, status: "NOT_FOUND" });
  });
  it("last-N with equal event times keeps the first arrivals, and by created time before that", () => {
    const a = resolved({ column: "c", function: "lastN", timeWindow: 60, n: 2 });
    const l = resolved({ column: "c", function: "last", timeWindow: 60 });
    const d = resolved({ column: "c", function: "lastDistinctN", timeWindow: 60, n: 2 });
    const ev = (c: string, ct?: number) => ({ entityKey: "u", eventTime: 5_000, createdTime: ct, row: { c } });
    const deltas = (evs: ReturnType<typeof ev>[]) => foldTiles([a, l, d], evs);
    let tile: Tile | undefined;
    for (const batch of [[ev("x"), ev("y")], [ev("z"), ev("x")], [ev("w", 1)]]) for (const delta of deltas(batch)) tile = mergeTile([a, l, d], tile, delta.state);
    const tiles = new Map([["60000:0", tile!]]);
    const r = readAggregates([a, l, d], tiles, ["lastN_c_60s", "last_c_60s", "lastDistinctN_c_60s"], 10_000);
    assert.deepEqual(r.lastN_c_60s.value, ["w", "x"], "created time first, then the earliest arrivals of equals");
    assert.equal(r.last_c_60s.value, "w");
    assert.deepEqual(r.lastDistinctN_c_60s.value, ["w", "x"]);
    assert.equal(r.lastN_c_60s.eventTime, 5_000);
  });
  it("variance merges exactly (Chan) and is null for a single value", () => {
    const a = resolved({ column: "x", function: "variance", timeWindow: 60 });
    const xs = [1e9 + 4, 1e9 + 7, 1e9 + 13, 1e9 + 16];
    const s = [[xs[0]], [xs[1], xs[2]], [xs[3]]].map((part) => part.map((x) => [1, x, 0] as [number, number, number]).reduce((p, q) => mergeState(a, p, q) as never));
    const merged = s.reduce((p, q) => mergeState(a, p, q) as never);
    assert.equal(finalizeState(a, merged), 30, "no catastrophic cancellation");
    assert.equal(finalizeState(a, [1, 5, 0]), null);
  });
  it("the HyperLogLog stays within its stated error, merges, and is exact-ish when small", () => {
    let h: HllState = { s: [] };
    for (let i = 0; i < 10; i++) h = hllAdd(h, `u${i}`);
    assert.equal(hllCount(h), 10);
    for (const n of [1_000, 20_000]) {
      let a: HllState = { s: [] }, b: HllState = { s: [] };
      for (let i = 0; i < n; i++) {
        a = hllAdd(a, i);
        if (i % 2) b = hllAdd(b, i);
      }
      const est = hllCount(hllMerge(a, b));
      assert.ok(Math.abs(est - n) / n < 4 * HLL_STANDARD_ERROR, `estimate ${est} of ${n} within 4 standard errors`);
      assert.ok("d" in a, "dense past 512 registers");
    }
  });
});

describe("tile math against a brute-force reference (randomized)", () => {
  const aggs = REFERENCE_AGGREGATIONS.map((a) => resolved(a));
  const names = aggs.map((a) => a.name);
  for (const seed of [1, 2, 3, 4, 5, 6, 7, 8]) {
    it(`seed ${seed}: every function, every window, at many instants`, () => {
      const rnd = prng(seed);
      const delayMs = 15_000;
      const events: RefEvent[] = [];
      let clock = 1_000_000;
      for (let i = 0; i < 600; i++) {
        clock += Math.floor(rnd() * 1500);
        // Out of order within the watermark delay; equal event times are common (whole seconds).
        const eventTime = Math.floor((clock - rnd() * delayMs) / 1000) * 1000;
        events.push({
          entityKey: `u${Math.floor(rnd() * 3)}`,
          eventTime,
          createdTime: rnd() < 0.3 ? Math.floor(rnd() * 3) : undefined,
          row: { amount: rnd() < 0.1 ? null : Math.floor(rnd() * 200) - 50, category: `c${Math.floor(rnd() * 6)}`, user: `v${Math.floor(rnd() * 400)}` },
        });
      }
      const tiles = new Map<string, Map<string, Tile>>();
      let checked = 0;
      for (let i = 0; i < events.length;) {
        const size = 1 + Math.floor(rnd() * 40);
        const batch = events.slice(i, i + size);
        i += batch.length;
        for (const d of foldTiles(aggs, batch, delayMs)) {
          const m = tiles.get(d.entityKey) ?? new Map<string, Tile>();
          m.set(d.tile, mergeTile(aggs, m.get(d.tile), d.state));
          tiles.set(d.entityKey, m);
        }
        const seen = events.slice(0, i);
        for (const t of [clock, clock - 7_000, clock + 45_000, clock + 200_000]) {
          for (const ek of ["u0", "u1", "u2"]) {
            const r = readAggregates(aggs, tiles.get(ek) ?? new Map(), names, t);
            for (const a of aggs) {
              const want = reference(a, seen, ek, t);
              const problem = matchesReference(a, r[a.name].value, want === null && a.function === "count" ? 0 : want);
              assert.equal(problem, undefined, `seed ${seed}, ${a.name} of ${ek} at ${t}: ${problem}`);
              checked++;
            }
          }
        }
      }
      assert.ok(checked > 1000);
    });
  }
});
