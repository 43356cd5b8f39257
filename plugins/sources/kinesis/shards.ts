/**
 * @module
 * Shards: discovery with ListShards, the parent-before-child rule, and the
 * read loop of one shard (GetRecords within the per-shard read limits, with
 * backoff on throttling and a fresh iterator after expiry). The loop reads
 * one batch ahead: the next GetRecords goes out at its usual time while a
 * batch is written and checkpointed, and its records are handed on only
 * after that batch was acknowledged (dropped, and read again from the
 * checkpoint, when it was not).
 */
import type * as KinesisSdk from "@aws-sdk/client-kinesis";
import { type FreshetError, isRetriable, type Logger, type MetaStore, type RawRecord, type SourceBatch, sleep } from "../../../core/index.ts";
import { type CheckpointFence, type KinesisKeys, SHARD_END, type ShardCheckpoint, writeCheckpoint } from "./checkpoints.ts";
import { deaggregate } from "./deaggregate.ts";
import { type HeldLease, leaseValid } from "./leases.ts";

/** The SDK module, loaded lazily by the consumer. */
export type Sdk = typeof KinesisSdk;

/**
 * Kinesis allows 5 GetRecords calls per second per shard. A call on a shard
 * is sent at least this long after the previous one was answered, so that
 * calls arrive at least this far apart whatever the network's jitter.
 */
export const MIN_CALL_INTERVAL_MS = 200;

/** A shard as discovery sees it. */
export interface ShardInfo {
  shardId: string;
  /** ParentShardId and AdjacentParentShardId, when present. */
  parents: string[];
  /** True when the shard has an ending sequence number: it takes no new records. */
  closed: boolean;
}

/**
 * Lists every shard of a stream, following NextToken.
 *
 * @example
 * ```ts
 * const shards = await listShards(sdk, client, "clicks", signal)
 * ```
 */
export async function listShards(sdk: Sdk, client: KinesisSdk.KinesisClient, streamName: string, signal?: AbortSignal): Promise<ShardInfo[]> {
  const out: ShardInfo[] = [];
  let next: string | undefined;
  do {
    const res: KinesisSdk.ListShardsCommandOutput = await client.send(
      new sdk.ListShardsCommand(next ? { NextToken: next } : { StreamName: streamName }),
      { abortSignal: signal },
    );
    for (const s of res.Shards ?? []) {
      if (!s.ShardId) continue;
      out.push({
        shardId: s.ShardId,
        parents: [s.ParentShardId, s.AdjacentParentShardId].filter((p): p is string => !!p),
        closed: !!s.SequenceNumberRange?.EndingSequenceNumber,
      });
    }
    next = res.NextToken;
  } while (next);
  return out.sort((a, b) => (a.shardId < b.shardId ? -1 : a.shardId > b.shardId ? 1 : 0));
}

/**
 * The shards that may be read now: not finished, and every parent finished
 * (or no longer listed, past the stream's retention). Children wait for their
 * parents, which keeps per-key order across a split or a merge.
 *
 * @example
 * ```ts
 * readableShards(shards, new Set(["shardId-000000000000"]))
 * ```
 */
export function readableShards(shards: ShardInfo[], finished: ReadonlySet<string>): ShardInfo[] {
  const listed = new Set(shards.map((s) => s.shardId));
  return shards.filter((s) => !finished.has(s.shardId) && s.parents.every((p) => finished.has(p) || !listed.has(p)));
}

/** Where a shard without a checkpoint starts. */
export type StartPosition = "TRIM_HORIZON" | "LATEST" | { timestamp: number };

type Resume =
  | { type: "AFTER_SEQUENCE_NUMBER"; sequenceNumber: string }
  | { type: "TRIM_HORIZON" }
  | { type: "LATEST" }
  | { type: "AT_TIMESTAMP"; timestamp: number };

/** How one shard ended its read loop. */
export type ShardOutcome = "ended" | "stopped" | "lost";

