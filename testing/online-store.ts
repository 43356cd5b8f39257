/**
 * The conformance suite every OnlineStore passes: `testOnlineStore(name, factory)`.
 * A store's own test file calls it with a factory that gives a fresh store
 * (and a clock the suite can move, for ttl).
 */
import { describe, it, after } from "node:test";
import assert from "node:assert/strict";
import * as v from "valibot";
import { entity, featureRepo, pushSource, streamFeatureView, type FeatureRow, type OnlineStore, type Registry } from "../mod.ts";

/** What a factory gives the suite. */
export interface StoreUnderTest {
  /** The store under test. */
  store: OnlineStore;
  /** Moves the store's clock forward, for ttl; stores on a real clock may sleep instead. */
  advance?: (ms: number) => Promise<void>;
  /** Makes a second client on the same data, for concurrent writers and restarts. */
  reopen?: () => Promise<OnlineStore>;
  /** Removes what the test made (files, keys). */
  cleanup?: () => Promise<void>;
}

const driver = entity({ name: "driver", joinKeys: ["driver_id"] });
const src = pushSource({ name: "conf_push", timestampField: "event_timestamp" });
const schema = v.object({ driver_id: v.number(), conv_rate: v.nullable(v.number()), trips: v.number(), label: v.optional(v.string()), event_timestamp: v.string() });
/** The views the suite writes to; one with a short ttl. */
export const conformanceRepo: Registry = featureRepo({
  project: "conformance",
  definitions: [
    streamFeatureView({ name: "conf_stats", entities: [driver], source: src, schema, ttl: "1h" }),
    streamFeatureView({ name: "conf_short", entities: [driver], source: src, schema, ttl: 2 }),
  ],
});
const view = conformanceRepo.view("conf_stats");
const short = conformanceRepo.view("conf_short");

const T0: number = Date.UTC(2026, 0, 1);
const row = (id: number, eventTime: number, values: Record<string, unknown>, createdTime?: number): FeatureRow => ({
  entityKey: `driver_id=${id}`,
  values: { conv_rate: 0.5, trips: 1, label: null, ...values },
  eventTime,
  createdTime,
});
const now = () => Date.now();

/**
 * Runs the online store conformance suite.
 *
 * @example
 * ```ts
 * testOnlineStore("memory", async () => ({ store: memoryStore() }))
 * ```
 */
