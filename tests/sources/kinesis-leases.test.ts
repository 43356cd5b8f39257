// Scenario 8 (reliability.md): two workers share one lease store (the memory
// store's metadata, then Redis through two separate clients).
// - The second worker to start gets a fair share: the first hands a shard over.
// - One worker is paused past its lease with a batch in flight: its metadata
//   calls and that batch wait, as in a stopped process. The other takes the
//   shard over from the checkpoint.
// - Resumed, the paused worker's batch is stale and not acknowledged by
//   consume(), and a direct ack() is refused by the store through the lease
//   fence (LEASE_LOST); the checkpoint stays where the new owner put it.
// - No shard is processed by two workers at once for longer than the lease.
import { describe, it } from "node:test";
import assert from "node:assert/strict";
import { consume, createProcessor, FreshetError, type Lease, type MetaStore, type OnlineStore, type SourceBatch, type StreamSource } from "../../mod.ts";
import { type KinesisConsumer, kinesisConsumer, kinesisKeys } from "../../plugins/sources/kinesis.ts";
import { memoryDeadLetters, memoryStore } from "../../plugins/stores/memory.ts";
import { redisStore } from "../../plugins/stores/redis/redis.ts";
import { createStream } from "../services/kinesis.ts";
import { batchGate, kinesisRepo, lastPerShard, putAll, sleep, spyMeta, unique, until, versions, type PutResult, useKinesisTestBed } from "./kinesis-fixtures.ts";

const TTL = 1500;
const DRIVERS = 12;

interface Processed {
  worker: string;
  shardId: string;
  start: number;
  end: number;
}

const bed = useKinesisTestBed({ redis: true });

const stores: { name: string; open: (project: string) => () => OnlineStore & { close?(): Promise<void> } }[] = [
  {
    name: "memory store metadata",
    open: () => {
      const shared = memoryStore();
      return () => shared;
    },
  },
  { name: "Redis metadata, one bed.client per worker", open: (project) => () => redisStore({ url: bed.redis.url, project }) },
];

