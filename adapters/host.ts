/**
 * @module
 * Builds a running Freshet from a config: the feature repo, the stores from a
 * URL, the dead-letter sink, the processor and the Hono app. Shared by the CLI
 * and the runtime adapters; only this layer reads files, env and URLs.
 */
import { resolve } from "node:path";
import { pathToFileURL } from "node:url";
import { createProcessor, FreshetError, type DeadLetterSink, type Logger, type OfflineStore, type OnlineStore, type Processor, type Registry } from "../mod.ts";
import { pushApp } from "../plugins/sources/push.ts";
import type { Hono } from "hono";

/** What a host needs. Every field can also come from the environment (see the README). */
export interface HostConfig {
  /** A feature repo module path, or a registry. */
  repo: string | Registry;
  /**
   * Where online features live: `file:./data` (default), `memory:`, `sqlite:./data/freshet.db`,
   * `redis://host:6379/0`, `rediss://...`, or an Upstash REST URL
   * (`https://...upstash.io`, token in UPSTASH_REDIS_REST_TOKEN).
   */
  store?: string;
  /** Folder for the file store, the offline log and dead letters. Default `./data`. */
  dataDir?: string;
  /** Dead-letter JSON Lines file. Default `<dataDir>/dead-letters.jsonl`. */
  deadLetters?: string;
  webhookSecret?: string;
  maxBodyBytes?: number;
  /** How long a webhook-id stays pending while its delivery runs (and after a crash), in ms. Default 30 s. */
  pendingTtlMs?: number;
  upstashToken?: string;
  /** Dead-letter sinks for particular sources, by name (e.g. a Kafka source's dead-letter topic); the others use the JSON Lines file. */
  sourceDeadLetters?: Record<string, DeadLetterSink>;
  logger?: Logger;
}

/** A built host. */
export interface Host {
  registry: Registry;
  processor: Processor;
  app: Hono;
  online: OnlineStore;
  offline: OfflineStore;
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
  const mod = await import(pathToFileURL(resolve(path)).href);
  const registry = mod.default ?? mod.repo;
  if (!registry || typeof registry.viewsForSource !== "function") {
    throw new FreshetError("INVALID_CONFIG", `${path} must export a featureRepo({...}) as its default export (export default featureRepo({ project, definitions }))`);
  }
  return registry;
}

/**
 * Opens the online and offline stores for a store URL.
 *
 * @example
 * ```ts
 * const { online, offline } = await openStores("redis://127.0.0.1:6379", "./data")
 * ```
 */
export async function openStores(url: string, dataDir: string, opts: { project?: string; upstashToken?: string } = {}): Promise<{ online: OnlineStore; offline: OfflineStore }> {
  const { fileOffline } = await import("../plugins/stores/file/index.ts");
  const offline = fileOffline({ dir: dataDir });
  if (url === "memory:" || url === "memory") {
    const { memoryStore } = await import("../plugins/stores/memory.ts");
    return { online: memoryStore(), offline };
  }
  if (url.startsWith("redis://") || url.startsWith("rediss://")) {
    const { redisStore } = await import("../plugins/stores/redis/redis.ts");
    return { online: redisStore({ url, project: opts.project }), offline };
  }
  if (url.startsWith("https://") || url.startsWith("upstash:")) {
    const { upstashStore } = await import("../plugins/stores/redis/upstash.ts");
    const restUrl = url.startsWith("upstash:") ? url.slice("upstash:".length) : url;
    if (!opts.upstashToken) throw new FreshetError("INVALID_CONFIG", "an Upstash store needs a token: set UPSTASH_REDIS_REST_TOKEN");
    return { online: upstashStore({ url: restUrl, token: opts.upstashToken, project: opts.project }), offline };
  }
  if (url.startsWith("sqlite:")) {
    const { sqliteStore } = await import("../plugins/stores/sqlite/index.ts");
    const path = url.slice("sqlite:".length).replace(/^\/\/(?=\/)/, "") || `${dataDir}/freshet.db`;
    const online = sqliteStore({ path });
    await online.ready(); // a foreign, newer or damaged file is refused at startup
    return { online, offline };
  }
  if (url.startsWith("file:")) {
    const { fileStore } = await import("../plugins/stores/file/index.ts");
    const dir = url.slice("file:".length).replace(/^\/\/(?=\/)/, "") || dataDir;
    return { online: fileStore({ dir }), offline };
  }
  // Anything else is a mistake to report, never a directory to create (`redis:/host:6379` with one slash).
  throw new FreshetError("INVALID_CONFIG", `unknown store URL "${url}": use file:./data, memory:, sqlite:./data/freshet.db, redis://host:port, rediss://host:port or an Upstash https:// URL`);
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
  const { online, offline } = await openStores(config.store ?? `file:${dataDir}`, dataDir, { project: registry.project, upstashToken: config.upstashToken });
  const { fileDeadLetters } = await import("../plugins/stores/file/index.ts");
  const deadLetters = fileDeadLetters(config.deadLetters ?? `${dataDir}/dead-letters.jsonl`);
  const processor = createProcessor({ registry, online, offline, deadLetters, sourceDeadLetters: config.sourceDeadLetters, logger: config.logger });
  const app = pushApp({ processor, webhookSecret: config.webhookSecret, maxBodyBytes: config.maxBodyBytes, pendingTtlMs: config.pendingTtlMs });
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
