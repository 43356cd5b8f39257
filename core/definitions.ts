/**
 * @module
 * Definitions: entities, sources and stream feature views, with Feast's
 * field names in camelCase. Each factory checks what it can on its own and
 * throws a definition error that says how to fix it; cross-definition checks
 * happen in the registry.
 */
import type { Format, MaybePromise, Row } from "./contracts.ts";
import { type Aggregation, type ResolvedAggregation, resolveAggregations } from "./aggregations.ts";
import { definitionError } from "./errors.ts";
import { DEFAULT_MAX_FUTURE_SKEW_MS, parseDuration, readDuration } from "./time.ts";

/** A Standard Schema (valibot, zod and arktype implement it). Freshet validates through it, so the core needs no schema library. */
export interface StandardSchema<Output = Row> {
  /** The Standard Schema interface (https://standardschema.dev). */
  readonly "~standard": {
    readonly version: 1;
    readonly vendor: string;
    readonly validate: (value: unknown) => MaybePromise<
      | { readonly value: Output; readonly issues?: undefined }
      // `| undefined` on the optional fields: with exactOptionalPropertyTypes a schema library's `path?: X | undefined` must still fit.
      | { readonly issues: ReadonlyArray<{ readonly message: string; readonly path?: ReadonlyArray<PropertyKey | { readonly key: PropertyKey }> | undefined }> }
    >;
  };
  /** valibot's object schemas expose their entries; Freshet reads the field names from them. */
  readonly entries?: Record<string, unknown> | undefined;
}

/** Common descriptive fields. */
export interface Described {
  /** What the object is, for people. */
  description?: string;
  /** Free-form labels. */
  tags?: Record<string, string>;
  /** Who to ask about it. */
  owner?: string;
}

/** An entity: what features describe, identified by its join keys. */
export interface Entity extends Described {
  /** Always "entity". */
  readonly kind: "entity";
  /** The entity's name, unique in the repo. */
  readonly name: string;
  /** The columns that identify one entity. */
  readonly joinKeys: string[];
}

/**
 * Declares an entity.
 *
 * @example
 * ```ts
 * const driver = entity({ name: "driver", joinKeys: ["driver_id"] })
 * ```
 */
export function entity(opts: { name: string; joinKeys?: string[]; joinKey?: string } & Described): Entity {
  requireName("entity", opts?.name);
  checkKeys("entity", opts, ENTITY_KEYS);
  const joinKeys = opts.joinKeys ?? (opts.joinKey ? [opts.joinKey] : [opts.name]);
  if (!Array.isArray(joinKeys) || joinKeys.length === 0 || joinKeys.some((k) => typeof k !== "string" || !k)) {
    throw definitionError(opts.name, 'joinKeys must be a non-empty array of column names, e.g. joinKeys: ["driver_id"]');
  }
  return freeze({ kind: "entity", name: opts.name, joinKeys: [...joinKeys], description: opts.description, tags: opts.tags, owner: opts.owner });
}

/** Options shared by every source. */
export interface SourceCommon extends Described {
  /** The source's name, unique in the repo. */
  name: string;
  /** The column holding the event time. */
  timestampField?: string;
  /** The column holding the created time; breaks ties between equal event times. */
  createdTimestampColumn?: string;
  /** Renames raw columns before validation: `{ raw_name: "schema_name" }`. */
  fieldMapping?: Record<string, string>;
  /** Where historical rows live, for backfills (`materialize`). */
  batchSource?: FileSource;
  /**
   * The watermark of each partition, shard or push source is the greatest
   * event time seen there minus this delay; an event below the watermark as
   * it stood before its batch is late. A number is seconds, or "30s", "5m".
   * Unset: nothing is ever late.
   */
  watermarkDelay?: number | string;
  /**
   * How far ahead of now (or of the broker's append time, when later) an
   * event time may be. A later one is invalid: dead-lettered, or a 422 on
   * push. Default 5 minutes. A number is seconds, or "5m", "1h".
   */
  maxFutureSkew?: number | string;
}

