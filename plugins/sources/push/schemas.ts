/**
 * @module
 * The valibot schemas of the HTTP interface's bodies. The app validates
 * every request with them (the shape; the checks that need the registry or
 * the limits follow), and `GET /openapi.json` is generated from them, so the
 * document cannot drift from what the server accepts.
 */
import * as v from "valibot";

type Issue = { message: string; path?: Path; issues?: Issue[] };

const TARGETS = ["online", "offline", "online_and_offline"] as const;

/** A field path as the error answers write it: `df.conv_rate`, `rows[3]`, `entities.driver_id[1]`. */
function fieldOf(path: readonly { key: unknown }[] | undefined, root = "body"): string {
  if (!path?.length) return root;
  let out = "";
  for (const { key } of path) out += typeof key === "number" ? `[${key}]` : `${out ? "." : ""}${String(key).slice(0, 100)}`;
  return out;
}

type Path = { key: unknown }[];

/** The issue that says most, with its full path: within a union, the branch that got deepest into the value (a branch's paths are relative to the union's). */
function deepest(issue: Issue, base: Path = []): { issue: Issue; path: Path } {
  let best = { issue, path: [...base, ...(issue.path ?? [])] };
  for (const sub of issue.issues ?? []) {
    const d = deepest(sub, best.path);
    if (d.path.length > best.path.length) best = d;
  }
  return best;
}

/**
 * Validates with a schema: its output, or the field and message of the first
 * issue. A message that starts with "must" is about its field, which is put
 * in front of it (a message function cannot see the path).
 */
export function check<S extends v.GenericSchema>(schema: S, value: unknown): { value: v.InferOutput<S> } | { error: { field: string; message: string } } {
  const r = v.safeParse(schema, value, { abortEarly: true });
  if (r.success) return { value: r.output };
  const { issue, path } = deepest(r.issues[0] as unknown as Issue);
  const field = fieldOf(path);
  return { error: { field, message: issue.message.startsWith("must ") ? `${field} ${issue.message}` : issue.message } };
}

/** An object schema's message: for a missing key, "<key> is required" and its hint; else the body's shape. */
const objectMessage = (shape: string, hints: Record<string, string>) => (i: { input: unknown; expected: string | null }): string => {
  if (i.input !== undefined) return shape;
  const key = (i.expected ?? "").replace(/^"|"$/g, "");
  return `${key} is required${hints[key] ? `: ${hints[key]}` : ""}`;
};

const scalar = v.union([v.string(), v.number(), v.boolean(), v.null()]);
const row = v.pipe(
  v.record(v.string(), v.unknown(), "must be a JSON object, one row"),
  v.description("One row: column name to value."),
);

/** A push body as validated (`to` defaulted). */
export interface PushBody {
  push_source_name: string;
  df?: Record<string, unknown> | Record<string, unknown>[];
  rows?: Record<string, unknown>[];
  to: "online" | "offline" | "online_and_offline";
}

/** A get-online-features body as validated. */
export interface GetOnlineFeaturesBody {
  entities: Record<string, (string | number)[]>;
  features?: string[];
  feature_service?: string;
  full_feature_names: boolean;
}

/** `POST /push`: Feast's push body. */
export const PushRequest: v.GenericSchema<unknown, PushBody> = v.pipe(
  v.object({
    push_source_name: v.pipe(
      v.string("push_source_name is required and must be a string"),
      v.nonEmpty("push_source_name is required and must be a string"),
      v.description("The push source to write through; every view fed by it gets the rows."),
    ),
    df: v.optional(v.pipe(
      v.union([
        v.pipe(
          v.record(v.string(), v.union([v.array(v.unknown()), scalar], "must be an array of values (or one scalar value for every row), not an object")),
          v.description("Columns, as Feast's df: each key a column holding one value per row. A scalar repeats on every row, as pandas does; all scalars make one row."),
        ),
        v.pipe(v.array(row), v.description("Rows, each an object.")),
      ], 'df is required: columns of values, {"driver_id": [1001], "conv_rate": [0.5], ...}, or a rows array'),
      v.examples([{ driver_id: [1001], event_timestamp: ["2022-05-13 10:59:42+00:00"], conv_rate: [1.0], string_feature: "test2" }]),
    )),
    rows: v.optional(v.pipe(v.array(row, "rows must be an array of row objects"), v.description("Rows, each an object: the alternative to df."))),
    to: v.optional(
      v.pipe(v.picklist(TARGETS, `to must be one of ${TARGETS.join(", ")}`), v.description("Which stores get the rows. Default online, as in Feast, whatever the views' offline flag.")),
      "online",
    ),
  }, objectMessage('the body must be a JSON object: {"push_source_name": ..., "df": {...}, "to": "online"}', { push_source_name: "the name of a push source, a string" })),
  v.title("PushRequest"),
  v.description("Feast's push body: columns in df (or rows), written to the views of a push source."),
);

