/**
 * Scenario 3 for push: Redis goes down; a push answers 503 with Retry-After
 * and records nothing (no feature, no offline row, no idempotency key), and the
 * same webhook-id is processed once Redis is back. Redis runs with AOF, so
 * what it held before the outage is still there after it.
 */
import { describe, it, before, after } from "node:test";
import assert from "node:assert/strict";
import { mkdtemp, readFile, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { Webhook } from "standardwebhooks";
import { createProcessor, featureRepo } from "../../mod.ts";
import { pushApp } from "../../plugins/sources/push.ts";
import { fileDeadLetters, fileOffline } from "../../plugins/stores/file/index.ts";
import { redisStore } from "../../plugins/stores/redis/redis.ts";
import { startRedis } from "../services/redis.ts";
import { driverHourlyStats } from "../../examples/driver_stats/feature_repo.ts";
import { offlineLogRows } from "../fixtures/offline-log.ts";

const SECRET = "whsec_" + btoa("another-secret-key-of-32-bytes!!");

describe("push with Redis down", () => {
  let redis: Awaited<ReturnType<typeof startRedis>>;
  let dir: string;
  before(async () => {
    dir = await mkdtemp(join(tmpdir(), "freshet-push-redis-"));
    redis = await startRedis({ args: ["--appendonly", "yes", "--appendfsync", "always", "--dir", dir] });
  });
  after(async () => {
    await redis.stop();
    await rm(dir, { recursive: true, force: true });
  });

  it("answers 503 with Retry-After, records nothing, and takes the same webhook-id afterwards", { timeout: 60_000 }, async () => {
    const registry = featureRepo({ project: "outage", definitions: [driverHourlyStats] });
    const store = redisStore({ url: redis.url, project: "outage", connectTimeoutMs: 500, commandTimeoutMs: 1000 });
    const offline = fileOffline({ dir });
    const processor = createProcessor({ registry, online: store, offline, deadLetters: fileDeadLetters(join(dir, "dlq.jsonl")) });
    const app = pushApp({ processor, webhookSecret: SECRET, retryAfterSeconds: 2 });
    try {
      const wh = new Webhook(SECRET);
      const push = (id: string, driverId: number) => {
        const body = JSON.stringify({ push_source_name: "driver_stats_push_source", df: { driver_id: [driverId], conv_rate: [0.5], acc_rate: [0.5], avg_daily_trips: [1], event_timestamp: [new Date().toISOString()] }, to: "online_and_offline" });
        const at = new Date();
        return app.request("/push", { method: "POST", body, headers: { "content-type": "application/json", "webhook-id": id, "webhook-timestamp": String(Math.floor(at.getTime() / 1000)), "webhook-signature": wh.sign(id, at, body) } });
      };
      const read = async (id: number) => (await store.read(registry.view("driver_hourly_stats"), [`driver_id=${id}`], ["conv_rate"]))[0].conv_rate.status;
      const offlineRows = async () => (await offlineLogRows(dir, "driver_hourly_stats")).length;

      assert.equal((await push("msg_before", 1)).status, 200);
      assert.equal(await offlineRows(), 1);

      await redis.stop();
      const started = Date.now();
      const down = await push("msg_during", 2);
      assert.equal(down.status, 503);
      assert.equal(down.headers.get("retry-after"), "2");
      assert.equal((await down.json()).error.code, "store_unavailable");
      assert.ok(Date.now() - started < 5000, "fails fast instead of hanging");
      assert.equal((await app.request("/health")).status, 503);
      assert.equal(await offlineRows(), 1, "nothing appended offline during the outage");

      await redis.restart();
      // The client reconnects in the background; wait until it is back rather than guessing a delay.
      for (let i = 0; ; i++) {
        try {
          await store.ping();
          break;
        } catch (e) {
          if (i > 50) throw e;
          await new Promise((r) => setTimeout(r, 200));
        }
      }
      assert.equal(await read(1), "PRESENT", "data from before the outage survived (AOF)");
      assert.equal(await read(2), "NOT_FOUND", "nothing from the failed push");
      const retry = await push("msg_during", 2);
      assert.equal(retry.status, 200);
      assert.equal((await retry.json()).status, "ok", "the failed webhook-id was released, so the retry is processed");
      assert.equal(await read(2), "PRESENT");
      assert.equal(await offlineRows(), 2);
      assert.equal((await app.request("/health")).status, 200);
    } finally {
      await store.close(); // an open client would keep reconnecting and hold the test process open
    }
  });
});
