/**
 * @module
 * Builds a running Freshet from a config: the feature repo, the stores from a
 * URL, the dead-letter sink, the processor and the Hono app. Shared by the CLI
 * and the runtime adapters; only this layer reads files, env and URLs.
 */
import { existsSync } from "node:fs";
import { join, resolve } from "node:path";
import process from "node:process";
import { pathToFileURL } from "node:url";
import { createProcessor, FreshetError, type DeadLetterSink, type Logger, type OfflineStore, type OnlineStore, type Processor, type Registry } from "../mod.ts";
import { pushApp } from "../plugins/sources/push.ts";
import type { Hono } from "hono";

/** What a host needs. Every field can also come from the environment (see the README). */
export interface HostConfig {
  /** A feature repo module path, or a registry. */
  repo: string | Registry;
  /**
   * Where online features live: `sqlite:<dataDir>/freshet.db` (default; one
   * file that `serve`, `consume` and `materialize` share), `sqlite:./x.db` or
   * `sqlite:/abs/x.db` (relative to the working directory), `file:./data`
   * (the JSON-lines file store, one process), `memory:`,
   * `redis://host:6379/0`, `rediss://...`, `redis+cluster://h1:p1,h2:p2` (a Redis Cluster), or an Upstash REST URL
   * (`https://...upstash.io`, token in UPSTASH_REDIS_REST_TOKEN).
   */
  store?: string;
  /** Folder for the default SQLite file, the file store, the offline log and dead letters. Default `./data`. */
  dataDir?: string;
  /** The offline log's files under `<dataDir>/offline/`: "parquet" (default) or "jsonl". */
  offlineFormat?: "parquet" | "jsonl";
  /** Dead-letter JSON Lines file. Default `<dataDir>/dead-letters.jsonl`. */
  deadLetters?: string;
  /** Size at which the dead-letter file rotates, in bytes. Default 64 MiB. */
  deadLetterMaxBytes?: number;
  /** Dead-letter files kept, the current one included. Default 5. */
  deadLetterKeep?: number;
  /** Standard Webhooks secret (`whsec_...`): when set, pushes must be signed. */
  webhookSecret?: string;
  /** Bearer token for POST /push. */
  writeToken?: string;
  /** Bearer token for get-online-features, /registry and /metrics. */
  readToken?: string;
  /** Refuse requests whose Host is not a loopback name (a server on loopback without credentials). */
  loopbackOnly?: boolean;
  /** Origins allowed to call from a browser (CORS). Default none. */
  corsOrigins?: string[];
  /** Largest push body, in bytes. Default 5 MiB. */
  maxBodyBytes?: number;
  /** How long a webhook-id stays pending while its delivery runs (and after a crash), in ms. Default 30 s. */
  pendingTtlMs?: number;
  /** Token of an Upstash store (its URL is `store`). */
  upstashToken?: string;
  /** Dead-letter sinks for particular sources, by name (e.g. a Kafka source's dead-letter topic); the others use the JSON Lines file. */
  sourceDeadLetters?: Record<string, DeadLetterSink>;
  /** Where the host logs. Default `console`. */
  logger?: Logger;
}

/** A built host. */
export interface Host {
  /** The checked feature repo. */
  registry: Registry;
  /** The pipeline over the stores. */
  processor: Processor;
  /** The HTTP app: push, get-online-features, /health, /metrics, /registry. */
  app: Hono;
  /** The online store. */
  online: OnlineStore;
  /** The offline log. */
  offline: OfflineStore;
  /** Where invalid and late records go. */
  deadLetters: DeadLetterSink;
  /** Flushes and closes the stores. */
  close(): Promise<void>;
}

/**
 * Imports a feature repo module: its default export, or an export named `repo`.
 *
 * @example
 * ```ts
 * const registry = await loadRepo("examples/driver_stats/feature_repo.ts")
 * ```
 */
