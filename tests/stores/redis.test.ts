// The Redis online store against a real redis-server on a free port: the
// conformance suite, then what is specific to Redis (one script call per
// batch, key expiry, value round trips, an outage and the recovery after it).
import { after, describe, it } from "node:test";
import assert from "node:assert/strict";
import * as v from "valibot";
import { Redis as IORedis } from "ioredis";
import { entity, FreshetError, featureRepo, pushSource, streamFeatureView, type FeatureRow } from "../../mod.ts";
import { redisStore } from "../../plugins/stores/redis/redis.ts";
import { encodeRows, redisLayout } from "../../plugins/stores/redis/layout.ts";
import { groupScriptArgs, writeScriptArgs } from "../../plugins/stores/redis/scripts.ts";
import { conformanceRepo, testOnlineStore } from "../../testing/online-store.ts";
import { testAggregatingStore } from "../../testing/aggregating-store.ts";
import { startRedis, type RedisService } from "../services/redis.ts";

let service: Promise<RedisService> | undefined;
const redis = () => (service ??= startRedis());
after(async () => {
  if (service) await (await service).stop();
});

let projects = 0;
testOnlineStore("redis", async () => {
  const { url } = await redis();
  const project = `conf${++projects}`;
  return { store: redisStore({ url, project }), reopen: () => Promise.resolve(redisStore({ url, project })) };
});

testAggregatingStore("redis", async (now) => {
  const { url } = await redis();
  const project = `agg${++projects}`;
  return { store: redisStore({ url, project, now }), reopen: () => Promise.resolve(redisStore({ url, project, now })) };
});

const view = conformanceRepo.view("conf_stats");
const driver = entity({ name: "driver", joinKeys: ["driver_id"] });
const forever = featureRepo({
  project: "redis_test",
  definitions: [
    streamFeatureView({
      name: "forever",
      entities: [driver],
      source: pushSource({ name: "forever_push", timestampField: "ts" }),
      schema: v.object({ driver_id: v.number(), ts: v.string(), x: v.unknown() }),
      ttl: 0,
    }),
  ],
}).view("forever");

const rows = (n: number, eventTime: number, from = 0): FeatureRow[] =>
  Array.from({ length: n }, (_, i) => ({ entityKey: `driver_id=${from + i}`, values: { conv_rate: i / n, trips: i, label: `l${i}` }, eventTime }));

/** calls=N of the script commands, from INFO commandstats. */
async function scriptCalls(admin: IORedis): Promise<number> {
  const info = await admin.info("commandstats");
  let calls = 0;
  for (const m of info.matchAll(/^cmdstat_(?:eval|evalsha):calls=(\d+)/gm)) calls += Number(m[1]);
  return calls;
}

/** How many times Redis ran `command` (INFO commandstats), scripts' inner calls included. */
async function commandCalls(admin: IORedis, command: string): Promise<number> {
  const m = new RegExp(`^cmdstat_${command}:calls=(\\d+)`, "m").exec(await admin.info("commandstats"));
  return m ? Number(m[1]) : 0;
}

