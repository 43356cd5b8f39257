#!/usr/bin/env node
/**
 * @module
 * The `freshet` command line: `serve`, `consume`, `materialize` and
 * `describe` a feature repo, on Node, Bun or Deno.
 */
import process from "node:process";
import { consume, type DeadLetterSink, FreshetError, type StreamSource, type StreamSourceDef } from "../mod.ts";
import { createHost, loadRepo, type HostConfig } from "./host.ts";
import { listenPolicy, parseFlags, readSettings, type Settings } from "./settings.ts";

const USAGE = `freshet: streaming feature ingestion

Usage:
  freshet serve <feature_repo.ts>         HTTP push receiver and online feature server
  freshet consume <feature_repo.ts>       poll Kafka / Kinesis sources into the stores
  freshet materialize <feature_repo.ts>   backfill the online store from batch sources
                                          (--from-offline: rebuild it from the offline log)
  freshet describe <feature_repo.ts>      print the registry as JSON
  freshet historical <feature_repo.ts> --entities <file> --features <view:feature,...> --out <file>
                                          point-in-time training set from the offline log (--help for more)

Options (or environment variables):
  --port <n>            FRESHET_PORT, PORT           default 8080 (consume: serve /metrics when set)
  --host <addr>         FRESHET_HOST                 default 127.0.0.1 (loopback); 0.0.0.0 needs a token or --open
  --write-token <t>     FRESHET_WRITE_TOKEN          bearer token required on POST /push
  --read-token <t>      FRESHET_READ_TOKEN           bearer token required on reads, /registry and /metrics
  --webhook-secret <s>  FRESHET_WEBHOOK_SECRET       require Standard Webhooks signatures on /push
  --open                FRESHET_OPEN=1               serve without credentials on any address (no Host check)
  --cors-origins <list> FRESHET_CORS_ORIGINS         origins allowed from browsers, comma-separated (default none)
  --store <url>         FRESHET_STORE                sqlite:<data-dir>/freshet.db (default), sqlite:<path>, file:./data, memory:, redis://h:p, https://<upstash>
  --data-dir <dir>      FRESHET_DATA_DIR             default ./data (SQLite file, offline log, dead letters)
  --dead-letters <f>    FRESHET_DEAD_LETTERS         default <data-dir>/dead-letters.jsonl
  --dead-letter-max-bytes <size>  FRESHET_DEAD_LETTER_MAX_BYTES  rotate the dead-letter file at this size, default 64MiB
  --dead-letter-keep <n>          FRESHET_DEAD_LETTER_KEEP       dead-letter files kept, default 5
  --max-body <size>     FRESHET_MAX_BODY_BYTES       largest push body, default 5MiB (sizes: 5242880, 5MB, 5MiB, 512kB)
  --source <name>       consume only this source (default: every Kafka and Kinesis source)
  --application <name>  FRESHET_KINESIS_APPLICATION  consume: the Kinesis application whose checkpoints and
                                leases to use (default: the source's application, else its name)
  --view <name>         materialize only this view
  --start <time> --end <time>   materialize range (ISO 8601 or epoch ms)
  FRESHET_PENDING_TTL_MS        how long a webhook-id stays pending (ms), default 30000
  UPSTASH_REDIS_REST_TOKEN      token for an Upstash store
  FRESHET_KAFKA_SESSION_TIMEOUT_MS  Kafka group session timeout in ms, over the source's sessionTimeout
                                (default kafkajs' 30000): how soon a killed consumer's partitions move
`;

type Runtime = "bun" | "deno" | "node";
const runtime: Runtime = "Bun" in globalThis ? "bun" : "Deno" in globalThis ? "deno" : "node";

async function adapter() {
  if (runtime === "bun") return await import("./bun.ts");
  if (runtime === "deno") return await import("./deno.ts");
  return await import("./node.ts");
}

