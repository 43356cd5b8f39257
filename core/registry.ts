/**
 * @module
 * The registry: the definitions of one feature repo, checked together and
 * described as JSON (`GET /registry`).
 */
import type { Entity, FeatureService, FeatureView, FileSource, StreamSourceDef } from "./definitions.ts";
import { definitionError } from "./errors.ts";
import { DEFAULT_MAX_FUTURE_SKEW_MS, parseDuration } from "./time.ts";

/** A definition a repo may list. */
export type Definition = Entity | StreamSourceDef | FileSource | FeatureView | FeatureService;

/** A checked set of definitions. */
export interface Registry {
  /** The project name: the prefix of its keys in shared stores. */
  readonly project: string;
  /** The entities, by name. */
  readonly entities: ReadonlyMap<string, Entity>;
  /** The stream sources, by name. */
  readonly sources: ReadonlyMap<string, StreamSourceDef>;
  /** The views, by name, with their sources resolved. */
  readonly views: ReadonlyMap<string, FeatureView & { source: StreamSourceDef }>;
  /** Feature services by name, each resolved to its distinct `"view:feature"` refs in order. */
  readonly featureServices: ReadonlyMap<string, ResolvedFeatureService>;
  /** The views fed by a source. */
  viewsForSource(sourceName: string): (FeatureView & { source: StreamSourceDef })[];
  /** A view by name; throws a clear error when there is none. */
  view(name: string): FeatureView & { source: StreamSourceDef };
  /**
   * The definitions as plain JSON, without secrets: TLS keys, passwords,
   * tokens, SASL and AWS credentials are redacted, and file paths are shown
   * relative to `cwd` (without one, an absolute path shows its file name only).
   */
  describe(opts?: DescribeOptions): RegistryDescription;
}

/** A feature service with its views expanded: distinct `"view:feature"` refs, in the order given. */
export interface ResolvedFeatureService {
  /** The service's name. */
  readonly name: string;
  /** Its feature refs, `view:feature`. */
  readonly features: readonly string[];
  /** What it is for, for people. */
  readonly description?: string;
  /** Free-form labels. */
  readonly tags?: Record<string, string>;
  /** Who to ask about it. */
  readonly owner?: string;
}

/** Options of {@link Registry.describe}. */
export interface DescribeOptions {
  /** The working directory file paths are shown relative to (the host's current directory). */
  cwd?: string;
}

/** The JSON shape of `GET /registry`. */
export interface RegistryDescription {
  /** The project name. */
  project: string;
  /** The entities. */
  entities: { name: string; joinKeys: string[]; description?: string; tags?: Record<string, string>; owner?: string }[];
  /** The sources, as defined. */
  sources: Record<string, unknown>[];
  /** The feature views, as defined. */
  featureViews: Record<string, unknown>[];
  /** The feature services. */
  featureServices: { name: string; features: string[]; description?: string; tags?: Record<string, string>; owner?: string }[];
}

/**
 * Checks definitions and builds a registry. Views may name their source by
 * string; sources and entities a view uses are registered with it.
 *
 * @example
 * ```ts
 * export default featureRepo({ project: "driver_stats", definitions: [driver, pushed, stats] })
 * ```
 */
