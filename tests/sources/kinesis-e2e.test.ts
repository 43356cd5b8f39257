// End to end, on Node, Bun and Deno: JSON records put over several shards of
// a real Kinesis API server (kinesalite and kinesis-local) are consumed with
// core consume() + createProcessor into a store, read back, and checkpointed.
// Also: poison records become dead letters with their Kinesis positions, a KPL
// aggregated record is unpacked, and checkpoints and leases live in Redis.
import { after, before, describe, it } from "node:test";
import assert from "node:assert/strict";
import { createHash } from "node:crypto";
import type { KinesisClient } from "@aws-sdk/client-kinesis";
import { consume, createProcessor, type MetaStore, type OnlineStore, type Position } from "../../mod.ts";
import { kinesisConsumer, kinesisKeys, KPL_MAGIC } from "../../plugins/sources/kinesis.ts";
import { memoryDeadLetters, memoryStore } from "../../plugins/stores/memory.ts";
import { redisStore } from "../../plugins/stores/redis/redis.ts";
import { createStream, kinesisClient, startKinesis, type KinesisKind, type KinesisService } from "../services/kinesis.ts";
import { batchGate, event, kinesisRepo, lastPerShard, putAll, sleep, unique, until, versions, type PutResult, useKinesisTestBed } from "./kinesis-fixtures.ts";

const credentials = { accessKeyId: "AKIDLOCAL", secretAccessKey: "local-secret" };
const DRIVERS = 20;

/** Consumes `stream` into `store` until every shard's checkpoint reaches `last`, then stops cleanly. */
async function consumeUntilCheckpointed(opts: {
  endpoint: string;
  stream: string;
  store: OnlineStore;
  meta?: MetaStore;
  produce: (client: KinesisClient) => Promise<PutResult[]>;
  client: KinesisClient;
}) {
  const { source, registry, view } = kinesisRepo({ streamName: opts.stream, endpoint: opts.endpoint, region: "us-east-1", credentials, pollIntervalMs: 100 });
  const meta = opts.meta ?? opts.store.meta;
  const deadLetters = memoryDeadLetters();
  const processor = createProcessor({ registry, online: opts.store, deadLetters });
  const consumer = kinesisConsumer(source, { meta, workerId: "e2e-worker", leaseTtlMs: 3000, discoverEveryMs: 250 });
  const keys = kinesisKeys(source.name, opts.stream);
  const ac = new AbortController();
  const positions: Position[] = [];
  const done = consume(consumer, processor, { signal: ac.signal, logEveryMs: 0, onBatch: (_r, b) => positions.push(...b.records.map((r) => r.position)) });
  try {
    const results = await opts.produce(opts.client);
    const last = lastPerShard(results);
    await until("every shard checkpointed at its last sequence number", async () => {
      for (const [shard, seq] of last) if ((await meta.getCheckpoint(keys.checkpoint(shard))) !== seq) return false;
      return true;
    });
    const lag = consumer.lag!();
    const owned = consumer.owned();
    ac.abort();
    await done;
    return { results, last, positions, deadLetters, view, lag, owned, keys, meta };
  } finally {
    ac.abort();
    await done.catch(() => {});
  }
}

async function readVersions(store: OnlineStore, view: Parameters<OnlineStore["read"]>[0], drivers: number[]) {
  const rows = await store.read(view, drivers.map((d) => `driver_id=${d}`), ["version", "trips"]);
  return rows.map((r) => r.version.value);
}