for (const { name, open } of stores) {
  describe(`scenario 8: two Kinesis workers on ${name}`, () => {
    it("fences the paused worker's checkpoint and hands its shard over within the lease", { timeout: 60_000 }, async () => {
      const stream = unique("leases");
      await createStream(bed.client, stream, 2);
      const storeFor = open(stream.replace(/[^A-Za-z0-9_-]/g, "_"));
      const { source, registry, view } = kinesisRepo({ streamName: stream, endpoint: bed.svc.endpoint, region: "us-east-1", credentials: { accessKeyId: "a", secretAccessKey: "b" }, pollIntervalMs: 50 });
      const keys = kinesisKeys(source.name, stream);
      const processed: Processed[] = [];
      const puts: PutResult[] = [];
      const opened: (OnlineStore & { close?(): Promise<void> })[] = [];

      function startWorker(workerId: string) {
        const store = storeFor();
        opened.push(store);
        const spy = spyMeta(store.meta);
        const gate = batchGate();
        const consumer = kinesisConsumer(source, { meta: spy.meta, workerId, leaseTtlMs: TTL, discoverEveryMs: 200 });
        const processor = createProcessor({ registry, online: store, deadLetters: memoryDeadLetters() });
        const ac = new AbortController();
        const started = new WeakMap<SourceBatch, number>();
        const held: { batch?: SourceBatch; staleOnResume?: boolean; ackError?: unknown; acked?: boolean } = {};
        const wrapped: StreamSource = {
          ...consumer,
          run: (onBatch, signal) => consumer.run(async (batch) => {
            const paused = gate.closed;
            await gate.pass();
            if (paused && !held.batch) {
              held.batch = batch;
              held.staleOnResume = batch.isStale!();
            }
            started.set(batch, Date.now());
            await onBatch(batch);
            if (batch === held.batch) {
              // A worker that does not check isStale() and acks anyway: the store must refuse.
              try {
                await batch.ack();
                held.acked = true;
              } catch (e) {
                held.ackError = e;
              }
            }
          }, signal),
        };
        const run = consume(wrapped, processor, {
          signal: ac.signal,
          logEveryMs: 0,
          onBatch: (_r, batch) => {
            const p = batch.records[0]?.position;
            if (batch === held.batch) held.acked = true;
            if (p?.kind === "kinesis") processed.push({ worker: workerId, shardId: p.shardId, start: started.get(batch) ?? 0, end: Date.now() });
          },
        });
        return { consumer, spy, gate, ac, run, held, meta: store.meta as MetaStore };
      }
      const owned = (w: { consumer: KinesisConsumer }) => w.consumer.owned().map((o) => o.shardId).sort();
      const checkpointed = async (meta: MetaStore, last: Map<string, string>) => {
        for (const [shard, seq] of last) if ((await meta.getCheckpoint(keys.checkpoint(shard))) !== seq) return false;
        return true;
      };

      let leasesAtStop: Promise<Lease[]> = Promise.resolve([]);
      const a = startWorker("worker-a");
      let b: ReturnType<typeof startWorker> | undefined;
      try {
        // A alone takes both shards.
        puts.push(...(await putAll(bed.client, stream, versions(DRIVERS, 1, 5))));
        await until("A reads both shards", () => owned(a).length === 2);
        await until("A checkpoints both shards", () => checkpointed(a.meta, lastPerShard(puts)));

        // B joins: A hands one shard over.
        b = startWorker("worker-b");
        await until(() => `one shard each (A ${owned(a)}, B ${owned(b!)})`, () => owned(a).length === 1 && owned(b!).length === 1, 15_000);
        const shardA = owned(a)[0];
        const counterA = a.consumer.owned()[0].counter;

        // Pause A past its lease, with a batch of its shard in flight.
        a.gate.close();
        a.spy.freeze();
        const pausedAt = Date.now();
        puts.push(...(await putAll(bed.client, stream, versions(DRIVERS, 6, 10))));
        await until("A holds a batch at the pause", () => a.gate.waiting >= 1);
        await until(() => `B takes A's shard over (B ${owned(b!)})`, () => owned(b!).length === 2, 15_000);
        await until("B checkpoints everything, A's shard included", () => checkpointed(b!.meta, lastPerShard(puts)), 15_000);
        const checkpointByB = await b.meta.getCheckpoint(keys.checkpoint(shardA));
        // Paused for longer than a whole lease (B may take over sooner: A's last renewal was before the pause).
        await sleep(pausedAt + TTL + 100 - Date.now());

        // Resume A.
        a.spy.thaw();
        a.gate.open();
        await until("A's held batch to be acked or refused", () => a.held.ackError !== undefined || a.held.acked === true);
        assert.equal(a.held.staleOnResume, true, "the held batch is stale when A resumes");
        assert.notEqual(a.held.acked, true, "the held batch was not acknowledged");
        assert.ok(a.held.ackError instanceof FreshetError && a.held.ackError.code === "LEASE_LOST", `ack refused with LEASE_LOST, got ${a.held.ackError}`);
        const refused = a.spy.writes.filter((w) => !w.accepted && w.key === keys.checkpoint(shardA));
        assert.ok(refused.length >= 1 && refused.every((w) => w.owner === "worker-a" && w.counter === counterA), "the store refused A's fenced write");
        assert.equal(await b.meta.getCheckpoint(keys.checkpoint(shardA)), checkpointByB, "the checkpoint stayed where B put it");
        assert.ok(!a.consumer.owned().some((o) => o.shardId === shardA && o.counter === counterA), "A no longer reads the shard with its old lease");

        // The workers balance again, and new records are all processed.
        await until(() => `one shard each again (A ${owned(a)}, B ${owned(b!)})`, () => owned(a).length === 1 && owned(b!).length === 1, 15_000);
        puts.push(...(await putAll(bed.client, stream, versions(DRIVERS, 11, 14))));
        await until("every shard checkpointed at its last record", () => checkpointed(a.meta, lastPerShard(puts)), 15_000);
        const rows = (await opened[0].read(view, Array.from({ length: DRIVERS }, (_, i) => `driver_id=${i + 1}`), ["version"]));
        assert.deepEqual(rows.map((r) => r.version.value), Array(DRIVERS).fill(14));
      } finally {
        a.gate.open();
        a.spy.thaw();
        a.ac.abort();
        b?.ac.abort();
        await Promise.all([a.run, b?.run]);
        leasesAtStop = opened[0].meta.listLeases(keys.shardLeasePrefix);
        await leasesAtStop.catch(() => {});
        for (const s of new Set(opened)) await s.close?.();
      }

      // No shard processed by two workers at once for longer than the lease.
      let worst = 0;
      for (const x of processed) {
        for (const y of processed) {
          if (x.worker === y.worker || x.shardId !== y.shardId) continue;
          worst = Math.max(worst, Math.min(x.end, y.end) - Math.max(x.start, y.start));
        }
      }
      assert.ok(worst <= TTL, `two workers processed one shard at once for ${worst} ms`);
      assert.ok(new Set(processed.map((p) => p.worker)).size === 2);
      // Every checkpoint write by either worker only moved forward; the only refusals were A's fenced ones.
      const refusedB = b!.spy.writes.filter((w) => !w.accepted);
      assert.deepEqual(refusedB, [], "B never had a checkpoint refused");
      // A clean stop released every lease.
      const leases = await leasesAtStop;
      assert.ok(leases.length === 2 && leases.every((l) => l.owner === ""), `leases released: ${JSON.stringify(leases)}`);
    });
  });
}

