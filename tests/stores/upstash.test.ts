// The Upstash online store against the fake Upstash REST server
// (tests/services/upstash-server.ts), which runs every command on a real
// redis-server: the conformance suite, then retries, request splitting and
// bad credentials.
import { after, describe, it } from "node:test";
import assert from "node:assert/strict";
import { Redis as UpstashRedis } from "@upstash/redis";
import * as v from "valibot";
import { createProcessor, entity, featureRepo, FreshetError, kafkaSource, pushSource, streamFeatureView, type FeatureRow } from "../../mod.ts";
import { memoryDeadLetters } from "../../plugins/stores/memory.ts";
import { pushApp } from "../../plugins/sources/push.ts";
import { upstashStore } from "../../plugins/stores/redis/upstash.ts";
import { conformanceRepo, testOnlineStore } from "../../testing/online-store.ts";
import { testAggregatingStore } from "../../testing/aggregating-store.ts";
import { startRedis, type RedisService } from "../services/redis.ts";
import { startUpstash, type UpstashService } from "../services/upstash-server.ts";

let services: Promise<{ redis: RedisService; upstash: UpstashService }> | undefined;
const fake = () =>
  (services ??= (async () => {
    const redis = await startRedis();
    return { redis, upstash: await startUpstash({ redisUrl: redis.url }) };
  })());
after(async () => {
  if (!services) return;
  const { redis, upstash } = await services;
  await upstash.stop();
  await redis.stop();
});

let projects = 0;
testOnlineStore("upstash", async () => {
  const { upstash } = await fake();
  const project = `conf${++projects}`;
  const open = () => upstashStore({ url: upstash.url, token: upstash.token, project });
  return { store: open(), reopen: () => Promise.resolve(open()) };
});

testAggregatingStore("upstash", async (now) => {
  const { upstash } = await fake();
  const project = `agg${++projects}`;
  const open = () => upstashStore({ url: upstash.url, token: upstash.token, project, now });
  return { store: open(), reopen: () => Promise.resolve(open()) };
});

const view = conformanceRepo.view("conf_stats");
const rows = (n: number, eventTime: number, pad = 0): FeatureRow[] =>
  Array.from({ length: n }, (_, i) => ({ entityKey: `driver_id=${i}`, values: { conv_rate: i / n, trips: i, label: "x".repeat(pad) + i }, eventTime }));
const isCode = (code: string, retriable: boolean) => (e: unknown) => e instanceof FreshetError && e.code === code && e.retriable === retriable && e.message.startsWith("[freshet] [upstash]");
const total = (u: UpstashService) => Object.values(u.requests).reduce((a, b) => a + b, 0);
/** An @upstash/redis client whose transport records every script call's KEYS. */
const scriptSpy = (upstash: UpstashService) => {
  const real = new UpstashRedis({ url: upstash.url, token: upstash.token, enableTelemetry: false });
  const inner = (real as unknown as { client: { request(req: { body?: unknown }): Promise<unknown> } }).client;
  const scriptKeys: string[][] = [];
  const spy = {
    client: {
      request(req: { body?: unknown }) {
        const b = req.body as string[];
        if (b[0] === "EVALSHA" || b[0] === "EVAL") scriptKeys.push(b.slice(3, 3 + Number(b[2])));
        return inner.request(req);
      },
    },
  } as unknown as UpstashRedis;
  return { spy, scriptKeys };
};

