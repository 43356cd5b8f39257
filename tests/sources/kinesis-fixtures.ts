// Shared pieces of the Kinesis source tests: a feature repo over a Kinesis
// stream, record producers, a MetaStore spy, and small waiting helpers.
import { after, before } from "node:test";
import { PutRecordsCommand, type KinesisClient } from "@aws-sdk/client-kinesis";
import { kinesisClient, type KinesisService, startKinesis } from "../services/kinesis.ts";
import { type RedisService, startRedis } from "../services/redis.ts";
import * as v from "valibot";
import { compareDecimal, entity, featureRepo, kinesisSource, type KinesisSource, type MetaStore, type Row, streamFeatureView, type Udf } from "../../mod.ts";

export const T0 = Date.UTC(2026, 0, 1);

/** kinesalite, a client for it, and (when asked) a redis-server, for the tests of the enclosing suite. */
export interface KinesisTestBed {
  svc: KinesisService;
  client: KinesisClient;
  redis: RedisService;
}

/** Starts the test bed before the suite's tests and stops it after them. Its fields are set once `before` ran. */
export function useKinesisTestBed(opts: { redis?: boolean } = {}): KinesisTestBed {
  const bed = {} as KinesisTestBed;
  before(async () => {
    const [svc, redis] = await Promise.all([startKinesis("kinesalite"), opts.redis ? startRedis() : undefined]);
    bed.svc = svc;
    if (redis) bed.redis = redis;
    bed.client = kinesisClient(svc.endpoint);
  });
  after(async () => {
    bed.client?.destroy();
    await Promise.all([bed.svc?.stop(), bed.redis?.stop()]);
  });
  return bed;
}
const enc = new TextEncoder();

export const unique = (p: string): string => `${p}-${Date.now().toString(36)}-${Math.random().toString(36).slice(2, 7)}`;

/** A repo with one Kinesis source and one view `driver_stats` (driver_id -> version, trips). */
export function kinesisRepo(source: Omit<KinesisSource, "kind" | "name" | "timestampField"> & { name?: string }, udf?: Udf) {
  const src = kinesisSource({ name: "driver_events", timestampField: "event_timestamp", ...source });
  const driver = entity({ name: "driver", joinKeys: ["driver_id"] });
  const registry = featureRepo({
    project: "kinesis_test",
    definitions: [
      streamFeatureView({
        name: "driver_stats",
        entities: [driver],
        source: src,
        schema: v.object({ driver_id: v.number(), version: v.number(), trips: v.number(), event_timestamp: v.number() }),
        ttl: 0,
        udf,
      }),
    ],
  });
  return { source: src, registry, view: registry.view("driver_stats") };
}

/** The event of `driver` at `version`: its event time grows with the version. */
export const event = (driver: number, version: number): Row => ({ driver_id: driver, version, trips: version * 10, event_timestamp: T0 + version * 1000 });

export interface Put {
  partitionKey: string;
  data: Uint8Array | string | Row;
}

/** What PutRecords answered for each record, in order. */
export interface PutResult {
  shardId: string;
  sequenceNumber: string;
}

/** PutRecords in chunks of 500, retrying records the server refused (throttling, a stream UPDATING after a split). */
export async function putAll(client: KinesisClient, stream: string, puts: Put[]): Promise<PutResult[]> {
  const out: PutResult[] = [];
  for (let i = 0; i < puts.length; i += 500) {
    const chunk = puts.slice(i, i + 500);
    for (let attempt = 0; ; attempt++) {
      try {
        const res = await client.send(new PutRecordsCommand({
          StreamName: stream,
          Records: chunk.map((p) => ({ PartitionKey: p.partitionKey, Data: p.data instanceof Uint8Array ? p.data : enc.encode(typeof p.data === "string" ? p.data : JSON.stringify(p.data)) })),
        }));
        if (res.FailedRecordCount) throw new Error(`${res.FailedRecordCount} records failed: ${res.Records?.find((r) => r.ErrorCode)?.ErrorMessage}`);
        for (const r of res.Records ?? []) out.push({ shardId: r.ShardId!, sequenceNumber: r.SequenceNumber! });
        break;
      } catch (e) {
        // Whole-batch retry: a record may land twice, which the stores absorb (latest wins).
        if (attempt >= 50) throw e;
        await sleep(50);
      }
    }
  }
  return out;
}

