/**
 * @module
 * In-memory online and offline stores and dead-letter sink: for tests, for
 * examples, and as the reference the conformance suite was written against.
 */
import {
  type AggregatingStore,
  type DeadLetter,
  type DeadLetterSink,
  type FeatureRow,
  localEngine,
  type OfflineStore,
  type OnlineStore,
} from "../../core/index.ts";

/** Options of {@link memoryStore}. */
export interface MemoryStoreOptions {
  /** The clock, for ttl tests. Default `Date.now`. */
  now?: () => number;
}

/**
 * An online store in Maps, on the same engine as the file store: latest-wins
 * through `isNewer`, expiry by event time, idempotency keys, checkpoints,
 * watermarks and leases with the Redis scripts' semantics.
 *
 * @example
 * ```ts
 * const store = memoryStore()
 * ```
 */
export function memoryStore(opts: MemoryStoreOptions = {}): OnlineStore & AggregatingStore & { readonly size: number; readonly idempotencyKeys: number } {
  const engine = localEngine({ now: opts.now ?? Date.now, plugin: "memory" });
  return {
    name: "memory",
    get size() {
      let n = 0;
      for (const m of engine.state.rows.values()) n += m.size;
      return n;
    },
    /** Idempotency keys held (pending, done, and expired ones not swept yet). */
    get idempotencyKeys() {
      return engine.state.idem.size;
    },
    meta: engine.meta,
    write: (view, rows, commit) => engine.write(view, rows, commit),
    read: (view, entityKeys, features) => Promise.resolve(engine.read(view, entityKeys, features)),
    foldTiles: (view, deltas, commit) => engine.foldTiles(view, deltas, commit),
    clearTiles: (view, range) => engine.clearTiles(view, range),
    getAppliedMark: (key) => Promise.resolve(engine.state.marks.get(key)),
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