export function featureRepo(opts: { project: string; definitions: Definition[] }): Registry {
  const project = opts?.project;
  if (typeof project !== "string" || !/^[A-Za-z0-9_\-]+$/.test(project)) {
    throw definitionError(String(project), 'featureRepo needs a project name of letters, digits, "_" or "-", e.g. project: "driver_stats"');
  }
  const entities = new Map<string, Entity>();
  const sources = new Map<string, StreamSourceDef>();
  const rawViews: FeatureView[] = [];
  const rawServices: FeatureService[] = [];
  const seen = new Map<string, string>();
  const register = (kind: string, name: string, obj: unknown, into: Map<string, unknown>) => {
    const prev = into.get(name);
    if (prev === obj) return;
    if (prev !== undefined || (seen.has(name) && seen.get(name) !== kind)) {
      throw definitionError(name, `the name "${name}" is defined twice (${seen.get(name) ?? kind} and ${kind}); give each definition a unique name`);
    }
    seen.set(name, kind);
    into.set(name, obj);
  };
  const viewNames = new Set<string>();
  for (const def of opts.definitions ?? []) {
    switch (def?.kind) {
      case "entity":
        register("entity", def.name, def, entities);
        break;
      case "push":
      case "kafka":
      case "kinesis":
        register("source", def.name, def, sources);
        break;
      case "file":
        break; // batch sources are reached through their stream source
      case "streamFeatureView":
        if (viewNames.has(def.name) || seen.has(def.name)) {
          throw definitionError(def.name, `the name "${def.name}" is defined twice; give each definition a unique name`);
        }
        viewNames.add(def.name);
        seen.set(def.name, "view");
        rawViews.push(def);
        break;
      case "featureService":
        if (seen.has(def.name)) throw definitionError(def.name, `the name "${def.name}" is defined twice; give each definition a unique name`);
        seen.set(def.name, "feature service");
        rawServices.push(def);
        break;
      default:
        throw definitionError(String((def as { name?: string })?.name ?? "?"), "unknown definition: use entity(), pushSource(), kafkaSource(), kinesisSource(), fileSource(), streamFeatureView() or featureService()");
    }
  }
  for (const view of rawViews) {
    for (const e of view.entities) register("entity", e.name, e, entities);
    if (typeof view.source === "object") register("source", view.source.name, view.source, sources);
  }

  const views = new Map<string, FeatureView & { source: StreamSourceDef }>();
  for (const view of rawViews) views.set(view.name, resolveView(view, sources));

  const featureServices = new Map<string, ResolvedFeatureService>();
  for (const fs of rawServices) featureServices.set(fs.name, resolveService(fs, views));

  const bySource = new Map<string, (FeatureView & { source: StreamSourceDef })[]>();
  for (const v of views.values()) bySource.set(v.source.name, [...(bySource.get(v.source.name) ?? []), v]);

  return Object.freeze({
    project,
    entities,
    sources,
    views,
    featureServices,
    viewsForSource: (name: string) => bySource.get(name) ?? [],
    view(name: string) {
      const v = views.get(name);
      if (!v) throw definitionError(name, `no feature view "${name}" in project "${project}"; known views: ${[...views.keys()].join(", ") || "none"}`);
      return v;
    },
    // A JSON round trip drops undefined fields, so the description is exactly what /registry serves.
    describe: (dopts: DescribeOptions = {}) => JSON.parse(JSON.stringify(describe(project, entities, sources, views, featureServices, dopts))),
  });
}

function resolveView(view: FeatureView, sources: Map<string, StreamSourceDef>): FeatureView & { source: StreamSourceDef } {
  const source = typeof view.source === "string" ? sources.get(view.source) : view.source;
  if (!source) {
    throw definitionError(view.name, `unknown source "${view.source}": define it with pushSource/kafkaSource/kinesisSource and list it in the repo's definitions; known sources: ${[...sources.keys()].join(", ") || "none"}`);
  }
  const entries = view.schema.entries;
  if (!entries) throw definitionError(view.name, "schema must be an object schema, e.g. v.object({ driver_id: v.number(), ... }), so that Freshet knows the fields");
  const fields = Object.keys(entries);
  for (const key of view.joinKeys) {
    if (!fields.includes(key)) {
      throw definitionError(view.name, `join key "${key}" is not in the schema; add it, e.g. ${key}: v.number(), or fix the entity's joinKeys (schema fields: ${fields.join(", ")})`);
    }
  }
  const timestampField = view.timestampField ?? source.timestampField ?? source.batchSource?.timestampField;
  if (!timestampField) {
    throw definitionError(view.name, 'no timestamp field: set timestampField on the view or its source, e.g. timestampField: "event_timestamp"');
  }
  const createdTimestampField = view.createdTimestampField ?? source.createdTimestampColumn;
  const notFeatures = new Set([...view.joinKeys, timestampField, createdTimestampField]);
  const features = view.features.length > 0 ? view.features : fields.filter((f) => !notFeatures.has(f));
  const clash = features.find((f) => notFeatures.has(f));
  if (clash) throw definitionError(view.name, `"${clash}" is a join key or timestamp field, not a feature; remove it from features`);
  if (features.length === 0) throw definitionError(view.name, "the schema has no feature fields besides join keys and timestamps; add at least one");
  for (const a of view.aggregations ?? []) {
    if (!fields.includes(a.column) && !features.includes(a.column)) {
      throw definitionError(view.name, `aggregation "${a.name}" reads column "${a.column}", which is not in the schema nor in features; add it to the schema, or fix column (schema fields: ${fields.join(", ")})`);
    }
    if (notFeatures.has(a.column)) throw definitionError(view.name, `aggregation "${a.name}" reads "${a.column}", a join key or timestamp field; aggregate a feature column`);
  }
  // A source named by string is only known here: take its watermark delay and future bound now.
  const watermarkDelayMs = view.watermarkDelayMs ?? (source.watermarkDelay === undefined ? undefined : parseDuration(source.watermarkDelay));
  if (view.dropLate && watermarkDelayMs === undefined) throw definitionError(view.name, 'dropLate needs a watermarkDelay (on the view or its source), e.g. watermarkDelay: "5m"');
  const maxFutureSkewMs = source.maxFutureSkew === undefined ? DEFAULT_MAX_FUTURE_SKEW_MS : parseDuration(source.maxFutureSkew)!;
  return Object.freeze({
    ...view,
    source,
    timestampField,
    createdTimestampField,
    watermarkDelayMs,
    maxFutureSkewMs,
    features,
  });
}