/** A batch source of rows in a file: JSON Lines, CSV or Parquet. */
export interface FileSource extends Described {
  /** Always "file". */
  readonly kind: "file";
  /** The source's name. */
  readonly name: string;
  /** The file to read. */
  readonly path: string;
  /** JSON Lines, CSV or Parquet (default: from the extension). */
  readonly fileFormat: "jsonl" | "csv" | "parquet";
  /** The column holding the event time. */
  readonly timestampField?: string;
  /** The column holding the created time, the tie-break between rows of equal event time. */
  readonly createdTimestampColumn?: string;
  /** Renames columns: file column -> view field. */
  readonly fieldMapping?: Record<string, string>;
}

/**
 * Declares a file batch source. The format follows the extension
 * (`.jsonl`/`.ndjson`, `.csv`, `.parquet`) unless `fileFormat` says otherwise.
 *
 * @example
 * ```ts
 * const history = fileSource({ name: "driver_history", path: "data/driver_stats.parquet", timestampField: "event_timestamp" })
 * ```
 */
export function fileSource(opts: Omit<FileSource, "kind" | "fileFormat"> & { fileFormat?: FileSource["fileFormat"] }): FileSource {
  requireName("fileSource", opts?.name);
  checkKeys("fileSource", opts, FILE_SOURCE_KEYS);
  if (typeof opts.path !== "string" || !opts.path) throw definitionError(opts.name, 'path is required, e.g. path: "data/driver_stats.jsonl"');
  const ext = opts.path.toLowerCase().split(".").pop();
  const fileFormat = opts.fileFormat ?? (ext === "csv" ? "csv" : ext === "parquet" ? "parquet" : ext === "jsonl" || ext === "ndjson" || ext === "json" ? "jsonl" : undefined);
  if (!fileFormat || !["jsonl", "csv", "parquet"].includes(fileFormat)) {
    throw definitionError(opts.name, `cannot tell the format of "${opts.path}": set fileFormat to "jsonl", "csv" or "parquet"`);
  }
  return freeze({ ...opts, kind: "file", fileFormat });
}

/** A push source: rows arrive over HTTP `POST /push`. */
export interface PushSource extends SourceCommon {
  /** Always "push". */
  readonly kind: "push";
}

/**
 * Declares a push source. Its timestamp field comes from its batch source,
 * or from the views that read it.
 *
 * @example
 * ```ts
 * const pushed = pushSource({ name: "driver_stats_push_source", timestampField: "event_timestamp" })
 * ```
 */
export function pushSource(opts: SourceCommon): PushSource {
  return source("push", opts);
}

/** TLS options passed to the Kafka client. `true` uses the system's CAs. */
export type KafkaTls = boolean | { ca?: string | string[]; cert?: string; key?: string; rejectUnauthorized?: boolean; servername?: string };

/** SASL options for Kafka (Feast issue #4894). */
export type KafkaSasl =
  | { mechanism: "plain" | "scram-sha-256" | "scram-sha-512"; username: string; password: string }
  | { mechanism: "oauthbearer"; oauthBearerProvider: () => Promise<{ value: string }> };

