/**
 * @module
 * The seams of Freshet: sources, formats, stores and dead-letter sinks.
 * Plugins implement these types; the core never imports a plugin.
 */
import type { TileDelta } from "./aggregations.ts";
import type { FeatureView } from "./definitions.ts";

/** A value that may or may not be a promise. */
export type MaybePromise<T> = T | Promise<T>;

/** A row of named values, as it flows through the pipeline. */
export type Row = Record<string, unknown>;

/** Where a record came from, so that a dead letter can be found and replayed. */
export type Position =
  | { kind: "kafka"; topic: string; partition: number; offset: string }
  | { kind: "kinesis"; stream: string; shardId: string; sequenceNumber: string; subSequence?: number }
  | { kind: "push"; requestId: string; index: number }
  | { kind: "file"; path: string; line: number }
  | { kind: "memory"; index: number };

/** One raw record from a source: bytes, a string, or an already parsed body (HTTP push). */
export interface RawRecord {
  /** The payload. Bytes and strings are decoded by the source's format; objects are taken as they are. */
  value: Uint8Array | string | Row;
  /** Where the record sits in its source, for acks, dedupe and dead letters. */
  position: Position;
  /** The broker's append time in epoch ms, when the source has one (Kafka, Kinesis). */
  brokerTime?: number;
}

/** A batch of records from one source. `ack()` is called only after the stores accepted it. */
export interface SourceBatch {
  /** The records, in source order. */
  records: RawRecord[];
  /** Acknowledges every record of the batch: commit the offset, write the checkpoint. */
  ack(): Promise<void>;
  /** True when the batch can no longer be acknowledged (partition revoked, lease lost): the processor skips it. */
  isStale?(): boolean;
}

/** Lag as a source sees it, for /metrics and logs. */
export interface SourceLag {
  /** Per partition or shard: records (Kafka) or milliseconds (Kinesis) behind. */
  [partitionOrShard: string]: number;
}

/**
 * A streaming source. `run` calls `onBatch` and awaits it before it fetches
 * more, which is the backpressure: a slow store slows the source down, so
 * memory stays bounded. It resolves when `signal` aborts and in-flight
 * batches have finished.
 */
export interface StreamSource {
  /** The source kind: "kafka", "kinesis", ... */
  readonly kind: string;
  /** The source definition's name. */
  readonly name: string;
  /** Reads until `signal` aborts, handing each batch to `onBatch` and acknowledging it only after `onBatch` resolved. */
  run(onBatch: (batch: SourceBatch) => Promise<void>, signal: AbortSignal): Promise<void>;
  /** Current lag, when the source knows it. */
  lag?(): SourceLag;
  /** The unit of `lag()`: "records" or "ms". */
  readonly lagUnit?: "records" | "ms";
}

/** Turns bytes into an object. Throwing marks the record as a decode failure. */
export interface Format {
  /** The format's name, for messages: "json", "avro". */
  readonly name: string;
  /** Decodes one payload into a row (or throws: the record is dead-lettered with reason "decode"). */
  decode(bytes: Uint8Array): MaybePromise<unknown>;
}

/** A feature row ready for a store: the entity key, the values, and its times. */
export interface FeatureRow {
  /** The serialized entity key, see `entityKeyOf`. */
  entityKey: string;
  /** Feature values by name (join keys and timestamps excluded). */
  values: Row;
  /** Event time, epoch ms. */
  eventTime: number;
  /** Created time, epoch ms; breaks ties between equal event times. */
  createdTime?: number;
  /** Where the row came from (offline log rows carry it). */
  position?: Position;
  /**
   * The row's place in the offline log, as a string that sorts in the order
   * rows were appended (append time, writer, row number): among rows of equal
   * (event time, created time) the first appended wins, as online.
   */
  logSeq?: string;
}

/** What a write did. Every row is written, stale or expired. */
export interface WriteResult {
  /** Rows written. */
  written: number;
  /** Rows not newer than what the store held (see `isNewer`): skipped. */
  stale: number;
  /** Rows already outside the view's ttl (event time + ttl <= now): not written. */
  expired: number;
}