/** Runs the CLI with `argv` (without the runtime and script). Exported for tests. */
export async function main(argv: string[]): Promise<void> {
  // `historical` parses its own flags (adapters/historical.ts).
  if (argv[0] === "historical") {
    await (await import("./historical.ts")).historicalCommand(argv.slice(1));
    return;
  }
  if (argv[0] === "materialize" && argv.includes("--from-offline")) {
    await (await import("./historical.ts")).materializeFromOfflineCommand(argv.slice(1));
    return;
  }
  const { values, positionals } = parseFlags(argv);
  const [command, repoPath] = positionals;
  if (values.help || !command) {
    console.log(USAGE);
    return;
  }
  if (!["serve", "consume", "materialize", "describe"].includes(command)) {
    throw new FreshetError("INVALID_CONFIG", `unknown command "${command}": use serve, consume, materialize or describe (freshet --help)`);
  }
  if (!repoPath) throw new FreshetError("INVALID_CONFIG", `freshet ${command} needs a feature repo path, e.g. freshet ${command} examples/driver_stats/feature_repo.ts`);
  if (positionals.length > 2) throw new FreshetError("INVALID_CONFIG", `freshet ${command} takes one feature repo path, got also ${JSON.stringify(positionals[2])} (flags start with --; freshet --help)`);
  // Every flag and env value is checked before anything starts.
  const settings = readSettings(values, process.env);
  if (command !== "consume" && values.application !== undefined) throw new FreshetError("INVALID_CONFIG", `--application applies to freshet consume only, not ${command}`);
  const config: HostConfig = {
    repo: repoPath,
    store: settings.store,
    dataDir: settings.dataDir,
    deadLetters: settings.deadLetters,
    deadLetterMaxBytes: settings.deadLetterMaxBytes,
    deadLetterKeep: settings.deadLetterKeep,
    webhookSecret: settings.webhookSecret,
    writeToken: settings.writeToken,
    readToken: settings.readToken,
    corsOrigins: settings.corsOrigins,
    maxBodyBytes: settings.maxBodyBytes,
    pendingTtlMs: settings.pendingTtlMs,
    upstashToken: settings.upstashToken,
    logger: console,
  };
  const port = settings.port;

  if (command === "describe") {
    console.log(JSON.stringify((await loadRepo(repoPath)).describe({ cwd: process.cwd() }), null, 2));
    return;
  }
  if (command === "serve") return await serveCommand(listening(config, settings), port ?? 8080, settings);
  if (command === "consume") return await consumeCommand(port === undefined ? config : listening(config, settings), port, settings, values.source);
  return await materializeCommand(config, values.view, values.start, values.end);
}

/** The config of a command that listens: refused on a non-loopback address without credentials, Host-checked on loopback without them. */
function listening(config: HostConfig, settings: Settings): HostConfig {
  const { loopbackOnly, warning } = listenPolicy(settings);
  if (warning) console.warn(warning);
  return { ...config, loopbackOnly };
}

async function serveCommand(config: HostConfig, port: number, settings: Settings) {
  const host = await createHost(config);
  const { serve, onShutdown } = await adapter();
  const hostname = settings.hostname;
  const server = await serve(host.app, { port, hostname });
  const pushSource = [...host.registry.sources.values()].find((s) => s.kind === "push");
  const view = pushSource && host.registry.viewsForSource(pushSource.name)[0];
  console.log(`[freshet] serving project "${host.registry.project}" on http://localhost:${server.port} (${runtime}, store ${host.online.name}, listening on ${hostname}${access(settings)})`);
  if (view && pushSource) {
    const inputs = Object.keys(view.schema.entries ?? {}).filter((f) => !view.joinKeys.includes(f) && f !== view.timestampField);
    const sample = sampleRow(view.joinKeys, inputs, view.timestampField!);
    // The tokens themselves are never printed: the examples read them from the environment.
    const writeAuth = settings.writeToken !== undefined ? ` -H "authorization: Bearer $FRESHET_WRITE_TOKEN"` : "";
    const readAuth = settings.readToken !== undefined ? ` -H "authorization: Bearer $FRESHET_READ_TOKEN"` : "";
    console.log(`[freshet] push a row:\n  curl -s -X POST http://localhost:${server.port}/push -H 'content-type: application/json'${writeAuth} -d '${JSON.stringify({ push_source_name: pushSource.name, df: sample, to: "online" })}'`);
    console.log(`[freshet] read it back:\n  curl -s -X POST http://localhost:${server.port}/get-online-features -H 'content-type: application/json'${readAuth} -d '${JSON.stringify({ entities: { [view.joinKeys[0]]: [1001] }, features: view.features.map((f) => `${view.name}:${f}`) })}'`);
  }
  onShutdown(async () => {
    await server.close();
    await host.close();
  });
}

/** What protects the server, for the startup line (never the secrets themselves). */
function access(s: Settings): string {
  const parts = [s.writeToken !== undefined && "write token", s.readToken !== undefined && "read token", s.webhookSecret !== undefined && "webhook signatures"].filter(Boolean);
  if (parts.length) return `; requires ${parts.join(", ")}`;
  return s.open ? "; open: no credentials" : "; loopback only, no credentials";
}

function sampleRow(joinKeys: string[], features: string[], ts: string): Record<string, unknown[]> {
  const df: Record<string, unknown[]> = {};
  for (const k of joinKeys) df[k] = [1001];
  for (const f of features) df[f] = [f.includes("trips") ? 42 : 0.5];
  df[ts] = [new Date().toISOString()];
  return df;
}

