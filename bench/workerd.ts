/**
 * P3 on workerd: POST /push with 1 row per request, requests/s, through the
 * Worker build (`createWorker`, adapters/workers.ts) on the Upstash store,
 * against a bare Hono Worker answering 200, both bundled as wrangler would
 * (tests/fixtures/worker-bundle.ts) and served by miniflare's workerd on a
 * loopback port, loaded by the same wrk script as P3 on the other runtimes
 * (bench/http.ts). The Upstash store talks to the REST server of the tests
 * (tests/services/upstash-server.ts, in this process), which forwards each
 * command to a real redis-server started here.
 *
 *   npx tsx bench/workerd.ts [--runs 5] [--duration 8] [--small] [--results dir]
 */
import { Redis } from "ioredis";
import { Miniflare } from "miniflare";
import process from "node:process";
import { bundleWorker } from "../tests/fixtures/worker-bundle.ts";
import { startRedis } from "../tests/services/redis.ts";
import { startUpstash } from "../tests/services/upstash-server.ts";
import { freePort } from "../tests/services/system.ts";
import { assertFewErrors, errorNote, okRequests, pushScript, quiesce, recordCounts, wrk, wrkCpu, writtenNote } from "./http.ts";
import { benchMain, cpuNote, isMain, pairedEntry, paired, withCpu, type BenchOptions, type Entry } from "./lib.ts";
import { childPids } from "./worker.ts";

const CONNECTIONS = 32;
const TOKEN = "bench-token";

async function serveWorker(entry: string, bindings: Record<string, string>): Promise<{ mf: Miniflare; url: string; pid?: number }> {
  const before = new Set(workerdPids());
  const port = await freePort();
  const mf = new Miniflare({ modules: true, script: await bundleWorker(entry), compatibilityDate: "2025-09-01", bindings, host: "127.0.0.1", port });
  const url = (await mf.ready).toString().replace(/\/$/, "");
  return { mf, url, pid: workerdPids().find((p) => !before.has(p)) };
}

/** The workerd processes that miniflare started for this process. */
const workerdPids = () => childPids((cmd) => cmd.some((a) => /workerd$/.test(a)));

export async function runWorkerd(opts: BenchOptions, log: (m: string) => void = (m) => console.log(m)): Promise<{ entries: Entry[]; notes: string[]; failures: string[] }> {
  const redis = await startRedis();
  const client = new Redis(redis.url, { maxRetriesPerRequest: 1 });
  const redisPid = Number(/process_id:(\d+)/.exec(await client.info("server"))?.[1]) || undefined;
  const upstash = await startUpstash({ redisUrl: redis.url, token: TOKEN });
  const entries: Entry[] = [];
  const notes: string[] = [];
  const failures: string[] = [];
  let bare: Awaited<ReturnType<typeof serveWorker>> | undefined, freshet: Awaited<ReturnType<typeof serveWorker>> | undefined;
  try {
    bare = await serveWorker("bench/workerd-bare.ts", {});
    freshet = await serveWorker("bench/workerd-entry.ts", { UPSTASH_REDIS_REST_URL: upstash.url, UPSTASH_REDIS_REST_TOKEN: TOKEN });
    log(`P3 workerd: 1 row per request, ${CONNECTIONS} connections, ${opts.duration}s per run; Upstash REST server in the bench process`);
    let base = 0;
    if (opts.warmup > 0) {
      await wrk(bare.url, pushScript(1, (base += 1e8)), CONNECTIONS, opts.warmup);
      await wrk(freshet.url, pushScript(1, (base += 1e8)), CONNECTIONS, opts.warmup);
      await quiesce(freshet.url);
    }
    let writtenAll = 0, totalAll = 0;
    const pairs = await paired(opts.runs, async () => {
      const { result: r, cpu } = await withCpu({ workerd: bare!.pid }, () => wrk(bare!.url, pushScript(1, (base += 1e8)), CONNECTIONS, opts.duration));
      assertFewErrors(r, "P3 bare workerd");
      return { value: okRequests(r) / (r.duration_us / 1e6), notes: cpuNote(cpu) + wrkCpu(r) + errorNote(r) };
    }, async () => {
      await client.flushall();
      const before = await recordCounts(freshet!.url);
      const requestsBefore = Object.values(upstash.requests).reduce((a, b) => a + b, 0);
      const { result: r, cpu } = await withCpu({ workerd: freshet!.pid, "upstash server": process.pid, redis: redisPid }, () => wrk(freshet!.url, pushScript(1, (base += 1e8)), CONNECTIONS, opts.duration));
      assertFewErrors(r, "P3 freshet workerd");
      const w = writtenNote(before, await quiesce(freshet!.url));
      const rest = Object.values(upstash.requests).reduce((a, b) => a + b, 0) - requestsBefore;
      writtenAll += w.written;
      totalAll += w.total;
      const ok = okRequests(r);
      return { value: ok / (r.duration_us / 1e6), notes: `${w.note}, ${ok ? (rest / ok).toFixed(2) : "?"} REST calls per push, wrk p99 ${(r.p99_us / 1000).toFixed(2)} ms, ${cpuNote(cpu)}${wrkCpu(r)}${errorNote(r)}` };
    }, log);
    entries.push(pairedEntry("P3", "workerd", "requests/s", ">= 0.5", pairs));
    notes.push(`P3 workerd: ${totalAll ? ((100 * writtenAll) / totalAll).toFixed(1) : 0}% of ${totalAll} pushed rows written; ${CONNECTIONS} connections; baseline: a bare Hono Worker that drains the body (workerd closes a connection whose body was left unread); the Upstash REST server runs in the bench process, its CPU share is the bench's; per run: ${pairs.map((p) => p.notes).join(" | ")}`);
  } catch (e) {
    failures.push(`workerd: ${(e as Error)?.stack ?? e}`);
    log(`!! workerd bench failed: ${(e as Error)?.stack ?? e}`);
  } finally {
    await bare?.mf.dispose();
    await freshet?.mf.dispose();
    await upstash.stop();
    client.disconnect();
    await redis.stop();
  }
  return { entries, notes, failures };
}

if (isMain(import.meta.url)) await benchMain("workerd", runWorkerd);
