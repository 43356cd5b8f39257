/**
 * @module
 * Cloudflare Workers: the same Hono app, exported as a Worker, configured
 * from env bindings. Upstash is the online store (REST over fetch, no TCP),
 * and dead letters go to a Redis list in the same database.
 */
import { Redis } from "@upstash/redis";
import { createProcessor, type DeadLetterSink, FreshetError, type OnlineStore, type Registry, storeUnavailable } from "../mod.ts";
import { pushApp } from "../plugins/sources/push.ts";
import { upstashStore } from "../plugins/stores/redis/upstash.ts";
import { parseSize, SIZE_HINT } from "./size.ts";

/** The bindings the Worker reads (wrangler.toml `[vars]` and secrets). */
export interface WorkerEnv {
  UPSTASH_REDIS_REST_URL?: string;
  UPSTASH_REDIS_REST_TOKEN?: string;
  /** Standard Webhooks secret; when set, pushes must be signed (or carry WRITE_TOKEN). */
  WEBHOOK_SECRET?: string;
  /** Bearer token for POST /push (`wrangler secret put WRITE_TOKEN`). */
  WRITE_TOKEN?: string;
  /** Bearer token for get-online-features, /registry and /metrics (`wrangler secret put READ_TOKEN`). */
  READ_TOKEN?: string;
  MAX_BODY_BYTES?: string;
  [key: string]: unknown;
}

/** Options of {@link createWorker}. */
export interface WorkerOptions {
  /** Builds the online store from the env; default Upstash from UPSTASH_REDIS_REST_URL/TOKEN. */
  store?: (env: WorkerEnv) => OnlineStore;
  /** Builds the dead-letter sink; default a Redis list `freshet:<project>:dead-letters` in the same Upstash database. */
  deadLetters?: (env: WorkerEnv) => DeadLetterSink;
}

/** What a Worker module exports. */
export interface WorkerHandler {
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
  const url = env.UPSTASH_REDIS_REST_URL;
  const token = env.UPSTASH_REDIS_REST_TOKEN;
  if (!opts.store && (!url || !token)) {
    throw new FreshetError("INVALID_CONFIG", "set UPSTASH_REDIS_REST_URL (a [vars] entry) and UPSTASH_REDIS_REST_TOKEN (wrangler secret put UPSTASH_REDIS_REST_TOKEN)", { plugin: "workers" });
  }
  const online = opts.store ? opts.store(env) : upstashStore({ url, token, project: registry.project });
  const deadLetters = opts.deadLetters ? opts.deadLetters(env) : upstashListDeadLetters(new Redis({ url: url!, token: token! }), `freshet:${registry.project}:dead-letters`);
  const processor = createProcessor({ registry, online, deadLetters });
  return pushApp({
    processor,
    webhookSecret: env.WEBHOOK_SECRET,
    writeToken: env.WRITE_TOKEN,
    readToken: env.READ_TOKEN,
    maxBodyBytes: maxBodyOf(env.MAX_BODY_BYTES),
  });
}

/** MAX_BODY_BYTES with units (`5MiB`), or a startup error: a bad value never removes the limit. */
function maxBodyOf(text: string | undefined): number | undefined {
  if (text === undefined) return undefined;
  const n = parseSize(String(text));
  if (n === undefined) throw new FreshetError("INVALID_CONFIG", `MAX_BODY_BYTES ${JSON.stringify(text)} is not a size: ${SIZE_HINT}`, { plugin: "workers" });
  return n;
}

/**
 * A dead-letter sink that appends JSON to a Redis list, for runtimes with no files.
 *
 * @example
 * ```ts
 * const sink = upstashListDeadLetters(new Redis({ url, token }), "freshet:driver_stats:dead-letters")
 * ```
 */
export function upstashListDeadLetters(redis: Redis, key: string): DeadLetterSink {
  return {
    name: "upstash-list",
    async write(letters) {
      if (letters.length === 0) return;
      try {
        await redis.rpush(key, ...letters.map((l) => JSON.stringify(l)));
      } catch (e) {
        throw storeUnavailable("workers", e);
      }
    },
  };
}