describe("a killed worker's leases (issue 13 item 9)", () => {
  it("a new worker says it waits for them and for how long, and takes the shards over when they expire, not a discovery round later", { timeout: 30_000 }, async () => {
    const stream = unique("dead-leases");
    await createStream(bed.client, stream, 2);
    const store = memoryStore();
    const { source, registry } = kinesisRepo({ streamName: stream, endpoint: bed.svc.endpoint, region: "us-east-1", credentials: { accessKeyId: "a", secretAccessKey: "b" }, pollIntervalMs: 50 });
    const keys = kinesisKeys(source.name, stream);
    const deadTtl = 3000;
    // What a SIGKILLed worker leaves behind: its worker lease and both shard leases, never renewed again.
    const shards = ["shardId-000000000000", "shardId-000000000001"];
    await store.meta.acquireLease(keys.workerLease("worker-dead"), "worker-dead", deadTtl);
    for (const s of shards) assert.ok(await store.meta.acquireLease(keys.shardLease(s), "worker-dead", deadTtl));
    const killedAt = Date.now();
    const puts = await putAll(bed.client, stream, versions(DRIVERS, 1, 2));

    const lines: string[] = [];
    const logger = { info: (m: string) => lines.push(m), warn: (m: string) => lines.push(m), error: (m: string) => lines.push(m) };
    // Discovery every 20 s: a takeover sooner than that comes from waking at the leases' expiry.
    const consumer = kinesisConsumer(source, { meta: store.meta, workerId: "worker-new", leaseTtlMs: deadTtl, discoverEveryMs: 20_000, logger });
    const ac = new AbortController();
    let read = 0;
    const run = consume(consumer, createProcessor({ registry, online: store, deadLetters: memoryDeadLetters() }), { signal: ac.signal, logEveryMs: 0, onBatch: (_r, b) => (read += b.records.length) });
    try {
      await until(() => `the wait is logged\n${lines.join("\n")}`, () => lines.some((l) => l.includes("waiting for the leases")), 5_000);
      const wait = lines.find((l) => l.includes("waiting for the leases"))!;
      assert.match(wait, /"driver_events" \(worker-new\): waiting for the leases of shardId-000000000000, shardId-000000000001 held by worker-dead: they expire within [1-3] s unless renewed \(a stopped or killed worker's are not\), then this worker takes them over \(leaseTtlMs 3000\)/);
      await until(() => `worker-new reads both shards (${JSON.stringify(consumer.owned())})`, () => consumer.owned().length === 2, 10_000, 20);
      const tookOver = Date.now() - killedAt;
      assert.ok(tookOver >= deadTtl - 100 && tookOver < deadTtl + 2000, `took the shards over ${tookOver} ms after the kill (lease ttl ${deadTtl} ms, discovery every 20 s)`);
      assert.ok(lines.some((l) => /no longer waiting for other workers' leases \(waited \d+(\.\d)? s\)/.test(l)), lines.join("\n"));
      await until(() => `every record read (${read} of ${puts.length})`, () => read >= puts.length);
    } finally {
      ac.abort();
      await run;
    }
  });
});