/** A Kafka topic as a stream source. */
export interface KafkaSource extends SourceCommon {
  /** Always "kafka". */
  readonly kind: "kafka";
  /** Broker list: `["b1:9092", "b2:9092"]` or `"b1:9092,b2:9092"`. */
  kafkaBootstrapServers: string | string[];
  /** The topic to read. */
  topic: string;
  /** Defaults to JSON. */
  messageFormat?: Format;
  /** The Kafka client id. Default `freshet`. */
  clientId?: string;
  /** Consumer group; defaults to `freshet-<source name>`. */
  groupId?: string;
  /** TLS: `true` for the system's CAs, or the CA, certificate and key (PEM). */
  ssl?: KafkaTls;
  /** SASL PLAIN, SCRAM-SHA-256/512 or OAUTHBEARER. */
  sasl?: KafkaSasl;
  /** Where a new group starts: "earliest" (default), "latest", or an epoch-ms / ISO timestamp. */
  startFrom?: "earliest" | "latest" | { timestamp: number | string };
  /** Maximum records handed to the pipeline at once (per partition). */
  batchSize?: number;
  /** How long the broker may wait to fill a fetch, in ms (kafkajs maxWaitTimeInMs). */
  lingerMs?: number;
  /** Send dead letters to this topic instead of the default sink. */
  deadLetterTopic?: string;
  /**
   * Group session timeout: a member silent this long is removed from the
   * group, so it bounds how long a killed consumer's partitions stay with it.
   * A number is seconds, or "10s", "500ms". Default kafkajs' 30 s.
   */
  sessionTimeout?: number | string;
  /** How often the member heartbeats; below `sessionTimeout`. Default a fifth of `sessionTimeout` (at most 3 s). */
  heartbeatInterval?: number | string;
  /** How long a rebalance waits for the members to rejoin. Default kafkajs' 60 s. */
  rebalanceTimeout?: number | string;
}

/**
 * Declares a Kafka source.
 *
 * @example
 * ```ts
 * const trips = kafkaSource({ name: "trips", kafkaBootstrapServers: "localhost:9092", topic: "trips", timestampField: "event_timestamp" })
 * ```
 */
export function kafkaSource(opts: Omit<KafkaSource, "kind">): KafkaSource {
  const def = source("kafka", opts);
  const servers = typeof opts.kafkaBootstrapServers === "string" ? opts.kafkaBootstrapServers.split(",").filter(Boolean) : opts.kafkaBootstrapServers;
  if (!Array.isArray(servers) || servers.length === 0) {
    throw definitionError(opts.name, 'kafkaBootstrapServers is required, e.g. kafkaBootstrapServers: "localhost:9092"');
  }
  if (typeof opts.topic !== "string" || !opts.topic) throw definitionError(opts.name, 'topic is required, e.g. topic: "driver_stats"');
  const timing = (key: "sessionTimeout" | "heartbeatInterval" | "rebalanceTimeout", min: number): number | undefined => {
    const v = opts[key];
    if (v === undefined) return undefined;
    const ms = parseDuration(v);
    if (ms === undefined || ms < min || ms > 3_600_000) {
      const hint = typeof v === "number" && v > 3600 ? ` (a number is seconds: for ${v} ms write "${v}ms")` : "";
      throw definitionError(opts.name, `${key} ${JSON.stringify(v)} must be a duration from ${min} ms to 1 hour: seconds (10) or a string ("10s", "500ms")${hint}`);
    }
    return ms;
  };
  const session = timing("sessionTimeout", 1000);
  const heartbeat = timing("heartbeatInterval", 100);
  timing("rebalanceTimeout", 1000);
  if (heartbeat !== undefined && heartbeat >= (session ?? 30_000)) {
    throw definitionError(opts.name, `heartbeatInterval (${heartbeat} ms) must be below sessionTimeout (${session ?? 30_000} ms${session === undefined ? ", kafkajs' default" : ""}), at most a third of it is usual`);
  }
  return def;
}

/** A Kinesis data stream as a stream source. */
export interface KinesisSource extends SourceCommon {
  /** Always "kinesis". */
  readonly kind: "kinesis";
  /** The Kinesis data stream to read. */
  streamName: string;
  /** The AWS region. Default the SDK's (AWS_REGION). */
  region?: string;
  /** Defaults to JSON. */
  recordFormat?: Format;
  /** A custom endpoint (kinesis-local, LocalStack, a VPC endpoint). */
  endpoint?: string;
  /** Explicit credentials; otherwise the AWS SDK's default chain. */
  credentials?: { accessKeyId: string; secretAccessKey: string; sessionToken?: string };
  /** Where a shard without a checkpoint starts. */
  startFrom?: "TRIM_HORIZON" | "LATEST" | { timestamp: number | string };
  /** Pause between GetRecords calls on one shard when it returned nothing, in ms. Default 1000. */
  pollIntervalMs?: number;
  /** GetRecords Limit, 1 to 10000. */
  limit?: number;
  /**
   * The name checkpoints and leases are kept under (the KCL's application
   * name). Two applications on one stream each read every record; workers of
   * one application share its shards. Default: the source's name.
   */
  application?: string;
}

