// The Redis store on a real 3-master Redis Cluster started by the harness:
// the online store conformance suite (with the MetaStore's part), the
// aggregation suite, and what is specific to a cluster (keys spread over
// every master, one script per bucket plus one for the metadata, the
// metadata in one slot, a batch that is pending while a bucket's master
// does not answer, wrong settings refused with how to fix them).
import { after, before, describe, it } from "node:test";
import assert from "node:assert/strict";
import { Cluster, Redis as IORedis } from "ioredis";
import { FreshetError, type FeatureRow } from "../../mod.ts";
import { clusterLayout, clusterSeeds } from "../../plugins/stores/redis/cluster.ts";
import { redisStore } from "../../plugins/stores/redis/redis.ts";
import { conformanceRepo, testOnlineStore } from "../../testing/online-store.ts";
import { testAggregatingStore } from "../../testing/aggregating-store.ts";
import { type RedisClusterService, startRedisCluster } from "../services/redis-cluster.ts";

let service: Promise<RedisClusterService> | undefined;
const cluster = () => (service ??= startRedisCluster({ masters: 3, appendonly: false }));
after(async () => {
  if (service) await (await service).stop();
});

let projects = 0;
testOnlineStore("redis cluster", async () => {
  const { url } = await cluster();
  const project = `conf${++projects}`;
  return { store: redisStore({ url, project }), reopen: () => Promise.resolve(redisStore({ url, project })) };
});

testAggregatingStore("redis cluster", async (now) => {
  const { url } = await cluster();
  const project = `agg${++projects}`;
  return { store: redisStore({ url, project, now }), reopen: () => Promise.resolve(redisStore({ url, project, now })) };
});

const view = conformanceRepo.view("conf_stats");
const rows = (n: number, eventTime: number, from = 0): FeatureRow[] =>
  Array.from({ length: n }, (_, i) => ({ entityKey: `driver_id=${from + i}`, values: { trips: from + i }, eventTime }));