describe("redis store", () => {
  it("overwrites a row with the same fields without a DEL; a row that lacks some of the old fields rebuilds the hash", async () => {
    const { url } = await redis();
    const store = redisStore({ url, project: "lean" });
    const admin = new IORedis(url);
    try {
      const t = Date.now();
      await store.write(view, rows(500, t - 10));
      const dels = await commandCalls(admin, "del");
      assert.deepEqual(await store.write(view, rows(500, t)), { written: 500, stale: 0, expired: 0 });
      assert.equal(await commandCalls(admin, "del") - dels, 0, "no DEL when the new rows have the old rows' fields");
      // A newer row without a created time, over one that had one, and without a feature: rebuilt.
      await store.write(view, [{ entityKey: "driver_id=0", values: { trips: 7 }, eventTime: t + 1 }]);
      assert.equal(await commandCalls(admin, "del") - dels, 1);
      const key = (await admin.keys("*lean*driver_id=0"))[0];
      const hash = await admin.hgetall(key);
      assert.equal(Object.keys(hash).length, 2, `only _ts and trips are left: ${JSON.stringify(hash)}`);
      assert.equal(hash._ct, undefined);
      const [r] = await store.read(view, ["driver_id=0"], ["trips", "label"]);
      assert.equal(r.trips.value, 7);
      assert.equal(r.label.status, "NOT_FOUND", "the old row's other feature is gone");
    } finally {
      admin.disconnect();
      await store.close();
    }
  });

  it("groups the small writes of one turn into one script call, each with its own counts and commit; a big write goes alone; a write that fails in Redis fails alone", async () => {
    const { url } = await redis();
    const store = redisStore({ url, project: "grouped" });
    const admin = new IORedis(url);
    try {
      const t = Date.now();
      await store.write(view, rows(1, t - 1)); // loads the script
      let before = await scriptCalls(admin);
      const done = { key: `idem-grouped-${t}`, fingerprint: "fp", ttlMs: 60_000 };
      const answers = await Promise.all([
        store.write(view, rows(3, t, 100)),
        store.write(view, rows(2, t - 5, 100)), // older than the rows just above in the same call: stale
        store.write(view, rows(1, t, 200), { done, watermarks: { "wm-grouped": t } }),
        store.write(view, rows(100, t, 1000)), // more than 64 rows: its own call
      ]);
      assert.deepEqual(answers, [{ written: 3, stale: 0, expired: 0 }, { written: 0, stale: 2, expired: 0 }, { written: 1, stale: 0, expired: 0 }, { written: 100, stale: 0, expired: 0 }]);
      assert.equal(await scriptCalls(admin) - before, 2, "the three small writes in one call, the big one in another");
      assert.deepEqual(await store.meta.begin(done.key, "fp", 1000), { state: "done", fingerprint: "fp" });
      assert.equal(await store.meta.getWatermark("wm-grouped"), t);

      // A key of the wrong type fails its own write only, before that write's commit: the writes around
      // it in the same call are applied and answered, and the next turn's writes are a call of their own.
      const bad = (await admin.keys("*grouped*driver_id=200"))[0];
      await admin.del(bad);
      await admin.set(bad, "not a hash");
      before = await scriptCalls(admin);
      const badDone = { key: `idem-grouped-bad-${t}`, fingerprint: "fp", ttlMs: 60_000 };
      const failed = await Promise.allSettled([
        store.write(view, rows(1, t + 1, 300)),
        store.write(view, rows(1, t + 1, 200), { done: badDone, watermarks: { "wm-grouped-bad": t } }),
        store.write(view, rows(1, t + 1, 301)),
      ]);
      assert.deepEqual(failed.map((f) => f.status), ["fulfilled", "rejected", "fulfilled"]);
      assert.deepEqual((failed[0] as PromiseFulfilledResult<unknown>).value, { written: 1, stale: 0, expired: 0 });
      assert.deepEqual((failed[2] as PromiseFulfilledResult<unknown>).value, { written: 1, stale: 0, expired: 0 });
      assert.match(String((failed[1] as PromiseRejectedResult).reason?.message), /WRONGTYPE/);
      assert.equal(await scriptCalls(admin) - before, 1);
      assert.equal((await admin.keys("*grouped*driver_id=30[01]")).length, 2, "the writes beside the failed one landed");
      assert.equal(await store.meta.getWatermark("wm-grouped-bad"), undefined, "the failed write's commit was not applied");
      assert.equal((await store.meta.begin(badDone.key, "fp", 1000)).state, "started", "a retry of the failed write is not a duplicate");
      assert.deepEqual(await store.write(view, rows(1, t + 1, 302)), { written: 1, stale: 0, expired: 0 });
    } finally {
      admin.disconnect();
      await store.close();
    }
  });

  it("a group of thousands of one-row writes is built in linear time, maxRowsPerCall rows per call, each write answered", async () => {
    const { url } = await redis();
    const store = redisStore({ url, project: "wide-group" });
    const admin = new IORedis(url);
    try {
      const t = Date.now();
      await store.write(view, rows(1, t - 1)); // loads the script
      const before = await scriptCalls(admin);
      // 5001 concurrent writes of one row: the default 5000 rows in one call, the last write in a second.
      const answers = await Promise.all(Array.from({ length: 5001 }, (_, i) => store.write(view, rows(1, t, i))));
      assert.ok(answers.every((a) => a.written === 1 && a.stale === 0 && a.expired === 0));
      assert.equal(await scriptCalls(admin) - before, 2);
      // Building the call's arguments: ~1 s with a concat per part (quadratic), a few ms pushed one by one.
      const parts = Array.from({ length: 5000 }, (_, i) => writeScriptArgs(encodeRows(redisLayout(), view, rows(1, t, i), "redis"), 0, t));
      const started = performance.now();
      const { keys, args } = groupScriptArgs(parts);
      const took = performance.now() - started;
      assert.equal(keys.length, 5000);
      assert.equal(args.length, 1 + parts.reduce((n, p) => n + 2 + p.args.length - 1, 0), "the count of parts, then each part's extent (2) and arguments");
      assert.ok(took < 250, `groupScriptArgs of 5000 parts took ${took.toFixed(0)} ms`);
    } finally {
      admin.disconnect();
      await store.close();
    }
  });

  it("writes a batch bigger than maxRowsPerCall in several calls, in order, its commit on the last one", async () => {
    const { url } = await redis();
    const store = redisStore({ url, project: "capped", maxRowsPerCall: 300 });
    const admin = new IORedis(url);
    try {
      const t = Date.now();
      await store.write(view, rows(1, t - 1));
      const before = await scriptCalls(admin);
      const done = { key: `idem-capped-${t}`, fingerprint: "fp", ttlMs: 60_000 };
      assert.deepEqual(await store.write(view, rows(1000, t), { done, watermarks: { "wm-capped": t } }), { written: 1000, stale: 0, expired: 0 });
      assert.equal(await scriptCalls(admin) - before, 4, "1000 rows in calls of at most 300");
      assert.deepEqual(await store.meta.begin(done.key, "fp", 1000), { state: "done", fingerprint: "fp" });
      assert.equal(await store.meta.getWatermark("wm-capped"), t);
      assert.throws(() => redisStore({ url, maxRowsPerCall: 0 }), /maxRowsPerCall 0 must be a whole number/);
    } finally {
      admin.disconnect();
      await store.close();
    }
  });

  it("writes a batch of 1000 rows with exactly one script call (P7), and reads them in one pipeline", async () => {
    const { url } = await redis();
    const store = redisStore({ url, project: "p7" });
    const admin = new IORedis(url);
    try {
      const t = Date.now();
      await store.write(view, rows(1, t - 1)); // loads the script (EVALSHA, NOSCRIPT, EVAL)
      const before = await scriptCalls(admin);
      assert.deepEqual(await store.write(view, rows(1000, t)), { written: 1000, stale: 0, expired: 0 });
      assert.equal(await scriptCalls(admin) - before, 1);
      assert.deepEqual(await store.write(view, rows(1000, t)), { written: 0, stale: 1000, expired: 0 });
      assert.equal(await scriptCalls(admin) - before, 2);
      const got = await store.read(view, rows(1000, t).map((r) => r.entityKey), ["trips", "label"]);
      assert.equal(got.length, 1000);
      assert.deepEqual(got[999].trips, { value: 999, status: "PRESENT", eventTime: t });
      assert.equal(got[5].label.value, "l5");
    } finally {
      admin.disconnect();
      await store.close();
    }
  });

  it("lays keys out as prefix:project:view:entity, with a PTTL of the view's ttl (none for ttl 0)", async () => {
    const { url } = await redis();
    const store = redisStore({ url, project: "layout" });
    const admin = new IORedis(url);
    try {
      const t = Date.now();
      await store.write(view, [{ entityKey: "driver_id=7", values: { trips: 3 }, eventTime: t, createdTime: t + 1 }]);
      const key = "freshet:layout:conf_stats:driver_id=7";
      const pttl = await admin.pttl(key);
      assert.ok(pttl > 3600_000 - 10_000 && pttl <= 3600_000, `PTTL ${pttl}`);
      assert.deepEqual(await admin.hgetall(key), { _ts: String(t), _ct: String(t + 1), trips: "3" });
      await store.write(forever, [{ entityKey: "driver_id=7", values: { x: 1 }, eventTime: t }]);
      assert.equal(await admin.pttl("freshet:layout:forever:driver_id=7"), -1);
      const custom = redisStore({ url, prefix: "fx", project: "p" });
      await custom.write(view, [{ entityKey: "driver_id=7", values: { trips: 1 }, eventTime: t }]);
      assert.equal(await admin.exists("fx:p:conf_stats:driver_id=7"), 1);
      await custom.close();
    } finally {
      admin.disconnect();
      await store.close();
    }
  });

  it("expires a key at event time + ttl (PEXPIREAT), not at write time", async () => {
    const { url } = await redis();
    const store = redisStore({ url, project: "expiry" });
    const admin = new IORedis(url);
    try {
      const t = Date.now() - 30 * 60_000; // half of the hour-long ttl already gone
      await store.write(view, [{ entityKey: "driver_id=1", values: { trips: 1 }, eventTime: t }]);
      assert.equal(Number(await admin.call("PEXPIRETIME", "freshet:expiry:conf_stats:driver_id=1")), t + 3600_000);
      // A newer row moves the expiry with its event time.
      await store.write(view, [{ entityKey: "driver_id=1", values: { trips: 2 }, eventTime: t + 1000 }]);
      assert.equal(Number(await admin.call("PEXPIRETIME", "freshet:expiry:conf_stats:driver_id=1")), t + 1000 + 3600_000);
    } finally {
      admin.disconnect();
      await store.close();
    }
  });

  it("checks expiry against the store's clock (now option), on write and on read", async () => {
    const { url } = await redis();
    let offset = 0;
    const store = redisStore({ url, project: "clock", now: () => Date.now() + offset });
    const admin = new IORedis(url);
    try {
      const t = Date.now();
      assert.deepEqual(await store.write(view, [{ entityKey: "driver_id=1", values: { trips: 1 }, eventTime: t }]), { written: 1, stale: 0, expired: 0 });
      offset = 2 * 3600_000; // the store's clock runs ahead of Redis'
      assert.equal((await store.read(view, ["driver_id=1"], ["trips"]))[0].trips.status, "NOT_FOUND", "past its ttl on the store's clock");
      // Still in Redis (its clock is behind), but expired: it does not make a fresh row stale either.
      assert.equal(await admin.exists("freshet:clock:conf_stats:driver_id=1"), 1);
      assert.deepEqual(await store.write(view, [{ entityKey: "driver_id=2", values: { trips: 1 }, eventTime: t }]), { written: 0, stale: 0, expired: 1 });
      assert.equal(await admin.exists("freshet:clock:conf_stats:driver_id=2"), 0);
      assert.deepEqual(await store.write(view, [{ entityKey: "driver_id=1", values: { trips: 7 }, eventTime: t - 1 + offset }]), { written: 1, stale: 0, expired: 0 });
      assert.equal((await store.read(view, ["driver_id=1"], ["trips"]))[0].trips.value, 7);
    } finally {
      admin.disconnect();
      await store.close();
    }
  });

  it("orders a missing created time below every created time, negative ones too", async () => {
    const { url } = await redis();
    const store = redisStore({ url, project: "ct" });
    try {
      const t = Date.now();
      const r = (id: number, trips: number, createdTime?: number): FeatureRow => ({ entityKey: `driver_id=${id}`, values: { trips }, eventTime: t, createdTime });
      await store.write(view, [r(1, 1)]);
      assert.deepEqual(await store.write(view, [r(1, 2, -5)]), { written: 1, stale: 0, expired: 0 });
      assert.deepEqual(await store.write(view, [r(1, 3)]), { written: 0, stale: 1, expired: 0 });
      assert.deepEqual(await store.write(view, [r(1, 4, -6)]), { written: 0, stale: 1, expired: 0 });
      assert.deepEqual(await store.write(view, [r(1, 5, -1)]), { written: 1, stale: 0, expired: 0 });
      assert.equal((await store.read(view, ["driver_id=1"], ["trips"]))[0].trips.value, 5);
      // Inside one batch as well.
      assert.deepEqual(await store.write(view, [r(2, 1, -9), r(2, 2), r(2, 3, -9)]), { written: 1, stale: 2, expired: 0 });
      assert.equal((await store.read(view, ["driver_id=2"], ["trips"]))[0].trips.value, 1);
      // Pre-1970 event times.
      assert.deepEqual(await store.write(forever, [{ entityKey: "driver_id=3", values: { x: 1 }, eventTime: -86_400_000 }]), { written: 1, stale: 0, expired: 0 });
      assert.deepEqual(await store.write(forever, [{ entityKey: "driver_id=3", values: { x: 2 }, eventTime: -86_400_001 }]), { written: 0, stale: 1, expired: 0 });
      assert.equal((await store.read(forever, ["driver_id=3"], ["x"]))[0].x.eventTime, -86_400_000);
    } finally {
      await store.close();
    }
  });

  it("applies a write's commit (watermarks, done key) in the same single script call", async () => {
    const { url } = await redis();
    const store = redisStore({ url, prefix: "{fx}", project: "commit" });
    const admin = new IORedis(url);
    try {
      const t = Date.now();
      await store.write(view, rows(1, t - 1)); // loads the script
      const begun = await store.meta.begin("webhook:msg_1", "fp1", 30_000);
      assert.equal(begun.state, "started");
      const before = await scriptCalls(admin);
      const w = await store.write(view, rows(100, t), { watermarks: { "push:a": t, "push:b": -5 }, done: { key: "webhook:msg_1", fingerprint: "fp1", ttlMs: 60_000 } });
      assert.deepEqual(w, { written: 100, stale: 0, expired: 0 });
      assert.equal(await scriptCalls(admin) - before, 1, "rows and commit in one EVALSHA");
      // Every key starts with the hash-tagged prefix: one Cluster slot.
      assert.equal(await admin.get("{fx}:commit:#wm:push:a"), String(t));
      assert.equal(await admin.get("{fx}:commit:#wm:push:b"), "-5");
      assert.equal(await admin.get("{fx}:commit:#idem:webhook:msg_1"), "d|fp1");
      const pttl = await admin.pttl("{fx}:commit:#idem:webhook:msg_1");
      assert.ok(pttl > 50_000 && pttl <= 60_000, `PTTL ${pttl}`);
      assert.deepEqual(await store.meta.begin("webhook:msg_1", "fp2", 30_000), { state: "done", fingerprint: "fp1" });
      assert.equal(await store.meta.getWatermark("push:b"), -5);
      // A commit without rows is one call too, and a lower watermark changes nothing.
      const mid = await scriptCalls(admin);
      assert.deepEqual(await store.write(view, [], { watermarks: { "push:a": t - 10, "push:b": -4 } }), { written: 0, stale: 0, expired: 0 });
      assert.equal(await scriptCalls(admin) - mid, 1);
      assert.equal(await store.meta.getWatermark("push:a"), t);
      assert.equal(await store.meta.getWatermark("push:b"), -4);
      // A pending key keeps a fingerprint with bars in it whole, and lives for the pending ttl.
      const p = await store.meta.begin("webhook:msg_2", "fp|with|bars", 30_000);
      assert.equal(p.state, "started");
      assert.deepEqual(await store.meta.begin("webhook:msg_2", "x", 30_000), { state: "pending", fingerprint: "fp|with|bars" });
      const ppttl = await admin.pttl("{fx}:commit:#idem:webhook:msg_2");
      assert.ok(ppttl > 20_000 && ppttl <= 30_000, `PTTL ${ppttl}`);
    } finally {
      admin.disconnect();
      await store.close();
    }
  });

  it("rejects a bad commit before sending anything", async () => {
    const { url } = await redis();
    const store = redisStore({ url, project: "badcommit" });
    try {
      const isInput = (e: unknown) => e instanceof FreshetError && e.code === "INVALID_INPUT" && !e.retriable;
      await assert.rejects(store.write(view, [], { watermarks: { k: Number.NaN } }), isInput);
      await assert.rejects(store.write(view, [], { done: { key: "k", fingerprint: "f", ttlMs: 0 } }), isInput);
      await assert.rejects(store.meta.advanceWatermark("k", Number.POSITIVE_INFINITY), isInput);
    } finally {
      await store.close();
    }
  });

  it("round-trips value types, replaces the whole row, and keeps features named like its own fields apart", async () => {
    const { url } = await redis();
    const store = redisStore({ url, project: "types" });
    try {
      const t = Date.now();
      const values = { n: 1.5, big: 2 ** 53 - 1, neg: -0.001, s: "123", u: "héllo ☃ 𝄞", b: false, z: null, arr: [1, "a", null], obj: { a: [1] }, _ts: "mine", _ct: 5 };
      await store.write(forever, [{ entityKey: "driver_id=1", values, eventTime: t }]);
      const names = [...Object.keys(values), "missing"];
      const [r] = await store.read(forever, ["driver_id=1"], names);
      for (const [k, want] of Object.entries(values)) assert.deepEqual(r[k].value, want, k);
      assert.equal(r.z.status, "NULL_VALUE");
      assert.equal(r._ts.eventTime, t);
      assert.equal(r.missing.status, "NOT_FOUND");
      // A newer row replaces the row: a feature it lacks is gone.
      await store.write(forever, [{ entityKey: "driver_id=1", values: { n: 2 }, eventTime: t + 1 }]);
      const [r2] = await store.read(forever, ["driver_id=1"], ["n", "s"]);
      assert.equal(r2.n.value, 2);
      assert.equal(r2.s.status, "NOT_FOUND");
      // A row wider than Lua's unpack limit.
      const wide = Object.fromEntries(Array.from({ length: 5000 }, (_, i) => [`f${i}`, i]));
      await store.write(forever, [{ entityKey: "driver_id=2", values: wide, eventTime: t }]);
      const [r3] = await store.read(forever, ["driver_id=2"], Object.keys(wide));
      assert.equal(Object.values(r3).filter((x, i) => x.value === i).length, 5000);
    } finally {
      await store.close();
    }
  });

  it("rejects bad rows and checkpoints before sending anything", async () => {
    const { url } = await redis();
    const store = redisStore({ url, project: "bad" });
    try {
      await assert.rejects(store.write(view, [{ entityKey: "driver_id=1", values: {}, eventTime: Number.NaN }]), (e: unknown) => e instanceof FreshetError && e.code === "INVALID_INPUT" && !e.retriable);
      await assert.rejects(store.meta.setCheckpoint("k", "12a"), (e: unknown) => e instanceof FreshetError && e.code === "INVALID_INPUT");
    } finally {
      await store.close();
    }
  });

  it("fails fast with STORE_UNAVAILABLE while Redis is down, and recovers by itself when it is back", async () => {
    const own = await startRedis(); // its own server: the others stay up
    const store = redisStore({ url: own.url, project: "outage" });
    try {
      const t = Date.now();
      assert.deepEqual(await store.write(view, rows(10, t)), { written: 10, stale: 0, expired: 0 });
      await own.stop();
      for (const op of [() => store.write(view, rows(10, t + 1)), () => store.read(view, ["driver_id=1"], ["trips"]), () => store.meta.begin("c", "fp", 1000), () => store.ping()]) {
        const started = Date.now();
        await assert.rejects(op(), (e: unknown) => e instanceof FreshetError && e.code === "STORE_UNAVAILABLE" && e.retriable && e.message.startsWith("[freshet] [redis]"));
        assert.ok(Date.now() - started < 2000, `rejected after ${Date.now() - started} ms`);
      }
      await own.restart(); // empty, and without the scripts: EVALSHA falls back to EVAL
      const deadline = Date.now() + 10_000;
      let w;
      for (;;) {
        try {
          w = await store.write(view, rows(10, t + 2));
          break;
        } catch (e) {
          assert.ok(e instanceof FreshetError && e.code === "STORE_UNAVAILABLE", String(e));
          if (Date.now() > deadline) throw e;
          await new Promise((r) => setTimeout(r, 100));
        }
      }
      assert.deepEqual(w, { written: 10, stale: 0, expired: 0 });
      assert.equal((await store.read(view, ["driver_id=3"], ["trips"]))[0].trips.value, 3);
    } finally {
      await store.close();
      await own.stop();
    }
  });

  it("fails within the connect timeout when nothing listens, and close() is final", async () => {
    const { freePort } = await import("../services/system.ts");
    const store = redisStore({ url: `redis://127.0.0.1:${await freePort()}`, connectTimeoutMs: 300 });
    const started = Date.now();
    await assert.rejects(store.write(view, rows(1, Date.now())), (e: unknown) => e instanceof FreshetError && e.code === "STORE_UNAVAILABLE" && e.retriable);
    assert.ok(Date.now() - started < 1500);
    await store.close();
    await assert.rejects(store.ping(), (e: unknown) => e instanceof FreshetError && !e.retriable);
  });
});