/**
 * Metadata changed in the same atomic step as a write (one Lua script, one
 * log append, one transaction), so that the state that guards an effect
 * never runs ahead of the effect.
 */
export interface CommitMeta {
  /** Greatest event time seen, per watermark key: each is raised to at least this value (never lowered). */
  watermarks?: Record<string, number>;
  /** Marks an idempotency key done, with the fingerprint of the request it guarded, for `ttlMs`. */
  done?: { key: string; fingerprint: string; ttlMs: number };
}

/**
 * An applied mark to check and advance with a fold: the highest source
 * position folded into a view's aggregates from one partition (key
 * `view:kafka:topic:partition`). The fold is applied only when the store
 * holds exactly `expected` (absent: no mark yet), so two deliveries of the
 * same records can never both be folded.
 */
export interface AppliedMark {
  /** The mark's key, `view:kafka:topic:partition`. */
  key: string;
  /** The mark the caller read before it filtered the batch; undefined when there was none. */
  expected?: string;
  /** The new mark. */
  position: string;
}

/** What {@link AggregatingStore.foldTiles} applies in its one atomic step besides the tiles. */
export interface TileCommit extends CommitMeta {
  /** The applied marks to move, each only if it still holds what was read. */
  marks?: AppliedMark[];
}

/** What a fold did: applied, or refused because an applied mark moved (nothing was written). */
export type FoldResult =
  | { ok: true; tiles: number; expired: number }
  /** Some mark was not the expected one: the current marks, to filter the batch again. */
  | { ok: false; marks: Record<string, string | undefined> };

/**
 * The aggregation contract: stores that serve aggregation views keep tiles
 * (partial states per entity and tile of the slide interval, see
 * core/aggregations.ts) and applied marks.
 *
 * `foldTiles` merges each delta into its stored tile with {@link mergeTile}
 * semantics, skips deltas whose `expiresAt` is not after the store's clock,
 * checks and advances the applied marks, and applies the commit's
 * watermarks and idempotency key, all in one atomic step (one Lua script,
 * one SQLite transaction) or not at all. Tiles expire at their `expiresAt`.
 * `read` on a view with aggregations answers the aggregation names from the
 * tiles of the window ending at the store's clock, in one round trip.
 */
export interface AggregatingStore {
  /**
   * The largest fold the store takes in one atomic step, in bytes of tile
   * keys and JSON states (a request or parameter size limit). A bigger batch
   * from a source with positions is folded in steps, each with its applied
   * marks; a bigger push is refused. Unset: no limit.
   */
  readonly maxFoldBytes?: number;
  /** Merges `deltas` into the stored tiles and applies `commit`, in one atomic step. */
  foldTiles(view: FeatureView, deltas: TileDelta[], commit?: TileCommit): Promise<FoldResult>;
  /** The applied mark under `key`. */
  getAppliedMark(key: string): Promise<string | undefined>;
  /**
   * Deletes the view's tiles that lie wholly inside [start, end), for every
   * entity (a backfill rebuilds them). Lifetime tiles are deleted only when
   * the range is unbounded on both sides (-Infinity, Infinity).
   */
  clearTiles(view: FeatureView, range: { start: number; end: number }): Promise<void>;
  /**
   * For a store that cannot fold across all of itself in one atomic step
   * (a Redis Cluster: one script reaches one hash slot): the applied mark
   * key that guards an entity's tiles, derived from `key`
   * (`view:partition`). Marks are then kept per part of the store, each
   * checked with the tiles of its part, and a caller filters a redelivery
   * per mark key. Absent: `key` itself, one mark for the whole partition.
   */
  markKey?(view: FeatureView, entityKey: string, key: string): string;
}

/** Whether an online store also serves aggregations. */
export function isAggregatingStore(store: OnlineStore | undefined): store is OnlineStore & AggregatingStore {
  return !!store && typeof (store as Partial<AggregatingStore>).foldTiles === "function";
}

