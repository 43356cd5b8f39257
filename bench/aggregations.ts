/**
 * P10: aggregation ingest. The same stream (JSON records with Kafka
 * positions, batches of 500, 1000 users) goes through the processor into a
 * view with 3 windows x 4 functions (count, sum, max, mean over 10 minutes /
 * 1 minute, 1 hour / 5 minutes, 1 day / 1 hour: 12 aggregations) and into a
 * latest-wins view of the same schema, on the same store, A B A B: events/s,
 * ratio aggregated / latest-wins (goal >= 0.7). On Redis (one Lua script per
 * fold, after one read script) and on SQLite (one transaction per fold).
 * And the read p99 of the 12 aggregates of one user against a latest-wins
 * read of the same user, on Redis (P10 (read); the goal <= 2 is this bench's, not
 * performance.md's).
 *
 * This drives the processor directly (the Kafka broker's share is measured
 * by P1), so the ratio is the cost of folding tiles against the cost of a
 * latest-wins write.
 *
 *   npx tsx bench/aggregations.ts [--runs 5] [--small] [--results dir]
 */
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import * as v from "valibot";
import { createProcessor, entity, featureRepo, kafkaSource, type OnlineStore, type RawRecord, streamFeatureView } from "../mod.ts";
import { memoryDeadLetters } from "../plugins/stores/memory.ts";
import { redisStore } from "../plugins/stores/redis/redis.ts";
import { sqliteStore } from "../plugins/stores/sqlite/index.ts";
import { startRedis } from "../tests/services/redis.ts";
import { benchMain, type BenchOptions, type BenchRun, type Entry, isMain, paired, pairedEntry, percentile } from "./lib.ts";

const WINDOWS = [["10m", "1m"], ["1h", "5m"], ["1d", "1h"]] as const;
const FUNCTIONS = ["count", "sum", "max", "mean"] as const;
const USERS = 1000;
const BATCH = 500;

const user = entity({ name: "user", joinKeys: ["user_id"] });
const schema = v.object({ user_id: v.number(), amount: v.number(), ts: v.number() });
const src = kafkaSource({ name: "p10", kafkaBootstrapServers: "127.0.0.1:1", topic: "p10", timestampField: "ts", watermarkDelay: "1m" });
const repo = featureRepo({
  project: "p10",
  definitions: [
    streamFeatureView({
      name: "p10_agg", entities: [user], source: src, schema, ttl: 0,
      aggregations: WINDOWS.flatMap(([w, s]) => FUNCTIONS.map((f) => ({ column: "amount", function: f, timeWindow: w, slideInterval: s }))),
    }),
    streamFeatureView({ name: "p10_latest", entities: [user], source: src, schema, ttl: "1d" }),
  ],
});
export const aggView = repo.view("p10_agg");
export const latestView = repo.view("p10_latest");
const only = (name: string) => featureRepo({ project: "p10", definitions: [name === "agg" ? aggView : latestView] });

export function events(n: number): RawRecord[][] {
  const t0 = Date.now() - n * 20;
  const batches: RawRecord[][] = [];
  for (let i = 0; i < n; i += BATCH) {
    const b: RawRecord[] = [];
    for (let j = i; j < Math.min(n, i + BATCH); j++) {
      b.push({ value: JSON.stringify({ user_id: (j * 7919) % USERS, amount: j % 97, ts: t0 + j * 20 - (j % 13) * 100 }), position: { kind: "kafka", topic: "p10", partition: 0, offset: String(j) } });
    }
    batches.push(b);
  }
  return batches;
}

/** Events/s of one cold run of the stream into one view on a fresh store. */
export async function ingest(kind: "agg" | "latest", open: () => OnlineStore, batches: RawRecord[][]): Promise<number> {
  const store = open();
  const processor = createProcessor({ registry: only(kind), online: store, deadLetters: memoryDeadLetters() });
  await processor.process("p10", batches[0].slice(0, 1)); // connect, load scripts
  const started = performance.now();
  let n = 0;
  for (const b of batches) {
    const r = await processor.process("p10", b);
    n += b.length;
    if (r.invalid || r.late) throw new Error(`P10: ${r.invalid} invalid, ${r.late} late`);
  }
  const s = (performance.now() - started) / 1000;
  await store.close?.();
  return n / s;
}

async function readP99(store: OnlineStore, view: typeof aggView, features: string[], reads: number): Promise<number> {
  const ms: number[] = [];
  for (let i = 0; i < reads; i++) {
    const t = performance.now();
    await store.read(view, [`user_id=${i % USERS}`], features);
    ms.push(performance.now() - t);
  }
  return percentile(ms, 99);
}

export async function runAggregations(opts: BenchOptions): Promise<BenchRun> {
  const entries: Entry[] = [];
  const notes: string[] = [];
  const failures: string[] = [];
  const n = opts.small ? 2000 : 50_000;
  const batches = events(n);
  const redis = await startRedis();
  const dir = mkdtempSync(join(tmpdir(), "freshet-p10-"));
  let projects = 0;
  try {
    const log = (m: string) => console.log(m);
    console.log(`P10 redis: ${n} events in batches of ${BATCH}, ${USERS} users, 12 aggregations vs latest-wins`);
    const onRedis = () => redisStore({ url: redis.url, project: `p10_${++projects}` });
    const r = await paired(opts.runs, () => ingest("latest", onRedis, batches), () => ingest("agg", onRedis, batches), log);
    entries.push({ ...pairedEntry("P10", "node", "events/s, Kafka-positioned batches -> Redis, 3 windows x 4 functions vs latest-wins", ">= 0.7", r) });
    console.log(`P10 sqlite: the same into a SQLite file`);
    const onSqlite = () => sqliteStore({ path: join(dir, `p10_${++projects}.db`) });
    const s = await paired(opts.runs, () => ingest("latest", onSqlite, batches), () => ingest("agg", onSqlite, batches), log);
    entries.push({ ...pairedEntry("P10", "node", "events/s, batches -> SQLite (one transaction per fold), 3 windows x 4 functions vs latest-wins", ">= 0.7", s) });
    // Reads: both views filled with the same stream on one Redis project.
    const store = redisStore({ url: redis.url, project: `p10_read_${++projects}` });
    const both = createProcessor({ registry: repo, online: store, deadLetters: memoryDeadLetters() });
    for (const b of batches) await both.process("p10", b);
    const reads = opts.small ? 200 : 5000;
    const names = aggView.aggregations!.map((a) => a.name);
    const rp = await paired(opts.runs, () => readP99(store, latestView, ["amount"], reads), () => readP99(store, aggView, names, reads), log);
    entries.push({ ...pairedEntry("P10", "node", "read p99 ms, 12 aggregates of 1 user (one script call) vs a latest-wins read, Redis", "<= 2", rp) });
    await store.close();
    notes.push(
      "P10 drives the processor directly with Kafka positions (no broker: P1 measures that share); a fold is one read script plus one write script on Redis, one read plus one transaction on SQLite, against one script / one transaction for latest-wins.",
      "P10 (read)'s goal (<= 2) is this bench's own; performance.md states none for the read.",
    );
  } catch (e) {
    failures.push(String((e as Error)?.stack ?? e));
  } finally {
    await redis.stop();
    rmSync(dir, { recursive: true, force: true });
  }
  return { entries, notes, failures };
}

if (isMain(import.meta.url)) await benchMain("aggregations", runAggregations);
