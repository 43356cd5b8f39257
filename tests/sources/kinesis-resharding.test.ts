// Scenario 6 (reliability.md): a shard is split mid-stream on kinesalite and
// the consumer is killed once, in the window between a store write and its
// checkpoint, then a new worker takes over.
// - Nothing is lost: every version of every key is delivered, and each key
//   ends at its newest version.
// - Per-key order across parent and children: within one worker, a key's
//   versions arrive strictly increasing; a child shard is first read only
//   after its parent's end-of-shard checkpoint.
// - The checkpoint never moves backwards.
// The kill is in-process: the first worker's metadata calls and batches hang
// for good (no lease released, no checkpoint written), as a dead process's do.
import { describe, it } from "node:test";
import assert from "node:assert/strict";
import { DescribeStreamSummaryCommand, ListShardsCommand, SplitShardCommand } from "@aws-sdk/client-kinesis";
import { compareDecimal, consume, createProcessor, type SourceBatch, type StreamSource } from "../../mod.ts";
import { kinesisConsumer, kinesisKeys, SHARD_END } from "../../plugins/sources/kinesis.ts";
import { memoryDeadLetters, memoryStore } from "../../plugins/stores/memory.ts";
import { createStream, kinesisClient } from "../services/kinesis.ts";
import { batchGate, decodeJson, kinesisRepo, lastPerShard, putAll, sleep, spyMeta, unique, until, versions, type PutResult, useKinesisTestBed } from "./kinesis-fixtures.ts";

const DRIVERS = 24;
const TTL = 1500;

interface Delivery {
  worker: string;
  shardId: string;
  driver: number;
  version: number;
  at: number;
}

/** Records every delivered record (before processing) under the worker's name. */
function recording(source: StreamSource, worker: string, log: Delivery[], gate: ReturnType<typeof batchGate>): StreamSource {
  return {
    ...source,
    run(onBatch, signal) {
      return source.run(async (batch: SourceBatch) => {
        await gate.pass();
        const at = Date.now();
        for (const r of batch.records) {
          const row = decodeJson(r.value);
          if (r.position.kind === "kinesis" && row) log.push({ worker, shardId: r.position.shardId, driver: row.driver_id as number, version: row.version as number, at });
        }
        return onBatch(batch);
      }, signal);
    },
  };
}

