// Read-ahead of the Kinesis shard loop: while a batch is being written and
// checkpointed, the next GetRecords call goes out at its usual time (200 ms
// after the last answer) instead of after the checkpoint; the records read
// ahead are handed over only once the batch before them is acknowledged, so
// order, exactly-once delivery to the processor and the checkpoints are as
// without it, and at most one call is ever ahead of the acknowledged batches.
import { describe, it } from "node:test";
import assert from "node:assert/strict";
import { consume, createProcessor, type MetaStore } from "../../mod.ts";
import { kinesisConsumer, kinesisKeys } from "../../plugins/sources/kinesis.ts";
import { memoryDeadLetters, memoryStore } from "../../plugins/stores/memory.ts";
import { createStream, kinesisClient } from "../services/kinesis.ts";
import { decodeJson, kinesisRepo, lastPerShard, putAll, sleep, unique, until, useKinesisTestBed, versions } from "./kinesis-fixtures.ts";

const CHECKPOINT_MS = 700;

/** `meta` whose checkpoint writes take CHECKPOINT_MS each; `done` holds when each write finished. */
function slowCheckpoints(meta: MetaStore) {
  const done: number[] = [];
  const slow: MetaStore = {
    begin: (k, f, t) => meta.begin(k, f, t),
    abandon: (k, t) => meta.abandon(k, t),
    settle: (k, f, t) => meta.settle(k, f, t),
    getWatermark: (k) => meta.getWatermark(k),
    advanceWatermark: (k, t) => meta.advanceWatermark(k, t),
    getCheckpoint: (k) => meta.getCheckpoint(k),
    async setCheckpoint(key, value, fence) {
      await sleep(CHECKPOINT_MS);
      const accepted = await meta.setCheckpoint(key, value, fence);
      done.push(Date.now());
      return accepted;
    },
    acquireLease: (k, o, t) => meta.acquireLease(k, o, t),
    releaseLease: (k, o) => meta.releaseLease(k, o),
    listLeases: (p) => meta.listLeases(p),
  };
  return { meta: slow, done };
}

describe("Kinesis shard read-ahead", () => {
  const bed = useKinesisTestBed();

  it("sends the next GetRecords while a slow checkpoint is written, one call ahead at most, and delivers every record once, in order", { timeout: 60_000 }, async () => {
    const stream = unique("ahead");
    await createStream(bed.client, stream, 1);
    const puts = await putAll(bed.client, stream, versions(1, 1, 40));
    const { source, registry } = kinesisRepo({
      streamName: stream, endpoint: bed.svc.endpoint, region: "us-east-1",
      credentials: { accessKeyId: "a", secretAccessKey: "b" }, pollIntervalMs: 100, limit: 10,
    });
    const store = memoryStore();
    const { meta, done } = slowCheckpoints(store.meta);
    // The GetRecords calls as the client sends and receives them.
    const client = kinesisClient(bed.svc.endpoint);
    const calls: { sent: number; answered?: number; records?: number }[] = [];
    client.middlewareStack.add((next, context) => async (args) => {
      if ((context as { commandName?: string }).commandName !== "GetRecordsCommand") return next(args);
      const call: (typeof calls)[number] = { sent: Date.now() };
      calls.push(call);
      const out = await next(args);
      call.answered = Date.now();
      call.records = ((out.output as { Records?: unknown[] }).Records ?? []).length;
      return out;
    }, { step: "initialize", name: "readAheadTest" });
    const processor = createProcessor({ registry, online: store, deadLetters: memoryDeadLetters() });
    const consumer = kinesisConsumer(source, { meta, client, workerId: "w", leaseTtlMs: 10_000, discoverEveryMs: 1000 });
    const keys = kinesisKeys(source.name, stream);
    const delivered: number[] = [];
    const ac = new AbortController();
    const run = consume(consumer, processor, {
      signal: ac.signal, logEveryMs: 0,
      onBatch: (_r, b) => delivered.push(...b.records.map((r) => decodeJson(r.value)!.version as number)),
    });
    const [[shard, lastSeq]] = [...lastPerShard(puts)];
    try {
      await until("the shard checkpointed at its last record", async () => (await store.meta.getCheckpoint(keys.checkpoint(shard))) === lastSeq, 30_000);
    } finally {
      ac.abort();
      await run;
      client.destroy();
    }

    assert.deepEqual(delivered, Array.from({ length: 40 }, (_, i) => i + 1), "every record once, in order");
    assert.ok(done.length >= 4, `4 batches checkpointed (${done.length})`);
    // The second call went out while the first batch's checkpoint was still being written.
    assert.ok(calls.length >= 2 && calls[1].sent < done[0], `call 2 at +${calls[1].sent - calls[0].sent} ms, first checkpoint done at +${done[0] - calls[0].sent} ms`);
    for (let i = 1; i < calls.length; i++) {
      const prev = calls[i - 1];
      if (prev.answered === undefined) continue;
      // The per-shard spacing holds: at least 200 ms after the previous answer.
      assert.ok(calls[i].sent - prev.answered >= 200, `call ${i + 1} came ${calls[i].sent - prev.answered} ms after the answer to call ${i}`);
    }
    // One call ahead at most: before the k-th checkpoint is done, at most k + 1 calls were sent.
    done.forEach((at, k) => {
      const sent = calls.filter((c) => c.sent < at).length;
      assert.ok(sent <= k + 2, `${sent} calls sent before checkpoint ${k + 1} was written`);
    });
  });
});
