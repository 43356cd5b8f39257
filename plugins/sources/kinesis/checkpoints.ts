/**
 * @module
 * Kinesis checkpoints in a MetaStore: one key per shard holding the last
 * sequence number whose records the stores accepted. A shard read to its end
 * gets {@link SHARD_END}, a decimal sentinel longer than any sequence number,
 * so that the store's "never moves backwards" rule keeps it final.
 */
import { FreshetError, type MetaStore, storeUnavailable } from "../../../core/index.ts";

/**
 * The checkpoint of a shard that was read to its end. Kinesis sequence
 * numbers have at most 129 digits, so 130 nines compares greater than all of
 * them as a decimal integer, which is how every MetaStore compares.
 */
export const SHARD_END: string = "9".repeat(130);

/** Where a shard's checkpoint stands. */
export interface ShardCheckpoint {
  /** The last acknowledged sequence number; undefined when none, or when the shard ended. */
  sequenceNumber?: string;
  /** True when the shard was read to its end (closed, every record acknowledged). */
  ended: boolean;
}

/** The names of a consumer's keys in the MetaStore. */
export interface KinesisKeys {
  /** Prefix of every shard lease: `listLeases(shardLeasePrefix)`. */
  readonly shardLeasePrefix: string;
  /** Prefix of every worker's liveness lease. */
  readonly workerLeasePrefix: string;
  /** The checkpoint key of a shard. */
  checkpoint(shardId: string): string;
  /** The lease key of a shard. */
  shardLease(shardId: string): string;
  /** The liveness lease key of a worker. */
  workerLease(workerId: string): string;
}

/**
 * The key layout for one application (by default the source's name) reading
 * one stream. Two applications reading the same stream keep separate
 * checkpoints and leases.
 *
 * @example
 * ```ts
 * kinesisKeys("clicks", "clicks-stream").checkpoint("shardId-000000000000")
 * // "kinesis/clicks/clicks-stream/checkpoint/shardId-000000000000"
 * ```
 */
export function kinesisKeys(application: string, streamName: string): KinesisKeys {
  const base = `kinesis/${application}/${streamName}`;
  return {
    shardLeasePrefix: `${base}/shard/`,
    workerLeasePrefix: `${base}/worker/`,
    checkpoint: (shardId) => `${base}/checkpoint/${shardId}`,
    shardLease: (shardId) => `${base}/shard/${shardId}`,
    workerLease: (workerId) => `${base}/worker/${workerId}`,
  };
}

/**
 * Reads a shard's checkpoint.
 *
 * @example
 * ```ts
 * const { sequenceNumber, ended } = await readCheckpoint(store.meta, keys.checkpoint(shardId))
 * ```
 */
export async function readCheckpoint(meta: MetaStore, key: string): Promise<ShardCheckpoint> {
  let value: string | undefined;
  try {
    value = await meta.getCheckpoint(key);
  } catch (e) {
    throw storeUnavailable("kinesis", e);
  }
  if (value === SHARD_END) return { ended: true };
  return { sequenceNumber: value, ended: false };
}

/** The lease a checkpoint write is fenced by. */
export interface CheckpointFence {
  lease: string;
  owner: string;
  counter: number;
}

/**
 * Writes a checkpoint fenced by the shard's lease. Resolves when the
 * checkpoint is at or past `value`; throws LEASE_LOST when the store refused
 * it because the lease is no longer held with that counter, and a retriable
 * STORE_UNAVAILABLE when the store cannot be reached.
 *
 * @example
 * ```ts
 * await writeCheckpoint(meta, keys.checkpoint(shardId), "4959...", { lease: keys.shardLease(shardId), owner, counter }, "clicks")
 * ```
 */
export async function writeCheckpoint(meta: MetaStore, key: string, value: string, fence: CheckpointFence, source: string): Promise<void> {
  let moved: boolean;
  try {
    moved = await meta.setCheckpoint(key, value, fence);
  } catch (e) {
    throw storeUnavailable("kinesis", e, source);
  }
  if (moved) return;
  // Refused: either the lease is gone (fencing), or the checkpoint is already
  // at or past `value` (a redelivered batch). Only the first is an error.
  let held = false;
  try {
    const now = Date.now();
    held = (await meta.listLeases(fence.lease)).some((l) => l.key === fence.lease && l.owner === fence.owner && l.counter === fence.counter && l.expiresAt > now);
  } catch (e) {
    throw storeUnavailable("kinesis", e, source);
  }
  if (!held) {
    throw new FreshetError("LEASE_LOST", `checkpoint ${key} refused: lease ${fence.lease} is no longer held by ${fence.owner} with counter ${fence.counter}; another worker owns the shard now`, { plugin: "kinesis", definition: source, retriable: false });
  }
}
