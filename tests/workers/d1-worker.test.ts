// @runtimes node
/**
 * The edge_push Worker on D1, in workerd (miniflare) with a persisted D1
 * database bound as in examples/edge_push/wrangler.toml: push and read back
 * through the Worker, a late event dead-lettered into the D1 table
 * `freshet_dead_letters`, then a restart of the Worker (a new miniflare on
 * the same D1 files) that still has the features, the webhook-id, the
 * watermark and the letters. Also a binding named by FRESHET_D1_BINDING,
 * and the config errors, from createWorker directly.
 */
import { describe, it, before, after } from "node:test";
import assert from "node:assert/strict";
import { mkdtempSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { bundleWorker } from "../fixtures/worker-bundle.ts";
import { Miniflare } from "miniflare";

const root = new URL("../../", import.meta.url).pathname;

describe("edge_push Worker on D1", () => {
  let script: string;
  let persist: string;
  let mf: Miniflare | undefined;
  let firstDf: Record<string, unknown[]> = {};
  const start = (opts: { d1?: string; bindings?: Record<string, string> } = {}) =>
    new Miniflare({ modules: true, script, compatibilityDate: "2025-09-01", d1Databases: [opts.d1 ?? "DB"], d1Persist: persist, bindings: opts.bindings ?? {} });
  before(async () => {
    persist = mkdtempSync(join(tmpdir(), "freshet-d1-worker-"));
    script = await bundleWorker("examples/edge_push/worker.ts");
  });
  after(async () => {
    await mf?.dispose();
    rmSync(persist, { recursive: true, force: true });
  });

  const push = async (id: string, df: Record<string, unknown[]>) => {
    const res = await mf!.dispatchFetch("http://edge/push", { method: "POST", body: JSON.stringify({ push_source_name: "user_events", df }), headers: { "content-type": "application/json", "webhook-id": id } });
    return { status: res.status, body: await res.json() as Record<string, unknown> };
  };
  const get = async (ids: string[]) => {
    const res = await mf!.dispatchFetch("http://edge/get-online-features", {
      method: "POST",
      headers: { "content-type": "application/json" },
      body: JSON.stringify({ entities: { user_id: ids }, features: ["user_activity:cart_items", "user_activity:last_page"] }),
    });
    assert.equal(res.status, 200, await res.clone().text());
    return await res.json() as { results: { values: unknown[]; statuses: string[] }[] };
  };
  const letters = async (binding = "DB") => {
    const db = await mf!.getD1Database(binding);
    return (await db.prepare("SELECT source, view, reason, message, position, payload FROM freshet_dead_letters ORDER BY id").all()).results as Record<string, string>[];
  };
  const now = () => Math.floor(Date.now() / 1000);
  const row = (user: string, items: number, ts: number) => ({ user_id: [user], last_page: [`/p${items}`], cart_items: [items], cart_value: [items * 10], ts: [ts] });

  it("the example binds its D1 database as DB", () => {
    const toml = readFileSync(`${root}examples/edge_push/wrangler.toml`, "utf8");
    assert.match(toml, /\[\[d1_databases\]\]\s*\nbinding = "DB"/);
    assert.match(toml, /^# UPSTASH_REDIS_REST_URL/m, "Upstash is commented out, so D1 is the store");
  });

  it("pushes and reads back through the Worker on D1, and dead-letters a late event into the D1 table", async () => {
    mf = start();
    const health = await mf.dispatchFetch("http://edge/health");
    assert.equal(health.status, 200);
    assert.equal((await health.json() as { store: string }).store, "sqlite");
    const t = now();
    firstDf = { user_id: ["u1", "u2"], last_page: ["/cart", "/home"], cart_items: [2, 0], cart_value: [59.9, 0], ts: [t, t] };
    const first = await push("evt_1", firstDf);
    assert.equal(first.status, 200, JSON.stringify(first.body));
    assert.equal(first.body.written, 2);
    const got = await get(["u1", "u2", "nobody"]);
    assert.deepEqual(got.results[1].values, [2, 0, null]);
    assert.deepEqual(got.results[2].values, ["/cart", "/home", null]);
    assert.deepEqual(got.results[1].statuses, ["PRESENT", "PRESENT", "NOT_FOUND"]);
    // 30 minutes behind the newest event, past the view's 10 minute watermark delay: late, dead-lettered.
    const late = await push("evt_late_1", row("u3", 7, t - 1800));
    assert.equal(late.status, 200, JSON.stringify(late.body));
    assert.equal(late.body.late, 1);
    assert.equal((await get(["u3"])).results[1].statuses[0], "NOT_FOUND");
    const dead = await letters();
    assert.equal(dead.length, 1, JSON.stringify(dead));
    assert.equal(dead[0].source, "user_events");
    assert.equal(dead[0].view, "user_activity");
    assert.equal(dead[0].reason, "late");
    assert.equal(JSON.parse(dead[0].position).kind, "push");
    assert.match(dead[0].payload, /"u3"/);
    // Latest wins: an older event for u1 within the delay is stale, a newer one is written.
    assert.equal((await push("evt_2", row("u1", 5, t - 60))).body.stale, 1);
    assert.equal((await push("evt_3", row("u1", 9, t + 1))).body.written, 1);
    assert.deepEqual((await get(["u1"])).results[1].values, [9]);
  });

  it("after a restart of the Worker on the same D1 database: features, webhook-ids, the watermark and the dead letters are still there", async () => {
    await mf!.dispose();
    mf = start();
    assert.deepEqual((await get(["u1", "u2", "u3"])).results[1].values, [9, 0, null]);
    // The first delivery's webhook-id is remembered: a redelivery is a duplicate, not a second write.
    const dup = await push("evt_1", firstDf);
    assert.equal(dup.body.status, "duplicate", JSON.stringify(dup.body));
    assert.deepEqual((await get(["u1"])).results[1].values, [9]);
    // The watermark came back from D1: a new isolate still knows the newest event, so this one is late too.
    const late = await push("evt_late_2", row("u4", 3, now() - 1800));
    assert.equal(late.body.late, 1, JSON.stringify(late.body));
    const dead = await letters();
    assert.deepEqual(dead.map((d) => d.reason), ["late", "late"]);
    assert.match(dead[1].payload, /"u4"/);
    assert.equal((await push("evt_4", row("u4", 4, now()))).body.written, 1);
    assert.deepEqual((await get(["u4"])).results[1].values, [4]);
  });

  it("uses the D1 binding named by FRESHET_D1_BINDING", async () => {
    await mf!.dispose();
    mf = start({ d1: "FEATURES", bindings: { FRESHET_D1_BINDING: "FEATURES" } });
    assert.equal((await push("evt_f1", row("f1", 1, now()))).body.written, 1);
    assert.deepEqual((await get(["f1", "u1"])).results[1].values, [1, null], "another database than DB");
    const db = await mf.getD1Database("FEATURES");
    assert.equal((await db.prepare("SELECT count(*) AS n FROM freshet_features").first<{ n: number }>())?.n, 1);
    await push("evt_f2", row("f2", 1, now() - 1800));
    assert.equal((await letters("FEATURES")).length, 1);
  });
});

describe("createWorker store configuration", () => {
  const req = () => new Request("http://edge/health");
  it("says how to fix a FRESHET_D1_BINDING that names no D1 binding, and a Worker with no store", async () => {
    const { createWorker } = await import("../../adapters/workers.ts");
    const repo = (await import("../../examples/edge_push/feature_repo.ts")).default;
    await assert.rejects(async () => createWorker(repo).fetch(req(), { FRESHET_D1_BINDING: "FEATURES", DB: {} }), /FRESHET_D1_BINDING is "FEATURES", but the Worker has no D1 binding of that name: add \[\[d1_databases\]\] with binding = "FEATURES" to wrangler\.toml/);
    await assert.rejects(async () => createWorker(repo).fetch(req(), {}), /no store: bind a D1 database as DB \(\[\[d1_databases\]\] binding = "DB" in wrangler\.toml/);
  });
});