async function consumeCommand(config: HostConfig, port: number | undefined, settings: Settings, only: string | undefined) {
  const hostname = settings.hostname;
  const registry = await loadRepo(config.repo as string);
  const defs = [...registry.sources.values()].filter((s) => s.kind !== "push" && (!only || s.name === only));
  if (defs.length === 0) throw new FreshetError("INVALID_CONFIG", only ? `no Kafka or Kinesis source named "${only}"` : "the repo has no Kafka or Kinesis source to consume; `freshet serve` runs push sources");
  const applications = kinesisApplications(defs, settings.application);
  const sourceDeadLetters: Record<string, DeadLetterSink> = {};
  for (const def of defs) {
    if (def.kind === "kafka" && def.deadLetterTopic) {
      const { kafkaDeadLetters } = await import("../plugins/sources/kafka.ts");
      sourceDeadLetters[def.name] = kafkaDeadLetters({ brokers: def.kafkaBootstrapServers, topic: def.deadLetterTopic, ssl: def.ssl, sasl: def.sasl });
    }
  }
  const host = await createHost({ ...config, repo: registry, sourceDeadLetters });
  const ac = new AbortController();
  const { serve, onShutdown } = await adapter();
  const server = port === undefined ? undefined : await serve(host.app, { port, hostname });
  if (server) console.log(`[freshet] metrics on http://localhost:${server.port}/metrics`);
  const sources: StreamSource[] = [];
  for (const def of defs) {
    if (def.kind === "kafka") {
      const { kafkaConsumer } = await import("../plugins/sources/kafka.ts");
      // The environment wins over the definition; the heartbeat follows it unless the definition sets one.
      sources.push(kafkaConsumer(def, { logger: console, sessionTimeout: settings.kafkaSessionTimeoutMs }));
    } else if (def.kind === "kinesis") {
      const { kinesisConsumer } = await import("../plugins/sources/kinesis.ts");
      sources.push(kinesisConsumer(def, { meta: host.online.meta, logger: console, application: applications.get(def.name) }));
    }
  }
  const done = Promise.all(sources.map((s) => {
    console.log(`[freshet] consuming ${s.kind} source "${s.name}" into ${host.online.name}`);
    return consume(s, host.processor, { signal: ac.signal, logger: console });
  }));
  onShutdown(async () => {
    ac.abort();
    await done;
    await server?.close();
    await host.close();
  });
  try {
    await done;
  } catch (e) {
    ac.abort();
    await host.close().catch(() => {});
    throw e;
  }
}

/**
 * The application of each Kinesis source to consume (the flag's, else the
 * definition's, else the source's name), refusing a flag with no Kinesis
 * source to apply to and two sources that would share one stream's
 * checkpoints.
 */
function kinesisApplications(defs: StreamSourceDef[], flag: string | undefined): Map<string, string> {
  const out = new Map<string, string>();
  const byStream = new Map<string, string>();
  for (const def of defs) {
    if (def.kind !== "kinesis") continue;
    const app = flag ?? def.application ?? def.name;
    const other = byStream.get(`${app}\u0000${def.streamName}`);
    if (other) throw new FreshetError("INVALID_CONFIG", `Kinesis sources "${other}" and "${def.name}" both read stream "${def.streamName}" as application "${app}", so they would share checkpoints: give them different applications, or consume one with --source`);
    byStream.set(`${app}\u0000${def.streamName}`, def.name);
    out.set(def.name, app);
  }
  if (flag !== undefined && out.size === 0) throw new FreshetError("INVALID_CONFIG", `--application names a Kinesis application, and no Kinesis source is consumed here (Kafka sources take groupId in their definition)`);
  return out;
}

async function materializeCommand(config: HostConfig, viewName: string | undefined, start: string | undefined, end: string | undefined) {
  const host = await createHost(config);
  const { countFileRows, readFileSource, progressLogger } = await import("../plugins/sources/file.ts");
  const { materialize } = await import("../mod.ts");
  const views = viewName ? [host.registry.view(viewName)] : [...host.registry.views.values()].filter((v) => v.source.batchSource);
  if (views.length === 0) throw new FreshetError("INVALID_CONFIG", "no view has a batch source; set batchSource: fileSource({...}) on its source");
  for (const view of views) {
    const batch = view.source.batchSource;
    if (!batch) throw new FreshetError("INVALID_CONFIG", `view "${view.name}" has no batch source; set batchSource on source "${view.source.name}"`);
    const total = await countFileRows(batch).catch(() => undefined);
    const p = await materialize(host.processor, view, { start, end, read: readFileSource(batch), total, onProgress: progressLogger() });
    console.log(`[freshet] materialized ${view.name}: ${p.read} rows read, ${p.inRange} in range, ${p.written} written, ${p.stale} stale, ${p.expired} expired (outside the ttl), ${p.invalid} invalid (dead-lettered)`);
  }
  await host.close();
}

const isMain = (() => {
  const arg = process.argv[1] ?? "";
  return arg.endsWith("cli.ts");
})();
if (isMain) {
  main(process.argv.slice(2)).catch((e) => {
    console.error(e instanceof FreshetError ? e.message : e);
    // A mistake in the flags, the env or the feature repo: exit 2, like a usage error.
    process.exit(e instanceof FreshetError && (e.code === "INVALID_CONFIG" || e.code === "INVALID_DEFINITION") ? 2 : 1);
  });
}