export async function loadRepo(path: string): Promise<Registry> {
  const abs = resolve(path);
  if (!existsSync(abs)) {
    throw new FreshetError("INVALID_CONFIG", `feature repo ${path} not found (looked for ${abs}): give the path of a module that exports featureRepo({...}), e.g. examples/driver_stats/feature_repo.ts`);
  }
  let mod: { default?: Registry; repo?: Registry };
  try {
    mod = await import(pathToFileURL(abs).href);
  } catch (e) {
    // A definition mistake is already a one-line FreshetError; anything else is the module failing to load.
    if (e instanceof FreshetError) throw e;
    // Node without type stripping (20, 22 before 22.18) and no tsx registered by bin/freshet.mjs.
    if ((e as { code?: string })?.code === "ERR_UNKNOWN_FILE_EXTENSION" && /\.[cm]?ts$/.test(path)) {
      throw new FreshetError("INVALID_CONFIG", `cannot load ${path}: this Node (${process.version}) does not strip TypeScript types; install tsx (npm install -D tsx), use Node 22.18 or later, or write the repo in JavaScript`, { cause: e });
    }
    throw new FreshetError("INVALID_CONFIG", `feature repo ${path} failed to load: ${loadFailure(e)}`, { cause: e });
  }
  const registry = mod.default ?? mod.repo;
  if (!registry || typeof registry.viewsForSource !== "function") {
    throw new FreshetError("INVALID_CONFIG", `${path} must export a featureRepo({...}) as its default export (export default featureRepo({ project, definitions }))`);
  }
  return registry;
}

/** Why a module failed to import, in one line: esbuild's "file:line:col: ERROR: ..." or the error's first line. */
function loadFailure(e: unknown): string {
  const err = e as { message?: string; code?: string };
  const message = String(err.message ?? e);
  const located = /^(.+:\d+:\d+): ERROR: (.+)$/m.exec(message);
  if (located) return `${located[2]} at ${located[1]}`;
  const first = message.split("\n")[0];
  if (err.code === "ERR_MODULE_NOT_FOUND" || err.code === "ERR_REQUIRE_CYCLE_MODULE") {
    const hint = err.code === "ERR_MODULE_NOT_FOUND" ? "install the package it imports, or fix the import path" : 'a TypeScript repo outside an ES module package is loaded as CommonJS: add "type": "module" to the nearest package.json, or name the file .mts';
    return `${first} (${hint})`;
  }
  return `${(e as Error).name ?? "Error"}: ${first}`;
}

/** The store of a host given none: one SQLite file in the data directory. */
export const defaultStoreUrl = (dataDir: string): string => `sqlite:${join(dataDir, "freshet.db")}`;

/**
 * The file of a `sqlite:` URL: `sqlite:./data/freshet.db` and
 * `sqlite:data/freshet.db` are relative to the working directory,
 * `sqlite:/abs/x.db` and `sqlite:///abs/x.db` absolute, `sqlite:` alone is
 * `<dataDir>/freshet.db`, and `sqlite::memory:` a private in-memory database.
 *
 * @example
 * ```ts
 * sqlitePath("sqlite:./data/freshet.db", "./data") // "/cwd/data/freshet.db"
 * ```
 */
export function sqlitePath(url: string, dataDir: string): string {
  let rest = url.slice("sqlite:".length);
  if (rest === ":memory:") return rest;
  if (rest.startsWith("///")) rest = rest.slice(2);
  else if (rest.startsWith("//")) {
    // sqlite://name/x.db: a host part, which a file has not.
    throw new FreshetError("INVALID_CONFIG", `store URL "${url}" names a host; a SQLite store is a local file: use sqlite:./data/freshet.db (relative to the working directory) or sqlite:/absolute/path.db`);
  }
  return resolve(rest || join(dataDir, "freshet.db"));
}

/**
 * Opens the online and offline stores for a store URL. A SQLite file is
 * opened and its layout checked here, so a damaged, foreign or newer file is
 * an INVALID_CONFIG at startup (exit 2 in the CLI), not a 503 later.
 *
 * @example
 * ```ts
 * const { online, offline } = await openStores("redis://127.0.0.1:6379", "./data")
 * const local = await openStores("sqlite:./data/freshet.db", "./data")
 * ```
 */
