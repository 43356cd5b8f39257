// @runtimes node
// Reliability scenario 15, exactly-once aggregations: a real `freshet consume`
// process folds a Kafka topic (produced with kcat, event times shuffled within
// the watermark delay) into count, sum, min, max and last-N tiles, on a real
// redis-server and on a SQLite file, and is SIGKILLed at random points many
// times (always between two applied marks: after some progress, before the
// end). Every window read at the end equals a brute-force computation over
// the raw events, exactly: a redelivery after a kill folds nothing twice,
// and nothing is lost.
import { describe, it } from "node:test";
import assert from "node:assert/strict";
import { mkdtempSync, rmSync, symlinkSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import process from "node:process";
import { join } from "node:path";
import * as v from "valibot";
import { type AggregatingStore, entity, featureRepo, kafkaSource, type OnlineStore, streamFeatureView, windowRange } from "../../mod.ts";
import { redisStore } from "../../plugins/stores/redis/redis.ts";
import { sqliteStore } from "../../plugins/stores/sqlite/index.ts";
import { matchesReference, prng, reference, type RefEvent } from "../../testing/agg-reference.ts";
import { kcatProduce, root, startCli } from "../fixtures/cli-harness.ts";
import { caughtUp, offsets, sleep, unique, until, useKafkaTestBed } from "../fixtures/kafka-harness.ts";

const bed = useKafkaTestBed();

const N = 4000;
const KEYS = 6;
const KILLS = 6;
/** A killed consumer's partition moves to the next one after 4 s, not kafkajs' 30 s. */
const FAST_FAILOVER = { FRESHET_KAFKA_SESSION_TIMEOUT_MS: "4000" };
const AGGS = [
  { column: "amount", function: "count", timeWindow: "lifetime" },
  { column: "amount", function: "sum", timeWindow: "lifetime" },
  { column: "amount", function: "count", timeWindow: "1d", slideInterval: "1h" },
  { column: "amount", function: "sum", timeWindow: "1d", slideInterval: "1h" },
  { column: "amount", function: "min", timeWindow: "1d", slideInterval: "1h" },
  { column: "amount", function: "max", timeWindow: "1d", slideInterval: "1h" },
  { column: "amount", function: "sum", timeWindow: "2h", slideInterval: "5m" },
  { column: "category", function: "lastN", timeWindow: "1d", slideInterval: "1h", n: 5 },
  { column: "category", function: "lastDistinctN", timeWindow: "1d", slideInterval: "1h", n: 3 },
];

function writeRepo(dir: string, o: { project: string; topic: string; groupId: string }): string {
  symlinkSync(join(root, "node_modules"), join(dir, "node_modules"), "dir");
  const path = join(dir, "feature_repo.ts");
  writeFileSync(path, `import * as v from "valibot";
import { entity, featureRepo, kafkaSource, streamFeatureView } from ${JSON.stringify(join(root, "mod.ts"))};
const user = entity({ name: "user", joinKeys: ["user_id"] });
const src = kafkaSource({ name: "agg_src", kafkaBootstrapServers: ${JSON.stringify(bed.kafkaSvc.brokers)}, topic: ${JSON.stringify(o.topic)}, groupId: ${JSON.stringify(o.groupId)}, timestampField: "ts", watermarkDelay: "1m", batchSize: 40, lingerMs: 20 });
export default featureRepo({ project: ${JSON.stringify(o.project)}, definitions: [src, streamFeatureView({
  name: "agg_view", entities: [user], source: src, ttl: 0,
  schema: v.object({ user_id: v.number(), amount: v.number(), category: v.string(), ts: v.number() }),
  aggregations: ${JSON.stringify(AGGS)},
})] });
`);
  return path;
}

/** The same view, in this process, to read what the consumer wrote. */
const localView = (project: string) =>
  featureRepo({
    project,
    definitions: [streamFeatureView({
      name: "agg_view",
      entities: [entity({ name: "user", joinKeys: ["user_id"] })],
      source: kafkaSource({ name: "agg_src", kafkaBootstrapServers: "127.0.0.1:1", topic: "x", timestampField: "ts", watermarkDelay: "1m" }),
      ttl: 0,
      schema: v.object({ user_id: v.number(), amount: v.number(), category: v.string(), ts: v.number() }),
      aggregations: AGGS as never,
    })],
  }).view("agg_view");

async function scenario(kind: "redis" | "sqlite") {
  const dir = mkdtempSync(join(tmpdir(), `freshet-agg-crash-${kind}-`));
  const project = unique("agg15").replace(/-/g, "_");
  const topic = unique("agg15");
  const groupId = unique("g-agg15");
  const repo = writeRepo(dir, { project, topic, groupId });
  const dbFile = join(dir, "online.db");
  const storeUrl = kind === "redis" ? bed.redis.url : `sqlite:${dbFile}`;
  const args = ["consume", repo, "--store", storeUrl, "--data-dir", join(dir, "data"), "--port", "0", "--host", "127.0.0.1"];
  const view = localView(project);
  const store: OnlineStore & AggregatingStore = kind === "redis" ? redisStore({ url: bed.redis.url, project }) : sqliteStore({ path: dbFile });
  const markKey = `agg_view:kafka:${topic}:0`;
  try {
    // Event times over the last 3 hours, shuffled within 50 s (the watermark delay is 1 minute): none is late.
    const rnd = prng(kind === "redis" ? 151 : 152);
    const start = Date.now() - 3 * 3_600_000;
    const events: RefEvent[] = [];
    const lines: string[] = [];
    for (let i = 0; i < N; i++) {
      const ts = Math.floor(start + (i * 2.5 * 3_600_000) / N - rnd() * 50_000);
      const row = { user_id: Math.floor(rnd() * KEYS), amount: Math.floor(rnd() * 1000) - 300, category: `c${Math.floor(rnd() * 9)}`, ts };
      events.push({ entityKey: `user_id=${row.user_id}`, eventTime: ts, row });
      lines.push(JSON.stringify(row));
    }
    await kcatProduce(bed.kafkaSvc.brokers, topic, lines, { partition: 0 });
    if (process.env.AGG15_DEBUG) console.error("produced");

    let kills = 0;
    let last = -1;
    /** Records folded but not committed to Kafka at a kill: what the next run gets again. */
    let redelivered = 0;
    while (kills < KILLS) {
      const cli = await startCli(args, { env: FAST_FAILOVER });
      // Let it fold past the last mark, then kill it at a random point.
      const target = last + 1 + Math.floor(rnd() * 300);
      try {
        await until("progress past the mark", async () => Number((await store.getAppliedMark(markKey)) ?? -1) >= Math.min(target, N - 1), 60_000, 2);
      } catch (e) {
        await cli.child.stop("SIGKILL");
        throw new Error(`${(e as Error).message}\n${cli.output()}`);
      }
      if (rnd() < 0.5) await sleep(Math.floor(rnd() * 40)); // else at once: the batch just folded is likely not committed yet
      const mark = Number((await store.getAppliedMark(markKey)) ?? -1);
      if (process.env.AGG15_DEBUG) console.error("kill at", mark);
      await cli.child.stop("SIGKILL");
      const committed = (await offsets(bed.admin, groupId, topic)).committed[0] ?? 0;
      redelivered += Math.max(0, mark + 1 - Math.max(0, committed));
      if (mark >= N - 1) break; // finished before this kill: the rest of the run proves nothing more
      assert.ok(mark > last, `the consumer made progress before kill ${kills + 1} (mark ${mark}, was ${last})`);
      last = mark;
      kills++;
    }
    assert.ok(kills >= 3, `at least 3 kills in the middle of the stream, got ${kills}`);
    // The last run, to the end.
    const cli = await startCli(args, { env: FAST_FAILOVER });
    try {
      await until("the group caught up", () => caughtUp(bed.admin, groupId, topic), 90_000, 100);
    } finally {
      assert.equal(await cli.stop(), 0, cli.output());
    }
    assert.equal(await store.getAppliedMark(markKey), String(N - 1));

    const keys = Array.from({ length: KEYS }, (_, k) => `user_id=${k}`);
    const names = view.aggregations!.map((a) => a.name);
    let reads: Awaited<ReturnType<typeof store.read>>;
    let at: number;
    // Read at an instant whose windows do not move while the read runs.
    for (;;) {
      const before = Date.now();
      reads = await store.read(view, keys, names);
      at = Date.now();
      if (view.aggregations!.every((a) => windowRange(a, before).start === windowRange(a, at).start)) break;
    }
    let checked = 0;
    for (let k = 0; k < KEYS; k++) {
      for (const a of view.aggregations!) {
        const want = reference(a, events, keys[k], at);
        const problem = matchesReference(a, reads[k][a.name].value, want);
        assert.equal(problem, undefined, `${kind}: ${a.name} of ${keys[k]} after ${kills} kills: ${problem}`);
        checked++;
      }
    }
    const total = reads.reduce((s, r) => s + (r.count_amount_lifetime.value as number), 0);
    assert.equal(total, N, "every event counted exactly once");
    console.log(`[scenario 15] ${kind}: ${N} events, ${kills} SIGKILLs, ${redelivered} records folded but not committed at the kills (delivered again), ${checked} windows equal to the reference`);
  } finally {
    await store.close?.();
    rmSync(dir, { recursive: true, force: true });
  }
}

describe("scenario 15: exactly-once aggregations under SIGKILL", () => {
  it("Kafka -> Redis", { timeout: 300_000 }, () => scenario("redis"));
  it("Kafka -> SQLite", { timeout: 300_000 }, () => scenario("sqlite"));
});
