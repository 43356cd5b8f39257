// A Kinesis consumer process for the crash test (kinesis-crash.test.ts): it
// consumes a stream into Redis (features, checkpoints and leases) and reports
// on stdout (synchronous on pipes, so a SIGKILL loses no line):
//   D <at> <shardId> <driver> <version>     a record delivered, before processing
//   C <at> <key> <value> <accepted>         a checkpoint write and the store's answer
// SIGTERM stops it cleanly.
import process from "node:process";
import { consume, createProcessor, type MetaStore } from "../../mod.ts";
import { kinesisConsumer } from "../../plugins/sources/kinesis.ts";
import { memoryDeadLetters } from "../../plugins/stores/memory.ts";
import { redisStore } from "../../plugins/stores/redis/redis.ts";
import { decodeJson, kinesisRepo } from "./kinesis-fixtures.ts";

const env = (k: string) => {
  const v = process.env[k];
  if (!v) throw new Error(`${k} is not set`);
  return v;
};
// process.stdout is synchronous on pipes on Linux: a line written is in the pipe.
const say = (line: string) => process.stdout.write(line + "\n");

const store = redisStore({ url: env("REDIS_URL"), project: env("PROJECT") });
const meta: MetaStore = {
  begin: (k, f, t) => store.meta.begin(k, f, t),
  abandon: (k, t) => store.meta.abandon(k, t),
  settle: (k, f, t) => store.meta.settle(k, f, t),
  getWatermark: (k) => store.meta.getWatermark(k),
  advanceWatermark: (k, t) => store.meta.advanceWatermark(k, t),
  getCheckpoint: (k) => store.meta.getCheckpoint(k),
  acquireLease: (k, o, t) => store.meta.acquireLease(k, o, t),
  releaseLease: (k, o) => store.meta.releaseLease(k, o),
  listLeases: (p) => store.meta.listLeases(p),
  async setCheckpoint(key, value, fence) {
    const ok = await store.meta.setCheckpoint(key, value, fence);
    say(`C ${Date.now()} ${key} ${value} ${ok}`);
    return ok;
  },
};
const { source, registry } = kinesisRepo({ streamName: env("STREAM"), endpoint: env("ENDPOINT"), region: "us-east-1", credentials: { accessKeyId: "a", secretAccessKey: "b" }, pollIntervalMs: 50 });
const consumer = kinesisConsumer(source, { meta, workerId: env("WORKER_ID"), leaseTtlMs: Number(env("LEASE_TTL_MS")), discoverEveryMs: 200 });
const processor = createProcessor({ registry, online: store, deadLetters: memoryDeadLetters() });
const ac = new AbortController();
process.on("SIGTERM", () => ac.abort());
say("READY");
await consume({
  ...consumer,
  run: (onBatch, signal) => consumer.run(async (batch) => {
    for (const r of batch.records) {
      const row = decodeJson(r.value);
      if (r.position.kind === "kinesis" && row) say(`D ${Date.now()} ${r.position.shardId} ${row.driver_id} ${row.version}`);
    }
    await onBatch(batch);
  }, signal),
}, processor, { signal: ac.signal, logEveryMs: 0 });
await store.close();
say("STOPPED");
