/**
 * Concurrent pushes share the trips to the store (group commit): on Redis,
 * the host's store makes the writes of one turn of the event loop one script
 * call in one write (Redis counts its reads), and every push keeps its own answer:
 * counts, an older row stale against a concurrent newer one, its webhook-id,
 * and, with Redis down, a 503 for each push of the failed trip and nothing
 * recorded for it. The pushes of one turn are one write-script call
 * (INFO commandstats), and a push with an invalid row among them is
 * refused alone.
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
  /** The host's stores for `project` on this Redis, and the push app over them. */
  const pushOn = async (project: string) => {
    const registry = featureRepo({ project, definitions: [driverHourlyStats] });
    const { online, offline } = await openStores(redis.url, dir, { project });
    const processor = createProcessor({ registry, online, offline, deadLetters: fileDeadLetters(join(dir, `dlq-${project}.jsonl`)) });
    return { registry, online, app: pushApp({ processor }) };
  };

  it("20 concurrent pushes reach Redis in a few reads, each answered with its own counts and webhook-id", { timeout: 60_000 }, async () => {
    const { registry, online, app } = await pushOn("group");
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

  it("concurrent pushes are one write-script call, each answered exactly; an invalid row fails its own push only", { timeout: 60_000 }, async () => {
    const { registry, online, app } = await pushOn("group1");
    const admin = new Redis(redis.url);
    try {
      const t = Date.now() - 1000;
      const push = (ids: number[], at: number, conv: unknown[] = ids.map(() => 0.5), id?: string) =>
        app.request("/push", {
          method: "POST",
          headers: { "content-type": "application/json", ...(id ? { "webhook-id": id } : {}) },
          body: JSON.stringify({ push_source_name: "driver_stats_push_source", df: { driver_id: ids, conv_rate: conv, acc_rate: ids.map(() => 0.5), avg_daily_trips: ids.map(() => 1), event_timestamp: ids.map(() => new Date(at).toISOString()) } }),
        });
      assert.equal((await push([999], t)).status, 200); // connects and loads the script
      const scripts = async () => [...(await admin.info("commandstats")).matchAll(/^cmdstat_(?:eval|evalsha):calls=(\d+)/gm)].reduce((n, m) => n + Number(m[1]), 0);
      const before = await scripts();
      const answers = await Promise.all([
        push([1], t + 2),
        push([1], t + 1), // older than the push above, in the same call: stale, for this request only
        push([10, 11, 12], t),
        push([20, 21], t, [0.5, "not a number"]), // one bad row: this push is refused, whole
        ...Array.from({ length: 8 }, (_, i) => push([100 + i], t)),
        push([3], t - 10 * 86_400_000), // older than the view's ttl: expired, not written
      ]);
      const bodies = await Promise.all(answers.map((a) => a.json()));
      const calls = (await scripts()) - before;
      assert.deepEqual(answers.map((a) => a.status), [200, 200, 200, 422, ...Array(8).fill(200), 200], JSON.stringify(bodies));
      assert.deepEqual([bodies[0].written, bodies[0].stale], [1, 0]);
      assert.deepEqual([bodies[1].written, bodies[1].stale], [0, 1]);
      assert.deepEqual([bodies[2].written, bodies[2].stale, bodies[2].records], [3, 0, 3]);
      assert.equal(bodies[3].error.code, "invalid_rows");
      assert.equal(bodies[3].error.issues[0].row, 1);
      for (const b of bodies.slice(4, 12)) assert.deepEqual([b.status, b.written, b.stale, b.expired], ["ok", 1, 0, 0]);
      assert.deepEqual([bodies[12].written, bodies[12].expired], [0, 1]);
      assert.equal(calls, 1, `the 12 valid concurrent pushes made ${calls} script calls`);
      const view = registry.view("driver_hourly_stats");
      const got = await online.read(view, ["driver_id=1", "driver_id=12", "driver_id=20", "driver_id=21", "driver_id=107"], ["conv_rate"]);
      assert.deepEqual(got.map((r) => r.conv_rate.status), ["PRESENT", "PRESENT", "NOT_FOUND", "NOT_FOUND", "PRESENT"]);

      // A lone push is not held back for company, and answers alone.
      const lone = await push([30], t, [0.25], "hook-lone");
      assert.deepEqual(((await lone.json()) as { written: number }).written, 1);
      assert.equal(((await (await push([30], t, [0.25], "hook-lone")).json()) as { status: string }).status, "duplicate");
    } finally {
      admin.disconnect();
      await online.close?.();
    }
  });
});