/** The records of `drivers` drivers, versions `from`..`to`, interleaved by version so each key's versions are in order. */
export function versions(drivers: number, from: number, to: number): Put[] {
  const out: Put[] = [];
  for (let ver = from; ver <= to; ver++) for (let d = 1; d <= drivers; d++) out.push({ partitionKey: `driver-${d}`, data: event(d, ver) });
  return out;
}

/** The greatest sequence number per shard, as a decimal comparison. */
export function lastPerShard(results: PutResult[]): Map<string, string> {
  const m = new Map<string, string>();
  for (const r of results) {
    const cur = m.get(r.shardId);
    if (!cur || compareDecimal(r.sequenceNumber, cur) > 0) m.set(r.shardId, r.sequenceNumber);
  }
  return m;
}

export const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

/** Polls `check` until it is true; throws with `what` after `timeoutMs`. */
export async function until(what: string | (() => string), check: () => boolean | Promise<boolean>, timeoutMs = 20_000, everyMs = 50): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!(await check())) {
    if (Date.now() > deadline) throw new Error(`timed out after ${timeoutMs} ms waiting for ${typeof what === "string" ? what : what()}`);
    await sleep(everyMs);
  }
}

/** One setCheckpoint call as the store saw it. */
export interface CheckpointWrite {
  key: string;
  value: string;
  owner?: string;
  counter?: number;
  accepted: boolean;
  at: number;
}

/**
 * Wraps a MetaStore: records every setCheckpoint (and its answer), and can
 * freeze the worker that uses it: while frozen every call waits, as if its
 * process were paused; `kill()` makes every call hang for good.
 */
export function spyMeta(meta: MetaStore) {
  const writes: CheckpointWrite[] = [];
  let gate: Promise<void> | undefined;
  let open: (() => void) | undefined;
  let dead = false;
  const pass = async () => {
    if (dead) await new Promise<never>(() => {});
    while (gate) await gate;
    if (dead) await new Promise<never>(() => {});
  };
  const hooks: { beforeCheckpoint?: (key: string, value: string) => void } = {};
  const spied: MetaStore = {
    begin: async (k, f, t) => (await pass(), meta.begin(k, f, t)),
    abandon: async (k, t) => (await pass(), meta.abandon(k, t)),
    settle: async (k, f, t) => (await pass(), meta.settle(k, f, t)),
    getWatermark: async (k) => (await pass(), meta.getWatermark(k)),
    advanceWatermark: async (k, t) => (await pass(), meta.advanceWatermark(k, t)),
    getCheckpoint: async (k) => (await pass(), meta.getCheckpoint(k)),
    async setCheckpoint(key, value, fence) {
      await pass();
      hooks.beforeCheckpoint?.(key, value);
      await pass();
      const accepted = await meta.setCheckpoint(key, value, fence);
      writes.push({ key, value, owner: fence?.owner, counter: fence?.counter, accepted, at: Date.now() });
      return accepted;
    },
    acquireLease: async (k, o, t) => (await pass(), meta.acquireLease(k, o, t)),
    releaseLease: async (k, o) => (await pass(), meta.releaseLease(k, o)),
    listLeases: async (p) => (await pass(), meta.listLeases(p)),
  };
  return {
    meta: spied,
    writes,
    hooks,
    freeze() {
      gate ??= new Promise<void>((r) => (open = r));
    },
    thaw() {
      const o = open;
      gate = undefined;
      open = undefined;
      o?.();
    },
    kill() {
      dead = true;
    },
  };
}

/** A gate that `onBatch` wrappers wait on: `close()`, later `open()`; `kill()` keeps it shut for good. */
export function batchGate() {
  let gate: Promise<void> | undefined;
  let release: (() => void) | undefined;
  let dead = false;
  let waiting = 0;
  return {
    async pass(): Promise<void> {
      if (dead) await new Promise<never>(() => {});
      waiting++;
      while (gate) await gate;
      waiting--;
      if (dead) await new Promise<never>(() => {});
    },
    /** How many callers wait at the gate now. */
    get waiting() {
      return waiting;
    },
    close() {
      gate ??= new Promise<void>((r) => (release = r));
    },
    open() {
      const r = release;
      gate = undefined;
      release = undefined;
      r?.();
    },
    kill() {
      dead = true;
    },
    get closed() {
      return gate !== undefined;
    },
  };
}

/** Decodes a JSON record value, as the processor would. */
export function decodeJson(value: unknown): Row | undefined {
  try {
    const text = value instanceof Uint8Array ? new TextDecoder().decode(value) : typeof value === "string" ? value : undefined;
    return text === undefined ? (value as Row) : JSON.parse(text);
  } catch {
    return undefined;
  }
}
