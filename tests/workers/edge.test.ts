// @runtimes node
/**
 * The edge_push Worker in workerd (miniflare), against the local Upstash REST
 * server that forwards to a real redis-server: push, get-online-features, a
 * bad signature, a bad body, and a store outage (503, nothing recorded).
 * workerd is its own runtime, so this file runs once, from Node.
 */
import { describe, it, before, after } from "node:test";
import assert from "node:assert/strict";
import { bundleWorker } from "../fixtures/worker-bundle.ts";
import { Miniflare } from "miniflare";
import { Webhook } from "standardwebhooks";
import { startRedis } from "../services/redis.ts";
import { startUpstash } from "../services/upstash-server.ts";

const SECRET = "whsec_" + btoa("edge-secret-key-of-32-bytes-long");

describe("edge_push Worker on workerd + Upstash", () => {
  let redis: Awaited<ReturnType<typeof startRedis>>;
  let upstash: Awaited<ReturnType<typeof startUpstash>>;
  let mf: Miniflare;
  before(async () => {
    redis = await startRedis();
    upstash = await startUpstash({ redisUrl: redis.url, token: "edge-token" });
    const bundled = await bundleWorker("examples/edge_push/worker.ts");
    mf = new Miniflare({
      modules: true,
      script: bundled,
      compatibilityDate: "2025-09-01",
      bindings: { UPSTASH_REDIS_REST_URL: upstash.url, UPSTASH_REDIS_REST_TOKEN: "edge-token", WEBHOOK_SECRET: SECRET },
    });
  });
  after(async () => {
    await mf?.dispose();
    await upstash?.stop();
    await redis?.stop();
  });

  // miniflare's Response.json() is unknown: the fields are asserted one by one.
  // deno-lint-ignore no-explicit-any
  type Json = any;
  const wh = new Webhook(SECRET);
  const push = (id: string, df: Record<string, unknown[]>, tamper = false) => {
    const body = JSON.stringify({ push_source_name: "user_events", df });
    const at = new Date();
    return mf.dispatchFetch("http://edge/push", {
      method: "POST",
      body: tamper ? body.replace("/cart", "/free") : body,
      headers: { "content-type": "application/json", "webhook-id": id, "webhook-timestamp": String(Math.floor(at.getTime() / 1000)), "webhook-signature": wh.sign(id, at, body) },
    });
  };
  const get = async (ids: string[]) => {
    const res = await mf.dispatchFetch("http://edge/get-online-features", {
      method: "POST",
      headers: { "content-type": "application/json" },
      body: JSON.stringify({ entities: { user_id: ids }, features: ["user_activity:cart_items", "user_activity:last_page"] }),
    });
    assert.equal(res.status, 200);
    return await res.json() as { metadata: { feature_names: string[] }; results: { values: unknown[]; statuses: string[] }[] };
  };
  const now = () => Math.floor(Date.now() / 1000);

  it("pushes and serves features through Upstash", async () => {
    const first = { user_id: ["u1", "u2"], last_page: ["/cart", "/home"], cart_items: [2, 0], cart_value: [59.9, 0], ts: [now(), now()] };
    const res = await push("evt_1", first);
    assert.equal(res.status, 200, await res.clone().text());
    assert.equal((await res.json() as Json).written, 2);
    const body = await get(["u1", "u2", "nobody"]);
    assert.deepEqual(body.metadata.feature_names, ["user_id", "cart_items", "last_page"]);
    assert.deepEqual(body.results[1].values, [2, 0, null]);
    assert.deepEqual(body.results[2].values, ["/cart", "/home", null]);
    assert.deepEqual(body.results[1].statuses, ["PRESENT", "PRESENT", "NOT_FOUND"]);
    // A redelivery of the same message is a duplicate; the same id with another body is refused.
    const dup = await push("evt_1", first);
    assert.equal((await dup.json() as Json).status, "duplicate");
    const reused = await push("evt_1", { user_id: ["u1"], last_page: ["/x"], cart_items: [9], cart_value: [1], ts: [now()] });
    assert.equal(reused.status, 422);
    assert.equal((await reused.json() as Json).error.code, "webhook_id_reused");
    assert.ok(Object.values(upstash.requests).reduce((a, b) => a + b, 0) > 0, "requests went through the Upstash REST server");
  });

  it("refuses a bad signature (401) and a bad body (400/422) and records nothing", async () => {
    const tampered = await push("evt_2", { user_id: ["u3"], last_page: ["/cart"], cart_items: [1], cart_value: [1], ts: [now()] }, true);
    assert.equal(tampered.status, 401);
    const bad = await push("evt_3", { user_id: ["u3"], last_page: ["/cart"], cart_items: [-1], cart_value: [1], ts: [now()] });
    assert.equal(bad.status, 422);
    assert.equal((await bad.json() as Json).error.field, "df.cart_items[0]");
    const at = new Date();
    const junk = await mf.dispatchFetch("http://edge/push", { method: "POST", body: "{nope", headers: { "content-type": "application/json", "webhook-id": "evt_4", "webhook-timestamp": String(Math.floor(at.getTime() / 1000)), "webhook-signature": wh.sign("evt_4", at, "{nope") } });
    assert.equal(junk.status, 400);
    // Without a JSON content type the same body is refused before it is read (a browser form cannot push).
    const plain = await mf.dispatchFetch("http://edge/push", { method: "POST", body: "{nope", headers: { "webhook-id": "evt_4", "webhook-timestamp": String(Math.floor(at.getTime() / 1000)), "webhook-signature": wh.sign("evt_4", at, "{nope") } });
    assert.equal(plain.status, 415);
    assert.equal((await get(["u3"])).results[1].statuses[0], "NOT_FOUND");
  });

  it("answers 503 with Retry-After while Upstash fails, records nothing, and recovers", async () => {
    upstash.faults.down = true;
    const res = await push("evt_5", { user_id: ["u5"], last_page: ["/cart"], cart_items: [5], cart_value: [5], ts: [now()] });
    assert.equal(res.status, 503);
    assert.ok(res.headers.get("retry-after"));
    upstash.faults.down = false;
    assert.equal((await get(["u5"])).results[1].statuses[0], "NOT_FOUND", "nothing recorded");
    const retry = await push("evt_5", { user_id: ["u5"], last_page: ["/cart"], cart_items: [5], cart_value: [5], ts: [now()] });
    assert.equal(retry.status, 200);
    assert.equal((await retry.json() as Json).status, "ok");
    assert.deepEqual((await get(["u5"])).results[1].values, [5]);
  });
});

describe("createWorker", () => {
  it("refuses at load time a view that writes offline, since a Worker has no offline log", async () => {
    const v = await import("valibot");
    const { entity, featureRepo, pushSource, streamFeatureView } = await import("../../mod.ts");
    const { createWorker } = await import("../../adapters/workers.ts");
    const user = entity({ name: "user", joinKeys: ["user_id"] });
    const repo = featureRepo({ project: "edge_offline", definitions: [streamFeatureView({ name: "logged", entities: [user], source: pushSource({ name: "p", timestampField: "ts" }), ttl: 0, offline: true, schema: v.object({ user_id: v.string(), n: v.number(), ts: v.number() }) })] });
    assert.throws(() => createWorker(repo), /view "logged" has offline: true, but a Worker has no offline store/);
  });
});
