/**
 * @module
 * The engine behind the stores that keep their state in this process (the
 * memory store, the file store): latest-wins writes, idempotency keys,
 * checkpoints, watermarks and leases, with the same semantics as the Redis
 * scripts.
 *
 * Every operation is a plan run against the state, in turn, one at a time.
 * Its changes are handed to `persist` (the file store appends them to its
 * log and fsyncs) and only then applied, so a failed persist is never
 * visible to a read. Operations that arrive while a persist runs are planned
 * together afterwards and persisted together (group commit).
 */
import { mergeTile, parseTileKey, readAggregates, type Tile, type TileDelta, tilesForRead } from "./aggregations.ts";
import type { CommitMeta, FeatureRow, FeatureValue, FoldResult, IdempotencyState, Lease, MetaStore, Row, TileCommit, WriteResult } from "./contracts.ts";
import type { FeatureView } from "./definitions.ts";
import { FreshetError, storeUnavailable } from "./errors.ts";
import { compareDecimal, expiresAt, featureValue, isNewer } from "./online.ts";

/** One entity's stored row. */
export interface LocalEntry {
  /** Feature values by name. */
  values: Row;
  /** Event time, epoch ms. */
  eventTime: number;
  /** Created time, epoch ms. */
  createdTime?: number;
  /** Event time + ttl; absent means never. */
  expiresAt?: number;
}

/** One idempotency key. */
export interface IdemEntry {
  /** Pending while its delivery runs, done once committed. */
  state: "pending" | "done";
  /** A hash of the body: the same key with another body is refused. */
  fingerprint: string;
  /** Held by the delivery that began it, so that only it can abandon it. */
  token?: string;
  /** When the key is forgotten, epoch ms. */
  expiresAt: number;
}

/** One stored tile of an aggregation view. */
export interface LocalTile {
  /** The tile. */
  tile: Tile;
  /** By event time; absent means never (the lifetime tile). */
  expiresAt?: number;
}

/** Everything a local store holds. */
export interface LocalState {
  /** view name -> entity key -> row */
  rows: Map<string, Map<string, LocalEntry>>;
  /** Idempotency keys (webhook-ids), by key. */
  idem: Map<string, IdemEntry>;
  /** Source checkpoints, by key. */
  checkpoints: Map<string, string>;
  /** Watermarks (greatest event time), by key. */
  watermarks: Map<string, number>;
  /** Leases, by key. */
  leases: Map<string, Lease>;
  /** view name -> entity key -> tile key -> tile (aggregation views) */
  tiles: Map<string, Map<string, Map<string, LocalTile>>>;
  /** Applied marks of aggregation views, by view and partition. */
  marks: Map<string, string>;
}

/** One change to a {@link LocalState}, as a file store logs it. */
export type LocalChange =
  | { t: "row"; view: string; key: string; entry: LocalEntry }
  | { t: "idem"; key: string; entry: IdemEntry | null }
  | { t: "cp"; key: string; value: string }
  | { t: "wm"; key: string; value: number }
  | { t: "lease"; key: string; lease: Lease }
  | { t: "tile"; view: string; entity: string; tile: string; entry: LocalTile | null }
  | { t: "mark"; key: string; value: string };

/** An empty state. */
export function emptyLocalState(): LocalState {
  return { rows: new Map(), idem: new Map(), checkpoints: new Map(), watermarks: new Map(), leases: new Map(), tiles: new Map(), marks: new Map() };
}

/** Applies one change. Replaying a log of changes in order rebuilds the state. */
export function applyLocalChange(state: LocalState, c: LocalChange): void {
  switch (c.t) {
    case "row": {
      let m = state.rows.get(c.view);
      if (!m) state.rows.set(c.view, m = new Map());
      m.set(c.key, c.entry);
      return;
    }
    case "idem":
      if (c.entry) state.idem.set(c.key, c.entry);
      else state.idem.delete(c.key);
      return;
    case "cp":
      state.checkpoints.set(c.key, c.value);
      return;
    case "wm":
      state.watermarks.set(c.key, c.value);
      return;
    case "lease":
      state.leases.set(c.key, c.lease);
      return;
    case "tile": {
      let v = state.tiles.get(c.view);
      if (!v) state.tiles.set(c.view, v = new Map());
      let e = v.get(c.entity);
      if (!e) v.set(c.entity, e = new Map());
      if (c.entry) e.set(c.tile, c.entry);
      else {
        e.delete(c.tile);
        if (e.size === 0) v.delete(c.entity);
      }
      return;
    }
    case "mark":
      state.marks.set(c.key, c.value);
      return;
  }
}