describe("scenario 6: Kinesis resharding with a kill and restart", () => {
  const bed = useKinesisTestBed();

  it("loses nothing, keeps per-key order across parent and children, and never moves a checkpoint backwards", { timeout: 60_000 }, async () => {
    const stream = unique("reshard");
    await createStream(bed.client, stream, 2);
    const { source, registry, view } = kinesisRepo({ streamName: stream, endpoint: bed.svc.endpoint, region: "us-east-1", credentials: { accessKeyId: "a", secretAccessKey: "b" }, pollIntervalMs: 50 });
    const store = memoryStore();
    const processor = createProcessor({ registry, online: store, deadLetters: memoryDeadLetters() });
    const keys = kinesisKeys(source.name, stream);
    const log: Delivery[] = [];
    const puts: PutResult[] = [];

    // Sample every checkpoint as the store holds it, to see any step back.
    const samples = new Map<string, string[]>();
    let sampling = true;
    const sampler = (async () => {
      while (sampling) {
        for (const shard of ["0", "1", "2", "3"].map((i) => `shardId-00000000000${i}`)) {
          const v = await store.meta.getCheckpoint(keys.checkpoint(shard));
          if (v === undefined) continue;
          const list = samples.get(shard) ?? [];
          if (list[list.length - 1] !== v) list.push(v);
          samples.set(shard, list);
        }
        await sleep(10);
      }
    })();

    // Worker 1.
    puts.push(...(await putAll(bed.client, stream, versions(DRIVERS, 1, 10))));
    const spy1 = spyMeta(store.meta);
    const gate1 = batchGate();
    const client1 = kinesisClient(bed.svc.endpoint);
    const ac1 = new AbortController();
    const w1 = kinesisConsumer(source, { meta: spy1.meta, workerId: "w1", client: client1, leaseTtlMs: TTL, discoverEveryMs: 200 });
    const run1 = consume(recording(w1, "w1", log, gate1), processor, { signal: ac1.signal, logEveryMs: 0 });
    run1.catch(() => {});
    puts.push(...(await putAll(bed.client, stream, versions(DRIVERS, 11, 20))));
    await until("w1 checkpointed both shards", () => spy1.writes.filter((w) => w.accepted).map((w) => w.key).filter((k, i, a) => a.indexOf(k) === i).length >= 2);

    // Split shard 0 mid-stream.
    const shard0 = (await bed.client.send(new ListShardsCommand({ StreamName: stream }))).Shards!.find((s) => s.ShardId === "shardId-000000000000")!;
    const mid = (BigInt(shard0.HashKeyRange!.StartingHashKey!) + BigInt(shard0.HashKeyRange!.EndingHashKey!)) / 2n;
    await bed.client.send(new SplitShardCommand({ StreamName: stream, ShardToSplit: "shardId-000000000000", NewStartingHashKey: mid.toString() }));
    await until("stream ACTIVE after the split", async () => (await bed.client.send(new DescribeStreamSummaryCommand({ StreamName: stream }))).StreamDescriptionSummary?.StreamStatus === "ACTIVE");
    puts.push(...(await putAll(bed.client, stream, versions(DRIVERS, 21, 30))));

    // Kill w1 when it is about to checkpoint a child shard: its batch is in
    // the store, its checkpoint never written, its leases never released.
    await until("w1 reads a child shard", () => log.some((d) => d.worker === "w1" && (d.shardId.endsWith("2") || d.shardId.endsWith("3"))));
    const killed = new Promise<void>((resolve) => {
      spy1.hooks.beforeCheckpoint = (key) => {
        if (key.endsWith("2") || key.endsWith("3")) {
          spy1.kill();
          gate1.kill();
          resolve();
        }
      };
    });
    puts.push(...(await putAll(bed.client, stream, versions(DRIVERS, 31, 32))));
    await killed;
    const killedAt = Date.now();
    ac1.abort(); // its loops stop polling; everything it still awaits hangs for good
    client1.destroy();
    const w1Delivered = log.length;

    // Worker 2 takes over once w1's leases expire.
    const spy2 = spyMeta(store.meta);
    const ac2 = new AbortController();
    const w2 = kinesisConsumer(source, { meta: spy2.meta, workerId: "w2", leaseTtlMs: TTL, discoverEveryMs: 200 });
    const run2 = consume(recording(w2, "w2", log, batchGate()), processor, { signal: ac2.signal, logEveryMs: 0 });
    puts.push(...(await putAll(bed.client, stream, versions(DRIVERS, 33, 40))));

    const last = lastPerShard(puts);
    try {
      await until(() => `w2 to checkpoint every shard (${JSON.stringify(spy2.writes.slice(-4))})`, async () => {
        if ((await store.meta.getCheckpoint(keys.checkpoint("shardId-000000000000"))) !== SHARD_END) return false;
        for (const shard of ["shardId-000000000001", "shardId-000000000002", "shardId-000000000003"]) {
          if ((await store.meta.getCheckpoint(keys.checkpoint(shard))) !== last.get(shard)) return false;
        }
        return true;
      }, 30_000);
    } finally {
      ac2.abort();
      await run2;
      sampling = false;
      await sampler;
    }

    // Nothing lost, newest values.
    const seen = new Set(log.map((d) => `${d.driver}/${d.version}`));
    for (let d = 1; d <= DRIVERS; d++) for (let ver = 1; ver <= 40; ver++) assert.ok(seen.has(`${d}/${ver}`), `driver ${d} version ${ver} delivered`);
    const rows = await store.read(view, Array.from({ length: DRIVERS }, (_, i) => `driver_id=${i + 1}`), ["version"]);
    assert.deepEqual(rows.map((r) => r.version.value), Array(DRIVERS).fill(40));
    assert.ok(puts.some((p) => p.shardId === "shardId-000000000002") && puts.some((p) => p.shardId === "shardId-000000000003"), "records went to both children");

    // The kill fell between a store write and its checkpoint: w2 read some of w1's records again.
    const w1Seen = new Set(log.slice(0, w1Delivered).map((d) => `${d.driver}/${d.version}`));
    assert.ok(log.slice(w1Delivered).some((d) => w1Seen.has(`${d.driver}/${d.version}`)), "w2 redelivered the uncheckpointed window");
    const w2First = log.find((d) => d.worker === "w2");
    assert.ok(w2First && w2First.at >= killedAt + TTL / 2, "w2 waited for w1's leases to expire");

    // Per-key order within each worker, across the parent and its children.
    for (const worker of ["w1", "w2"]) {
      const lastVersion = new Map<number, number>();
      for (const d of log.filter((x) => x.worker === worker)) {
        const prev = lastVersion.get(d.driver) ?? 0;
        assert.ok(d.version > prev, `${worker}: driver ${d.driver} version ${d.version} after ${prev}`);
        lastVersion.set(d.driver, d.version);
      }
    }

    // Parent before children: every child delivery after the parent's end checkpoint.
    const writes = [...spy1.writes, ...spy2.writes];
    const parentEnd = writes.find((w) => w.key === keys.checkpoint("shardId-000000000000") && w.value === SHARD_END && w.accepted);
    assert.ok(parentEnd, "the parent was checkpointed at its end");
    const firstChild = log.filter((d) => d.shardId !== "shardId-000000000000" && d.shardId !== "shardId-000000000001")[0];
    assert.ok(firstChild.at >= parentEnd.at, `child ${firstChild.shardId} first read at ${firstChild.at}, parent ended at ${parentEnd.at}`);

    // Checkpoints never move backwards: as requested, as accepted, and as the store held them.
    assert.ok(writes.every((w) => w.accepted), `no checkpoint write refused: ${JSON.stringify(writes.filter((w) => !w.accepted))}`);
    for (const spy of [spy1, spy2]) {
      const byKey = new Map<string, string>();
      for (const w of spy.writes) {
        const prev = byKey.get(w.key);
        assert.ok(prev === undefined || compareDecimal(w.value, prev) > 0, `${w.key}: ${w.value} after ${prev}`);
        byKey.set(w.key, w.value);
      }
    }
    for (const [shard, list] of samples) {
      for (let i = 1; i < list.length; i++) assert.ok(compareDecimal(list[i], list[i - 1]) > 0, `${shard} checkpoint moved back from ${list[i - 1]} to ${list[i]}`);
    }
  });
});