describe("upstash store", () => {
  it("retries 429s and 5xx answers, then succeeds", async () => {
    const { upstash } = await fake();
    const store = upstashStore({ url: upstash.url, token: upstash.token, project: "retry", retryBaseMs: 5 });
    const t = Date.now();
    const before = total(upstash);
    upstash.faults.next429 = 2;
    upstash.faults.next5xx = 2;
    assert.deepEqual(await store.write(view, rows(20, t)), { written: 20, stale: 0, expired: 0 });
    assert.ok(total(upstash) - before >= 5, "4 failed attempts, then the write");
    upstash.faults.next5xx = 1;
    upstash.faults.status5xx = 503;
    const got = await store.read(view, ["driver_id=3", "driver_id=4"], ["trips"]);
    assert.deepEqual(got.map((r) => r.trips.value), [3, 4]);
    upstash.faults.status5xx = 502;
  });

  it("gives up after `retries` with a retriable STORE_UNAVAILABLE, and works again afterwards", async () => {
    const { upstash } = await fake();
    const store = upstashStore({ url: upstash.url, token: upstash.token, project: "persistent", retries: 3, retryBaseMs: 5 });
    const before = total(upstash);
    upstash.faults.next5xx = 1000;
    try {
      await assert.rejects(store.write(view, rows(5, Date.now())), isCode("STORE_UNAVAILABLE", true));
      assert.equal(total(upstash) - before, 4, "1 attempt + 3 retries");
      await assert.rejects(store.meta.begin("k", "fp", 1000), isCode("STORE_UNAVAILABLE", true));
    } finally {
      upstash.faults.next5xx = 0;
    }
    upstash.faults.down = true;
    try {
      await assert.rejects(store.ping(), isCode("STORE_UNAVAILABLE", true));
    } finally {
      upstash.faults.down = false;
    }
    await store.ping();
  });

  it("splits a write larger than the request limit into several script calls, and every row lands", async () => {
    const { upstash } = await fake();
    const store = upstashStore({ url: upstash.url, token: upstash.token, project: "big" });
    const t = Date.now();
    const big = rows(3000, t, 1000); // ~3.2 MB of values
    const before = upstash.requests["/"] ?? 0;
    assert.deepEqual(await store.write(view, big), { written: 3000, stale: 0, expired: 0 });
    const calls = (upstash.requests["/"] ?? 0) - before;
    // 4 chunks at least; +1 for the EVAL after the first NOSCRIPT. Each one under 1 MB, or the fake would have refused it.
    assert.ok(calls >= 4 && calls <= 6, `${calls} requests`);
    const got = await store.read(view, big.map((r) => r.entityKey), ["label"]);
    assert.equal(got.length, 3000);
    for (let i = 0; i < 3000; i += 97) assert.equal(got[i].label.value, "x".repeat(1000) + i);
    assert.equal(got[2999].label.status, "PRESENT");
    // Replay in one go: every row stale, still split.
    assert.deepEqual(await store.write(view, big), { written: 0, stale: 3000, expired: 0 });
  });

  it("keeps latest-wins across the chunks of one split write", async () => {
    const { upstash } = await fake();
    const store = upstashStore({ url: upstash.url, token: upstash.token, project: "chunks", maxRequestBytes: 20_000 });
    upstash.faults.maxRequestBytes = 20_000;
    try {
      const t = Date.now();
      const batch: FeatureRow[] = [];
      for (let k = 0; k < 5; k++) for (let i = 0; i < 40; i++) batch.push({ entityKey: `driver_id=${i}`, values: { trips: k, label: "y".repeat(200) }, eventTime: t + (k === 2 ? 100 : k) });
      const w = await store.write(view, batch);
      assert.equal(w.written + w.stale, 200);
      const got = await store.read(view, Array.from({ length: 40 }, (_, i) => `driver_id=${i}`), ["trips"]);
      for (const r of got) assert.equal(r.trips.value, 2);
    } finally {
      upstash.faults.maxRequestBytes = 1_000_000;
    }
  });

  it("puts a split write's commit in its last script call only, after every row", async () => {
    const { upstash } = await fake();
    upstash.faults.maxRequestBytes = 20_000;
    const { spy, scriptKeys } = scriptSpy(upstash);
    const store = upstashStore({ client: spy, project: "commit", maxRequestBytes: 20_000 });
    try {
      const t = Date.now();
      assert.equal((await store.meta.begin("webhook:m1", "fp", 30_000)).state, "started");
      scriptKeys.length = 0;
      const w = await store.write(view, rows(200, t, 200), { watermarks: { "push:a": t }, done: { key: "webhook:m1", fingerprint: "fp", ttlMs: 60_000 } });
      assert.deepEqual(w, { written: 200, stale: 0, expired: 0 });
      const withCommit = scriptKeys.map((k, i) => [i, k.includes("freshet:commit:#idem:webhook:m1"), k.includes("freshet:commit:#wm:push:a")]);
      assert.ok(scriptKeys.length >= 3, `${scriptKeys.length} script calls`);
      assert.deepEqual(withCommit.filter(([, d, m]) => d || m).map(([i]) => i), [scriptKeys.length - 1], "only the last call carries the commit");
      assert.deepEqual(await store.meta.begin("webhook:m1", "fp", 30_000), { state: "done", fingerprint: "fp" });
      assert.equal(await store.meta.getWatermark("push:a"), t);
      // A commit alone is one call.
      scriptKeys.length = 0;
      assert.deepEqual(await store.write(view, [], { watermarks: { "push:a": t + 1 } }), { written: 0, stale: 0, expired: 0 });
      assert.equal(scriptKeys.length, 1);
      assert.equal(await store.meta.getWatermark("push:a"), t + 1);
    } finally {
      upstash.faults.maxRequestBytes = 1_000_000;
    }
  });

  it("holds a call to maxRowsPerCall rows: a bigger write is split in order, its commit in the last call", async () => {
    const { upstash } = await fake();
    const { spy, scriptKeys } = scriptSpy(upstash);
    assert.throws(() => upstashStore({ client: spy, project: "rows", maxRowsPerCall: 0 }), isCode("INVALID_CONFIG", false));
    const store = upstashStore({ client: spy, project: "rows", maxRowsPerCall: 50 });
    const t = Date.now();
    const w = await store.write(view, rows(120, t, 300), { watermarks: { "push:rows": t } });
    assert.deepEqual(w, { written: 120, stale: 0, expired: 0 });
    const rowKeys = scriptKeys.map((k) => k.filter((key) => key.includes("driver_id=")).length);
    assert.deepEqual(rowKeys, [50, 50, 20], "120 rows in calls of at most 50, in order");
    assert.deepEqual(scriptKeys.map((k) => k.some((key) => key.includes("#wm:push:rows"))), [false, false, true], "the commit rides in the last call");
    assert.equal(await store.meta.getWatermark("push:rows"), t);
  });

  it("counts rows outside the ttl as expired on the store's clock", async () => {
    const { upstash } = await fake();
    const store = upstashStore({ url: upstash.url, token: upstash.token, project: "expired", now: () => Date.now() + 2 * 3600_000 });
    const t = Date.now();
    assert.deepEqual(await store.write(view, [...rows(2, t), ...rows(1, t + 2 * 3600_000, 0).map((r) => ({ ...r, entityKey: "driver_id=9" }))]), { written: 1, stale: 0, expired: 2 });
    const [a, b] = await store.read(view, ["driver_id=0", "driver_id=9"], ["trips"]);
    assert.equal(a.trips.status, "NOT_FOUND");
    assert.equal(b.trips.status, "PRESENT");
  });

  it("refuses a bad token at once, with a clear non-retriable error", async () => {
    const { upstash } = await fake();
    const store = upstashStore({ url: upstash.url, token: "wrong", project: "auth" });
    const before = total(upstash);
    await assert.rejects(store.write(view, rows(1, Date.now())), (e: unknown) => {
      assert.ok(isCode("INVALID_CONFIG", false)(e), String(e));
      assert.match((e as Error).message, /token/);
      return true;
    });
    assert.equal(total(upstash) - before, 1, "not retried");
    assert.throws(() => upstashStore({ url: upstash.url }), isCode("INVALID_CONFIG", false));
  });

  it("works through an @upstash/redis client as well (base64 answers, its own transport)", async () => {
    const { upstash } = await fake();
    const client = new UpstashRedis({ url: upstash.url, token: upstash.token, enableTelemetry: false });
    const store = upstashStore({ client, project: "sdk" });
    const t = Date.now();
    assert.deepEqual(await store.write(view, rows(3, t)), { written: 3, stale: 0, expired: 0 });
    assert.deepEqual(await store.write(view, rows(3, t)), { written: 0, stale: 3, expired: 0 });
    const [r] = await store.read(view, ["driver_id=2"], ["trips", "label"]);
    assert.deepEqual(r.label, { value: "2", status: "PRESENT", eventTime: t });
    const begun = await store.meta.begin("c", "fp", 10_000);
    assert.equal(begun.state, "started");
    assert.deepEqual(await store.meta.begin("c", "fp", 10_000), { state: "pending", fingerprint: "fp" });
    await store.meta.settle("c", "fp", 10_000);
    assert.deepEqual(await store.meta.begin("c", "fp", 10_000), { state: "done", fingerprint: "fp" });
    assert.equal(await store.meta.advanceWatermark("wm", -5), -5);
    assert.equal(await store.meta.getWatermark("wm"), -5);
    assert.equal(await store.meta.setCheckpoint("cp", "49590338271490256608559692538361571095921575989136588898"), true);
    assert.equal(await store.meta.getCheckpoint("cp"), "49590338271490256608559692538361571095921575989136588898");
    const lease = await store.meta.acquireLease("shard-0", "w", 10_000);
    assert.ok(lease && lease.counter >= 1);
    assert.deepEqual((await store.meta.listLeases("shard-")).map((l) => l.owner), ["w"]);
    const bad = upstashStore({ client: new UpstashRedis({ url: upstash.url, token: "wrong", enableTelemetry: false, retry: false }), project: "sdk" });
    await assert.rejects(bad.ping(), isCode("INVALID_CONFIG", false));
  });
});

