/**
 * @module
 * Cloudflare Workers: the same Hono app, exported as a Worker, configured
 * from env bindings. The online store is one of:
 *
 * - a D1 database: the SQLite store over the binding named by the
 *   `FRESHET_D1_BINDING` var, or over the binding `DB` when there is one and
 *   no Upstash URL is set; dead letters go to its table `freshet_dead_letters`;
 * - Upstash Redis (REST over fetch, no TCP), from UPSTASH_REDIS_REST_URL and
 *   UPSTASH_REDIS_REST_TOKEN; dead letters go to a Redis list in the same database;
 * - whatever `WorkerOptions.store` builds.
 */
import type { Redis } from "@upstash/redis";
import { createProcessor, type DeadLetterSink, FreshetError, missingPackage, type OnlineStore, type Registry, storeUnavailable } from "../mod.ts";
import { pushApp } from "../plugins/sources/push.ts";
import { upstashStore } from "../plugins/stores/redis/upstash.ts";
import { parseSize, SIZE_HINT } from "./size.ts";
import { type D1DatabaseLike, d1Driver, sqliteDeadLetters, sqliteStore, type SqliteStore } from "../plugins/stores/sqlite/index.ts";

/** The bindings the Worker reads (wrangler.toml `[vars]` and secrets). */
export interface WorkerEnv {
  /**
   * The D1 binding to use as the store (a `[vars]` entry naming a
   * `[[d1_databases]]` binding). Unset: the binding `DB`, when the Worker
   * has one and no UPSTASH_REDIS_REST_URL is set.
   */
  FRESHET_D1_BINDING?: string;
  /** Upstash REST URL (a `[vars]` entry): the store and dead letters when no D1 binding is used. */
  UPSTASH_REDIS_REST_URL?: string;
  /** Upstash REST token (`wrangler secret put UPSTASH_REDIS_REST_TOKEN`). */
  UPSTASH_REDIS_REST_TOKEN?: string;
  /** Standard Webhooks secret; when set, pushes must be signed (or carry WRITE_TOKEN). */
  WEBHOOK_SECRET?: string;
  /** Bearer token for POST /push (`wrangler secret put WRITE_TOKEN`). */
  WRITE_TOKEN?: string;
  /** Bearer token for get-online-features, /registry and /metrics (`wrangler secret put READ_TOKEN`). */
  READ_TOKEN?: string;
  /** Largest push body, with units (`5MiB`). Default 5 MiB. */
  MAX_BODY_BYTES?: string;
  /** Most dead letters kept in the Redis list (the oldest are trimmed, counted and logged). Default 100000. */
  DEAD_LETTERS_MAX?: string;
  /** Any other binding (D1 databases, by their binding name). */
  [key: string]: unknown;
}

/** Options of {@link createWorker}. */
export interface WorkerOptions {
  /** Builds the online store from the env; default D1 (see {@link WorkerEnv.FRESHET_D1_BINDING}), else Upstash from UPSTASH_REDIS_REST_URL/TOKEN. */
  store?: (env: WorkerEnv) => OnlineStore;
  /**
   * Builds the dead-letter sink; default the table `freshet_dead_letters`
   * when the store is SQLite (D1), else a Redis list
   * `freshet:<project>:dead-letters` in the same Upstash database.
   */
  deadLetters?: (env: WorkerEnv) => DeadLetterSink;
}

/** What a Worker module exports. */
export interface WorkerHandler {
  /** Answers one request with the Worker's env. */
  fetch(request: Request, env: WorkerEnv, ctx?: unknown): Promise<Response>;
}

/**
 * Exports a feature repo's push receiver as a Worker.
 *
 * @example
 * ```ts
 * import repo from "./feature_repo.ts"
 * export default createWorker(repo)
 * ```
 */