/** The reads and writes a plan makes: reads see the changes planned before it in the same group. */
class Tx {
  readonly changes: LocalChange[] = [];
  readonly #state: LocalState;
  readonly #rows = new Map<string, LocalEntry>();
  readonly #idem = new Map<string, IdemEntry | null>();
  readonly #cp = new Map<string, string>();
  readonly #wm = new Map<string, number>();
  readonly #leases = new Map<string, Lease>();
  readonly #tiles = new Map<string, LocalTile | null>();
  readonly #marks = new Map<string, string>();

  constructor(state: LocalState) {
    this.#state = state;
  }

  row(view: string, key: string): LocalEntry | undefined {
    const k = view + "\u0000" + key;
    return this.#rows.has(k) ? this.#rows.get(k) : this.#state.rows.get(view)?.get(key);
  }
  idem(key: string): IdemEntry | undefined {
    return this.#idem.has(key) ? this.#idem.get(key) ?? undefined : this.#state.idem.get(key);
  }
  checkpoint(key: string): string | undefined {
    return this.#cp.get(key) ?? this.#state.checkpoints.get(key);
  }
  watermark(key: string): number | undefined {
    return this.#wm.get(key) ?? this.#state.watermarks.get(key);
  }
  lease(key: string): Lease | undefined {
    return this.#leases.get(key) ?? this.#state.leases.get(key);
  }
  tile(view: string, entity: string, tile: string): LocalTile | undefined {
    const k = view + "\u0000" + entity + "\u0000" + tile;
    return this.#tiles.has(k) ? this.#tiles.get(k) ?? undefined : this.#state.tiles.get(view)?.get(entity)?.get(tile);
  }
  mark(key: string): string | undefined {
    return this.#marks.get(key) ?? this.#state.marks.get(key);
  }
  put(c: LocalChange): void {
    this.changes.push(c);
    if (c.t === "row") this.#rows.set(c.view + "\u0000" + c.key, c.entry);
    else if (c.t === "idem") this.#idem.set(c.key, c.entry);
    else if (c.t === "cp") this.#cp.set(c.key, c.value);
    else if (c.t === "wm") this.#wm.set(c.key, c.value);
    else if (c.t === "tile") this.#tiles.set(c.view + "\u0000" + c.entity + "\u0000" + c.tile, c.entry);
    else if (c.t === "mark") this.#marks.set(c.key, c.value);
    else this.#leases.set(c.key, c.lease);
  }
}

interface Op {
  plan?(tx: Tx): unknown;
  /** Set instead of `plan` for {@link LocalEngine.exclusive}. */
  exclusive?: () => Promise<unknown>;
  resolve(v: unknown): void;
  reject(e: unknown): void;
}

/** Options of {@link localEngine}. */
export interface LocalEngineOptions {
  /** The state to work on; it is changed in place. */
  state?: LocalState;
  /** The clock for ttl, expiry and leases. */
  now: () => number;
  /** Makes a group of changes durable before they are applied. Throwing fails every operation of the group. */
  persist?: (changes: LocalChange[]) => Promise<void>;
  /** The plugin name, for errors. */
  plugin: string;
}