/** Everything the read loop of one shard needs. */
export interface ShardReaderContext {
  sdk: Sdk;
  client: KinesisSdk.KinesisClient;
  meta: MetaStore;
  keys: KinesisKeys;
  sourceName: string;
  streamName: string;
  shardId: string;
  lease: HeldLease;
  checkpoint: ShardCheckpoint;
  start: StartPosition;
  limit?: number;
  pollIntervalMs: number;
  /** Aborted on a clean stop, a lost lease, or when the shard is handed to another worker. */
  stop: AbortSignal;
  onBatch: (batch: SourceBatch) => Promise<void>;
  /** MillisBehindLatest per shard. */
  lag: Map<string, number>;
  logger?: Logger;
  /** Backoff on throttling: doubles from `initialMs` to `maxMs`, with jitter. */
  throttle?: { initialMs?: number; maxMs?: number };
}

/** A batch of one GetRecords response. */
interface ShardBatch extends SourceBatch {
  readonly acked: boolean;
}

const errorName = (e: unknown) => (e as { name?: string })?.name ?? "";

/**
 * Reads one shard until it ends, the lease is lost, or `stop` aborts. Every
 * batch is handed to `onBatch` and awaited; its `ack()` writes the
 * checkpoint, fenced by the lease. A batch left unacknowledged is read again.
 * While a batch is written, the next GetRecords call goes out at its usual
 * time (one batch read ahead, handed over only once this one is
 * acknowledged), so that a slow write does not stretch the call spacing.
 *
 * @example
 * ```ts
 * const outcome = await readShard({ sdk, client, meta, keys, shardId, lease, ... })
 * ```
 */