export function createWorker(registry: Registry, opts: WorkerOptions = {}): WorkerHandler {
  // Workers have no offline log: refuse at load time, not after an online write.
  for (const view of registry.views.values()) {
    if (view.offline) {
      throw new FreshetError("INVALID_CONFIG", `view "${view.name}" has offline: true, but a Worker has no offline store: set offline: false on the view for the Worker build`, { plugin: "workers", definition: view.name });
    }
  }
  // Built once per isolate: env bindings do not change while it lives.
  let app: ReturnType<typeof pushApp> | undefined;
  return {
    fetch(request, env) {
      app ??= build(registry, env, opts);
      return Promise.resolve(app.fetch(request));
    },
  };
}

function build(registry: Registry, env: WorkerEnv, opts: WorkerOptions) {
  const { online, deadLetters } = stores(registry, env, opts, () => processor);
  const processor = createProcessor({ registry, online, deadLetters, logger: console });
  return pushApp({
    processor,
    webhookSecret: env.WEBHOOK_SECRET,
    writeToken: env.WRITE_TOKEN,
    readToken: env.READ_TOKEN,
    maxBodyBytes: maxBodyOf(env.MAX_BODY_BYTES),
  });
}

const isD1 = (b: unknown): b is D1DatabaseLike =>
  !!b && typeof b === "object" && typeof (b as D1DatabaseLike).prepare === "function" && typeof (b as D1DatabaseLike).batch === "function";
const isSqlite = (s: OnlineStore): s is SqliteStore => s.name === "sqlite" && typeof (s as SqliteStore).ready === "function";

/**
 * The D1 binding the env asks for: the one named by FRESHET_D1_BINDING (an
 * error when there is none by that name), else `DB` when it is a D1 binding
 * and no Upstash URL is set.
 */
function d1Binding(env: WorkerEnv): { name: string; db: D1DatabaseLike } | undefined {
  const named = env.FRESHET_D1_BINDING;
  if (named !== undefined && named !== "") {
    const db = env[named];
    if (!isD1(db)) {
      throw new FreshetError("INVALID_CONFIG", `FRESHET_D1_BINDING is "${named}", but the Worker has no D1 binding of that name: add [[d1_databases]] with binding = "${named}" to wrangler.toml, or unset FRESHET_D1_BINDING`, { plugin: "workers" });
    }
    return { name: named, db };
  }
  if (!env.UPSTASH_REDIS_REST_URL && isD1(env.DB)) return { name: "DB", db: env.DB };
  return undefined;
}

function stores(registry: Registry, env: WorkerEnv, opts: WorkerOptions, processor: () => { metrics: { inc(name: string, labels: Record<string, string>, n?: number): void } }): { online: OnlineStore; deadLetters: DeadLetterSink } {
  const d1 = opts.store ? undefined : d1Binding(env);
  // One database per project on D1: the SQLite store's tables are not prefixed.
  const online = opts.store?.(env) ?? (d1 ? sqliteStore({ driver: d1Driver(d1.db, { name: `D1 binding ${d1.name}` }) }) : undefined);
  if (online && opts.deadLetters) return { online, deadLetters: opts.deadLetters(env) };
  if (online && isSqlite(online)) return { online, deadLetters: sqliteDeadLetters(online) };
  const url = env.UPSTASH_REDIS_REST_URL;
  const token = env.UPSTASH_REDIS_REST_TOKEN;
  if (!url || !token) {
    throw new FreshetError(
      "INVALID_CONFIG",
      online
        ? "the dead letters of this store go to Upstash by default: set UPSTASH_REDIS_REST_URL and UPSTASH_REDIS_REST_TOKEN, or give WorkerOptions.deadLetters"
        : 'no store: bind a D1 database as DB ([[d1_databases]] binding = "DB" in wrangler.toml, or name another in FRESHET_D1_BINDING), or set UPSTASH_REDIS_REST_URL (a [vars] entry) and UPSTASH_REDIS_REST_TOKEN (wrangler secret put UPSTASH_REDIS_REST_TOKEN)',
      { plugin: "workers" },
    );
  }
  return {
    online: online ?? upstashStore({ url, token, project: registry.project }),
    deadLetters: opts.deadLetters ? opts.deadLetters(env) : upstashListDeadLetters(() => import("@upstash/redis").then((m) => new m.Redis({ url, token }), missingPackage("@upstash/redis", "dead letters in Upstash", "workers")), `freshet:${registry.project}:dead-letters`, {
      maxLetters: countOf("DEAD_LETTERS_MAX", env.DEAD_LETTERS_MAX),
      onDrop: (n) => processor().metrics.inc("freshet_dead_letters_dropped_total", { sink: "upstash-list" }, n),
    }),
  };
}