/** The features a view serves: its aggregations on an aggregating view, else its features. */
export function servedFeatures(view: { features: readonly string[]; aggregations?: readonly { name: string }[] }): readonly string[] {
  return view.aggregations?.length ? view.aggregations.map((a) => a.name) : view.features;
}

function resolveService(fs: FeatureService, views: Map<string, FeatureView & { source: StreamSourceDef }>): ResolvedFeatureService {
  const refs = new Set<string>();
  fs.features.forEach((item, i) => {
    if (typeof item !== "string") {
      const view = views.get(item.name);
      if (!view) throw definitionError(fs.name, `features[${i}] is the view "${item.name}", which is not in the repo's definitions; list it there too`);
      for (const f of servedFeatures(view)) refs.add(`${view.name}:${f}`);
      return;
    }
    const at = item.indexOf(":");
    const [viewName, feature] = [item.slice(0, at), item.slice(at + 1)];
    const view = views.get(viewName);
    if (!view) throw definitionError(fs.name, `features[${i}] "${item}" names no feature view; known views: ${[...views.keys()].join(", ") || "none"}`);
    const served = servedFeatures(view);
    if (!served.includes(feature)) throw definitionError(fs.name, `features[${i}] "${item}": view "${viewName}" has no feature "${feature}"; it has ${served.join(", ")}`);
    refs.add(item);
  });
  return Object.freeze({ name: fs.name, features: Object.freeze([...refs]), description: fs.description, tags: fs.tags, owner: fs.owner });
}

function describe(
  project: string,
  entities: Map<string, Entity>,
  sources: Map<string, StreamSourceDef>,
  views: Map<string, FeatureView & { source: StreamSourceDef }>,
  services: Map<string, ResolvedFeatureService>,
  opts: DescribeOptions,
): RegistryDescription {
  const sourceJson = (s: StreamSourceDef) => {
    const out: Record<string, unknown> = { name: s.name, kind: s.kind };
    for (const [k, v] of Object.entries(s)) {
      if (k === "kind" || k === "name" || v === undefined || typeof v === "function") continue;
      if (k === "ssl") out[k] = redactTls(v);
      else if (k === "sasl") out[k] = redactSasl(v);
      else if (k === "credentials" || SECRET_KEY.test(k)) out[k] = REDACTED;
      else if (k === "messageFormat" || k === "recordFormat") out[k] = (v as { name: string }).name;
      else if (k === "batchSource") out[k] = { name: (v as FileSource).name, path: shownPath((v as FileSource).path, opts.cwd), fileFormat: (v as FileSource).fileFormat };
      else if (k === "endpoint" && typeof v === "string") out[k] = redactUrl(v);
      else if (k === "kafkaBootstrapServers") out[k] = typeof v === "string" ? redactUrl(v) : (v as string[]).map((b) => redactUrl(String(b)));
      else out[k] = v;
    }
    return out;
  };
  return {
    project,
    entities: [...entities.values()].map((e) => ({ name: e.name, joinKeys: e.joinKeys, description: e.description, tags: e.tags, owner: e.owner })),
    sources: [...sources.values()].map(sourceJson),
    featureViews: [...views.values()].map((v) => ({
      name: v.name,
      entities: v.entities.map((e) => e.name),
      joinKeys: v.joinKeys,
      source: v.source.name,
      features: v.features,
      timestampField: v.timestampField,
      createdTimestampField: v.createdTimestampField,
      ttlSeconds: v.ttlMs / 1000,
      watermarkDelaySeconds: v.watermarkDelayMs === undefined ? undefined : v.watermarkDelayMs / 1000,
      dropLate: v.dropLate,
      aggregations: v.aggregations?.map((a) => ({ name: a.name, column: a.column, function: a.function, timeWindowSeconds: a.windowMs === undefined ? "lifetime" : a.windowMs / 1000, slideIntervalSeconds: a.windowMs === undefined ? undefined : a.slideMs / 1000, n: a.n })),
      maxFutureSkewSeconds: v.maxFutureSkewMs / 1000,
      online: v.online,
      offline: v.offline,
      udf: v.udf ? v.udf.name || "anonymous" : undefined,
      description: v.description,
      tags: v.tags,
      owner: v.owner,
    })),
    featureServices: [...services.values()].map((fs) => ({ name: fs.name, features: [...fs.features], description: fs.description, tags: fs.tags, owner: fs.owner })),
  };
}