/** Where an idempotency key stands, as {@link MetaStore.begin} finds it. */
export type IdempotencyState =
  /** Nobody held it: this call now holds it as pending; `token` releases it. */
  | { state: "started"; token: string }
  /** Another delivery is running (or crashed less than the pending ttl ago). */
  | { state: "pending"; fingerprint: string }
  /** The effect of an earlier delivery is durable. */
  | { state: "done"; fingerprint: string };

/** The status of one feature value on read, as Feast names them. */
export type FeatureStatus = "PRESENT" | "NOT_FOUND" | "NULL_VALUE" | "OUTSIDE_MAX_AGE";

/** One feature value read back. */
export interface FeatureValue {
  /** The value; null unless PRESENT. */
  value: unknown;
  /** Whether the value is there, null, missing or too old. */
  status: FeatureStatus;
  /** Event time of the stored row, epoch ms; undefined when NOT_FOUND. */
  eventTime?: number;
}

/** A lease on a shard or partition, for sharing work between workers. */
export interface Lease {
  /** What the lease is on: a shard or partition key. */
  key: string;
  /** The worker holding it. */
  owner: string;
  /** Increases every time the lease changes hands: the fencing token. */
  counter: number;
  /** Epoch ms after which another worker may take it. */
  expiresAt: number;
}

/**
 * Small metadata beside the features: idempotency keys, checkpoints,
 * watermarks and leases. Every method is atomic on its key, across
 * processes for shared stores (one script on Redis and Upstash).
 */
export interface MetaStore {
  /**
   * Starts an idempotent delivery: when `key` is absent, records it as
   * pending (with `fingerprint`) for `pendingTtlMs` and answers "started";
   * otherwise answers what it holds. A crashed delivery's pending key
   * expires, so a retry is processed. It becomes done only through
   * `OnlineStore.write`'s `commit.done` or {@link MetaStore.settle}.
   */
  begin(key: string, fingerprint: string, pendingTtlMs: number): Promise<IdempotencyState>;
  /** Releases a pending key this caller holds (`token` from "started"); a done key, or another's, is left alone. */
  abandon(key: string, token: string): Promise<void>;
  /** Marks a key done without a write (a push that wrote only offline). */
  settle(key: string, fingerprint: string, ttlMs: number): Promise<void>;
  /** Reads a checkpoint. */
  getCheckpoint(key: string): Promise<string | undefined>;
  /**
   * Moves a checkpoint forward. Refused (returns false) when `value` is not
   * greater than the stored one (compared as non-negative decimal integers),
   * or when `fence` is given and that lease is no longer held with that counter.
   */
  setCheckpoint(key: string, value: string, fence?: { lease: string; owner: string; counter: number }): Promise<boolean>;
  /** The greatest event time recorded under a watermark key, epoch ms. */
  getWatermark(key: string): Promise<number | undefined>;
  /** Raises a watermark key to at least `eventTime` (never lowers it); returns the stored value. */
  advanceWatermark(key: string, eventTime: number): Promise<number>;
  /**
   * Takes or renews a lease: succeeds when it is free, expired, or already
   * held by `owner`. Returns the lease, or undefined when another holds it.
   */
  acquireLease(key: string, owner: string, ttlMs: number): Promise<Lease | undefined>;
  /** Releases a lease held by `owner`. */
  releaseLease(key: string, owner: string): Promise<void>;
  /** Lists leases under a prefix. */
  listLeases(prefix: string): Promise<Lease[]>;
}

/**
 * An online store: latest value per entity, atomic per entity.
 *
 * `write` is latest-wins through `isNewer`: a row replaces the stored one
 * only when its (event time, created time) is strictly greater, so the first
 * of equals wins, even under concurrent writers. A row whose event time +
 * ttl is not after the store's clock is counted `expired` and not written.
 * Keys expire at event time + ttl. `commit` is applied in the same atomic
 * step as the rows (or not at all). `read` enforces the view's ttl
 * (OUTSIDE_MAX_AGE).
 */