/** A whole-number binding, or a startup error. */
function countOf(name: string, text: string | undefined): number | undefined {
  if (text === undefined) return undefined;
  const n = /^\s*\d+\s*$/.test(String(text)) ? Number(text) : Number.NaN;
  if (!(Number.isSafeInteger(n) && n >= 1)) throw new FreshetError("INVALID_CONFIG", `${name} ${JSON.stringify(text)} is not a whole number of at least 1`, { plugin: "workers" });
  return n;
}

/** MAX_BODY_BYTES with units (`5MiB`), or a startup error: a bad value never removes the limit. */
function maxBodyOf(text: string | undefined): number | undefined {
  if (text === undefined) return undefined;
  const n = parseSize(String(text));
  if (n === undefined) throw new FreshetError("INVALID_CONFIG", `MAX_BODY_BYTES ${JSON.stringify(text)} is not a size: ${SIZE_HINT}`, { plugin: "workers" });
  return n;
}

/** Options of {@link upstashListDeadLetters}. */
export interface UpstashListDeadLettersOptions {
  /** Most letters kept in the list; the oldest beyond it are trimmed. Default 100,000. */
  maxLetters?: number;
  /** Called with the number of letters trimmed, e.g. to count them in a metric. */
  onDrop?: (letters: number) => void;
  /** Where a trim is logged (a warning). Default `console`. */
  logger?: { warn(msg: string): void };
}

/**
 * A dead-letter sink that appends JSON to a Redis list, for runtimes with no
 * files. The list is bounded: the push and the trim of the oldest letters
 * beyond `maxLetters` run in one MULTI, and what is trimmed is reported.
 *
 * @example
 * ```ts
 * const sink = upstashListDeadLetters(new Redis({ url, token }), "freshet:driver_stats:dead-letters", { maxLetters: 10_000 })
 * ```
 *
 * `redis` may be a function that makes the client on the first write
 * (how the Worker loads the optional `@upstash/redis` only when it is used).
 */
export function upstashListDeadLetters(redis: Redis | (() => Promise<Redis>), key: string, opts: UpstashListDeadLettersOptions = {}): DeadLetterSink {
  const max = opts.maxLetters ?? 100_000;
  if (!(Number.isSafeInteger(max) && max >= 1)) throw new FreshetError("INVALID_CONFIG", `maxLetters must be a whole number of at least 1, got ${max}`, { plugin: "workers" });
  const logger = opts.logger ?? console;
  let client: Promise<Redis> | undefined;
  return {
    name: "upstash-list",
    async write(letters) {
      if (letters.length === 0) return;
      let length: number;
      try {
        client ??= typeof redis === "function" ? redis() : Promise.resolve(redis);
        const [pushed] = await (await client).multi().rpush(key, ...letters.map((l) => JSON.stringify(l))).ltrim(key, -max, -1).exec<[number, string]>();
        length = Number(pushed);
      } catch (e) {
        throw storeUnavailable("workers", e);
      }
      const dropped = length - max;
      if (dropped > 0) {
        logger.warn(`[freshet] [workers] dead-letter retention trimmed ${dropped} of the oldest dead letter(s) from ${key} (it keeps ${max}; read them sooner, or raise DEAD_LETTERS_MAX)`);
        try {
          opts.onDrop?.(dropped);
        } catch {
          // A failing counter must not fail the write.
        }
      }
    },
  };
}
