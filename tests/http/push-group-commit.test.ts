/**
 * Concurrent pushes share the trips to the store (group commit): on Redis,
 * the host's store pipelines the scripts of one turn of the event loop into
 * one write (Redis counts its reads), and every push keeps its own answer:
 * counts, an older row stale against a concurrent newer one, its webhook-id,
 * and, with Redis down, a 503 for each push of the failed trip and nothing
 * recorded for it.
 */
import { describe, it, before, after } from "node:test";
import assert from "node:assert/strict";
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { Redis } from "ioredis";
import { createProcessor, featureRepo } from "../../mod.ts";
import { openStores } from "../../adapters/host.ts";
import { pushApp } from "../../plugins/sources/push.ts";
import { fileDeadLetters } from "../../plugins/stores/file/index.ts";
import { startRedis } from "../services/redis.ts";
import { driverHourlyStats } from "../../examples/driver_stats/feature_repo.ts";

describe("push group commit on Redis (the host's store)", () => {
  let redis: Awaited<ReturnType<typeof startRedis>>;
  let dir: string;
  before(async () => {
    dir = await mkdtemp(join(tmpdir(), "freshet-push-group-"));
    redis = await startRedis();
  });
  after(async () => {
    await redis.stop();
    await rm(dir, { recursive: true, force: true });
  });

  it("20 concurrent pushes reach Redis in a few reads, each answered with its own counts and webhook-id", { timeout: 60_000 }, async () => {
    const registry = featureRepo({ project: "group", definitions: [driverHourlyStats] });
    const { online, offline } = await openStores(redis.url, dir, { project: "group" });
    const processor = createProcessor({ registry, online, offline, deadLetters: fileDeadLetters(join(dir, "dlq.jsonl")) });
    const app = pushApp({ processor });
    const admin = new Redis(redis.url);
    admin.on("error", () => {}); // it reconnects after the outage below
    try {
      const t = Date.now() - 1000;
      const push = (driverId: number, at: number, id?: string) =>
        app.request("/push", {
          method: "POST",
          headers: { "content-type": "application/json", ...(id ? { "webhook-id": id } : {}) },
          body: JSON.stringify({ push_source_name: "driver_stats_push_source", df: { driver_id: [driverId], conv_rate: [at / 1e13], acc_rate: [0.5], avg_daily_trips: [1], event_timestamp: [new Date(at).toISOString()] } }),
        });
      assert.equal((await push(999, t)).status, 200); // connects, loads the script, reads the watermark once
      const reads = async () => Number(/total_reads_processed:(\d+)/.exec(await admin.info("stats"))![1]);
      const before = await reads();
      const answers = await Promise.all([
        push(1, t + 2),
        push(1, t + 1), // older than the concurrent push above: stale, and said so to this request only
        ...Array.from({ length: 17 }, (_, i) => push(100 + i, t)),
        push(2, t, "hook-a"),
      ]);
      const bodies = await Promise.all(answers.map((a) => a.json()));
      const after = await reads();
      assert.deepEqual(answers.map((a) => a.status), answers.map(() => 200), JSON.stringify(bodies));
      assert.deepEqual([bodies[0].written, bodies[0].stale], [1, 0]);
      assert.deepEqual([bodies[1].written, bodies[1].stale], [0, 1]);
      for (const b of bodies.slice(2)) assert.deepEqual([b.status, b.written, b.stale], ["ok", 1, 0]);
      // One command per push would be at least 20 reads (one more for this INFO); pipelined, a handful.
      assert.ok(after - before <= 6, `Redis processed ${after - before} reads for 20 concurrent pushes`);
      const again = await push(2, t, "hook-a");
      assert.equal((await again.json()).status, "duplicate", "the webhook-id was marked done with its own write");

      // Redis down: every push of the failed trip answers 503, and none of them is recorded.
      await redis.stop();
      const down = await Promise.all([push(3, t, "hook-b"), push(4, t), push(5, t, "hook-c")]);
      assert.deepEqual(down.map((d) => d.status), [503, 503, 503]);
      await redis.restart();
      for (let i = 0; ; i++) {
        try {
          await online.ping!();
          break;
        } catch (e) {
          if (i > 50) throw e;
          await new Promise((r) => setTimeout(r, 200));
        }
      }
      const view = registry.view("driver_hourly_stats");
      const after503 = await online.read(view, ["driver_id=3", "driver_id=4", "driver_id=5"], ["conv_rate"]);
      assert.deepEqual(after503.map((r) => r.conv_rate.status), ["NOT_FOUND", "NOT_FOUND", "NOT_FOUND"]);
      const retried = await Promise.all([push(3, t, "hook-b"), push(5, t, "hook-c")]);
      assert.deepEqual((await Promise.all(retried.map((r) => r.json()))).map((b) => [b.status, b.written]), [["ok", 1], ["ok", 1]], "the failed webhook-ids were released");
    } finally {
      admin.disconnect();
      await online.close?.();
    }
  });
});
