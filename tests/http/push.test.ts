import { describe, it } from "node:test";
import assert from "node:assert/strict";
import { Webhook } from "standardwebhooks";
import * as v from "valibot";
import { createProcessor, entity, featureRepo, featureService, FreshetError, type OnlineStore, pushSource, streamFeatureView } from "../../mod.ts";
import { METRICS } from "../../core/metrics.ts";
import { pushApp } from "../../plugins/sources/push.ts";
import { memoryDeadLetters, memoryOffline, memoryStore } from "../../plugins/stores/memory.ts";

const driver = entity({ name: "driver", joinKeys: ["driver_id"] });
const push = pushSource({ name: "driver_stats_push_source", timestampField: "event_timestamp" });
const stats = streamFeatureView({
  name: "driver_hourly_stats",
  entities: [driver],
  source: push,
  ttl: "1d",
  schema: v.object({ driver_id: v.number(), conv_rate: v.number(), avg_daily_trips: v.number(), event_timestamp: v.string() }),
});
const repo = featureRepo({ project: "http_test", definitions: [stats] });
const SECRET = "whsec_" + btoa("a-very-secret-key-of-32-bytes!!!");

function setup(opts: { secret?: string; maxBodyBytes?: number; pendingTtlMs?: number; store?: OnlineStore } = {}) {
  const online = memoryStore();
  const offline = memoryOffline();
  const processor = createProcessor({ registry: repo, online: opts.store ?? online, offline, deadLetters: memoryDeadLetters() });
  const app = pushApp({ processor, webhookSecret: opts.secret, maxBodyBytes: opts.maxBodyBytes, pendingTtlMs: opts.pendingTtlMs });
  const post = (path: string, body: unknown, headers: Record<string, string> = {}) =>
    app.request(path, { method: "POST", body: typeof body === "string" ? body : JSON.stringify(body), headers: { "content-type": "application/json", ...headers } });
  return { app, online, offline, post };
}

const now = () => new Date().toISOString();
const feastPush = (ids: number[], extra: Record<string, unknown[]> = {}) => ({
  push_source_name: "driver_stats_push_source",
  df: { driver_id: ids, conv_rate: ids.map(() => 0.5), avg_daily_trips: ids.map((i) => i % 100), event_timestamp: ids.map(now), ...extra },
  to: "online",
});