export interface OnlineStore {
  /** The store's name, for messages and metrics: "redis", "sqlite", ... */
  readonly name: string;
  /** Writes the rows that are newer than what the store holds, and applies `commit` in the same atomic step. */
  write(view: FeatureView, rows: FeatureRow[], commit?: CommitMeta): Promise<WriteResult>;
  /** Reads `features` of each entity key, in order. */
  read(view: FeatureView, entityKeys: string[], features: string[]): Promise<Record<string, FeatureValue>[]>;
  /** Checkpoints, watermarks, idempotency keys and leases, in the same database. */
  readonly meta: MetaStore;
  /** Liveness and integrity check for /health: rejects when the store cannot serve. */
  ping?(): Promise<void>;
  /** Closes connections and files. */
  close?(): Promise<void>;
}

/** One entity row of a point-in-time lookup: the serialized entity key and the time to look at. */
export interface AsOfEntity {
  /** The serialized entity key, see `entityKeyOf`. */
  entityKey: string;
  /** Epoch ms. */
  time: number;
}

/** What a point-in-time lookup found for one entity row: the values of the asked features and the row's event time. */
export interface AsOfMatch {
  /** Feature values by name. */
  values: Row;
  /** Event time, epoch ms. */
  eventTime: number;
}

/**
 * An append-only log of feature rows, for training data. `read` yields every
 * logged row with `eventTime` in `[start, end)`, in any order, with
 * duplicates from at-least-once delivery. A store may answer point-in-time
 * lookups itself (`asOf`, e.g. with DuckDB); the core's streaming join
 * over `read` gives the same answers otherwise.
 */
export interface OfflineStore {
  /** The log's name, for messages. */
  readonly name: string;
  /** Appends rows of a view. */
  append(view: FeatureView, rows: FeatureRow[]): Promise<void>;
  /** Reads a view's rows with event times in `[start, end)`, in chunks. */
  read(view: FeatureView, range: { start?: number; end?: number }): AsyncIterable<FeatureRow[]>;
  /**
   * For each entity, the latest logged row of `view` for its key with event
   * time at or before `time` (created time breaks ties, then the first
   * appended), or undefined when there is none or it is older than the
   * view's ttl. Resolves `undefined` (not an array) when the engine is not
   * available here, so the caller falls back to the streaming join.
   */
  asOf?(view: FeatureView, features: string[], entities: AsOfEntity[]): Promise<(AsOfMatch | undefined)[] | undefined>;
  /** Flushes and closes. */
  close?(): Promise<void>;
}

/** Why a record did not make it. */
/** Why a record was dead-lettered; `unknown_source` and `truncated` only come from a replay. */
export type DeadLetterReason = "decode" | "schema" | "udf" | "timestamp" | "join_key" | "late" | "unknown_source" | "truncated";

/** A record that was not written, with everything needed to find, fix and replay it. */
export interface DeadLetter {
  /** The source it came from. */
  source: string;
  /** The view it failed for, when it got that far. */
  view?: string;
  /** Why it failed. */
  reason: DeadLetterReason;
  /** What went wrong, and how to fix it. */
  message: string;
  /** Path of the offending field, e.g. `conv_rate` or `event_timestamp`. */
  path?: string;
  /** Where the record sits in its source. */
  position: Position;
  /** The raw payload as text (bytes are base64 with `encoding: "base64"`). */
  payload: string;
  /** How `payload` is written: text, base64 bytes, or JSON. */
  encoding?: "utf8" | "base64" | "json";
  /** When it was dead-lettered, ISO 8601. */
  at: string;
}

/** Where dead letters go. Must not lose them: throw if they cannot be stored. */
export interface DeadLetterSink {
  /** The sink's name, for messages and metrics. */
  readonly name: string;
  /** Stores the letters durably before it resolves. */
  write(letters: DeadLetter[]): Promise<void>;
  /** Flushes and closes. */
  close?(): Promise<void>;
}

/** Minimal structured logger; `console` fits. */
export interface Logger {
  /** Logs progress. */
  info(msg: string, ...args: unknown[]): void;
  /** Logs a problem that Freshet handles (a retry, a dead letter). */
  warn(msg: string, ...args: unknown[]): void;
  /** Logs a failure. */
  error(msg: string, ...args: unknown[]): void;
}
