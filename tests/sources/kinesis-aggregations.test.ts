// @runtimes node
/**
 * Aggregations fed by Kinesis (kinesalite), on SQLite: the applied marks use
 * Kinesis sequence numbers. A consumer that dies after its folds landed but
 * before its checkpoints (its acknowledgements fail, as a crash between the
 * two would leave them) is replaced by a new one that re-reads from the last
 * checkpoint: every event is counted exactly once.
 */
import { test } from "node:test";
import assert from "node:assert/strict";
import { mkdtempSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import * as v from "valibot";
import { consume, createProcessor, entity, featureRepo, FreshetError, kinesisSource, streamFeatureView, type SourceBatch, type StreamSource } from "../../mod.ts";
import { kinesisConsumer } from "../../plugins/sources/kinesis.ts";
import { memoryDeadLetters } from "../../plugins/stores/memory.ts";
import { sqliteStore } from "../../plugins/stores/sqlite/index.ts";
import { putAll, unique, until, useKinesisTestBed } from "./kinesis-fixtures.ts";
import { createStream } from "../services/kinesis.ts";

const bed = useKinesisTestBed();
const USERS = 20;
const N = 600;

/** The source, with every acknowledgement failing once `failAfter` batches were acknowledged: a crash between write and checkpoint. */
function crashingAcks(source: StreamSource, failAfter: number): StreamSource & { failed: number } {
  let acked = 0;
  const out = {
    kind: source.kind,
    name: source.name,
    failed: 0,
    run: (onBatch: (b: SourceBatch) => Promise<void>, signal: AbortSignal) =>
      source.run((b) => onBatch({
        ...b,
        records: b.records,
        isStale: b.isStale?.bind(b),
        ack: async () => {
          if (acked >= failAfter) {
            out.failed++;
            throw new FreshetError("INTERNAL", "crash between the fold and the checkpoint");
          }
          acked++;
          await b.ack();
        },
      }), signal),
  };
  return out;
}

test("aggregations from Kinesis: a consumer dying between its folds and its checkpoints, replaced, counts every event once", { timeout: 120_000 }, async () => {
  const stream = unique("agg");
  await createStream(bed.client, stream, 2);
  const src = kinesisSource({ name: "purchases_stream", streamName: stream, endpoint: bed.svc.endpoint, region: "us-east-1", credentials: { accessKeyId: "AKIDLOCAL", secretAccessKey: "local-secret" }, timestampField: "ts", pollIntervalMs: 100, limit: 50 });
  const user = entity({ name: "user", joinKeys: ["user_id"] });
  const registry = featureRepo({
    project: "kinesis_agg",
    definitions: [streamFeatureView({
      name: "spend", entities: [user], source: src, ttl: 0,
      schema: v.object({ user_id: v.number(), amount: v.number(), ts: v.number() }),
      aggregations: [{ column: "amount", function: "sum", timeWindow: "1d", slideInterval: "1h" }, { column: "amount", function: "count", timeWindow: "1d", slideInterval: "1h" }],
    })],
  });
  const store = sqliteStore({ path: join(mkdtempSync(join(tmpdir(), "freshet-kagg-")), "f.db") });
  const t0 = Date.now() - 3_600_000;
  await putAll(bed.client, stream, Array.from({ length: N }, (_, i) => ({ partitionKey: `u${i % USERS}`, data: { user_id: i % USERS, amount: (i % 7) + 1, ts: t0 + i * 1000 } })));
  const truth = new Map<number, { sum: number; count: number }>();
  for (let i = 0; i < N; i++) {
    const t = truth.get(i % USERS) ?? { sum: 0, count: 0 };
    t.sum += (i % 7) + 1;
    t.count++;
    truth.set(i % USERS, t);
  }
  const processor = createProcessor({ registry, online: store, deadLetters: memoryDeadLetters() });
  const consumerOpts = { meta: store.meta, workerId: "w1", leaseTtlMs: 2000, discoverEveryMs: 200 };

  // The first consumer folds everything it reads, but only its first 3 checkpoints land.
  const first = crashingAcks(kinesisConsumer(src, consumerOpts), 3);
  const ac1 = new AbortController();
  const died = consume(first, processor, { signal: ac1.signal, logEveryMs: 0 }).catch((e) => e);
  const err = await died;
  ac1.abort();
  assert.match(String(err), /crash between the fold and the checkpoint/);
  assert.ok(first.failed >= 1);

  // The replacement (same worker id, its leases) reads again from the checkpoints: the marks skip what was folded.
  let stale = 0;
  let written = 0;
  const second = kinesisConsumer(src, consumerOpts);
  const ac2 = new AbortController();
  const running = consume(second, createProcessor({ registry, online: store, deadLetters: memoryDeadLetters() }), {
    signal: ac2.signal,
    logEveryMs: 0,
    onBatch: (r) => {
      written += r.views.spend?.written ?? 0;
      stale += r.views.spend?.stale ?? 0;
    },
  });
  const keys = [...truth.keys()].map((u) => `user_id=${u}`);
  await until("the replacement caught up", async () => {
    const got = await store.read(registry.view("spend"), keys, ["count_amount_86400s"]);
    return got.reduce((a, g) => a + Number(g.count_amount_86400s.value ?? 0), 0) >= N && second.lag!() !== undefined && Object.values(second.lag!()).every((l) => l === 0);
  }, 60_000, 200);
  await new Promise((r) => setTimeout(r, 500));
  ac2.abort();
  await running;
  const got = await store.read(registry.view("spend"), keys, ["sum_amount_86400s", "count_amount_86400s"]);
  assert.deepEqual(got.map((g) => [g.sum_amount_86400s.value, g.count_amount_86400s.value]), [...truth.values()].map((t) => [t.sum, t.count]), "every event counted once");
  assert.ok(stale > 0, `the redelivered events folded before the crash are stale (${stale}), not counted again`);
  await store.close();
});
