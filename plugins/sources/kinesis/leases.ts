/**
 * @module
 * Shard leases: which worker reads which shard. A lease has an owner, a
 * counter (the fencing token) and an expiry. It is renewed every ttl/3,
 * taken over once expired, and every checkpoint write is fenced by it. Each
 * worker also keeps a liveness lease of its own, so that a worker that holds
 * no shard yet still counts when the others work out their fair share.
 */
import type { Lease, MetaStore } from "../../../core/index.ts";
import type { KinesisKeys } from "./checkpoints.ts";

/** A lease this worker holds on a shard. */
export interface HeldLease {
  readonly shardId: string;
  readonly key: string;
  readonly owner: string;
  readonly counter: number;
  /**
   * Local time until which the lease is surely ours: when the last renewal
   * was sent, plus the ttl. The store's own expiry is never earlier.
   */
  validUntil: number;
  /** Set once a renewal or a fenced write showed that the lease is gone. */
  lost: boolean;
}

/** True while a held lease can still be used: not lost and not locally expired. */
export function leaseValid(lease: HeldLease, now: number = Date.now()): boolean {
  return !lease.lost && now < lease.validUntil;
}

/** The leases of one worker on one stream. */
export interface LeaseTable {
  /** Takes the lease of a shard when it is free, expired or already ours. */
  acquire(shardId: string): Promise<HeldLease | undefined>;
  /** Renews a held lease; marks it lost (and returns false) when the counter changed or another worker holds it. */
  renew(lease: HeldLease): Promise<boolean>;
  release(lease: HeldLease): Promise<void>;
  /** Renews this worker's liveness lease. False when another live process uses the same workerId. */
  heartbeat(): Promise<boolean>;
  /** Releases the liveness lease, on a clean stop. */
  leave(): Promise<void>;
  /** The live shard leases of every worker, and the live workers (this one included). */
  survey(): Promise<{ shardOwners: Map<string, Lease>; workers: Set<string> }>;
}

/**
 * Lease operations for one worker, over the MetaStore.
 *
 * @example
 * ```ts
 * const leases = leaseTable(store.meta, keys, "worker-a", 10_000)
 * const lease = await leases.acquire("shardId-000000000000")
 * ```
 */
export function leaseTable(meta: MetaStore, keys: KinesisKeys, workerId: string, ttlMs: number): LeaseTable {
  const shardOf = (key: string) => key.slice(keys.shardLeasePrefix.length);
  return {
    async acquire(shardId) {
      const key = keys.shardLease(shardId);
      const sent = Date.now();
      const got = await meta.acquireLease(key, workerId, ttlMs);
      if (!got || got.owner !== workerId) return undefined;
      return { shardId, key, owner: workerId, counter: got.counter, validUntil: sent + ttlMs, lost: false };
    },
    async renew(lease) {
      if (lease.lost) return false;
      const sent = Date.now();
      const got = await meta.acquireLease(lease.key, workerId, ttlMs);
      // A new counter means the lease lapsed in between, even if no one else
      // took it: batches fenced by the old counter must not be acknowledged.
      if (!got || got.owner !== workerId || got.counter !== lease.counter) {
        lease.lost = true;
        if (got && got.owner === workerId) await meta.releaseLease(lease.key, workerId).catch(() => {});
        return false;
      }
      lease.validUntil = Math.max(lease.validUntil, sent + ttlMs);
      return true;
    },
    async release(lease) {
      lease.lost = true;
      await meta.releaseLease(lease.key, workerId);
    },
    async heartbeat() {
      return (await meta.acquireLease(keys.workerLease(workerId), workerId, ttlMs)) !== undefined;
    },
    async leave() {
      await meta.releaseLease(keys.workerLease(workerId), workerId);
    },
    async survey() {
      const now = Date.now();
      const [shards, workerLeases] = await Promise.all([meta.listLeases(keys.shardLeasePrefix), meta.listLeases(keys.workerLeasePrefix)]);
      const shardOwners = new Map<string, Lease>();
      const workers = new Set<string>([workerId]);
      for (const l of shards) {
        if (!l.owner || l.expiresAt <= now) continue;
        shardOwners.set(shardOf(l.key), l);
        workers.add(l.owner);
      }
      for (const l of workerLeases) if (l.owner && l.expiresAt > now) workers.add(l.owner);
      return { shardOwners, workers };
    },
  };
}

/**
 * How many shards one worker should hold: the readable shards spread evenly
 * over the live workers, rounded up, and capped.
 *
 * @example
 * ```ts
 * fairShare(5, 2) // 3
 * ```
 */
export function fairShare(shards: number, workers: number, max: number = Infinity): number {
  return Math.min(Math.ceil(shards / Math.max(1, workers)), max);
}