export async function readShard(ctx: ShardReaderContext): Promise<ShardOutcome> {
  const { sdk, client, shardId, lease, stop, logger } = ctx;
  const where = `[freshet] [kinesis] "${ctx.sourceName}" ${shardId}`;
  const fence: CheckpointFence = { lease: lease.key, owner: lease.owner, counter: lease.counter };
  const checkpointKey = ctx.keys.checkpoint(shardId);
  const idleMs = Math.max(ctx.pollIntervalMs, MIN_CALL_INTERVAL_MS);
  const throttleInitial = ctx.throttle?.initialMs ?? 500;
  const throttleMax = ctx.throttle?.maxMs ?? 10_000;

  let resume: Resume = ctx.checkpoint.sequenceNumber
    ? { type: "AFTER_SEQUENCE_NUMBER", sequenceNumber: ctx.checkpoint.sequenceNumber }
    : ctx.start === "TRIM_HORIZON" || ctx.start === "LATEST" ? { type: ctx.start } : { type: "AT_TIMESTAMP", timestamp: ctx.start.timestamp };
  let iterator: string | undefined;
  let nextRecordsCall = 0;
  let nextIteratorCall = 0;
  let notBefore = 0;
  let throttled = 0;
  let failures = 0;

  const backoff = (kind: "throttle" | "error") => {
    const n = kind === "throttle" ? ++throttled : ++failures;
    const base = kind === "throttle" ? throttleInitial : 200;
    const ceiling = Math.min(base * 2 ** (n - 1), throttleMax);
    notBefore = Date.now() + ceiling / 2 + Math.random() * (ceiling / 2);
  };
  // Waits for the later of the call spacing and any backoff; false when stopped.
  const pace = async (next: number) => {
    const wait = Math.max(next, notBefore) - Date.now();
    if (wait > 0) await sleep(wait, stop);
    return !stop.aborted;
  };

  async function fetchIterator(): Promise<string | undefined> {
    const input: KinesisSdk.GetShardIteratorCommandInput = { StreamName: ctx.streamName, ShardId: shardId, ShardIteratorType: resume.type };
    if (resume.type === "AFTER_SEQUENCE_NUMBER") input.StartingSequenceNumber = resume.sequenceNumber;
    if (resume.type === "AT_TIMESTAMP") input.Timestamp = new Date(resume.timestamp);
    const sent = Date.now();
    const res = await client.send(new sdk.GetShardIteratorCommand(input), { abortSignal: stop });
    // An iterator at LATEST, taken again after an expiry, would skip what
    // arrived in between: from now on, resume from the time it was taken.
    if (resume.type === "LATEST") resume = { type: "AT_TIMESTAMP", timestamp: sent };
    return res.ShardIterator;
  }

  type Fetched = { res: KinesisSdk.GetRecordsCommandOutput; answeredAt: number } | { error: unknown } | "stopped" | "lost";
  /** One GetRecords call once the spacing allows it; never rejects. */
  async function getRecords(it: string | undefined, notEarlierThan: number): Promise<Fetched> {
    if (!(await pace(notEarlierThan))) return "stopped";
    if (!leaseValid(lease)) return "lost";
    try {
      const res = await client.send(new sdk.GetRecordsCommand({ ShardIterator: it, Limit: ctx.limit }), { abortSignal: stop });
      return { res, answeredAt: Date.now() };
    } catch (error) {
      return { error };
    }
  }
  /** The next call, sent while the last batch was being written. */
  let ahead: Promise<Fetched> | undefined;

  async function endShard(): Promise<ShardOutcome> {
    for (;;) {
      try {
        await writeCheckpoint(ctx.meta, checkpointKey, SHARD_END, fence, ctx.sourceName);
        logger?.info(`${where}: read to its end; children may start`);
        return "ended";
      } catch (e) {
        if ((e as FreshetError).code === "LEASE_LOST") {
          lease.lost = true;
          return "lost";
        }
        logger?.warn(`${where}: cannot write the end-of-shard checkpoint: ${(e as Error).message}`);
        backoff("error");
        if (!(await pace(0)) || !leaseValid(lease)) return stop.aborted ? "stopped" : "lost";
      }
    }
  }

  for (;;) {
    if (stop.aborted) return "stopped";
    if (!leaseValid(lease)) return "lost";

    if (iterator === undefined) {
      if (!(await pace(nextIteratorCall))) return "stopped";
      try {
        iterator = await fetchIterator();
        failures = 0;
      } catch (e) {
        nextIteratorCall = Date.now() + MIN_CALL_INTERVAL_MS;
        if (stop.aborted) return "stopped";
        const name = errorName(e);
        logger?.warn(`${where}: GetShardIterator ${resume.type} failed: ${name} ${(e as Error).message}`);
        backoff(name === "ProvisionedThroughputExceededException" || name === "LimitExceededException" ? "throttle" : "error");
        continue;
      }
      nextIteratorCall = Date.now() + MIN_CALL_INTERVAL_MS;
      if (iterator === undefined) return endShard();
    }

    // A call read ahead while the last batch was written, else one now.
    const got = await (ahead ?? getRecords(iterator, nextRecordsCall));
    ahead = undefined;
    if (got === "stopped" || got === "lost") return got;
    if ("error" in got) {
      const e = got.error;
      nextRecordsCall = Date.now() + MIN_CALL_INTERVAL_MS;
      if (stop.aborted) return "stopped";
      const name = errorName(e);
      if (name === "ProvisionedThroughputExceededException") {
        backoff("throttle");
        logger?.warn(`${where}: throttled (ProvisionedThroughputExceeded), attempt ${throttled}; backing off`);
      } else if (name === "ExpiredIteratorException") {
        // Take a fresh iterator after the last acknowledged record.
        iterator = undefined;
        logger?.info(`${where}: iterator expired; resuming ${resume.type === "AFTER_SEQUENCE_NUMBER" ? `after ${resume.sequenceNumber}` : `from ${resume.type}`}`);
      } else {
        iterator = undefined;
        backoff("error");
        logger?.warn(`${where}: GetRecords failed: ${name} ${(e as Error).message}; retry ${failures}`);
      }
      continue;
    }
    const { res, answeredAt } = got;
    throttled = 0;
    failures = 0;
    ctx.lag.set(shardId, res.MillisBehindLatest ?? 0);
    const records = res.Records ?? [];
    // Caught up: wait the poll interval before asking again.
    nextRecordsCall = answeredAt + (records.length === 0 ? idleMs : MIN_CALL_INTERVAL_MS);
    const closed = !res.NextShardIterator;
    if (records.length > 0) {
      const last = records[records.length - 1].SequenceNumber!;
      // A closed shard's last response holds its last records: their
      // checkpoint is the end of the shard, written in one step.
      const batch = shardBatch(ctx, toRawRecords(ctx.streamName, shardId, records), checkpointKey, closed ? SHARD_END : last, fence);
      // Read ahead: the next call goes out at its time while this batch is
      // written and checkpointed; its records wait until this batch is
      // acknowledged (one batch ahead at most, in order).
      if (!closed) ahead = getRecords(res.NextShardIterator!, nextRecordsCall);
      try {
        await ctx.onBatch(batch);
      } catch (e) {
        if ((e as FreshetError).code === "LEASE_LOST" || lease.lost) {
          lease.lost = true;
          return "lost";
        }
        if (stop.aborted && (e as FreshetError).code === "ABORTED") return "stopped";
        if (!isRetriable(e)) throw e;
        logger?.warn(`${where}: batch failed: ${(e as Error).message}; reading it again`);
      }
      if (!batch.acked) {
        if (batch.isStale!()) return "lost";
        if (stop.aborted) return "stopped";
        // Not acknowledged: drop what was read ahead (once answered, to keep
        // the call spacing) and read the same records again from the checkpoint.
        if (ahead) {
          await ahead;
          ahead = undefined;
          nextRecordsCall = Date.now() + MIN_CALL_INTERVAL_MS;
        }
        iterator = undefined;
        backoff("error");
        continue;
      }
      if (closed) {
        logger?.info(`${where}: read to its end; children may start`);
        return "ended";
      }
      resume = { type: "AFTER_SEQUENCE_NUMBER", sequenceNumber: last };
    }
    if (closed) return endShard();
    iterator = res.NextShardIterator;
  }
}

