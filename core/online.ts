/**
 * @module
 * Rules every online store shares: which row is newer, what status a stored
 * value has on read, and an in-process MetaStore for single-process stores.
 */
import type { FeatureStatus, FeatureValue, Lease, MetaStore } from "./contracts.ts";
import type { FeatureView } from "./definitions.ts";

/** A stored version of an entity's row. */
export interface StoredVersion {
  eventTime: number;
  createdTime?: number;
}

/**
 * True when an incoming row should replace the stored one: a strictly newer
 * event time, or an equal event time with a strictly newer created time.
 * Equal versions are stale, so a replay changes nothing.
 */
export function supersedes(incoming: StoredVersion, stored: StoredVersion | undefined): boolean {
  if (!stored) return true;
  if (incoming.eventTime !== stored.eventTime) return incoming.eventTime > stored.eventTime;
  return (incoming.createdTime ?? -1) > (stored.createdTime ?? -1);
}

/** Reads one feature of a stored row, with its status. The ttl is enforced here (Feast issue #6821). */
export function featureValue(view: FeatureView, stored: { values: Record<string, unknown>; eventTime: number } | undefined, feature: string, now: number): FeatureValue {
  if (!stored) return { value: null, status: "NOT_FOUND" };
  if (!(feature in stored.values)) return { value: null, status: "NOT_FOUND", eventTime: stored.eventTime };
  const status: FeatureStatus = view.ttlMs > 0 && now - stored.eventTime > view.ttlMs
    ? "OUTSIDE_MAX_AGE"
    : stored.values[feature] === null ? "NULL_VALUE" : "PRESENT";
  return { value: status === "OUTSIDE_MAX_AGE" ? null : stored.values[feature], status, eventTime: stored.eventTime };
}

/** Compares two non-negative decimal integer strings (Kafka offsets, Kinesis sequence numbers). */
export function compareDecimal(a: string, b: string): number {
  const x = a.replace(/^0+(?=\d)/, "");
  const y = b.replace(/^0+(?=\d)/, "");
  if (x.length !== y.length) return x.length < y.length ? -1 : 1;
  return x < y ? -1 : x > y ? 1 : 0;
}

/** The state behind {@link localMeta}, plain JSON so that a file store can persist it. */
export interface LocalMetaState {
  claims: Record<string, number>;
  checkpoints: Record<string, string>;
  leases: Record<string, Lease>;
}

/**
 * A MetaStore for stores that live in one process (memory, file). Every
 * method runs to completion synchronously before its promise settles, so
 * each is atomic within the process. `persist` is awaited after changes.
 */
export function localMeta(state: LocalMetaState, now: () => number, persist: () => Promise<void> = async () => {}): MetaStore {
  return {
    async claim(key, ttlMs) {
      const exp = state.claims[key];
      if (exp !== undefined && exp > now()) return false;
      state.claims[key] = now() + ttlMs;
      await persist();
      return true;
    },
    async unclaim(key) {
      delete state.claims[key];
      await persist();
    },
    getCheckpoint(key) {
      return Promise.resolve(state.checkpoints[key]);
    },
    async setCheckpoint(key, value, fence) {
      if (fence) {
        const lease = state.leases[fence.lease];
        if (!lease || lease.owner !== fence.owner || lease.counter !== fence.counter || lease.expiresAt <= now()) return false;
      }
      const cur = state.checkpoints[key];
      if (cur !== undefined && compareDecimal(value, cur) <= 0) return false;
      state.checkpoints[key] = value;
      await persist();
      return true;
    },
    async acquireLease(key, owner, ttlMs) {
      const cur = state.leases[key];
      const t = now();
      if (cur && cur.owner !== owner && cur.expiresAt > t) return undefined;
      const counter = cur && cur.owner === owner && cur.expiresAt > t ? cur.counter : (cur?.counter ?? 0) + 1;
      const lease = { key, owner, counter, expiresAt: t + ttlMs };
      state.leases[key] = lease;
      await persist();
      return { ...lease };
    },
    async releaseLease(key, owner) {
      const cur = state.leases[key];
      if (cur && cur.owner === owner) {
        state.leases[key] = { ...cur, owner: "", expiresAt: 0 };
        await persist();
      }
    },
    listLeases(prefix) {
      return Promise.resolve(Object.values(state.leases).filter((l) => l.key.startsWith(prefix)).map((l) => ({ ...l })));
    },
  };
}