const REDACTED = "[redacted]";
/** Option names that hold a secret, whatever the source (defence in depth beside the known fields). */
const SECRET_KEY = /secret|password|passwd|passphrase|token|credential|api_?key|private|pfx/i;
/** TLS parts that are public (a CA or a certificate): their presence is shown, not their content. */
const TLS_PUBLIC = new Set(["ca", "cert"]);
/** TLS settings that are not material: shown as they are. */
const TLS_SETTINGS = new Set(["rejectUnauthorized", "servername", "minVersion", "maxVersion"]);

/** `ssl: true` as it is; an object as which parts are set: `{ ca: "[set]", key: "[redacted]" }`. */
function redactTls(v: unknown): unknown {
  if (v === null || typeof v !== "object") return v;
  const out: Record<string, unknown> = {};
  for (const [k, x] of Object.entries(v)) {
    if (x === undefined) continue;
    out[k] = TLS_SETTINGS.has(k) && typeof x !== "object" ? x : TLS_PUBLIC.has(k) ? "[set]" : REDACTED;
  }
  return out;
}

/** The mechanism is shown; usernames (often API keys), passwords and token providers are not. */
function redactSasl(v: unknown): unknown {
  if (v === null || typeof v !== "object") return REDACTED;
  const out: Record<string, unknown> = {};
  for (const [k, x] of Object.entries(v)) if (x !== undefined) out[k] = k === "mechanism" ? x : REDACTED;
  return out;
}

/**
 * A broker list or URL with its secrets hidden: the user info of
 * `scheme://user:secret@host` or `user:secret@host` reads `[redacted]@`
 * (a user name is often an API key), and a URL's query string, where tokens
 * travel too, reads `?[redacted]`. Items of a comma-separated list are
 * handled one by one.
 *
 * @example
 * ```ts
 * redactUrl("rediss://:hunter2@cache.example:6380/0") // "rediss://[redacted]@cache.example:6380/0"
 * ```
 */
export function redactUrl(text: string): string {
  return text
    .split(/([\s,]+)/)
    .map((item) => {
      const m = /^([a-z][a-z0-9+.-]*:\/\/)?([^/?#]*@)?(.*)$/is.exec(item)!;
      const [, scheme = "", info, rest] = m;
      const tail = scheme ? rest.replace(/\?[^#]*/, "?" + REDACTED) : rest;
      return `${scheme}${info ? REDACTED + "@" : ""}${tail}`;
    })
    .join("");
}

/**
 * A file path as `/registry` shows it: relative to `cwd` when one is given,
 * else an absolute path is reduced to its file name (so the layout of the
 * host's disk never shows). Relative paths stay as written.
 */
function shownPath(path: string, cwd: string | undefined): string {
  const abs = /^(?:[A-Za-z]:)?[\\/]/.test(path);
  if (!abs) return path;
  const parts = (p: string) => p.split(/[\\/]+/).filter(Boolean);
  const target = parts(path);
  if (cwd === undefined) return target[target.length - 1] ?? path;
  const base = parts(cwd);
  let i = 0;
  while (i < base.length && i < target.length && base[i] === target[i]) i++;
  // A different drive, or nothing in common: the file name only.
  if (i === 0) return target[target.length - 1] ?? path;
  return [...base.slice(i).map(() => ".."), ...target.slice(i)].join("/") || ".";
}
