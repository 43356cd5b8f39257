#!/usr/bin/env node
/**
 * @module
 * The `freshet` command line: `serve`, `consume`, `materialize` and
 * `describe` a feature repo, on Node, Bun or Deno.
 */
import process from "node:process";
import { parseArgs } from "node:util";
import { consume, type DeadLetterSink, FreshetError, type StreamSource } from "../mod.ts";
import { createHost, loadRepo, type HostConfig } from "./host.ts";

const USAGE = `freshet: streaming feature ingestion

Usage:
  freshet serve <feature_repo.ts>         HTTP push receiver and online feature server
  freshet consume <feature_repo.ts>       poll Kafka / Kinesis sources into the stores
  freshet materialize <feature_repo.ts>   backfill the online store from batch sources
  freshet describe <feature_repo.ts>      print the registry as JSON

Options (or environment variables):
  --port <n>            FRESHET_PORT, PORT           default 8080 (consume: serve /metrics when set)
  --host <addr>         FRESHET_HOST                 default 0.0.0.0
  --store <url>         FRESHET_STORE                file:./data (default), memory:, sqlite:<file>, redis://h:p, https://<upstash>
  --data-dir <dir>      FRESHET_DATA_DIR             default ./data (file store, offline log, dead letters)
  --dead-letters <f>    FRESHET_DEAD_LETTERS         default <data-dir>/dead-letters.jsonl
  --webhook-secret <s>  FRESHET_WEBHOOK_SECRET       require Standard Webhooks signatures on /push
  --max-body <bytes>    FRESHET_MAX_BODY_BYTES       default 5242880
  --source <name>       consume only this source (default: every Kafka and Kinesis source)
  --view <name>         materialize only this view
  --start <time> --end <time>   materialize range (ISO 8601 or epoch ms)
  UPSTASH_REDIS_REST_TOKEN      token for an Upstash store
  FRESHET_KAFKA_SESSION_TIMEOUT_MS  Kafka group session timeout (default kafkajs' 30000): how soon a
                                dead consumer's partitions move to another member
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
  const { values, positionals } = parseArgs({
    args: argv,
    allowPositionals: true,
    options: {
      port: { type: "string" },
      host: { type: "string" },
      store: { type: "string" },
      "data-dir": { type: "string" },
      "dead-letters": { type: "string" },
      "webhook-secret": { type: "string" },
      "max-body": { type: "string" },
      source: { type: "string" },
      view: { type: "string" },
      start: { type: "string" },
      end: { type: "string" },
      help: { type: "boolean", short: "h" },
    },
  });
  const [command, repoPath] = positionals;
  if (values.help || !command) {
    console.log(USAGE);
    return;
  }
  if (!repoPath) throw new FreshetError("INVALID_CONFIG", `freshet ${command} needs a feature repo path, e.g. freshet ${command} examples/driver_stats/feature_repo.ts`);
  const env = process.env;
  const portText = values.port ?? env.FRESHET_PORT ?? env.PORT;
  const port = portText === undefined ? undefined : Number(portText);
  if (port !== undefined && !(Number.isInteger(port) && port >= 0 && port < 65536)) throw new FreshetError("INVALID_CONFIG", `--port ${portText} is not a port number (0-65535)`);
  const maxBody = values["max-body"] ?? env.FRESHET_MAX_BODY_BYTES;
  const config: HostConfig = {
    repo: repoPath,
    store: values.store ?? env.FRESHET_STORE,
    dataDir: values["data-dir"] ?? env.FRESHET_DATA_DIR,
    deadLetters: values["dead-letters"] ?? env.FRESHET_DEAD_LETTERS,
    webhookSecret: values["webhook-secret"] ?? env.FRESHET_WEBHOOK_SECRET,
    maxBodyBytes: maxBody === undefined ? undefined : Number(maxBody),
    pendingTtlMs: env.FRESHET_PENDING_TTL_MS === undefined ? undefined : Number(env.FRESHET_PENDING_TTL_MS),
    upstashToken: env.UPSTASH_REDIS_REST_TOKEN,
    logger: console,
  };
  const hostname = values.host ?? env.FRESHET_HOST ?? "0.0.0.0";

  if (command === "describe") {
    console.log(JSON.stringify((await loadRepo(repoPath)).describe(), null, 2));
    return;
  }
  if (command === "serve") return await serveCommand(config, port ?? 8080, hostname);
  if (command === "consume") return await consumeCommand(config, port, hostname, values.source);
  if (command === "materialize") return await materializeCommand(config, values.view, values.start, values.end);
  throw new FreshetError("INVALID_CONFIG", `unknown command "${command}"\n${USAGE}`);
}

async function serveCommand(config: HostConfig, port: number, hostname: string) {
  const host = await createHost(config);
  const { serve, onShutdown } = await adapter();
  const server = await serve(host.app, { port, hostname });
  const pushSource = [...host.registry.sources.values()].find((s) => s.kind === "push");
  const view = pushSource && host.registry.viewsForSource(pushSource.name)[0];
  console.log(`[freshet] serving project "${host.registry.project}" on http://localhost:${server.port} (${runtime}, store ${host.online.name})`);
  if (view && pushSource) {
    const inputs = Object.keys(view.schema.entries ?? {}).filter((f) => !view.joinKeys.includes(f) && f !== view.timestampField);
    const sample = sampleRow(view.joinKeys, inputs, view.timestampField!);
    console.log(`[freshet] push a row:\n  curl -s -X POST http://localhost:${server.port}/push -H 'content-type: application/json' -d '${JSON.stringify({ push_source_name: pushSource.name, df: sample, to: "online" })}'`);
    console.log(`[freshet] read it back:\n  curl -s -X POST http://localhost:${server.port}/get-online-features -H 'content-type: application/json' -d '${JSON.stringify({ entities: { [view.joinKeys[0]]: [1001] }, features: view.features.map((f) => `${view.name}:${f}`) })}'`);
  }
  onShutdown(async () => {
    await server.close();
    await host.close();
  });
}