/**
 * Declares a Kinesis source.
 *
 * @example
 * ```ts
 * const clicks = kinesisSource({ name: "clicks", streamName: "clicks", region: "eu-west-1", timestampField: "ts" })
 * ```
 */
export function kinesisSource(opts: Omit<KinesisSource, "kind">): KinesisSource {
  const def = source("kinesis", opts);
  if (typeof opts.streamName !== "string" || !opts.streamName) throw definitionError(opts.name, 'streamName is required, e.g. streamName: "driver_stats"');
  if (opts.limit !== undefined && !(Number.isInteger(opts.limit) && opts.limit >= 1 && opts.limit <= 10_000)) {
    throw definitionError(opts.name, "limit must be an integer from 1 to 10000 (GetRecords' bounds)");
  }
  if (opts.application !== undefined && !isApplicationName(opts.application)) {
    throw definitionError(opts.name, `application ${JSON.stringify(opts.application)} must be letters, digits, "_", "-" or ".", e.g. application: "clicks-to-redis"`);
  }
  return def;
}

/** Any stream source definition. */
export type StreamSourceDef = PushSource | KafkaSource | KinesisSource;

/** A UDF: rows in, rows out, sync or async (Feast's `udf`). */
export type Udf = (rows: Row[]) => MaybePromise<Row[]>;

/** Options of {@link streamFeatureView}. */
export interface StreamFeatureViewOptions extends Described {
  /** The view's name, unique in the repo. */
  name: string;
  /** The entities its rows are keyed by. */
  entities: Entity[];
  /** The source object, or the name of a source in the same repo. */
  source: StreamSourceDef | string;
  /** A valibot object schema (any Standard Schema works) of the rows after field mapping. */
  schema: StandardSchema;
  /** Defaults to the source's timestamp field, then its batch source's. */
  timestampField?: string;
  /** The column holding the created time, the tie-break between rows of equal event time. */
  createdTimestampField?: string;
  /** How long a value stays fresh: on read it is OUTSIDE_MAX_AGE after this; the key expires after it. 0 means forever. A number is seconds, or "2h". */
  ttl: number | string;
  /** Transforms the validated rows of a batch (Feast's UDF); may drop or add rows. */
  udf?: Udf;
  /** The features to store. Default: the schema's fields except join keys and timestamps. List them when the UDF adds columns. */
  features?: string[];
  /** Write to the online store. Default true. */
  online?: boolean;
  /** Append to the offline store. Default false. */
  offline?: boolean;
  /** Overrides the source's watermark delay. */
  watermarkDelay?: number | string;
  /**
   * What happens to a late event (behind the watermark). Default false: it
   * goes through latest-wins and to the offline log like any other, and is
   * counted in `freshet_late_arrivals_total`. True: it is dead-lettered with
   * reason "late" and written nowhere.
   */
  dropLate?: boolean;
  /**
   * Windowed aggregations computed on the stream (Feast's Aggregation), kept
   * as tiles in the online store and read by name (`view:sum_amount_3600s`).
   * On a view with aggregations, the online store serves the aggregations
   * only; events behind the watermark are left out of them (dead letter,
   * reason "late") and still appended to the offline log.
   */
  aggregations?: Aggregation[];
}