describe("the Worker's dead-letter list on Upstash", () => {
  it("keeps at most maxLetters, trimming the oldest in the same MULTI, and reports what it trims", async () => {
    const { upstash } = await fake();
    const { upstashListDeadLetters } = await import("../../adapters/workers.ts");
    const client = new UpstashRedis({ url: upstash.url, token: upstash.token, enableTelemetry: false });
    const key = `freshet:dlq-test-${Date.now()}:dead-letters`;
    const dropped: number[] = [];
    const warnings: string[] = [];
    const sink = upstashListDeadLetters(client, key, { maxLetters: 5, onDrop: (n) => dropped.push(n), logger: { warn: (m) => warnings.push(m) } });
    const letter = (i: number) => ({ source: "s", reason: "schema" as const, message: "m", position: { kind: "push" as const, requestId: "r", index: i }, payload: String(i), at: new Date(0).toISOString() });
    await sink.write([letter(0), letter(1), letter(2)]);
    assert.deepEqual(dropped, []);
    await sink.write([letter(3), letter(4), letter(5), letter(6)]);
    assert.deepEqual(dropped, [2]);
    const kept = (await client.lrange(key, 0, -1)).map((l) => (typeof l === "string" ? JSON.parse(l) : l).position.index);
    assert.deepEqual(kept, [2, 3, 4, 5, 6], "the newest are kept");
    assert.match(warnings[0], /trimmed 2 of the oldest dead letter\(s\) from .* \(it keeps 5; read them sooner, or raise DEAD_LETTERS_MAX\)/);
    await client.del(key);
  });
});