/** `POST /get-online-features`: Feast's request. */
export const GetOnlineFeaturesRequest: v.GenericSchema<unknown, GetOnlineFeaturesBody> = v.pipe(
  v.object({
    entities: v.pipe(
      v.record(
        v.string(),
        v.array(v.union([v.string(), v.number()], (i: { input: unknown }): string => `must be a string or a number, not ${describe(i.input)}`), "must be an array of values"),
        'entities is required, e.g. {"driver_id": [1001, 1002]}',
      ),
      v.description("Join key name to the keys of each entity row; every column has one value per row."),
      v.examples([{ driver_id: [1001, 1002] }]),
    ),
    features: v.optional(v.pipe(
      v.array(v.string('must read "view:feature"'), 'features must be an array of "view:feature" refs'),
      v.description('Feature refs, "view:feature". Give features or feature_service.'),
      v.examples([["driver_hourly_stats:conv_rate"]]),
    )),
    feature_service: v.optional(v.pipe(v.string("feature_service must be the name of a feature service"), v.nonEmpty("feature_service must be the name of a feature service"), v.description("A feature service's name, in place of features."))),
    full_feature_names: v.optional(v.pipe(v.boolean("full_feature_names must be true or false"), v.description("Name features view__feature in the answer.")), false),
  }, objectMessage('the body must be {"entities": {...}, "features": ["view:feature", ...]}', { entities: 'e.g. {"driver_id": [1001, 1002]}' })),
  v.title("GetOnlineFeaturesRequest"),
);

function describe(x: unknown): string {
  return x === null ? "null" : Array.isArray(x) ? "an array" : typeof x === "object" ? "an object" : `a ${typeof x}`;
}

const issueSchema = v.object({ field: v.optional(v.string()), message: v.string(), reason: v.string(), row: v.number(), view: v.optional(v.string()) });

/** Every error answer. */
export const ErrorResponse: v.GenericSchema = v.pipe(
  v.object({
    error: v.object({
      code: v.pipe(v.string(), v.description("A stable code: invalid_request, invalid_rows, unauthorized, body_too_large, store_unavailable, ...")),
      message: v.string(),
      field: v.optional(v.pipe(v.string(), v.description("The offending field: df.conv_rate[3], push_source_name, entities.driver_id, authorization ..."))),
      issues: v.optional(v.array(issueSchema)),
      issues_total: v.optional(v.number()),
      request_id: v.optional(v.string()),
    }),
  }),
  v.title("ErrorResponse"),
);

/** The answer to an accepted push. */
export const PushResponse: v.GenericSchema = v.pipe(
  v.union([
    v.object({
      status: v.literal("ok"),
      request_id: v.string(),
      records: v.number(),
      written: v.number(),
      stale: v.number(),
      expired: v.number(),
      late: v.number(),
      views: v.record(v.string(), v.record(v.string(), v.number())),
    }),
    v.pipe(v.object({ status: v.literal("duplicate"), webhook_id: v.string(), records: v.number() }), v.description("The webhook-id was done before: its rows are durable, nothing was written again.")),
  ]),
  v.title("PushResponse"),
);

/** Feast's get-online-features answer: column-major. */
export const GetOnlineFeaturesResponse: v.GenericSchema = v.pipe(
  v.object({
    metadata: v.object({ feature_names: v.array(v.string()) }),
    results: v.array(v.object({
      values: v.array(v.unknown()),
      statuses: v.array(v.picklist(["PRESENT", "NOT_FOUND", "NULL_VALUE", "OUTSIDE_MAX_AGE"])),
      event_timestamps: v.array(v.string()),
    })),
  }),
  v.title("GetOnlineFeaturesResponse"),
  v.description("results[i] belongs to feature_names[i] (join keys first); values[j] to entity row j."),
);

/** `GET /health`. */
export const HealthResponse: v.GenericSchema = v.pipe(v.object({ status: v.literal("ok"), project: v.string(), store: v.nullable(v.string()) }), v.title("HealthResponse"));

const outcomes = v.object({ written: v.number(), stale: v.number(), expired: v.number(), late: v.number(), invalid: v.number() });

/** What `GET /status` answers. */
export interface Status {
  project: string;
  store: string | null;
  generated_at: string;
  views: {
    name: string;
    source: string;
    entities: string[];
    features: string[];
    online: boolean;
    offline: boolean;
    records: { written: number; stale: number; expired: number; late: number; invalid: number };
    newest_event_time: string | null;
    freshness_seconds: number | null;
  }[];
  sources: { name: string; kind: string; duplicates: number; lag: { partition: string; value: number }[]; events_per_second: number | null }[];
  feature_services: { name: string; features: string[] }[];
  dead_letters: { at: string; source: string; view?: string; reason: string; message: string; path?: string; payload: string }[];
}

/** `GET /status`: what the status page shows. */
export const StatusResponse: v.GenericSchema<unknown, Status> = v.pipe(
  v.object({
    project: v.string(),
    store: v.nullable(v.string()),
    generated_at: v.pipe(v.string(), v.description("ISO 8601, the server's clock.")),
    views: v.array(v.object({
      name: v.string(),
      source: v.string(),
      entities: v.array(v.string()),
      features: v.array(v.string()),
      online: v.boolean(),
      offline: v.boolean(),
      records: v.pipe(outcomes, v.description("Records by outcome since this process started.")),
      newest_event_time: v.pipe(v.nullable(v.string()), v.description("The newest event time the view has taken (ISO 8601), or null.")),
      freshness_seconds: v.pipe(v.nullable(v.number()), v.description("Age of the newest event, in seconds.")),
    })),
    sources: v.array(v.object({
      name: v.string(),
      kind: v.string(),
      duplicates: v.pipe(v.number(), v.description("Pushes answered as duplicates (by webhook-id), in records.")),
      lag: v.array(v.object({ partition: v.string(), value: v.number() })),
      events_per_second: v.nullable(v.number()),
    })),
    feature_services: v.array(v.object({ name: v.string(), features: v.array(v.string()) })),
    dead_letters: v.pipe(
      v.array(v.object({ at: v.string(), source: v.string(), view: v.optional(v.string()), reason: v.string(), message: v.string(), path: v.optional(v.string()), payload: v.string() })),
      v.description("The latest dead letters of this process, newest first (at most 20)."),
    ),
  }),
  v.title("StatusResponse"),
);