function sampleRow(joinKeys: string[], features: string[], ts: string): Record<string, unknown[]> {
  const df: Record<string, unknown[]> = {};
  for (const k of joinKeys) df[k] = [1001];
  for (const f of features) df[f] = [f.includes("trips") ? 42 : 0.5];
  df[ts] = [new Date().toISOString()];
  return df;
}

async function consumeCommand(config: HostConfig, port: number | undefined, hostname: string, only: string | undefined) {
  const registry = await loadRepo(config.repo as string);
  const defs = [...registry.sources.values()].filter((s) => s.kind !== "push" && (!only || s.name === only));
  if (defs.length === 0) throw new FreshetError("INVALID_CONFIG", only ? `no Kafka or Kinesis source named "${only}"` : "the repo has no Kafka or Kinesis source to consume; `freshet serve` runs push sources");
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
      const session = process.env.FRESHET_KAFKA_SESSION_TIMEOUT_MS;
      const sessionTimeout = session === undefined ? undefined : Number(session);
      if (sessionTimeout !== undefined && !(Number.isInteger(sessionTimeout) && sessionTimeout >= 1000)) {
        throw new FreshetError("INVALID_CONFIG", `FRESHET_KAFKA_SESSION_TIMEOUT_MS ${JSON.stringify(session)} must be an integer of at least 1000 (ms)`);
      }
      sources.push(kafkaConsumer(def, { logger: console, sessionTimeout, heartbeatInterval: sessionTimeout === undefined ? undefined : Math.max(300, Math.floor(sessionTimeout / 5)) }));
    } else if (def.kind === "kinesis") {
      const { kinesisConsumer } = await import("../plugins/sources/kinesis.ts");
      sources.push(kinesisConsumer(def, { meta: host.online.meta, logger: console }));
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
    process.exit(e instanceof FreshetError && e.code === "INVALID_CONFIG" ? 2 : 1);
  });
}