/** What {@link localEngine} gives a store. */
export interface LocalEngine {
  /** Everything the engine holds, for a store to persist. */
  readonly state: LocalState;
  /** The OnlineStore write, on the state. */
  write(view: FeatureView, rows: FeatureRow[], commit?: CommitMeta): Promise<WriteResult>;
  /** The OnlineStore read, on the state. */
  read(view: FeatureView, entityKeys: string[], features: string[]): Record<string, FeatureValue>[];
  /** The MetaStore, on the state. */
  readonly meta: MetaStore;
  /** The aggregation contract: see {@link AggregatingStore}. */
  foldTiles(view: FeatureView, deltas: TileDelta[], commit?: TileCommit): Promise<FoldResult>;
  /** Removes the tiles of a view in an event-time range (a backfill rebuilds them). */
  clearTiles(view: FeatureView, range: { start: number; end: number }): Promise<void>;
  /** Runs `fn` while no operation is planned or persisted (compaction); operations wait for it. */
  exclusive<T>(fn: () => Promise<T>): Promise<T>;
  /** Resolves when nothing is queued or running. */
  idle(): Promise<void>;
}

const SWEEP_BUDGET = 256;

/**
 * Creates the engine of a local store.
 *
 * @example
 * ```ts
 * const engine = localEngine({ now: Date.now, plugin: "memory" })
 * await engine.write(view, rows)
 * ```
 */