/** A stream feature view, resolved: the shape the processor and the stores use. */
export interface FeatureView extends Described {
  /** Always "streamFeatureView". */
  readonly kind: "streamFeatureView";
  /** The view's name. */
  readonly name: string;
  /** The entities its rows are keyed by. */
  readonly entities: Entity[];
  /** Every join key of its entities, in order. */
  readonly joinKeys: string[];
  /** Its source, or the name of one. */
  readonly source: StreamSourceDef | string;
  /** The schema rows are validated with. */
  readonly schema: StandardSchema;
  /** The column holding the event time. */
  readonly timestampField?: string;
  /** The column holding the created time. */
  readonly createdTimestampField?: string;
  /** The ttl in ms; 0 is forever. */
  readonly ttlMs: number;
  /** The UDF, if any. */
  readonly udf?: Udf;
  /** Whether rows go to the online store. */
  readonly online: boolean;
  /** Whether rows go to the offline log. */
  readonly offline: boolean;
  /** How far behind the newest event an event may be before it is late, in ms. */
  readonly watermarkDelayMs?: number;
  /** Late events are dead-lettered instead of written. */
  readonly dropLate: boolean;
  /** The future bound on event and created times, from the source (default 5 minutes). */
  readonly maxFutureSkewMs: number;
  /** Feature names: given, or the schema's fields without join keys and timestamps (filled in by the registry). */
  readonly features: string[];
  /** The view's aggregations, checked and named; absent on a latest-wins view. */
  readonly aggregations?: readonly ResolvedAggregation[];
}

/**
 * Declares a stream feature view.
 *
 * @example
 * ```ts
 * import * as v from "valibot"
 * const stats = streamFeatureView({
 *   name: "driver_hourly_stats", entities: [driver], source: pushed, ttl: "2h",
 *   schema: v.object({ driver_id: v.number(), conv_rate: v.number(), event_timestamp: v.string() }),
 * })
 * ```
 */
export function streamFeatureView(opts: StreamFeatureViewOptions): FeatureView {
  requireName("streamFeatureView", opts?.name);
  checkKeys("streamFeatureView", opts, VIEW_KEYS);
  const name = opts.name;
  if (!Array.isArray(opts.entities) || opts.entities.length === 0 || opts.entities.some((e) => e?.kind !== "entity")) {
    throw definitionError(name, "entities must be a non-empty array of entity(...) definitions");
  }
  if (!opts.source) throw definitionError(name, "source is required: a pushSource(...), kafkaSource(...) or kinesisSource(...), or its name");
  if (!opts.schema || typeof opts.schema !== "object" || !("~standard" in opts.schema)) {
    throw definitionError(name, "schema must be a valibot schema, e.g. schema: v.object({ driver_id: v.number(), ... })");
  }
  const ttlMs = duration(name, "ttl", opts.ttl, "; 0 means no expiry");
  const delay = opts.watermarkDelay ?? (typeof opts.source === "object" ? opts.source.watermarkDelay : undefined);
  const watermarkDelayMs = delay === undefined ? undefined : duration(name, "watermarkDelay", delay);
  if (opts.dropLate !== undefined && typeof opts.dropLate !== "boolean") throw definitionError(name, "dropLate must be true or false");
  if (opts.dropLate && watermarkDelayMs === undefined && typeof opts.source === "object") throw definitionError(name, 'dropLate needs a watermarkDelay (on the view or its source), e.g. watermarkDelay: "5m"');
  const skew = typeof opts.source === "object" ? opts.source.maxFutureSkew : undefined;
  const maxFutureSkewMs = skew === undefined ? DEFAULT_MAX_FUTURE_SKEW_MS : parseDuration(skew)!;
  if (opts.udf !== undefined && typeof opts.udf !== "function") throw definitionError(name, "udf must be a function (rows) => rows");
  const aggregations = opts.aggregations === undefined ? undefined : resolveAggregations(name, opts.aggregations);
  if (aggregations && aggregations.length === 0) throw definitionError(name, "aggregations is empty; declare at least one, or remove it for a latest-wins view");
  const joinKeys = [...new Set(opts.entities.flatMap((e) => e.joinKeys))].sort();
  return freeze({
    kind: "streamFeatureView",
    name,
    entities: opts.entities,
    joinKeys,
    source: opts.source,
    schema: opts.schema,
    timestampField: opts.timestampField,
    createdTimestampField: opts.createdTimestampField,
    ttlMs,
    udf: opts.udf,
    online: opts.online ?? true,
    offline: opts.offline ?? false,
    watermarkDelayMs,
    dropLate: opts.dropLate ?? false,
    maxFutureSkewMs,
    features: opts.features ? [...opts.features] : [],
    aggregations: aggregations && Object.freeze(aggregations),
    description: opts.description,
    tags: opts.tags,
    owner: opts.owner,
  });
}

