// Independent Kinesis applications (issue 13 item 10): two applications of one
// source on one stream, sharing one store's metadata, each read every record,
// because checkpoints and leases are kept per application. A worker of an
// application that already read the stream resumes from its own checkpoints.
import { describe, it } from "node:test";
import assert from "node:assert/strict";
import { consume, createProcessor, kinesisSource, type MetaStore } from "../../mod.ts";
import { kinesisConsumer, kinesisKeys } from "../../plugins/sources/kinesis.ts";
import { memoryDeadLetters, memoryStore } from "../../plugins/stores/memory.ts";
import { createStream } from "../services/kinesis.ts";
import { kinesisRepo, lastPerShard, putAll, unique, until, useKinesisTestBed, versions } from "./kinesis-fixtures.ts";

const bed = useKinesisTestBed();
const credentials = { accessKeyId: "a", secretAccessKey: "b" };

describe("Kinesis applications", () => {
  it("two applications on one stream each read all 200 records; a restarted one resumes from its own checkpoints", { timeout: 60_000 }, async () => {
    const stream = unique("apps");
    await createStream(bed.client, stream, 2);
    const store = memoryStore();
    const conn = { streamName: stream, endpoint: bed.svc.endpoint, region: "us-east-1", credentials, pollIntervalMs: 50 };
    const results = await putAll(bed.client, stream, versions(20, 1, 10));
    assert.equal(results.length, 200);

    /** Runs one worker of `application` (set on the definition) until `expect` records were acknowledged and every shard is checkpointed at `last`. */
    async function runApp(application: string, last: Map<string, string>, expect: number, during?: () => Promise<void>) {
      const { source, registry } = kinesisRepo({ ...conn, application });
      const consumer = kinesisConsumer(source, { meta: store.meta, workerId: `${application}-worker`, leaseTtlMs: 2000, discoverEveryMs: 200 });
      assert.equal(consumer.application, application);
      const processor = createProcessor({ registry, online: store, deadLetters: memoryDeadLetters() });
      const keys = kinesisKeys(application, stream);
      const ac = new AbortController();
      let read = 0;
      const done = consume(consumer, processor, { signal: ac.signal, logEveryMs: 0, onBatch: (_r, b) => (read += b.records.length) });
      try {
        await during?.();
        await until(() => `${application} to read ${expect} records (read ${read})`, async () => read >= expect && (await checkpointed(store.meta, keys, last)));
      } finally {
        ac.abort();
        await done;
      }
      return read;
    }

    // Both at once: neither takes the other's shards, and each reads everything.
    const last = lastPerShard(results);
    const [a, b] = await Promise.all([runApp("app-a", last, 200), runApp("app-b", last, 200)]);
    assert.deepEqual([a, b], [200, 200], "each application read every record once");

    // app-a again, with 20 more records: it reads those only.
    const more = await putAll(bed.client, stream, versions(20, 11, 11));
    const again = await runApp("app-a", lastPerShard([...results, ...more]), 20);
    assert.equal(again, 20, "a restarted application resumes from its own checkpoints");

    // The source's name is the default application, distinct from both.
    const { source } = kinesisRepo(conn);
    assert.equal(kinesisConsumer(source, { meta: store.meta }).application, source.name);
    assert.equal(kinesisConsumer(kinesisSource({ ...source, application: "app-a" }), { meta: store.meta, application: "app-c" }).application, "app-c", "the consumer option wins over the definition");
  });

  it("refuses an application name that cannot be part of a metadata key", () => {
    assert.throws(() => kinesisRepo({ streamName: "s", application: "a/b" }), /application "a\/b" must be letters, digits/);
    assert.throws(() => kinesisRepo({ streamName: "s", application: "" }), /application "" must be letters, digits/);
  });
});

async function checkpointed(meta: MetaStore, keys: ReturnType<typeof kinesisKeys>, last: Map<string, string>): Promise<boolean> {
  for (const [shard, seq] of last) if ((await meta.getCheckpoint(keys.checkpoint(shard))) !== seq) return false;
  return true;
}
