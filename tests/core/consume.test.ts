import { describe, it } from "node:test";
import assert from "node:assert/strict";
import * as v from "valibot";
import { consume, createProcessor, entity, featureRepo, kafkaSource, storeUnavailable, streamFeatureView, type SourceBatch, type SourceLag, type StreamSource } from "../../mod.ts";
import { memoryDeadLetters, memoryStore } from "../../plugins/stores/memory.ts";

const src = kafkaSource({ name: "s", kafkaBootstrapServers: "x:9092", topic: "t", timestampField: "ts" });
const registry = featureRepo({
  project: "consume",
  definitions: [streamFeatureView({ name: "v", entities: [entity({ name: "d", joinKeys: ["id"] })], source: src, ttl: 0, schema: v.object({ id: v.number(), n: v.number(), ts: v.number() }) })],
});

/** A source that hands over one batch and records what happened to it. */
function oneBatchSource(batch: SourceBatch): StreamSource & { outcome?: string } {
  const source: StreamSource & { outcome?: string } = {
    kind: "test",
    name: "s",
    async run(onBatch) {
      await onBatch(batch);
      source.outcome ??= "returned";
    },
  };
  return source;
}

const record = (n: number) => ({ value: JSON.stringify({ id: 1, n, ts: Date.now() }), position: { kind: "memory" as const, index: n } });

describe("consume", () => {
  it("acks a batch only after the store accepted it, retrying while the store is down", async () => {
    const online = memoryStore();
    let failures = 2;
    const write = online.write;
    online.write = (view, rows) => (failures-- > 0 ? Promise.reject(storeUnavailable("test", new Error("down"))) : write(view, rows));
    let acked = 0;
    const processor = createProcessor({ registry, online, deadLetters: memoryDeadLetters() });
    await consume(oneBatchSource({ records: [record(1)], ack: async () => void acked++ }), processor, { signal: new AbortController().signal, retry: { initialMs: 10, maxMs: 20 }, logEveryMs: 0 });
    assert.equal(acked, 1);
    assert.equal(online.size, 1);
    assert.equal(processor.metrics.get("freshet_batches_total", { source: "s", result: "retry" }), 2);
  });

  it("gives up a batch revoked during the retry sleep at once, without acking it", async () => {
    const online = memoryStore();
    online.write = () => Promise.reject(storeUnavailable("test", new Error("down")));
    let stale = false;
    let acked = 0;
    const processor = createProcessor({ registry, online, deadLetters: memoryDeadLetters() });
    setTimeout(() => (stale = true), 300);
    const started = Date.now();
    await consume(oneBatchSource({ records: [record(2)], ack: async () => void acked++, isStale: () => stale }), processor, {
      signal: new AbortController().signal,
      retry: { initialMs: 8000, maxMs: 8000 },
      logEveryMs: 0,
    });
    const took = Date.now() - started;
    assert.equal(acked, 0, "a revoked batch is never acknowledged");
    assert.ok(took < 2000, `gave up in ${took} ms, not after the 4-8 s backoff`);
    assert.equal(processor.metrics.get("freshet_batches_total", { source: "s", result: "stale" }), 1);
  });

  it("stops on abort while the store is down, leaving the batch unacknowledged", async () => {
    const online = memoryStore();
    online.write = () => Promise.reject(storeUnavailable("test", new Error("down")));
    const ac = new AbortController();
    let acked = 0;
    const processor = createProcessor({ registry, online, deadLetters: memoryDeadLetters() });
    setTimeout(() => ac.abort(), 200);
    await assert.rejects(
      consume(oneBatchSource({ records: [record(3)], ack: async () => void acked++ }), processor, { signal: ac.signal, retry: { initialMs: 50, maxMs: 50 }, logEveryMs: 0 }),
      /ABORTED|left unacknowledged/,
    );
    assert.equal(acked, 0);
  });

  it("logs lag as unknown while a source holds no partition or shard, and drops the lag of a partition no longer held", async () => {
    const processor = createProcessor({ registry, online: memoryStore(), deadLetters: memoryDeadLetters() });
    const lines: string[] = [];
    const logger = { info: (m: string) => lines.push(m), warn: () => {}, error: () => {} };
    for (const [kind, none] of [["kafka", "no partitions assigned"], ["kinesis", "no shards held"]] as const) {
      lines.length = 0;
      // Held: partitions 0 and 1, then only 1, then none.
      const phases: SourceLag[] = [{ "0": 5, "1": 7 }, { "1": 2 }, {}];
      let phase = 0;
      const ac = new AbortController();
      const source: StreamSource = {
        kind,
        name: "s",
        lagUnit: kind === "kafka" ? "records" : "ms",
        lag: () => phases[phase],
        async run(_onBatch, signal) {
          while (!signal.aborted && phase < phases.length) await new Promise((r) => setTimeout(r, 5));
        },
      };
      const snapshots: string[] = [];
      const done = consume(source, processor, { signal: ac.signal, logger, logEveryMs: 20 });
      for (phase = 0; phase < phases.length; phase++) {
        const seen = lines.length;
        while (lines.length === seen) await new Promise((r) => setTimeout(r, 5));
        snapshots.push(processor.metrics.render().split("\n").filter((l) => l.startsWith("freshet_source_lag{") || l.startsWith("freshet_source_partitions{")).join("; "));
      }
      ac.abort();
      await done;
      const unit = kind === "kafka" ? "records" : "ms";
      assert.match(lines[0], new RegExp(`^\\[freshet\\] \\[${kind}\\] "s": \\d+ events/s, lag 12 ${unit} over 2 partitions$`));
      assert.ok(lines.some((l) => l.endsWith(`lag 2 ${unit} over 1 partitions`)), lines.join("\n"));
      assert.ok(lines.at(-1)!.endsWith(`, lag unknown: ${none}`), lines.join("\n"));
      assert.deepEqual(snapshots, [
        'freshet_source_lag{source="s",partition="0"} 5; freshet_source_lag{source="s",partition="1"} 7; freshet_source_partitions{source="s"} 2',
        'freshet_source_lag{source="s",partition="1"} 2; freshet_source_partitions{source="s"} 1',
        'freshet_source_partitions{source="s"} 0',
      ]);
    }
  });
});