describe("redis store: aggregations", () => {
  it("reads a window of 9000 tiles (more fields than Lua's unpack takes at once) in one script call", async () => {
    const { url } = await redis();
    const wide = featureRepo({
      project: "redis_wide",
      definitions: [streamFeatureView({
        name: "wide", entities: [driver], source: pushSource({ name: "wide_push", timestampField: "ts" }), ttl: 0,
        schema: v.object({ driver_id: v.number(), ts: v.string(), x: v.number() }),
        aggregations: [{ column: "x", function: "sum", timeWindow: 9000, slideInterval: 1 }],
      })],
    }).view("wide");
    const t = Math.floor(Date.now() / 1000) * 1000;
    const store = redisStore({ url, project: "wide", now: () => t });
    try {
      const { foldTiles } = await import("../../mod.ts");
      const events = [0, 4_000_000, 8_900_000].map((d, i) => ({ entityKey: "driver_id=1", eventTime: t - d, row: { x: i + 1 } }));
      assert.equal((await store.foldTiles(wide, foldTiles(wide.aggregations!, events))).ok, true);
      const [r] = await store.read(wide, ["driver_id=1"], ["sum_x_9000s"]);
      assert.equal(r.sum_x_9000s.value, 6);
    } finally {
      await store.close();
    }
  });
});
