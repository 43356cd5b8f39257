// @runtimes node
// Scenario 6 (reliability.md) with a real crash: the consumer runs as a child
// process with its features, checkpoints and leases in Redis. A shard is
// split mid-stream on kinesalite, the first process is SIGKILLed while it
// reads a child shard, and a second process takes over once the dead one's
// leases expire.
// - Nothing is lost; every key ends at its newest version in Redis.
// - Within each process, a key's versions arrive strictly increasing, across
//   the parent and its children; no child record is read before the parent's
//   end-of-shard checkpoint.
// - No checkpoint write is refused, and none moves backwards.
import { describe, it } from "node:test";
import assert from "node:assert/strict";
import { spawn, type ChildProcess } from "node:child_process";
import process from "node:process";
import { fileURLToPath } from "node:url";
import { DescribeStreamSummaryCommand, ListShardsCommand, SplitShardCommand } from "@aws-sdk/client-kinesis";
import { compareDecimal } from "../../mod.ts";
import { kinesisKeys, SHARD_END } from "../../plugins/sources/kinesis.ts";
import { redisStore } from "../../plugins/stores/redis/redis.ts";
import { createStream } from "../services/kinesis.ts";
import { kinesisRepo, lastPerShard, putAll, unique, until, versions, type PutResult, useKinesisTestBed } from "./kinesis-fixtures.ts";

const DRIVERS = 24;
const TTL = 1500;
const workerScript = fileURLToPath(new URL("./kinesis-crash-worker.ts", import.meta.url));

interface Line {
  proc: string;
  kind: "D" | "C";
  at: number;
  shardId?: string;
  driver?: number;
  version?: number;
  key?: string;
  value?: string;
  accepted?: boolean;
}

function startWorker(name: string, env: Record<string, string>, lines: Line[]): { proc: ChildProcess; exited: Promise<void>; output: () => string } {
  const proc = spawn(process.execPath, ["--import", "tsx", workerScript], { env: { ...process.env, ...env, WORKER_ID: name }, stdio: ["ignore", "pipe", "pipe"] });
  let partial = "";
  let tail = "";
  proc.stdout!.on("data", (d: Buffer) => {
    partial += d.toString();
    const all = partial.split("\n");
    partial = all.pop() ?? "";
    for (const l of all) {
      const [kind, at, a, b, c] = l.split(" ");
      if (kind === "D") lines.push({ proc: name, kind, at: Number(at), shardId: a, driver: Number(b), version: Number(c) });
      if (kind === "C") lines.push({ proc: name, kind, at: Number(at), key: a, value: b, accepted: c === "true" });
    }
  });
  proc.stderr!.on("data", (d: Buffer) => (tail = (tail + d.toString()).slice(-3000)));
  const exited = new Promise<void>((resolve) => proc.on("exit", () => resolve()));
  return { proc, exited, output: () => tail };
}

