/**
 * Scenario 5 through HTTP: shuffled and duplicated events from 4 concurrent
 * pushers, to Redis and to Upstash (REST fake forwarding to redis). Every key
 * ends with its newest event, and a full replay changes nothing.
 */
import { describe, it, before, after } from "node:test";
import assert from "node:assert/strict";
import * as v from "valibot";
import { createProcessor, entity, featureRepo, pushSource, streamFeatureView, type OnlineStore } from "../../mod.ts";
import { pushApp } from "../../plugins/sources/push.ts";
import { memoryDeadLetters } from "../../plugins/stores/memory.ts";
import { redisStore } from "../../plugins/stores/redis/redis.ts";
import { upstashStore } from "../../plugins/stores/redis/upstash.ts";
import { startRedis } from "../services/redis.ts";
import { startUpstash } from "../services/upstash-server.ts";

const driver = entity({ name: "driver", joinKeys: ["driver_id"] });
const src = pushSource({ name: "events", timestampField: "ts" });
const view = streamFeatureView({ name: "latest", entities: [driver], source: src, ttl: "1h", schema: v.object({ driver_id: v.number(), version: v.number(), ts: v.number() }) });
const registry = featureRepo({ project: "concurrent", definitions: [view] });

function shuffled<T>(xs: T[]): T[] {
  const a = [...xs];
  for (let i = a.length - 1; i > 0; i--) {
    const j = Math.floor(Math.random() * (i + 1));
    [a[i], a[j]] = [a[j], a[i]];
  }
  return a;
}

async function scenario(makeStore: () => OnlineStore) {
  const ENTITIES = 40;
  const VERSIONS = 25;
  const t0 = Date.now() - 600_000;
  const events = [];
  for (let id = 0; id < ENTITIES; id++) for (let k = 0; k < VERSIONS; k++) events.push({ driver_id: id, version: k, ts: t0 + k * 1000 });
  const stream = shuffled([...events, ...events]);
  // 4 writers, each with its own store client and app, as 4 processes would be.
  const writers = Array.from({ length: 4 }, () => {
    const store = makeStore();
    return { store, app: pushApp({ processor: createProcessor({ registry, online: store, deadLetters: memoryDeadLetters() }) }) };
  });
  const push = (app: ReturnType<typeof pushApp>, rows: unknown[]) =>
    app.request("/push", { method: "POST", headers: { "content-type": "application/json" }, body: JSON.stringify({ push_source_name: "events", rows }) });
  const per = Math.ceil(stream.length / 4);
  let written = 0;
  let stale = 0;
  await Promise.all(writers.map(async ({ app }, n) => {
    const mine = stream.slice(n * per, (n + 1) * per);
    for (let i = 0; i < mine.length; i += 7) {
      const res = await push(app, mine.slice(i, i + 7));
      assert.equal(res.status, 200);
      const body = await res.json();
      written += body.written;
      stale += body.stale;
    }
  }));
  assert.equal(written + stale, stream.length, "every event counted once, as written or stale");
  const reader = writers[0].store;
  const keys = Array.from({ length: ENTITIES }, (_, id) => `driver_id=${id}`);
  const got = await reader.read(registry.view("latest"), keys, ["version"]);
  for (const r of got) assert.equal(r.version.value, VERSIONS - 1);
  const replay = await (await push(writers[1].app, events)).json();
  assert.equal(replay.written, 0, "a full replay changes nothing");
  assert.equal(replay.stale, events.length);
  for (const w of writers) await w.store.close?.();
}

describe("4 concurrent pushers, shuffled and duplicated events", () => {
  let redis: Awaited<ReturnType<typeof startRedis>>;
  let upstash: Awaited<ReturnType<typeof startUpstash>>;
  before(async () => {
    redis = await startRedis();
    upstash = await startUpstash({ redisUrl: redis.url, token: "c-token" });
  });
  after(async () => {
    await upstash?.stop();
    await redis?.stop();
  });
  it("Redis: every key holds its newest event", { timeout: 60_000 }, () => scenario(() => redisStore({ url: redis.url, project: "concurrent-redis" })));
  it("Upstash: every key holds its newest event", { timeout: 60_000 }, () => scenario(() => upstashStore({ url: upstash.url, token: "c-token", project: "concurrent-upstash" })));
});