/** A feature service: a named list of feature refs, read together (Feast's FeatureService). */
export interface FeatureService extends Described {
  /** Always "featureService". */
  readonly kind: "featureService";
  /** The service's name, unique in the repo. */
  readonly name: string;
  /** `"view:feature"` refs, and views standing for all of their features; resolved to refs by the registry. */
  readonly features: readonly (string | FeatureView)[];
}

/**
 * Declares a feature service: `POST /get-online-features` with
 * `"feature_service": "<name>"` reads its features. An item is a
 * `"view:feature"` ref, or a view for all of its features.
 *
 * @example
 * ```ts
 * const model_v1 = featureService({ name: "model_v1", features: ["driver_hourly_stats:conv_rate", otherView] })
 * ```
 */
export function featureService(opts: { name: string; features: (string | FeatureView)[] } & Described): FeatureService {
  requireName("featureService", opts?.name);
  checkKeys("featureService", opts, FEATURE_SERVICE_KEYS);
  if (!Array.isArray(opts.features) || opts.features.length === 0) {
    throw definitionError(opts.name, 'features must be a non-empty array of "view:feature" refs or views, e.g. features: ["driver_hourly_stats:conv_rate"]');
  }
  opts.features.forEach((f, i) => {
    if (typeof f === "string" ? !/^[^:]+:.+$/.test(f) : f?.kind !== "streamFeatureView") {
      throw definitionError(opts.name, `features[${i}] must be a "view:feature" ref or a streamFeatureView(...), got ${typeof f === "string" ? JSON.stringify(f) : typeof f}`);
    }
  });
  return freeze({ kind: "featureService", name: opts.name, features: Object.freeze([...opts.features]), description: opts.description, tags: opts.tags, owner: opts.owner });
}

function source<K extends StreamSourceDef["kind"], O extends SourceCommon>(kind: K, opts: O): O & { kind: K } {
  requireName(`${kind}Source`, opts?.name);
  checkKeys(`${kind}Source`, opts, SOURCE_KEYS[kind]);
  if (opts.watermarkDelay !== undefined) duration(opts.name, "watermarkDelay", opts.watermarkDelay);
  if (opts.maxFutureSkew !== undefined) duration(opts.name, "maxFutureSkew", opts.maxFutureSkew);
  if (opts.batchSource !== undefined && opts.batchSource?.kind !== "file") {
    throw definitionError(opts.name, "batchSource must be a fileSource(...)");
  }
  return freeze({ ...opts, kind });
}

/** A duration option in ms, or a definition error naming the option and the bad value. */
function duration(definition: string, option: string, value: unknown, hint = ""): number {
  const d = readDuration(value);
  if ("error" in d) throw definitionError(definition, `${option} ${d.error}${hint}`);
  return d.ms;
}