export async function openStores(url: string, dataDir: string, opts: { project?: string; upstashToken?: string; offlineFormat?: "parquet" | "jsonl" } = {}): Promise<{ online: OnlineStore; offline: OfflineStore }> {
  const { fileOffline } = await import("../plugins/stores/file/index.ts");
  const offline = fileOffline({ dir: dataDir, format: opts.offlineFormat });
  if (url === "memory:" || url === "memory") {
    const { memoryStore } = await import("../plugins/stores/memory.ts");
    return { online: memoryStore(), offline };
  }
  if (/^rediss?(\+cluster)?:\/\//.test(url)) {
    const { redisStore } = await import("../plugins/stores/redis/redis.ts");
    // No auto-pipelining: the store already makes the writes of one turn of the event loop
    // (concurrent pushes) one script call (group commit), and a read is one HMGET; ioredis's
    // per-turn pipeline only added work per command (measured: about 8-10% more server CPU per
    // push and per read on Node). A cluster client pipelines per node itself.
    return { online: redisStore({ url, project: opts.project }), offline };
  }
  if (url.startsWith("https://") || url.startsWith("upstash:")) {
    const { upstashStore } = await import("../plugins/stores/redis/upstash.ts");
    const restUrl = url.startsWith("upstash:") ? url.slice("upstash:".length) : url;
    if (!opts.upstashToken) throw new FreshetError("INVALID_CONFIG", "an Upstash store needs a token: set UPSTASH_REDIS_REST_TOKEN");
    return { online: upstashStore({ url: restUrl, token: opts.upstashToken, project: opts.project }), offline };
  }
  if (url.startsWith("sqlite:")) {
    const path = sqlitePath(url, dataDir);
    const { sqliteStore } = await import("../plugins/stores/sqlite/index.ts");
    const online = sqliteStore({ path });
    try {
      await online.ready();
    } catch (e) {
      await online.close().catch(() => {});
      throw e;
    }
    return { online, offline };
  }
  if (url.startsWith("file:")) {
    const { fileStore } = await import("../plugins/stores/file/index.ts");
    const dir = url.slice("file:".length).replace(/^\/\/(?=\/)/, "") || dataDir;
    return { online: fileStore({ dir }), offline };
  }
  // Anything else is a mistake to report, never a directory to create (`redis:/host:6379` with one slash).
  throw new FreshetError("INVALID_CONFIG", `unknown store URL "${url}": use sqlite:./data/freshet.db, file:./data, memory:, redis://host:port, rediss://host:port, redis+cluster://host:port,host:port or an Upstash https:// URL`);
}

/**
 * Builds stores, processor and app from a config.
 *
 * @example
 * ```ts
 * const host = await createHost({ repo: "examples/driver_stats/feature_repo.ts", store: "memory:" })
 * const res = await host.app.request("/health")
 * ```
 */
export async function createHost(config: HostConfig): Promise<Host> {
  const registry = typeof config.repo === "string" ? await loadRepo(config.repo) : config.repo;
  const dataDir = config.dataDir ?? "./data";
  const { online, offline } = await openStores(config.store ?? defaultStoreUrl(dataDir), dataDir, { project: registry.project, upstashToken: config.upstashToken, offlineFormat: config.offlineFormat });
  const { fileDeadLetters } = await import("../plugins/stores/file/index.ts");
  const deadLetters = fileDeadLetters(config.deadLetters ?? `${dataDir}/dead-letters.jsonl`, {
    maxBytes: config.deadLetterMaxBytes,
    keep: config.deadLetterKeep,
    logger: config.logger,
    // What the retention deletes is counted, never silent.
    onDrop: ({ letters }) => {
      processor.metrics.inc("freshet_dead_letters_dropped_total", { sink: "file" }, letters);
      processor.metrics.inc("freshet_dead_letter_files_dropped_total", { sink: "file" });
    },
  });
  const processor = createProcessor({ registry, online, offline, deadLetters, sourceDeadLetters: config.sourceDeadLetters, logger: config.logger });
  const app = pushApp({
    processor,
    webhookSecret: config.webhookSecret,
    writeToken: config.writeToken,
    readToken: config.readToken,
    loopbackOnly: config.loopbackOnly,
    corsOrigins: config.corsOrigins,
    maxBodyBytes: config.maxBodyBytes,
    pendingTtlMs: config.pendingTtlMs,
    logger: config.logger,
    // Paths in /registry relative to where the host runs, never the layout of its disk.
    describeOptions: { cwd: process.cwd() },
  });
  return {
    registry,
    processor,
    app,
    online,
    offline,
    deadLetters,
    async close() {
      await online.close?.();
      await offline.close?.();
      await deadLetters.close?.();
      for (const sink of Object.values(config.sourceDeadLetters ?? {})) await sink.close?.();
    },
  };
}