export function testOnlineStore(name: string, factory: () => Promise<StoreUnderTest>): void {
  describe(`OnlineStore conformance: ${name}`, () => {
    const opened: StoreUnderTest[] = [];
    const open = async () => {
      const s = await factory();
      opened.push(s);
      return s;
    };
    after(async () => {
      for (const s of opened) {
        await s.store.close?.();
        await s.cleanup?.();
      }
    });

    it("writes and reads back values, event times and PRESENT", async () => {
      const { store } = await open();
      const t = now();
      const w = await store.write(view, [row(1, t, { conv_rate: 0.9, trips: 7, label: "a" }), row(2, t - 1000, { conv_rate: 0.1, trips: 3 })]);
      assert.deepEqual(w, { written: 2, stale: 0, expired: 0 });
      const [a, b, c] = await store.read(view, ["driver_id=1", "driver_id=2", "driver_id=3"], ["conv_rate", "trips", "label"]);
      assert.deepEqual(a.conv_rate, { value: 0.9, status: "PRESENT", eventTime: t });
      assert.equal(a.trips.value, 7);
      assert.equal(a.label.value, "a");
      assert.equal(b.conv_rate.value, 0.1);
      assert.equal(b.trips.eventTime, t - 1000);
      assert.equal(b.label.status, "NULL_VALUE");
      assert.equal(c.conv_rate.status, "NOT_FOUND");
      assert.equal(c.conv_rate.value, null);
    });

    it("keeps the newest event: older and equal rows are stale and change nothing", async () => {
      const { store } = await open();
      const t = now();
      await store.write(view, [row(10, t, { trips: 5 })]);
      const w = await store.write(view, [row(10, t - 1, { trips: 4 }), row(10, t, { trips: 99 }), row(11, t, { trips: 1 })]);
      assert.deepEqual(w, { written: 1, stale: 2, expired: 0 });
      const [r] = await store.read(view, ["driver_id=10"], ["trips"]);
      assert.equal(r.trips.value, 5);
      const w2 = await store.write(view, [row(10, t + 1, { trips: 6 })]);
      assert.deepEqual(w2, { written: 1, stale: 0, expired: 0 });
      assert.equal((await store.read(view, ["driver_id=10"], ["trips"]))[0].trips.value, 6);
    });

    it("breaks event-time ties by created time", async () => {
      const { store } = await open();
      const t = now();
      await store.write(view, [row(20, t, { trips: 1 }, t)]);
      assert.deepEqual(await store.write(view, [row(20, t, { trips: 2 }, t + 5)]), { written: 1, stale: 0, expired: 0 });
      assert.deepEqual(await store.write(view, [row(20, t, { trips: 3 }, t + 1)]), { written: 0, stale: 1, expired: 0 });
      assert.equal((await store.read(view, ["driver_id=20"], ["trips"]))[0].trips.value, 2);
      // A row with a created time beats an equal event time without one, never the reverse.
      await store.write(view, [row(21, t, { trips: 1 })]);
      assert.deepEqual(await store.write(view, [row(21, t, { trips: 2 }, 0)]), { written: 1, stale: 0, expired: 0 });
      assert.deepEqual(await store.write(view, [row(21, t, { trips: 3 })]), { written: 0, stale: 1, expired: 0 });
      assert.equal((await store.read(view, ["driver_id=21"], ["trips"]))[0].trips.value, 2);
    });

    it("the first of equal versions wins, inside a batch and across batches", async () => {
      const { store } = await open();
      const t = now();
      // Inside one batch: the first row of two equal versions is kept.
      assert.deepEqual(await store.write(view, [row(22, t, { trips: 1 }), row(22, t, { trips: 2 })]), { written: 1, stale: 1, expired: 0 });
      assert.equal((await store.read(view, ["driver_id=22"], ["trips"]))[0].trips.value, 1);
      // Across batches: the stored row is the first; an equal one later is stale.
      assert.deepEqual(await store.write(view, [row(22, t, { trips: 3 })]), { written: 0, stale: 1, expired: 0 });
      assert.equal((await store.read(view, ["driver_id=22"], ["trips"]))[0].trips.value, 1);
      // The same with equal created times.
      await store.write(view, [row(23, t, { trips: 1 }, t), row(23, t, { trips: 2 }, t)]);
      await store.write(view, [row(23, t, { trips: 3 }, t)]);
      assert.equal((await store.read(view, ["driver_id=23"], ["trips"]))[0].trips.value, 1);
    });

    it("keeps views apart for the same entity", async () => {
      const { store } = await open();
      const t = now();
      await store.write(view, [row(30, t, { trips: 1 })]);
      await store.write(short, [row(30, t, { trips: 2 })]);
      assert.equal((await store.read(view, ["driver_id=30"], ["trips"]))[0].trips.value, 1);
      assert.equal((await store.read(short, ["driver_id=30"], ["trips"]))[0].trips.value, 2);
    });

    it("expires keys at event time + ttl, not at write time", async () => {
      const s = await open();
      // conf_short has a 2 s ttl: an event 1 s old has about 1 s left.
      await s.store.write(short, [row(50, now() - 1000, { trips: 1 })]);
      assert.equal((await s.store.read(short, ["driver_id=50"], ["trips"]))[0].trips.status, "PRESENT");
      if (s.advance) await s.advance(1500);
      else await new Promise((r) => setTimeout(r, 1500));
      assert.equal((await s.store.read(short, ["driver_id=50"], ["trips"]))[0].trips.status, "NOT_FOUND");
      // Once expired, an older event cannot come back: it is outside the ttl too.
      const w = await s.store.write(short, [row(50, now() - 1900 - 1500, { trips: 0 })]);
      assert.deepEqual(w, { written: 0, stale: 0, expired: 1 });
      assert.equal((await s.store.read(short, ["driver_id=50"], ["trips"]))[0].trips.status, "NOT_FOUND");
    });

    it("does not write a row that is already outside the ttl (expired)", async () => {
      const { store } = await open();
      const t = now();
      const w = await store.write(short, [row(51, t - 60_000, { trips: 1 }), row(52, t, { trips: 2 })]);
      assert.deepEqual(w, { written: 1, stale: 0, expired: 1 });
      const [a, b] = await store.read(short, ["driver_id=51", "driver_id=52"], ["trips"]);
      assert.equal(a.trips.status, "NOT_FOUND");
      assert.equal(b.trips.value, 2);
      // An expired row never displaces a live one either.
      await store.write(view, [row(53, t, { trips: 5 })]);
      assert.deepEqual(await store.write(view, [row(53, t - 2 * 3600_000 - 1, { trips: 6 })]), { written: 0, stale: 0, expired: 1 });
      assert.equal((await store.read(view, ["driver_id=53"], ["trips"]))[0].trips.value, 5);
    });

    it("holds latest-wins under concurrent writers with shuffled, duplicated rows", async () => {
      const s = await open();
      const writers = [s.store, ...(s.reopen ? await Promise.all([s.reopen(), s.reopen(), s.reopen()]) : [s.store, s.store, s.store])];
      const t = now();
      const events: FeatureRow[] = [];
      for (let id = 0; id < 50; id++) for (let k = 0; k < 20; k++) events.push(row(1000 + id, t - 60_000 + k * 1000, { trips: k }));
      const all = [...events, ...events];
      for (let i = all.length - 1; i > 0; i--) {
        const j = Math.floor(Math.random() * (i + 1));
        [all[i], all[j]] = [all[j], all[i]];
      }
      const per = Math.ceil(all.length / writers.length);
      await Promise.all(writers.map(async (w, n) => {
        const mine = all.slice(n * per, (n + 1) * per);
        for (let i = 0; i < mine.length; i += 25) await w.write(view, mine.slice(i, i + 25));
      }));
      const keys = Array.from({ length: 50 }, (_, id) => `driver_id=${1000 + id}`);
      const got = await s.store.read(view, keys, ["trips"]);
      for (const r of got) assert.equal(r.trips.value, 19);
      // A full replay changes nothing.
      const replay = await s.store.write(view, events);
      assert.equal(replay.written, 0);
      assert.equal(replay.stale, events.length);
      for (const w of writers) if (w !== s.store) await w.close?.();
    });

    it("begins an idempotency key once; it is done only with the write it guards", async () => {
      const { store } = await open();
      const k = `idem-${Math.random()}`;
      const results = await Promise.all([store.meta.begin(k, "fp1", 60_000), store.meta.begin(k, "fp1", 60_000), store.meta.begin(k, "fp1", 60_000)]);
      const started = results.filter((r) => r.state === "started");
      assert.equal(started.length, 1, "exactly one concurrent delivery starts");
      assert.deepEqual(results.filter((r) => r.state !== "started"), [{ state: "pending", fingerprint: "fp1" }, { state: "pending", fingerprint: "fp1" }]);
      const t = now();
      const w = await store.write(view, [row(60, t, { trips: 1 })], { done: { key: k, fingerprint: "fp1", ttlMs: 60_000 } });
      assert.equal(w.written, 1);
      assert.deepEqual(await store.meta.begin(k, "fp2", 60_000), { state: "done", fingerprint: "fp1" });
      // A done key is not abandoned by the delivery that began it.
      await store.meta.abandon(k, (started[0] as { token: string }).token);
      assert.equal((await store.meta.begin(k, "fp1", 60_000)).state, "done");
    });

    it("abandons a pending key only for its holder; a pending key expires", async () => {
      const s = await open();
      const k = `idem-${Math.random()}`;
      const a = await s.store.meta.begin(k, "fp", 60_000);
      assert.equal(a.state, "started");
      await s.store.meta.abandon(k, "someone-else");
      assert.equal((await s.store.meta.begin(k, "fp", 60_000)).state, "pending");
      await s.store.meta.abandon(k, (a as { token: string }).token);
      const b = await s.store.meta.begin(k, "fp", 300);
      assert.equal(b.state, "started", "a retry after an abandoned delivery is processed");
      if (s.advance) await s.advance(400);
      else await new Promise((r) => setTimeout(r, 400));
      assert.equal((await s.store.meta.begin(k, "fp", 60_000)).state, "started", "a crashed delivery's key expires");
      // settle marks done without a write.
      const k2 = `idem-${Math.random()}`;
      await s.store.meta.begin(k2, "x", 60_000);
      await s.store.meta.settle(k2, "x", 60_000);
      assert.deepEqual(await s.store.meta.begin(k2, "x", 60_000), { state: "done", fingerprint: "x" });
    });

    it("keeps watermarks monotone, through advanceWatermark and through a write's commit", async () => {
      const { store } = await open();
      const k = `wm-${Math.random()}`;
      assert.equal(await store.meta.getWatermark(k), undefined);
      assert.equal(await store.meta.advanceWatermark(k, T0 + 1000), T0 + 1000);
      assert.equal(await store.meta.advanceWatermark(k, T0), T0 + 1000, "never lowered");
      await store.write(view, [row(61, now(), { trips: 1 })], { watermarks: { [k]: T0 + 5000 } });
      assert.equal(await store.meta.getWatermark(k), T0 + 5000);
      await store.write(view, [row(61, now() - 10, { trips: 2 })], { watermarks: { [k]: T0 + 2000 } });
      assert.equal(await store.meta.getWatermark(k), T0 + 5000);
      // Pre-1970 event times are watermarks too.
      const k2 = `wm-${Math.random()}`;
      assert.equal(await store.meta.advanceWatermark(k2, -86_400_000), -86_400_000);
      assert.equal(await store.meta.advanceWatermark(k2, -1), -1);
      // A commit with no rows still applies.
      const k3 = `wm-${Math.random()}`;
      assert.deepEqual(await store.write(view, [], { watermarks: { [k3]: T0 } }), { written: 0, stale: 0, expired: 0 });
      assert.equal(await store.meta.getWatermark(k3), T0);
    });

    it("moves checkpoints forward only", async () => {
      const { store } = await open();
      const k = `cp-${Math.random()}`;
      assert.equal(await store.meta.getCheckpoint(k), undefined);
      assert.equal(await store.meta.setCheckpoint(k, "49590338271490256608559692538361571095921575989136588898"), true);
      assert.equal(await store.meta.setCheckpoint(k, "49590338271490256608559692538361571095921575989136588897"), false);
      assert.equal(await store.meta.setCheckpoint(k, "9"), false);
      assert.equal(await store.meta.setCheckpoint(k, "49590338271490256608559692538361571095921575989136588999"), true);
      assert.equal(await store.meta.getCheckpoint(k), "49590338271490256608559692538361571095921575989136588999");
    });

    it("grants a lease to one owner, fences checkpoints by it, and hands it over after expiry", async () => {
      const s = await open();
      const lk = `lease-${Math.random()}`;
      const a = await s.store.meta.acquireLease(lk, "worker-a", 1000);
      assert.ok(a);
      assert.equal(await s.store.meta.acquireLease(lk, "worker-b", 1000), undefined);
      const renewed = await s.store.meta.acquireLease(lk, "worker-a", 1000);
      assert.equal(renewed?.counter, a.counter);
      const fence = { lease: lk, owner: "worker-a", counter: a.counter };
      assert.equal(await s.store.meta.setCheckpoint(`${lk}:cp`, "10", fence), true);
      if (s.advance) await s.advance(1200);
      else await new Promise((r) => setTimeout(r, 1200));
      const b = await s.store.meta.acquireLease(lk, "worker-b", 1000);
      assert.ok(b);
      assert.ok(b.counter > a.counter);
      assert.equal(await s.store.meta.setCheckpoint(`${lk}:cp`, "11", fence), false, "a fenced-off worker cannot checkpoint");
      assert.equal(await s.store.meta.setCheckpoint(`${lk}:cp`, "11", { lease: lk, owner: "worker-b", counter: b.counter }), true);
      assert.deepEqual((await s.store.meta.listLeases(lk)).map((l) => l.owner), ["worker-b"]);
      await s.store.meta.releaseLease(lk, "worker-b");
      const c = await s.store.meta.acquireLease(lk, "worker-a", 1000);
      assert.ok(c && c.counter > b.counter);
    });
  });
}

export { T0 };