describe("scenario 6 with a real crash: SIGKILL mid-split, Redis checkpoints", () => {
  const bed = useKinesisTestBed({ redis: true });

  it("a killed worker's successor loses nothing, keeps per-key order, and never moves a checkpoint back", { timeout: 90_000 }, async () => {
    const stream = unique("crash");
    const project = stream.replace(/[^A-Za-z0-9_-]/g, "_");
    await createStream(bed.client, stream, 2);
    const env = { ENDPOINT: bed.svc.endpoint, STREAM: stream, REDIS_URL: bed.redis.url, PROJECT: project, LEASE_TTL_MS: String(TTL) };
    const { source, view } = kinesisRepo({ streamName: stream });
    const keys = kinesisKeys(source.name, stream);
    const store = redisStore({ url: bed.redis.url, project });
    const lines: Line[] = [];
    const puts: PutResult[] = [];
    const workers: ReturnType<typeof startWorker>[] = [];
    try {
      puts.push(...(await putAll(bed.client, stream, versions(DRIVERS, 1, 10))));
      const w1 = startWorker("p1", env, lines);
      workers.push(w1);
      puts.push(...(await putAll(bed.client, stream, versions(DRIVERS, 11, 20))));
      await until(() => `p1 checkpoints both shards\n${w1.output()}`, () => new Set(lines.filter((l) => l.kind === "C" && l.accepted).map((l) => l.key)).size >= 2, 30_000);

      const shard0 = (await bed.client.send(new ListShardsCommand({ StreamName: stream }))).Shards!.find((s) => s.ShardId === "shardId-000000000000")!;
      const mid = (BigInt(shard0.HashKeyRange!.StartingHashKey!) + BigInt(shard0.HashKeyRange!.EndingHashKey!)) / 2n;
      await bed.client.send(new SplitShardCommand({ StreamName: stream, ShardToSplit: "shardId-000000000000", NewStartingHashKey: mid.toString() }));
      await until("stream ACTIVE after the split", async () => (await bed.client.send(new DescribeStreamSummaryCommand({ StreamName: stream }))).StreamDescriptionSummary?.StreamStatus === "ACTIVE");
      puts.push(...(await putAll(bed.client, stream, versions(DRIVERS, 21, 30))));

      // SIGKILL p1 as soon as it reads a child shard.
      const isChild = (s?: string) => s === "shardId-000000000002" || s === "shardId-000000000003";
      await until(() => `p1 reads a child shard\n${w1.output()}`, () => lines.some((l) => l.proc === "p1" && l.kind === "D" && isChild(l.shardId)), 30_000);
      w1.proc.kill("SIGKILL");
      await w1.exited;
      const killedAt = Date.now();

      const w2 = startWorker("p2", env, lines);
      workers.push(w2);
      puts.push(...(await putAll(bed.client, stream, versions(DRIVERS, 31, 40))));
      const last = lastPerShard(puts);
      await until(() => `p2 checkpoints every shard\n${w2.output()}`, async () => {
        if ((await store.meta.getCheckpoint(keys.checkpoint("shardId-000000000000"))) !== SHARD_END) return false;
        for (const shard of ["shardId-000000000001", "shardId-000000000002", "shardId-000000000003"]) {
          if ((await store.meta.getCheckpoint(keys.checkpoint(shard))) !== last.get(shard)) return false;
        }
        return true;
      }, 40_000);
      w2.proc.kill("SIGTERM");
      await w2.exited;
      assert.equal(w2.proc.exitCode, 0, `p2 stopped cleanly on SIGTERM\n${w2.output()}`);

      const deliveries = lines.filter((l) => l.kind === "D");
      const seen = new Set(deliveries.map((d) => `${d.driver}/${d.version}`));
      for (let d = 1; d <= DRIVERS; d++) for (let ver = 1; ver <= 40; ver++) assert.ok(seen.has(`${d}/${ver}`), `driver ${d} version ${ver} delivered`);
      const rows = await store.read(view, Array.from({ length: DRIVERS }, (_, i) => `driver_id=${i + 1}`), ["version"]);
      assert.deepEqual(rows.map((r) => r.version.value), Array(DRIVERS).fill(40));
      const p2First = deliveries.find((d) => d.proc === "p2");
      assert.ok(p2First && p2First.at >= killedAt, "p2 delivered after the kill");

      for (const proc of ["p1", "p2"]) {
        const lastVersion = new Map<number, number>();
        for (const d of deliveries.filter((x) => x.proc === proc)) {
          const prev = lastVersion.get(d.driver!) ?? 0;
          assert.ok(d.version! > prev, `${proc}: driver ${d.driver} version ${d.version} after ${prev}`);
          lastVersion.set(d.driver!, d.version!);
        }
      }

      const writes = lines.filter((l) => l.kind === "C");
      const parentEnd = writes.find((w) => w.key === keys.checkpoint("shardId-000000000000") && w.value === SHARD_END && w.accepted);
      assert.ok(parentEnd, "the parent was checkpointed at its end");
      const firstChild = deliveries.find((d) => isChild(d.shardId))!;
      assert.ok(firstChild.at >= parentEnd.at, "no child record read before the parent's end checkpoint");
      assert.deepEqual(writes.filter((w) => !w.accepted), [], "no checkpoint write refused");
      const byKey = new Map<string, string>();
      for (const w of writes) {
        const prev = byKey.get(w.key!);
        assert.ok(prev === undefined || compareDecimal(w.value!, prev) > 0, `${w.key}: ${w.value} after ${prev}`);
        byKey.set(w.key!, w.value!);
      }
      // The dead process's leases were taken over, the live one's released.
      const leases = await store.meta.listLeases(keys.shardLeasePrefix);
      assert.ok(leases.every((l) => l.owner === ""), `all leases released: ${JSON.stringify(leases)}`);
      assert.ok(leases.some((l) => l.counter >= 2), "a lease changed hands");
    } finally {
      for (const w of workers) if (w.proc.exitCode === null && w.proc.signalCode === null) w.proc.kill("SIGKILL");
      await Promise.all(workers.map((w) => w.exited));
      await store.close();
    }
  });
});