describe("POST /push and /get-online-features", () => {
  it("takes Feast's columnar body and answers get-online-features in Feast's shape", async () => {
    const { post } = setup();
    const res = await post("/push", feastPush([1001, 1002]));
    assert.equal(res.status, 200);
    assert.equal((await res.json()).written, 2);
    const got = await post("/get-online-features", { entities: { driver_id: [1001, 1002, 9999] }, features: ["driver_hourly_stats:conv_rate", "driver_hourly_stats:avg_daily_trips"], full_feature_names: false });
    assert.equal(got.status, 200);
    const body = await got.json();
    assert.deepEqual(body.metadata.feature_names, ["driver_id", "conv_rate", "avg_daily_trips"]);
    assert.deepEqual(body.results[0].values, [1001, 1002, 9999]);
    assert.deepEqual(body.results[1].values, [0.5, 0.5, null]);
    assert.deepEqual(body.results[1].statuses, ["PRESENT", "PRESENT", "NOT_FOUND"]);
    assert.deepEqual(body.results[2].values, [1, 2, null]);
    assert.match(body.results[1].event_timestamps[0], /^\d{4}-\d\d-\d\dT/);
    assert.equal(body.results[1].event_timestamps[2], "1970-01-01T00:00:00Z");
    const full = await (await post("/get-online-features", { entities: { driver_id: [1001] }, features: ["driver_hourly_stats:conv_rate"], full_feature_names: true })).json();
    assert.deepEqual(full.metadata.feature_names, ["driver_id", "driver_hourly_stats__conv_rate"]);
  });

  it("answers each entity with its own event time, for every feature, in the order asked, a ref asked twice once", async () => {
    const { post } = setup();
    const t1 = new Date(Math.floor(Date.now() / 1000) * 1000 - 7200_000 + 678).toISOString(), t2 = new Date(Math.floor(Date.now() / 1000) * 1000 - 3600_000).toISOString();
    assert.equal((await post("/push", feastPush([1, 2, 3], { event_timestamp: [t2, t1, t2] }))).status, 200);
    const refs = ["driver_hourly_stats:avg_daily_trips", "driver_hourly_stats:conv_rate", "driver_hourly_stats:avg_daily_trips"];
    for (let round = 0; round < 2; round++) { // the second round answers from the refs already parsed
      const body = await (await post("/get-online-features", { entities: { driver_id: [2, 9, 1, 3, 1] }, features: refs })).json();
      assert.deepEqual(body.metadata.feature_names, ["driver_id", "avg_daily_trips", "conv_rate"]);
      const t1Shown = t1, t2Shown = t2.replace(".000Z", "Z"); // whole seconds are shown without milliseconds
      const times = [t1Shown, "1970-01-01T00:00:00Z", t2Shown, t2Shown, t2Shown];
      for (const r of body.results.slice(1)) {
        assert.deepEqual(r.statuses, ["PRESENT", "NOT_FOUND", "PRESENT", "PRESENT", "PRESENT"]);
        assert.deepEqual(r.event_timestamps, times);
      }
      assert.deepEqual(body.results[1].values, [2, null, 1, 3, 1]);
    }
  });

  it("takes a rows array, timezone-naive timestamps as UTC, and to=offline", async () => {
    const { post, offline, online } = setup();
    const res = await post("/push", { push_source_name: "driver_stats_push_source", rows: [{ driver_id: 7, conv_rate: 0.1, avg_daily_trips: 3, event_timestamp: "2026-11-21 10:00:00" }], to: "offline" });
    assert.equal(res.status, 200);
    assert.equal(offline.rows("driver_hourly_stats")[0].eventTime, Date.UTC(2026, 10, 21, 10));
    assert.equal(online.size, 0);
  });

  it("answers 422 naming the field for bad rows, and writes none of the request", async () => {
    const { post, online } = setup();
    const cases: [unknown, string][] = [
      [feastPush([1, 2], { conv_rate: [0.1, "high"] }), "df.conv_rate[1]"],
      [feastPush([1], { event_timestamp: ["someday"] }), "df.event_timestamp[0]"],
      [{ ...feastPush([1]), push_source_name: "nope" }, "push_source_name"],
      [{ ...feastPush([1]), push_source_name: undefined }, "push_source_name"],
      [{ ...feastPush([1]), to: "somewhere" }, "to"],
      [feastPush([1, 2], { conv_rate: [0.1] }), "df.conv_rate"],
      [{ push_source_name: "driver_stats_push_source", df: { driver_id: { id: 5 } } }, "df.driver_id"],
      [{ push_source_name: "driver_stats_push_source", df: { driver_id: 5 } }, "df.conv_rate[0]"], // a scalar is one row, which lacks the other columns
      [{ push_source_name: "driver_stats_push_source" }, "df"],
      [{ push_source_name: "driver_stats_push_source", rows: [{ conv_rate: 1, avg_daily_trips: 1, event_timestamp: now() }] }, "rows[0].driver_id"],
      [[1, 2, 3], "body"],
    ];
    for (const [body, field] of cases) {
      const res = await post("/push", body);
      assert.equal(res.status, 422, JSON.stringify(body));
      const json = await res.json();
      assert.equal(json.error.field, field, JSON.stringify(json));
      assert.ok(json.error.message.length > 10);
    }
    assert.equal(online.size, 0);
  });

  it("scenario 9 (webhook abuse): answers 400 for malformed JSON and an empty body", async () => {
    const { post } = setup();
    for (const body of ["{\"push_source_name\": ", "", "   "]) {
      const res = await post("/push", body);
      assert.equal(res.status, 400);
      assert.equal((await res.json()).error.field, "body");
    }
    const res = await post("/get-online-features", "nope");
    assert.equal(res.status, 400);
  });

  it("answers 422 naming the field for bad get-online-features requests", async () => {
    const { post } = setup();
    const cases: [unknown, string][] = [
      [{ features: ["driver_hourly_stats:conv_rate"] }, "entities"],
      [{ entities: { driver_id: [1] }, features: ["nope:conv_rate"] }, "features[0]"],
      [{ entities: { driver_id: [1] }, features: ["driver_hourly_stats:nope"] }, "features[0]"],
      [{ entities: { driver_id: [1] }, features: ["conv_rate"] }, "features[0]"],
      [{ entities: { rider_id: [1] }, features: ["driver_hourly_stats:conv_rate"] }, "entities"],
      [{ entities: { driver_id: 1 }, features: ["driver_hourly_stats:conv_rate"] }, "entities.driver_id"],
    ];
    for (const [body, field] of cases) {
      const res = await post("/get-online-features", body);
      assert.equal(res.status, 422, JSON.stringify(body));
      assert.equal((await res.json()).error.field, field);
    }
  });

  it("scenario 9 (webhook abuse): answers 413 for an oversized body, declared or chunked", async () => {
    const { app, post, online } = setup({ maxBodyBytes: 1000 });
    const big = JSON.stringify(feastPush(Array.from({ length: 100 }, (_, i) => i)));
    const res = await post("/push", big);
    assert.equal(res.status, 413);
    assert.equal((await res.json()).error.code, "body_too_large");
    const bytes = new TextEncoder().encode(big);
    const chunked = new ReadableStream({
      start(c) {
        for (let i = 0; i < bytes.length; i += 100) c.enqueue(bytes.slice(i, i + 100));
        c.close();
      },
    });
    const res2 = await app.request("/push", { method: "POST", body: chunked, headers: { "content-type": "application/json" }, duplex: "half" } as RequestInit);
    assert.equal(res2.status, 413);
    assert.equal(online.size, 0);
  });

  it("scenario 9 (webhook abuse): checks Standard Webhooks signatures: tampered, stale, future and missing get 401", async () => {
    const { post, online } = setup({ secret: SECRET });
    const wh = new Webhook(SECRET);
    const body = JSON.stringify(feastPush([42]));
    const signed = (id: string, at: Date, payload = body) => ({ "webhook-id": id, "webhook-timestamp": String(Math.floor(at.getTime() / 1000)), "webhook-signature": wh.sign(id, at, payload) });
    const tampered = await post("/push", body.replace("0.5", "0.9"), signed("msg_1", new Date()));
    assert.equal(tampered.status, 401);
    assert.equal((await tampered.json()).error.field, "webhook-signature");
    assert.equal((await post("/push", body, signed("msg_2", new Date(Date.now() - 10 * 60_000)))).status, 401);
    assert.equal((await post("/push", body, signed("msg_3", new Date(Date.now() + 10 * 60_000)))).status, 401);
    assert.equal((await post("/push", body)).status, 401);
    assert.equal(online.size, 0);
    const junk = await post("/push", "{nope", signed("msg_5", new Date(), "{nope"));
    assert.equal(junk.status, 400, "signed but malformed JSON is a 400, not a 401");
    const ok = await post("/push", body, signed("msg_4", new Date()));
    assert.equal(ok.status, 200);
    assert.equal(online.size, 1);
  });

  it("scenario 9 (webhook abuse): has exactly one side effect per webhook-id, even replayed concurrently", async () => {
    const { post, offline } = setup({ secret: SECRET });
    const wh = new Webhook(SECRET);
    const body = JSON.stringify({ ...feastPush([1, 2, 3]), to: "online_and_offline" });
    const at = new Date();
    const headers = { "webhook-id": "msg_dup", "webhook-timestamp": String(Math.floor(at.getTime() / 1000)), "webhook-signature": wh.sign("msg_dup", at, body) };
    const results = await Promise.all(Array.from({ length: 10 }, () => post("/push", body, headers)));
    const statuses = results.map((r) => r.status);
    const bodies = await Promise.all(results.map((r) => r.json()));
    assert.equal(bodies.filter((b) => b.status === "ok").length, 1, JSON.stringify(statuses));
    for (let i = 0; i < results.length; i++) assert.ok(statuses[i] === 200 || statuses[i] === 409, String(statuses[i]));
    assert.equal(offline.rows("driver_hourly_stats").length, 3, "appended once");
    const again = await post("/push", body, headers);
    assert.equal((await again.json()).status, "duplicate");
    assert.equal(offline.rows("driver_hourly_stats").length, 3);
  });

  it("never answers duplicate for a write that did not land: 20 concurrent deliveries while the first fails", async () => {
    const inner = memoryStore();
    let down = true;
    let release!: () => void;
    const gate = new Promise<void>((r) => (release = r));
    // The first write waits until every delivery has been answered, then fails: the store is down.
    const store: OnlineStore = { ...inner, name: "flaky", meta: inner.meta, read: inner.read, write: async (...a: Parameters<OnlineStore["write"]>) => {
      await gate;
      if (down) throw new FreshetError("STORE_UNAVAILABLE", "connection refused");
      return inner.write(...a);
    } };
    const { post } = setup({ store });
    const body = feastPush([7]);
    const headers = { "webhook-id": "msg_flaky" };
    const first = post("/push", body, headers);
    await new Promise((r) => setTimeout(r, 20));
    const others = await Promise.all(Array.from({ length: 19 }, () => post("/push", body, headers)));
    release();
    const results = [await first, ...others];
    const statuses = results.map((r) => r.status).sort();
    assert.deepEqual(statuses, [...Array(19).fill(409), 503], "one 503, nineteen 409, never a false 200");
    for (const r of others) assert.equal(r.headers.get("retry-after"), "1");
    assert.equal((await inner.read(repo.view("driver_hourly_stats"), ["driver_id=7"], ["conv_rate"]))[0].conv_rate.status, "NOT_FOUND");
    down = false;
    const retry = await post("/push", body, headers);
    assert.equal(retry.status, 200);
    assert.equal((await retry.json()).status, "ok", "the retry after the 503 is processed");
    assert.equal((await inner.read(repo.view("driver_hourly_stats"), ["driver_id=7"], ["conv_rate"]))[0].conv_rate.status, "PRESENT");
    assert.equal((await (await post("/push", body, headers)).json()).status, "duplicate", "and only now is it a duplicate");
  });

  it("a delivery that died mid-request leaves its id pending; it expires and the retry is processed", async () => {
    const { post, online } = setup({ pendingTtlMs: 300 });
    const body = JSON.stringify(feastPush([8]));
    // What a process killed mid-request leaves behind: the id pending, no write.
    const { createHash } = await import("node:crypto");
    await online.meta.begin("push:http_test:msg_crashed", createHash("sha256").update(body).digest("hex"), 300);
    const during = await post("/push", body, { "webhook-id": "msg_crashed" });
    assert.equal(during.status, 409);
    assert.equal((await during.json()).error.code, "in_progress");
    await new Promise((r) => setTimeout(r, 350));
    const after = await post("/push", body, { "webhook-id": "msg_crashed" });
    assert.equal((await after.json()).status, "ok");
    assert.equal((await online.read(repo.view("driver_hourly_stats"), ["driver_id=8"], ["conv_rate"]))[0].conv_rate.status, "PRESENT");
  });

  it("refuses a webhook-id reused for a different body (422) and an over-long id", async () => {
    const { post } = setup();
    assert.equal((await post("/push", feastPush([1]), { "webhook-id": "msg_same" })).status, 200);
    const reused = await post("/push", feastPush([2]), { "webhook-id": "msg_same" });
    assert.equal(reused.status, 422);
    const err = (await reused.json()).error;
    assert.equal(err.code, "webhook_id_reused");
    assert.equal(err.field, "webhook-id");
    const long = await post("/push", feastPush([3]), { "webhook-id": "m".repeat(300) });
    assert.equal(long.status, 422);
    assert.equal((await long.json()).error.field, "webhook-id");
  });

  it("a request refused as invalid leaves its id free: the corrected retry is processed", async () => {
    const { post } = setup();
    const bad = { ...feastPush([4]), df: { ...feastPush([4]).df, conv_rate: ["x"] } };
    assert.equal((await post("/push", bad, { "webhook-id": "msg_fixme" })).status, 422);
    // The same bad body again is the same 422, not "in progress" and not "duplicate".
    assert.equal((await post("/push", bad, { "webhook-id": "msg_fixme" })).status, 422);
    const fixed = await post("/push", feastPush([4]), { "webhook-id": "msg_fixme" });
    assert.equal((await fixed.json()).status, "ok");
  });

  it("serves /health, /metrics and /registry", async () => {
    const { app, post } = setup();
    await post("/push", feastPush([1]));
    assert.deepEqual(await (await app.request("/health")).json(), { status: "ok", project: "http_test", store: "memory" });
    const metrics = await (await app.request("/metrics")).text();
    assert.match(metrics, /freshet_records_total\{source="driver_stats_push_source",view="driver_hourly_stats",outcome="written"\} 1/);
    assert.match(metrics, /freshet_http_requests_total\{route="\/push",method="POST",status="200"\} 1/);
    const reg = await (await app.request("/registry")).json();
    assert.equal(reg.featureViews[0].name, "driver_hourly_stats");
    const nf = await app.request("/nope");
    assert.equal(nf.status, 404);
  });

  it("times every request in freshet_http_request_duration_seconds by route template, method and status, with one label set per metric (issue 14)", async () => {
    const { app, post } = setup();
    await post("/push", feastPush([1]));
    const once = feastPush([2]);
    await post("/push", once, { "webhook-id": "msg_1" });
    await post("/push", once, { "webhook-id": "msg_1" }); // duplicate
    await post("/push", { push_source_name: "nope" });
    await post("/get-online-features", { entities: { driver_id: [1] }, features: ["driver_hourly_stats:conv_rate"] });
    for (let i = 0; i < 5; i++) await app.request(`/scan/${i}?q=${i}`);
    const text = await (await app.request("/metrics")).text();
    const samples = text.split("\n").filter((l) => l && !l.startsWith("#"));
    const count = (route: string, method: string, status: string) =>
      Number(new RegExp(`^freshet_http_request_duration_seconds_count\\{route="${route}",method="${method}",status="${status}"\\} (\\d+)$`, "m").exec(text)?.[1] ?? 0);
    assert.equal(count("/push", "POST", "200"), 3);
    assert.equal(count("/push", "POST", "422"), 1);
    assert.equal(count("/get-online-features", "POST", "200"), 1);
    assert.equal(count("unmatched", "GET", "404"), 5, "raw paths never become labels");
    assert.ok(!text.includes("/scan/"));
    // Every sample of a metric carries exactly its declared label names.
    for (const line of samples) {
      const m = /^(\w+?)(_bucket|_sum|_count)?\{([^}]*)\} /.exec(line);
      assert.ok(m, line);
      const name = METRICS[m[1]] ? m[1] : m[1] + (m[2] ?? "");
      const declared = METRICS[name]?.labels;
      assert.ok(declared, `${name} is declared`);
      const names = [...m[3].matchAll(/(\w+)="/g)].map((x) => x[1]).filter((n) => !(m[2] === "_bucket" && n === "le"));
      assert.deepEqual(names, [...declared], line);
    }
  });
});

describe("Feast's HTTP conventions (issue 14)", () => {
  const logged = streamFeatureView({
    name: "driver_logged",
    entities: [driver],
    source: push,
    ttl: "1d",
    offline: true,
    schema: v.object({ driver_id: v.number(), conv_rate: v.number(), avg_daily_trips: v.number(), string_feature: v.optional(v.string()), event_timestamp: v.string() }),
  });
  const both = featureService({ name: "driver_model_v1", features: ["driver_hourly_stats:conv_rate", logged] });
  const feastRepo = featureRepo({ project: "http_feast", definitions: [stats, logged, both] });
  const feastSetup = () => {
    const online = memoryStore();
    const offline = memoryOffline();
    const app = pushApp({ processor: createProcessor({ registry: feastRepo, online, offline, deadLetters: memoryDeadLetters() }) });
    const post = async (path: string, body: unknown) => {
      const res = await app.request(path, { method: "POST", body: JSON.stringify(body), headers: { "content-type": "application/json" } });
      return { status: res.status, json: await res.json() };
    };
    return { online, offline, post };
  };
  const read = (post: ReturnType<typeof feastSetup>["post"], ids: number[], features: string[]) =>
    post("/get-online-features", { entities: { driver_id: ids }, features });

  it("a push without `to` writes online only, even to a view with offline: true; to online_and_offline writes both", async () => {
    const { post, online, offline } = feastSetup();
    const { to: _, ...noTo } = feastPush([1, 2]);
    const res = await post("/push", noTo);
    assert.equal(res.status, 200, JSON.stringify(res.json));
    assert.equal(offline.rows("driver_logged").length, 0);
    assert.equal(online.size, 4); // two rows in each of the two views
    assert.deepEqual((await read(post, [1, 2], ["driver_logged:conv_rate"])).json.results[1].statuses, ["PRESENT", "PRESENT"]);
    assert.equal((await post("/push", { ...feastPush([3]), to: "online_and_offline" })).status, 200);
    assert.deepEqual(offline.rows("driver_logged").map((r) => r.entityKey.length > 0), [true]);
    assert.equal(online.size, 6);
  });

  it("broadcasts scalar columns in df as pandas does: Feast's documented example, and all scalars as one row", async () => {
    const { post } = feastSetup();
    // Feast's docs push `"string_feature": "test2"` beside one-value lists.
    const feastDoc = await post("/push", {
      push_source_name: "driver_stats_push_source",
      df: { driver_id: [1001, 1002], event_timestamp: [now(), now()], created: [now(), now()], conv_rate: [1.0, 0.5], avg_daily_trips: 1000, string_feature: "test2" },
      to: "online",
    });
    assert.equal(feastDoc.status, 200, JSON.stringify(feastDoc.json));
    assert.equal(feastDoc.json.records, 2);
    const got = await read(post, [1001, 1002], ["driver_logged:string_feature", "driver_logged:avg_daily_trips", "driver_logged:conv_rate"]);
    assert.deepEqual(got.json.results.slice(1).map((r: { values: unknown[] }) => r.values), [["test2", "test2"], [1000, 1000], [1, 0.5]]);
    const scalars = await post("/push", { push_source_name: "driver_stats_push_source", df: { driver_id: 7, conv_rate: 0.25, avg_daily_trips: 3, event_timestamp: now() } });
    assert.equal(scalars.status, 200, JSON.stringify(scalars.json));
    assert.equal(scalars.json.records, 1);
    assert.deepEqual((await read(post, [7], ["driver_hourly_stats:conv_rate"])).json.results[1].values, [0.25]);
    // Lists of different lengths still disagree, and an object is no scalar.
    const bad = await post("/push", { push_source_name: "driver_stats_push_source", df: { driver_id: [1, 2], conv_rate: [0.1], avg_daily_trips: 3, event_timestamp: now() } });
    assert.equal(bad.status, 422);
    assert.equal(bad.json.error.field, "df.conv_rate");
    const obj = await post("/push", { push_source_name: "driver_stats_push_source", df: { driver_id: [1], conv_rate: { a: 1 }, avg_daily_trips: 3, event_timestamp: now() } });
    assert.equal(obj.json.error.field, "df.conv_rate");
  });

  it("reads a feature service in get-online-features, lists it in /registry, and names feature_service in errors", async () => {
    const { post } = feastSetup();
    assert.equal((await post("/push", feastPush([5]))).status, 200);
    const got = await post("/get-online-features", { entities: { driver_id: [5, 6] }, feature_service: "driver_model_v1", full_feature_names: true });
    assert.equal(got.status, 200, JSON.stringify(got.json));
    assert.deepEqual(got.json.metadata.feature_names, ["driver_id", "driver_hourly_stats__conv_rate", "driver_logged__conv_rate", "driver_logged__avg_daily_trips", "driver_logged__string_feature"]);
    assert.deepEqual(got.json.results[1].values, [0.5, null]);
    assert.deepEqual(got.json.results[3].values, [5, null]);
    assert.deepEqual(feastRepo.describe().featureServices, [{ name: "driver_model_v1", features: ["driver_hourly_stats:conv_rate", "driver_logged:conv_rate", "driver_logged:avg_daily_trips", "driver_logged:string_feature"] }]);
    for (const body of [
      { entities: { driver_id: [5] }, feature_service: "nope" },
      { entities: { driver_id: [5] }, feature_service: 3 },
      { entities: { driver_id: [5] }, feature_service: "driver_model_v1", features: ["driver_hourly_stats:conv_rate"] },
    ]) {
      const res = await post("/get-online-features", body);
      assert.equal(res.status, 422, JSON.stringify(body));
      assert.equal(res.json.error.field, "feature_service");
    }
  });

  it("refuses a feature service naming an unknown view or feature at definition time", () => {
    assert.throws(() => featureRepo({ project: "p", definitions: [stats, featureService({ name: "s", features: ["driver_hourly_stats:nope"] })] }), /has no feature "nope"/);
    assert.throws(() => featureRepo({ project: "p", definitions: [stats, featureService({ name: "s", features: ["ghost:conv_rate"] })] }), /names no feature view/);
    assert.throws(() => featureRepo({ project: "p", definitions: [stats, featureService({ name: "s", features: [logged] })] }), /not in the repo's definitions/);
    assert.throws(() => featureService({ name: "s", features: [] }), /non-empty/);
    assert.throws(() => featureService({ name: "s", features: ["conv_rate"] }), /features\[0\]/);
  });
});