for (const kind of ["kinesalite", "kinesis-local"] as KinesisKind[]) {
  describe(`Kinesis source end to end on ${kind}`, () => {
    let svc: KinesisService;
    let client: KinesisClient;
    before(async () => {
      svc = await startKinesis(kind);
      client = kinesisClient(svc.endpoint);
    });
    after(async () => {
      client?.destroy();
      await svc?.stop();
    });

    it("JSON records over 3 shards reach the store, newest per key, with checkpoints at each shard's last record", async () => {
      const stream = unique("e2e");
      await createStream(client, stream, 3);
      const store = memoryStore();
      // Half before the consumer starts, half while it runs.
      const before = await putAll(client, stream, versions(DRIVERS, 1, 5));
      const r = await consumeUntilCheckpointed({
        endpoint: svc.endpoint, stream, store, client,
        produce: async (c) => [...before, ...(await putAll(c, stream, versions(DRIVERS, 6, 10)))],
      });
      assert.equal(new Set(r.results.map((x) => x.shardId)).size, 3, "records spread over 3 shards");
      assert.deepEqual(await readVersions(store, r.view, Array.from({ length: DRIVERS }, (_, i) => i + 1)), Array(DRIVERS).fill(10));
      assert.equal(r.deadLetters.letters.length, 0);
      // Every record was delivered, with its Kinesis position.
      const delivered = new Set(r.positions.map((p) => p.kind === "kinesis" ? `${p.shardId}/${p.sequenceNumber}` : "?"));
      for (const x of r.results) assert.ok(delivered.has(`${x.shardId}/${x.sequenceNumber}`), `${x.shardId}/${x.sequenceNumber} delivered`);
      assert.ok(r.positions.every((p) => p.kind === "kinesis" && p.stream === stream));
      // Lag in ms per shard, and three shards held while running.
      assert.deepEqual(Object.keys(r.lag).sort(), [...r.last.keys()].sort());
      assert.ok(Object.values(r.lag).every((ms) => typeof ms === "number" && ms >= 0));
      assert.equal(r.owned.length, 3);
      // A clean stop released every lease.
      const leases = await r.meta.listLeases(r.keys.shardLeasePrefix);
      assert.equal(leases.length, 3);
      assert.ok(leases.every((l) => l.owner === ""), "leases released on stop");
    });

    it("poison records become dead letters with their Kinesis positions; the records around them are written", async () => {
      const stream = unique("poison");
      await createStream(client, stream, 2);
      const store = memoryStore();
      const puts = [
        { partitionKey: "driver-1", data: event(1, 1) },
        { partitionKey: "driver-1", data: "{not json" },
        { partitionKey: "driver-2", data: { ...event(2, 1), driver_id: "two" } },
        { partitionKey: "driver-3", data: { version: 1, trips: 1, event_timestamp: 1 } },
        { partitionKey: "driver-4", data: new Uint8Array([0xff, 0xfe, 0x00]) },
        { partitionKey: "driver-1", data: event(1, 2) },
        { partitionKey: "driver-5", data: event(5, 3) },
      ];
      const r = await consumeUntilCheckpointed({ endpoint: svc.endpoint, stream, store, client, produce: (c) => putAll(c, stream, puts) });
      assert.deepEqual(await readVersions(store, r.view, [1, 5]), [2, 3]);
      const letters = r.deadLetters.letters;
      assert.deepEqual(letters.map((l) => l.reason).sort(), ["decode", "decode", "schema", "schema"]);
      for (const [i, reason] of [[1, "decode"], [2, "schema"], [3, "schema"], [4, "decode"]] as const) {
        const put = r.results[i];
        const letter = letters.find((l) => l.position.kind === "kinesis" && l.position.sequenceNumber === put.sequenceNumber);
        assert.ok(letter, `record ${i} dead-lettered`);
        assert.equal(letter.reason, reason);
        assert.deepEqual(letter.position, { kind: "kinesis", stream, shardId: put.shardId, sequenceNumber: put.sequenceNumber });
      }
      assert.equal(letters.find((l) => l.reason === "schema" && l.payload.includes('"two"'))?.path, "driver_id");
      assert.equal(letters.find((l) => l.payload.includes("not json"))?.encoding, "utf8");
    });

    it("a KPL aggregated record is unpacked into its user records, each with a subSequence", async () => {
      const stream = unique("kpl");
      await createStream(client, stream, 1);
      const store = memoryStore();
      const agg = kplRecord(["driver-7", "driver-8"], [[0, event(7, 4)], [1, event(8, 5)], [0, event(7, 6)]]);
      const r = await consumeUntilCheckpointed({
        endpoint: svc.endpoint, stream, store, client,
        produce: (c) => putAll(c, stream, [{ partitionKey: "driver-7", data: agg }, { partitionKey: "driver-9", data: event(9, 1) }]),
      });
      assert.deepEqual(await readVersions(store, r.view, [7, 8, 9]), [6, 5, 1]);
      const subs = r.positions.filter((p) => p.kind === "kinesis" && p.sequenceNumber === r.results[0].sequenceNumber);
      assert.deepEqual(subs.map((p) => p.kind === "kinesis" && p.subSequence), [0, 1, 2]);
      assert.equal(r.deadLetters.letters.length, 0);
    });

    it("startFrom LATEST and AT_TIMESTAMP skip what came before, for shards without a checkpoint", async () => {
      const stream = unique("start");
      await createStream(client, stream, 1);
      await putAll(client, stream, versions(4, 1, 2));
      await sleep(400);
      const since = Date.now();
      await sleep(400);
      const afterTs = await putAll(client, stream, versions(4, 3, 4));
      const laterAll: PutResult[] = [];
      for (const startFrom of ["LATEST", { timestamp: since }] as const) {
        const { source, registry } = kinesisRepo({ streamName: stream, endpoint: svc.endpoint, region: "us-east-1", credentials, pollIntervalMs: 100, startFrom });
        const store = memoryStore();
        const consumer = kinesisConsumer(source, { meta: store.meta, workerId: "w", leaseTtlMs: 3000, discoverEveryMs: 250 });
        const delivered: number[] = [];
        const ac = new AbortController();
        const done = consume(consumer, createProcessor({ registry, online: store, deadLetters: memoryDeadLetters() }), {
          signal: ac.signal, logEveryMs: 0,
          onBatch: (_r, b) => delivered.push(...b.records.map((r) => JSON.parse(new TextDecoder().decode(r.value as Uint8Array)).version)),
        });
        try {
          // The first GetRecords answered: the iterator exists.
          await until("the first read", () => Object.keys(consumer.lag!()).length === 1);
          const later = await putAll(client, stream, versions(4, 5, 5));
          laterAll.push(...later);
          await until(`checkpoint at the last record (${startFrom === "LATEST" ? "LATEST" : "AT_TIMESTAMP"})`, async () =>
            (await store.meta.getCheckpoint(kinesisKeys(source.name, stream).checkpoint(later[0].shardId))) === later[later.length - 1].sequenceNumber);
          // LATEST: only what was put after the start; AT_TIMESTAMP: versions 3 and 4 too.
          assert.deepEqual([...new Set(delivered)].sort(), startFrom === "LATEST" ? [5] : [3, 4, 5]);
          assert.equal(delivered.length, startFrom === "LATEST" ? later.length : afterTs.length + laterAll.length);
        } finally {
          ac.abort();
          await done;
        }
      }
    });

    it("a clean stop finishes and acknowledges the batch in flight, then releases the leases", async () => {
      const stream = unique("stop");
      await createStream(client, stream, 1);
      const { source, registry, view } = kinesisRepo({ streamName: stream, endpoint: svc.endpoint, region: "us-east-1", credentials, pollIntervalMs: 100 });
      const store = memoryStore();
      const consumer = kinesisConsumer(source, { meta: store.meta, workerId: "w", leaseTtlMs: 3000, discoverEveryMs: 250 });
      const gate = batchGate();
      gate.close();
      const ac = new AbortController();
      let stopped = false;
      const done = consume({ ...consumer, run: (onBatch, signal) => consumer.run(async (b) => (await gate.pass(), onBatch(b)), signal) },
        createProcessor({ registry, online: store, deadLetters: memoryDeadLetters() }), { signal: ac.signal, logEveryMs: 0 }).then(() => (stopped = true));
      const puts = await putAll(client, stream, versions(5, 1, 3));
      await until("a batch in flight", () => gate.waiting === 1);
      ac.abort();
      await sleep(300);
      assert.equal(stopped, false, "the source waits for the batch in flight");
      gate.open();
      await done;
      const keys = kinesisKeys(source.name, stream);
      assert.equal(await store.meta.getCheckpoint(keys.checkpoint(puts[0].shardId)), lastPerShard(puts).get(puts[0].shardId), "its checkpoint was written");
      assert.deepEqual(await readVersions(store, view, [1, 2, 3, 4, 5]), [3, 3, 3, 3, 3]);
      const leases = await store.meta.listLeases(keys.shardLeasePrefix);
      assert.ok(leases.length === 1 && leases[0].owner === "", "lease released");
    });
  });
}