function shardBatch(ctx: ShardReaderContext, records: RawRecord[], checkpointKey: string, checkpoint: string, fence: CheckpointFence): ShardBatch {
  let acked = false;
  return {
    records,
    get acked() {
      return acked;
    },
    async ack() {
      if (acked) return;
      try {
        await writeCheckpoint(ctx.meta, checkpointKey, checkpoint, fence, ctx.sourceName);
      } catch (e) {
        if ((e as FreshetError).code === "LEASE_LOST") ctx.lease.lost = true;
        throw e;
      }
      acked = true;
    },
    isStale() {
      return !leaseValid(ctx.lease);
    },
  };
}

/**
 * Turns GetRecords records into raw records: KPL aggregates are unpacked,
 * each user record keeping the Kinesis sequence number and its index as
 * `subSequence`.
 *
 * @example
 * ```ts
 * toRawRecords("clicks", "shardId-000000000000", res.Records ?? [])
 * ```
 */
export function toRawRecords(stream: string, shardId: string, records: KinesisSdk._Record[]): RawRecord[] {
  const out: RawRecord[] = [];
  for (const r of records) {
    const sequenceNumber = r.SequenceNumber!;
    const brokerTime = r.ApproximateArrivalTimestamp?.getTime();
    const data = r.Data ?? new Uint8Array(0);
    const subs = deaggregate(data);
    if (subs) {
      subs.forEach((s, subSequence) => out.push({ value: s.data, position: { kind: "kinesis", stream, shardId, sequenceNumber, subSequence }, brokerTime }));
    } else {
      out.push({ value: data, position: { kind: "kinesis", stream, shardId, sequenceNumber }, brokerTime });
    }
  }
  return out;
}

/** Whether an SDK error says the configuration cannot work, so that retrying is pointless. */
export function isConfigError(e: unknown): boolean {
  const msg = (e as Error)?.message ?? "";
  return /region is missing/i.test(msg) || errorName(e) === "InvalidSignatureException" || errorName(e) === "UnrecognizedClientException";
}

