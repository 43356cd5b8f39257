/**
 * @module
 * In-memory online and offline stores and dead-letter sink: for tests, for
 * examples, and as the reference the conformance suite was written against.
 */
import {
  type DeadLetter,
  type DeadLetterSink,
  type FeatureRow,
  type FeatureView,
  featureValue,
  localMeta,
  type LocalMetaState,
  type OfflineStore,
  type OnlineStore,
  supersedes,
} from "../../core/index.ts";

/** Options of {@link memoryStore}. */
export interface MemoryStoreOptions {
  /** The clock, for ttl tests. Default `Date.now`. */
  now?: () => number;
}

interface Entry {
  values: Record<string, unknown>;
  eventTime: number;
  createdTime?: number;
  /** Epoch ms when the key expires (write time + ttl), or Infinity. */
  expiresAt: number;
}

/**
 * An online store in a Map. Latest-wins is atomic because each write runs
 * to completion synchronously.
 *
 * @example
 * ```ts
 * const store = memoryStore()
 * ```
 */
export function memoryStore(opts: MemoryStoreOptions = {}): OnlineStore & { readonly size: number } {
  const now = opts.now ?? Date.now;
  const data = new Map<string, Entry>();
  const state: LocalMetaState = { claims: {}, checkpoints: {}, leases: {} };
  const keyOf = (view: FeatureView, entityKey: string) => `${view.name}\u0000${entityKey}`;
  const live = (k: string) => {
    const e = data.get(k);
    if (e && e.expiresAt <= now()) {
      data.delete(k);
      return undefined;
    }
    return e;
  };
  return {
    name: "memory",
    get size() {
      return data.size;
    },
    meta: localMeta(state, now),
    write(view: FeatureView, rows: FeatureRow[]) {
      let written = 0;
      for (const row of rows) {
        const k = keyOf(view, row.entityKey);
        if (!supersedes(row, live(k))) continue;
        data.set(k, { values: { ...row.values }, eventTime: row.eventTime, createdTime: row.createdTime, expiresAt: view.ttlMs > 0 ? now() + view.ttlMs : Infinity });
        written++;
      }
      return Promise.resolve({ written, stale: rows.length - written });
    },
    read(view, entityKeys, features) {
      const t = now();
      return Promise.resolve(entityKeys.map((ek) => {
        const e = live(keyOf(view, ek));
        return Object.fromEntries(features.map((f) => [f, featureValue(view, e, f, t)]));
      }));
    },
    ping: () => Promise.resolve(),
  };
}

/**
 * An offline store in memory.
 *
 * @example
 * ```ts
 * const log = memoryOffline()
 * ```
 */
export function memoryOffline(): OfflineStore & { rows(view: string): FeatureRow[] } {
  const logs = new Map<string, FeatureRow[]>();
  return {
    name: "memory-offline",
    rows: (view) => logs.get(view) ?? [],
    append(view, rows) {
      const log = logs.get(view.name) ?? [];
      log.push(...rows.map((r) => ({ ...r })));
      logs.set(view.name, log);
      return Promise.resolve();
    },
    async *read(view, range) {
      const rows = (logs.get(view.name) ?? []).filter((r) => (range.start === undefined || r.eventTime >= range.start) && (range.end === undefined || r.eventTime < range.end));
      if (rows.length) yield rows;
    },
  };
}

/**
 * A dead-letter sink in memory; `letters` holds what was written.
 *
 * @example
 * ```ts
 * const dlq = memoryDeadLetters(); // ... dlq.letters[0].reason === "schema"
 * ```
 */
export function memoryDeadLetters(): DeadLetterSink & { letters: DeadLetter[] } {
  const letters: DeadLetter[] = [];
  return {
    name: "memory",
    letters,
    write(batch) {
      letters.push(...batch);
      return Promise.resolve();
    },
  };
}