describe("Kinesis source with checkpoints and leases in Redis", () => {
  const bed = useKinesisTestBed({ redis: true });

  it("consumes into Redis; the checkpoint and the released leases are in Redis' metadata", async () => {
    const stream = unique("redis");
    await createStream(bed.client, stream, 2);
    const store = redisStore({ url: bed.redis.url, project: "kinesis_e2e" });
    try {
      const r = await consumeUntilCheckpointed({ endpoint: bed.svc.endpoint, stream, store, client: bed.client, produce: (c) => putAll(c, stream, versions(10, 1, 6)) });
      assert.deepEqual(await readVersions(store, r.view, Array.from({ length: 10 }, (_, i) => i + 1)), Array(10).fill(6));
      // A second bed.client on the same Redis sees the same checkpoints.
      const other = redisStore({ url: bed.redis.url, project: "kinesis_e2e" });
      try {
        for (const [shard, seq] of r.last) assert.equal(await other.meta.getCheckpoint(r.keys.checkpoint(shard)), seq);
        const leases = await other.meta.listLeases(r.keys.shardLeasePrefix);
        assert.equal(leases.length, 2);
        assert.ok(leases.every((l) => l.owner === "" && l.counter >= 1));
      } finally {
        await other.close();
      }
    } finally {
      await store.close();
    }
  });
});

/** A KPL aggregated record: magic, the AggregatedRecord protobuf, its MD5. */
function kplRecord(partitionKeys: string[], records: [number, unknown][]): Uint8Array {
  const enc = new TextEncoder();
  const varint = (n: number) => {
    const out: number[] = [];
    for (; n >= 0x80; n = Math.floor(n / 0x80)) out.push((n % 0x80) | 0x80);
    out.push(n);
    return out;
  };
  const len = (no: number, b: number[] | Uint8Array) => [...varint(no * 8 + 2), ...varint(b.length), ...b];
  const body: number[] = [];
  for (const pk of partitionKeys) body.push(...len(1, enc.encode(pk)));
  for (const [pk, value] of records) body.push(...len(3, [...varint(8), ...varint(pk), ...len(3, enc.encode(JSON.stringify(value)))]));
  const proto = Uint8Array.from(body);
  return Uint8Array.from([...KPL_MAGIC, ...proto, ...createHash("md5").update(proto).digest()]);
}