describe("aggregation folds bigger than one Upstash request", () => {
  const user = entity({ name: "user", joinKeys: ["user_id"] });
  const src = kafkaSource({ name: "big_folds", kafkaBootstrapServers: "127.0.0.1:1", topic: "big", timestampField: "ts" });
  const push = pushSource({ name: "big_push", timestampField: "ts" });
  const aggregations = [
    { column: "note", function: "lastN" as const, n: 5, timeWindow: "1h", slideInterval: "5m" },
    { column: "note", function: "lastN" as const, n: 5, timeWindow: "1d", slideInterval: "1h" },
    { column: "amount", function: "sum" as const, timeWindow: "1d", slideInterval: "1h" },
  ];
  const schema = v.object({ user_id: v.number(), note: v.string(), amount: v.number(), ts: v.number() });
  const repo = featureRepo({
    project: "bigfold",
    definitions: [
      streamFeatureView({ name: "big_agg", entities: [user], source: src, schema, ttl: 0, aggregations }),
      streamFeatureView({ name: "big_push_agg", entities: [user], source: push, schema, ttl: 0, aggregations }),
    ],
  });
  const N = 1500;
  const t0 = Date.now() - 60_000;
  const records = Array.from({ length: N }, (_, i) => ({
    value: JSON.stringify({ user_id: i % 1000, note: `n${i}-${"x".repeat(300)}`, amount: 1, ts: t0 + i }),
    position: { kind: "kafka" as const, topic: "big", partition: 0, offset: String(i) },
  }));

  it("a Kafka batch folds in several atomic steps with their applied marks; a redelivery after a crash between steps adds nothing twice", async () => {
    const { upstash } = await fake();
    const store = upstashStore({ url: upstash.url, token: upstash.token, project: `bigfold${++projects}` });
    const before = upstash.requests["/"] ?? 0;
    const processor = createProcessor({ registry: repo, online: store, deadLetters: memoryDeadLetters() });
    // The first delivery dies after its first step: the fake refuses every request after one fold script went through.
    let folds = 0;
    const crashing = { ...store, foldTiles: async (...a: Parameters<typeof store.foldTiles>) => {
      if (++folds > 1) throw new FreshetError("STORE_UNAVAILABLE", "killed", { retriable: true });
      return await store.foldTiles(...a);
    } };
    const first = createProcessor({ registry: repo, online: crashing, deadLetters: memoryDeadLetters() });
    await assert.rejects(first.process("big_folds", records), /killed/);
    assert.ok(upstash.requests["/"] === undefined || upstash.requests["/"] >= before);
    const mark = await store.getAppliedMark("big_agg:kafka:big:0");
    assert.ok(mark !== undefined && Number(mark) > 0 && Number(mark) < N - 1, `the first step is folded and marked (${mark})`);
    // The redelivery, by a restarted consumer: the rest is folded, the first step is not folded again.
    const r = await processor.process("big_folds", records);
    assert.equal(r.views.big_agg.written + r.views.big_agg.stale, N);
    assert.equal(r.views.big_agg.stale, Number(mark) + 1, "what the first step folded counts as stale");
    assert.equal(await store.getAppliedMark("big_agg:kafka:big:0"), String(N - 1));
    const got = await store.read(repo.view("big_agg"), ["user_id=0", "user_id=999"], ["sum_amount_86400s"]);
    assert.deepEqual(got.map((g) => g.sum_amount_86400s.value), [2, 1], "every event counted once (users 0-499 have two events, the others one)");
    await store.close();
  });

  it("a push that folds more than one request is refused before any effect, saying to send fewer rows; over HTTP a 413", async () => {
    const { upstash } = await fake();
    const store = upstashStore({ url: upstash.url, token: upstash.token, project: `bigfold${++projects}` });
    const processor = createProcessor({ registry: repo, online: store, deadLetters: memoryDeadLetters() });
    const rows = records.map((r, index) => ({ value: JSON.parse(r.value as string), position: { kind: "push" as const, requestId: "r", index } }));
    await assert.rejects(processor.process("big_push", rows), (e: unknown) => e instanceof FreshetError && e.code === "TOO_LARGE" && !e.retriable && /send fewer rows per push/.test(e.message));
    const got = await store.read(repo.view("big_push_agg"), ["user_id=0"], ["sum_amount_86400s"]);
    assert.equal(got[0].sum_amount_86400s.value, null);
    const app = pushApp({ processor });
    const res = await app.request("/push", { method: "POST", headers: { "content-type": "application/json" }, body: JSON.stringify({ push_source_name: "big_push", df: rows.map((r) => r.value) }) });
    assert.equal(res.status, 413);
    const body = await res.json();
    assert.equal(body.error.code, "too_large");
    assert.match(body.error.message, /fold \d+ bytes of tiles, more than the upstash store takes in one atomic step \(\d+ bytes\); send fewer rows per push/);
    await store.close();
  });
});