describe("redis store on a Redis Cluster", () => {
  let svc: RedisClusterService;
  let admin: Cluster;
  before(async () => {
    svc = await cluster();
    admin = new Cluster([{ host: "127.0.0.1", port: svc.nodes[0].port }]);
  });
  after(() => admin?.disconnect());

  /** The master that serves a key now. */
  const masterOf = (key: string) => {
    const slot = Number(svc.cli(svc.nodes[0].port, "cluster", "keyslot", key).trim());
    return svc.masters().find((m) => m.slots.some(([a, b]) => slot >= a && slot <= b))!.port;
  };
  const scriptCalls = () => {
    let calls = 0;
    for (const m of svc.masters()) for (const x of svc.cli(m.port, "info", "commandstats").matchAll(/^cmdstat_(?:eval|evalsha):calls=(\d+)/gm)) calls += Number(x[1]);
    return calls;
  };

  it("spreads one view's entities over all 3 masters, one script per bucket and one for the metadata (P7 per slot group)", async () => {
    const store = redisStore({ url: svc.url, project: "spread" });
    try {
      const t = Date.now();
      await store.write(view, rows(1, t - 1), { watermarks: { "push:spread": t } }); // loads the script on the nodes it reaches
      for (const m of svc.masters()) svc.cli(m.port, "config", "resetstat");
      const before = scriptCalls();
      assert.deepEqual(await store.write(view, rows(600, t), { watermarks: { "push:spread": t } }), { written: 600, stale: 0, expired: 0 });
      const buckets = new Set(rows(600, t).map((r) => clusterLayout({ project: "spread" }).cluster.bucketOf(view.name, r.entityKey)));
      assert.equal(buckets.size, 16, "600 entities fill the 16 buckets");
      // NOSCRIPT on a master that had not seen the script adds an EVAL there: at most one per master.
      const calls = scriptCalls() - before;
      assert.ok(calls >= 17 && calls <= 17 + 3, `${calls} script calls for 16 buckets + the metadata`);
      const perMaster = svc.masters().map((m) => Number(svc.cli(m.port, "dbsize").trim()));
      assert.equal(perMaster.length, 3);
      for (const n of perMaster) assert.ok(n >= 600 / 3 / 2, `keys per master ${perMaster.join(", ")}: each holds a fair share`);
      assert.ok(perMaster.reduce((a, b) => a + b, 0) >= 600);
      const got = await store.read(view, rows(600, t).map((r) => r.entityKey), ["trips"]);
      assert.deepEqual(got.map((r) => r.trips.value), rows(600, t).map((r) => r.values.trips));
      assert.equal(await store.meta.getWatermark("push:spread"), t);
    } finally {
      await store.close();
    }
  });

  it("keeps the metadata in one slot and an aggregation's applied marks in the slot of their bucket", () => {
    const keys = clusterLayout({ project: "slots" });
    const slot = (k: string) => Number(svc.cli(svc.nodes[0].port, "cluster", "keyslot", k).trim());
    const meta = [keys.idemKey("w1"), keys.watermarkKey("kafka:t:0"), keys.checkpointKey("s:0"), keys.leaseKey("s:0"), keys.leaseIndexKey, keys.appliedKey("v:kafka:t:0"), keys.cluster.layoutKey];
    assert.equal(new Set(meta.map(slot)).size, 1, meta.join(" "));
    const mark = keys.cluster.markKey("v", "user_id=1", "v:kafka:t:0");
    assert.equal(slot(keys.appliedKey(mark)), slot(keys.entityKey("v", "user_id=1")));
    assert.notEqual(slot(keys.appliedKey(mark)), slot(meta[0]));
  });

  it("a batch whose rows reach a master that does not answer is pending: no done mark, no watermark; the retry lands it", async () => {
    const store = redisStore({ url: svc.url, project: "pending", commandTimeoutMs: 300 });
    const keys = clusterLayout({ project: "pending" });
    try {
      const t = Date.now();
      const batch = rows(64, t);
      const metaMaster = masterOf(keys.idemKey("w"));
      const other = batch.map((r) => masterOf(keys.entityKey(view.name, r.entityKey))).find((p) => p !== metaMaster)!;
      await store.ping();
      assert.equal((await store.meta.begin("push:w", "fp", 30_000)).state, "started");
      svc.cli(other, "client", "pause", "1500", "WRITE");
      const err = await store.write(view, batch, { watermarks: { "push:w": t }, done: { key: "push:w", fingerprint: "fp", ttlMs: 60_000 } }).catch((e) => e);
      assert.ok(err instanceof FreshetError && err.code === "STORE_UNAVAILABLE" && err.retriable, String(err));
      assert.equal(await store.meta.getWatermark("push:w"), undefined, "the watermark did not move ahead of the rows");
      assert.equal((await store.meta.begin("push:w", "fp", 30_000)).state, "pending", "not done: a retry is still needed");
      await new Promise((r) => setTimeout(r, 1600));
      const again = await store.write(view, batch, { watermarks: { "push:w": t }, done: { key: "push:w", fingerprint: "fp", ttlMs: 60_000 } });
      assert.equal(again.written + again.stale, 64, "rows that landed the first time are stale now, nothing twice");
      assert.deepEqual(await store.meta.begin("push:w", "fp", 30_000), { state: "done", fingerprint: "fp" });
      assert.equal(await store.meta.getWatermark("push:w"), t);
    } finally {
      await store.close();
    }
  });

  it("refuses a store opened with another bucket count, and a plain redis:// client on a cluster node, saying how to fix it", async () => {
    const a = redisStore({ url: svc.url, project: "layoutcheck" });
    const b = redisStore({ url: svc.url, project: "layoutcheck", buckets: 8 });
    const plain = redisStore({ url: `redis://127.0.0.1:${svc.nodes[0].port}`, project: "plain" });
    try {
      await a.write(view, rows(3, Date.now()));
      const err = await b.write(view, rows(3, Date.now())).catch((e) => e);
      assert.ok(err instanceof FreshetError && err.code === "INVALID_CONFIG" && !err.retriable && /buckets=16.*buckets=8/.test(err.message), String(err));
      const moved = await plain.write(view, rows(40, Date.now())).catch((e) => e);
      assert.ok(moved instanceof FreshetError && moved.code === "INVALID_CONFIG" && /redis\+cluster:\/\//.test(moved.message), String(moved));
    } finally {
      await Promise.all([a.close(), b.close(), plain.close()]);
    }
  });

  it("takes seeds as redis+cluster:// or cluster: [...], and a client of your own", async () => {
    assert.deepEqual(clusterSeeds("rediss+cluster://u:p%40ss@h1:7000,[::1]:7001"), { nodes: [{ host: "h1", port: 7000 }, { host: "::1", port: 7001 }], username: "u", password: "p@ss", tls: true });
    assert.equal(clusterSeeds("redis://h:1"), undefined);
    assert.throws(() => clusterSeeds("redis+cluster://h1:x"), /not host:port/);
    const t = Date.now();
    const byOption = redisStore({ cluster: [{ host: "127.0.0.1", port: svc.nodes[1].port }], project: "seeds" });
    const own = new Cluster([{ host: "127.0.0.1", port: svc.nodes[2].port }]);
    const byClient = redisStore({ client: own, project: "seeds" });
    try {
      await byOption.write(view, rows(50, t));
      const got = await byClient.read(view, rows(50, t).map((r) => r.entityKey), ["trips"]);
      assert.equal(got.filter((r) => r.trips.status === "PRESENT").length, 50);
    } finally {
      await byOption.close();
      await byClient.close();
      own.disconnect();
    }
  });

  it("reads raw keys the way the layout names them", async () => {
    const store = redisStore({ url: svc.url, project: "raw" });
    const keys = clusterLayout({ project: "raw" });
    try {
      const t = Date.now();
      await store.write(view, [{ entityKey: "driver_id=7", values: { trips: 3 }, eventTime: t }]);
      const key = keys.entityKey(view.name, "driver_id=7");
      assert.match(key, /^freshet:raw:\{conf_stats\.\d+\.\d+\}:driver_id=7$/);
      const node = new IORedis({ host: "127.0.0.1", port: masterOf(key) });
      assert.deepEqual(await node.hgetall(key), { _ts: String(t), trips: "3" });
      node.disconnect();
    } finally {
      await store.close();
    }
  });
});