export function localEngine(opts: LocalEngineOptions): LocalEngine {
  const state = opts.state ?? emptyLocalState();
  const { now, persist, plugin } = opts;
  let queue: Op[] = [];
  let running: Promise<void> | undefined;
  let sweepCursor: Iterator<[string, IdemEntry]> | undefined;

  const run = <T>(plan: (tx: Tx) => T): Promise<T> =>
    new Promise<T>((resolve, reject) => {
      queue.push({ plan, resolve: resolve as (v: unknown) => void, reject });
      running ??= drain();
    });

  async function drain(): Promise<void> {
    // Let the callers of this tick join the group.
    await Promise.resolve();
    try {
      while (queue.length) {
        if (queue[0].exclusive) {
          const op = queue.shift()!;
          await op.exclusive!().then(op.resolve, op.reject);
          continue;
        }
        // Up to the next exclusive operation, as one group.
        const cut = queue.findIndex((o) => o.exclusive);
        const ops = cut < 0 ? queue : queue.slice(0, cut);
        queue = cut < 0 ? [] : queue.slice(cut);
        const tx = new Tx(state);
        const results: { op: Op; ok: boolean; value: unknown }[] = [];
        for (const op of ops) {
          const mark = tx.changes.length;
          try {
            results.push({ op, ok: true, value: op.plan!(tx) });
          } catch (e) {
            tx.changes.length = mark; // plans validate before they change anything
            results.push({ op, ok: false, value: e });
          }
        }
        if (tx.changes.length && persist) {
          try {
            await persist(tx.changes);
          } catch (e) {
            const err = storeUnavailable(plugin, e);
            for (const r of results) r.op.reject(r.ok ? err : r.value);
            continue;
          }
        }
        for (const c of tx.changes) applyLocalChange(state, c);
        for (const r of results) r.ok ? r.op.resolve(r.value) : r.op.reject(r.value);
        sweep();
      }
    } finally {
      running = undefined;
    }
  }

  /** Drops a few expired idempotency keys per group, so they do not pile up (rows expire on read and at compaction). */
  function sweep(): void {
    if (state.idem.size === 0) return;
    const t = now();
    for (let i = 0; i < SWEEP_BUDGET; i++) {
      sweepCursor ??= state.idem.entries();
      const n = sweepCursor.next();
      if (n.done) {
        sweepCursor = undefined;
        return;
      }
      if (n.value[1].expiresAt <= t) state.idem.delete(n.value[0]);
    }
  }

  const live = (e: LocalEntry | undefined, t: number) => (e && (e.expiresAt === undefined || e.expiresAt > t) ? e : undefined);

  const write = (view: FeatureView, rows: FeatureRow[], commit?: CommitMeta): Promise<WriteResult> => {
    for (let i = 0; i < rows.length; i++) {
      const r = rows[i];
      if (!Number.isFinite(r.eventTime) || (r.createdTime !== undefined && !Number.isFinite(r.createdTime))) {
        return Promise.reject(new FreshetError("INVALID_INPUT", `row ${i} (${r.entityKey}) has a time that is not a finite epoch ms`, { plugin, definition: view.name, retriable: false }));
      }
    }
    return run((tx) => {
      const t = now();
      let written = 0;
      let expired = 0;
      for (const r of rows) {
        const exp = expiresAt(view, r.eventTime);
        if (exp !== undefined && exp <= t) {
          expired++;
          continue;
        }
        if (!isNewer(r, live(tx.row(view.name, r.entityKey), t))) continue;
        const entry: LocalEntry = { values: { ...r.values }, eventTime: r.eventTime };
        if (r.createdTime !== undefined) entry.createdTime = r.createdTime;
        if (exp !== undefined) entry.expiresAt = exp;
        tx.put({ t: "row", view: view.name, key: r.entityKey, entry });
        written++;
      }
      applyCommit(tx, commit, t);
      return { written, stale: rows.length - written - expired, expired };
    });
  };

  const applyCommit = (tx: Tx, commit: CommitMeta | undefined, t: number) => {
    if (!commit) return;
    for (const [key, value] of Object.entries(commit.watermarks ?? {})) {
      const cur = tx.watermark(key);
      if (cur === undefined || value > cur) tx.put({ t: "wm", key, value });
    }
    if (commit.done) tx.put({ t: "idem", key: commit.done.key, entry: { state: "done", fingerprint: commit.done.fingerprint, expiresAt: t + commit.done.ttlMs } });
  };

  const foldTiles = (view: FeatureView, deltas: TileDelta[], commit?: TileCommit): Promise<FoldResult> => {
    const aggs = view.aggregations;
    if (!aggs?.length) return Promise.reject(new FreshetError("INVALID_INPUT", "foldTiles needs a view with aggregations", { plugin, definition: view.name, retriable: false }));
    return run((tx): FoldResult => {
      for (const m of commit?.marks ?? []) {
        if (tx.mark(m.key) !== m.expected) {
          const marks: Record<string, string | undefined> = {};
          for (const x of commit!.marks!) marks[x.key] = tx.mark(x.key);
          return { ok: false, marks };
        }
      }
      const t = now();
      let tiles = 0;
      let expired = 0;
      for (const d of deltas) {
        if (d.expiresAt !== undefined && d.expiresAt <= t) {
          expired++;
          continue;
        }
        const cur = tx.tile(view.name, d.entityKey, d.tile);
        const stored = cur && (cur.expiresAt === undefined || cur.expiresAt > t) ? cur.tile : undefined;
        const entry: LocalTile = { tile: mergeTile(aggs, stored, d.state) };
        if (d.expiresAt !== undefined) entry.expiresAt = d.expiresAt;
        tx.put({ t: "tile", view: view.name, entity: d.entityKey, tile: d.tile, entry });
        tiles++;
      }
      for (const m of commit?.marks ?? []) tx.put({ t: "mark", key: m.key, value: m.position });
      applyCommit(tx, commit, t);
      return { ok: true, tiles, expired };
    });
  };

  const clearTiles = (view: FeatureView, range: { start: number; end: number }): Promise<void> =>
    run((tx) => {
      for (const [entity, m] of state.tiles.get(view.name) ?? []) {
        for (const key of m.keys()) {
          const { slideMs, index } = parseTileKey(key);
          const inside = slideMs > 0 ? index * slideMs >= range.start && (index + 1) * slideMs <= range.end : range.start === -Infinity && range.end === Infinity;
          if (inside && tx.tile(view.name, entity, key)) {
            tx.put({ t: "tile", view: view.name, entity, tile: key, entry: null });
          }
        }
      }
    });

  /** Drops an entity's expired tiles as it is read, so that state stays bounded. */
  const sweepTiles = (view: string, entity: string, m: Map<string, LocalTile>, t: number) => {
    for (const [k, e] of m) if (e.expiresAt !== undefined && e.expiresAt <= t) m.delete(k);
    if (m.size === 0) state.tiles.get(view)?.delete(entity);
  };

  const read = (view: FeatureView, entityKeys: string[], features: string[]): Record<string, FeatureValue>[] => {
    const t = now();
    if (view.aggregations?.length) {
      const aggs = view.aggregations.filter((a) => features.includes(a.name));
      const wanted = new Set(tilesForRead(aggs, t));
      const byEntity = state.tiles.get(view.name);
      return entityKeys.map((ek) => {
        const m = byEntity?.get(ek);
        const tiles = new Map<string, Tile>();
        if (m) {
          if (!persist) sweepTiles(view.name, ek, m, t);
          for (const k of wanted) {
            const e = m.get(k);
            if (e && (e.expiresAt === undefined || e.expiresAt > t)) tiles.set(k, e.tile);
          }
        }
        return readAggregates(view.aggregations!, tiles, features, t);
      });
    }
    const m = state.rows.get(view.name);
    return entityKeys.map((ek) => {
      const e = live(m?.get(ek), t);
      const out: Record<string, FeatureValue> = {};
      for (const f of features) out[f] = featureValue(view, e, f, t);
      return out;
    });
  };

  const meta: MetaStore = {
    begin: (key, fingerprint, pendingTtlMs) =>
      run((tx): IdempotencyState => {
        const t = now();
        const cur = tx.idem(key);
        if (cur && cur.expiresAt > t) return { state: cur.state, fingerprint: cur.fingerprint };
        const token = crypto.randomUUID();
        tx.put({ t: "idem", key, entry: { state: "pending", fingerprint, token, expiresAt: t + pendingTtlMs } });
        return { state: "started", token };
      }),
    abandon: (key, token) =>
      run((tx) => {
        const cur = tx.idem(key);
        if (cur?.state === "pending" && cur.token === token) tx.put({ t: "idem", key, entry: null });
      }),
    settle: (key, fingerprint, ttlMs) => run((tx) => applyCommit(tx, { done: { key, fingerprint, ttlMs } }, now())),
    getCheckpoint: (key) => Promise.resolve(state.checkpoints.get(key)),
    setCheckpoint: (key, value, fence) =>
      run((tx) => {
        if (typeof value !== "string" || !/^\d+$/.test(value)) {
          throw new FreshetError("INVALID_INPUT", `checkpoint ${JSON.stringify(value)} is not a non-negative decimal integer`, { plugin, retriable: false });
        }
        if (fence) {
          const lease = tx.lease(fence.lease);
          if (!lease || lease.owner !== fence.owner || lease.counter !== fence.counter || lease.expiresAt <= now()) return false;
        }
        const cur = tx.checkpoint(key);
        if (cur !== undefined && compareDecimal(value, cur) <= 0) return false;
        tx.put({ t: "cp", key, value });
        return true;
      }),
    getWatermark: (key) => Promise.resolve(state.watermarks.get(key)),
    advanceWatermark: (key, eventTime) =>
      run((tx) => {
        const cur = tx.watermark(key);
        if (cur !== undefined && cur >= eventTime) return cur;
        tx.put({ t: "wm", key, value: eventTime });
        return eventTime;
      }),
    acquireLease: (key, owner, ttlMs) =>
      run((tx) => {
        const cur = tx.lease(key);
        const t = now();
        if (cur && cur.owner && cur.owner !== owner && cur.expiresAt > t) return undefined;
        const counter = cur && cur.owner === owner && cur.expiresAt > t ? cur.counter : (cur?.counter ?? 0) + 1;
        const lease: Lease = { key, owner, counter, expiresAt: t + ttlMs };
        tx.put({ t: "lease", key, lease });
        return { ...lease };
      }),
    releaseLease: (key, owner) =>
      run((tx) => {
        const cur = tx.lease(key);
        if (cur && cur.owner === owner) tx.put({ t: "lease", key, lease: { ...cur, owner: "", expiresAt: 0 } });
      }),
    listLeases: (prefix) =>
      Promise.resolve([...state.leases.values()].filter((l) => l.key.startsWith(prefix)).map((l) => ({ ...l }))),
  };

  return {
    state,
    write,
    read,
    meta,
    foldTiles,
    clearTiles,
    exclusive: <T>(fn: () => Promise<T>) =>
      new Promise<T>((resolve, reject) => {
        queue.push({ exclusive: fn, resolve: resolve as (v: unknown) => void, reject });
        running ??= drain();
      }),
    async idle() {
      while (running) await running;
    },
  };
}