// The option names each factory accepts. `kind` is accepted (and replaced) so that a definition can be spread into a new one.
const DESCRIBED_KEYS = ["description", "tags", "owner", "kind"];
const ENTITY_KEYS = ["name", "joinKeys", "joinKey", ...DESCRIBED_KEYS];
const FILE_SOURCE_KEYS = ["name", "path", "fileFormat", "timestampField", "createdTimestampColumn", "fieldMapping", ...DESCRIBED_KEYS];
const COMMON_KEYS = ["name", "timestampField", "createdTimestampColumn", "fieldMapping", "batchSource", "watermarkDelay", "maxFutureSkew", ...DESCRIBED_KEYS];
const SOURCE_KEYS: Record<StreamSourceDef["kind"], string[]> = {
  push: COMMON_KEYS,
  kafka: [...COMMON_KEYS, "kafkaBootstrapServers", "topic", "messageFormat", "clientId", "groupId", "ssl", "sasl", "startFrom", "batchSize", "lingerMs", "deadLetterTopic", "sessionTimeout", "heartbeatInterval", "rebalanceTimeout"],
  kinesis: [...COMMON_KEYS, "streamName", "region", "recordFormat", "endpoint", "credentials", "startFrom", "pollIntervalMs", "limit", "application"],
};
const FEATURE_SERVICE_KEYS = ["name", "features", ...DESCRIBED_KEYS];
const VIEW_KEYS = ["name", "entities", "source", "schema", "timestampField", "createdTimestampField", "ttl", "udf", "features", "online", "offline", "watermarkDelay", "dropLate", "aggregations", ...DESCRIBED_KEYS];

/**
 * Refuses option keys a factory does not know (a typo such as `groupID`
 * would otherwise be ignored), naming the closest known one.
 */
function checkKeys(factory: string, opts: object, known: readonly string[]): void {
  for (const [key, value] of Object.entries(opts)) {
    // An undefined value changes nothing (a spread of optional fields), so only keys with a value are checked.
    if (value === undefined || known.includes(key)) continue;
    const near = closest(key, known.filter((k) => k !== "kind"));
    throw definitionError(
      (opts as { name: string }).name,
      `${factory}() has no option "${key}"` + (near ? `; did you mean "${near}"?` : `; known options: ${known.filter((k) => k !== "kind").join(", ")}`),
    );
  }
}

/**
 * The known name nearest to `key` by case-insensitive edit distance, if one
 * is within `maxDistance` (default: 2, or a third of the key's length when
 * that is less), for "did you mean" hints.
 *
 * @example
 * ```ts
 * closest("groupID", ["groupId", "topic"]) // "groupId"
 * ```
 */
export function closest(key: string, known: readonly string[], maxDistance?: number): string | undefined {
  const a = key.toLowerCase();
  let best: string | undefined;
  let bestD = (maxDistance ?? Math.min(2, Math.max(1, Math.floor(a.length / 3)))) + 1;
  for (const k of known) {
    const d = editDistance(a, k.toLowerCase());
    if (d < bestD) [best, bestD] = [k, d];
  }
  return best;
}

function editDistance(a: string, b: string): number {
  let prev = Array.from({ length: b.length + 1 }, (_, j) => j);
  for (let i = 1; i <= a.length; i++) {
    const cur = [i];
    for (let j = 1; j <= b.length; j++) cur[j] = Math.min(prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + (a[i - 1] === b[j - 1] ? 0 : 1));
    prev = cur;
  }
  return prev[b.length];
}

/**
 * Whether `name` can name a Kinesis application: letters, digits, "_", "-"
 * or ".", at most 128 characters (it becomes part of metadata keys).
 *
 * @example
 * ```ts
 * isApplicationName("clicks-to-redis") // true
 * ```
 */
export function isApplicationName(name: unknown): name is string {
  return typeof name === "string" && /^[A-Za-z0-9_\-.]{1,128}$/.test(name);
}

function requireName(factory: string, name: unknown): asserts name is string {
  if (typeof name !== "string" || !/^[A-Za-z_][A-Za-z0-9_\-.]*$/.test(name)) {
    throw definitionError(String(name ?? "?"), `${factory}() needs a name of letters, digits, "_", "-" or ".", starting with a letter or "_"`);
  }
}

function freeze<T extends object>(o: T): T {
  return Object.freeze(o);
}
