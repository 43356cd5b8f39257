#!/usr/bin/env node
/**
 * @module
 * The `freshet` command line: `serve`, `consume`, `materialize` and
 * `describe` a feature repo, on Node, Bun or Deno.
 */
import process from "node:process";
import { consume, type DeadLetterSink, FreshetError, type MaterializeProgress, type StreamSource, type StreamSourceDef } from "../mod.ts";
import { createHost, type Host, loadRepo, type HostConfig } from "./host.ts";
import { type CliLogger, createLogger } from "./log.ts";
import type { FetchApp, RunningServer } from "./node.ts";
import { listenPolicy, parseFlags, readSettings, type Settings } from "./settings.ts";
import { closest } from "../core/definitions.ts";

/** Every flag of serve, consume and materialize: one table for `--help`, `<command> --help` and the README. */
const FLAG_HELP: [flag: string, env: string, text: string, commands: string][] = [
  ["--port <n>", "FRESHET_PORT, PORT", "default 8080 (consume: serve /metrics when set)", "serve consume"],
  ["--host <addr>", "FRESHET_HOST", "default 127.0.0.1 (loopback); 0.0.0.0 needs a token or --open", "serve consume"],
  ["--write-token <t>", "FRESHET_WRITE_TOKEN", "bearer token required on POST /push", "serve"],
  ["--read-token <t>", "FRESHET_READ_TOKEN", "bearer token required on reads, /registry and /metrics", "serve consume"],
  ["--webhook-secret <s>", "FRESHET_WEBHOOK_SECRET", "require Standard Webhooks signatures on /push", "serve"],
  ["--open", "FRESHET_OPEN=1", "serve without credentials on any address (no Host check)", "serve consume"],
  ["--cors-origins <list>", "FRESHET_CORS_ORIGINS", "origins allowed from browsers, comma-separated (default none)", "serve"],
  ["--store <url>", "FRESHET_STORE", "sqlite:<data-dir>/freshet.db (default), sqlite:<path>, file:./data, memory:, redis://h:p, redis+cluster://h:p,h:p, https://<upstash>", "serve consume materialize replay"],
  ["--data-dir <dir>", "FRESHET_DATA_DIR", "default ./data (SQLite file, offline log, dead letters)", "serve consume materialize replay"],
  ["--dead-letters <f>", "FRESHET_DEAD_LETTERS", "default <data-dir>/dead-letters.jsonl (replay: the file to replay)", "serve consume materialize replay"],
  ["--dead-letter-max-bytes <size>", "FRESHET_DEAD_LETTER_MAX_BYTES", "rotate the dead-letter file at this size, default 64MiB", "serve consume materialize"],
  ["--dead-letter-keep <n>", "FRESHET_DEAD_LETTER_KEEP", "dead-letter files kept, default 5", "serve consume materialize"],
  ["--max-body <size>", "FRESHET_MAX_BODY_BYTES", "largest push body, default 5MiB (sizes: 5242880, 5MB, 5MiB, 512kB)", "serve"],
  ["--source <name>", "", "consume only this source (default: every Kafka and Kinesis source)", "consume"],
  ["--application <name>", "FRESHET_KINESIS_APPLICATION", "the Kinesis application whose checkpoints and leases to use (default: the source's application, else its name)", "consume"],
  ["--view <name>", "", "materialize only this view", "materialize"],
  ["--start <time>", "", "materialize rows at or after this event time (ISO 8601 or epoch ms)", "materialize"],
  ["--end <time>", "", "materialize rows before this event time (ISO 8601 or epoch ms)", "materialize"],
  ["--from-offline", "", "rebuild the online store from the offline log instead of the batch sources", "materialize"],
  ["--dead-letter-topic <t>", "", "replay the dead letters of this Kafka topic (a source's deadLetterTopic), from its start to its end now", "replay"],
  ["--out <file>", "", "replay: where letters that still fail go, default <input>.still-failing.jsonl", "replay"],
  ["--log-format <f>", "FRESHET_LOG_FORMAT", "text (default: time, level, message) or json (one object a line)", "serve consume materialize replay"],
  ["--log-level <l>", "FRESHET_LOG_LEVEL", "debug, info (default), warn or error", "serve consume materialize replay"],
  ["--log-requests", "FRESHET_LOG_REQUESTS=1", "one log line per HTTP request: method, path, status, ms, request id", "serve consume"],
  ["", "FRESHET_PENDING_TTL_MS", "how long a webhook-id stays pending (ms), default 30000", "serve"],
  ["", "UPSTASH_REDIS_REST_TOKEN", "token for an Upstash store", "serve consume materialize replay"],
  ["", "FRESHET_KAFKA_SESSION_TIMEOUT_MS", "Kafka group session timeout in ms, over the sources' sessionTimeout (default kafkajs' 30000): how soon a killed consumer's partitions move", "consume"],
];

const COMMANDS: Record<string, string> = {
  serve: "HTTP push receiver and online feature server",
  consume: "poll Kafka / Kinesis sources into the stores",
  materialize: "backfill the online store from batch sources (--from-offline: from the offline log)",
  describe: "print the registry as JSON",
  replay: "run dead letters (--dead-letters <file> or --dead-letter-topic <t>) through the pipeline again after a fix",
  historical: "point-in-time training set from the offline log (freshet historical --help)",
  compact: "compact the offline log's small files, adopting those of writers that are gone (freshet compact --help)",
};

function flagLines(command?: string): string {
  const rows = FLAG_HELP.filter(([, , , cmds]) => !command || cmds.split(" ").includes(command));
  return rows.map(([flag, env, text]) => `  ${(flag || env).padEnd(32)} ${flag && env ? `${env}: ` : ""}${text}`).join("\n");
}

const USAGE = `freshet: streaming feature ingestion

Usage:
${Object.entries(COMMANDS).map(([c, text]) => `  freshet ${c} <feature_repo.ts>`.padEnd(45) + text).join("\n")}
  freshet --version

Options (flag, or environment variable):
${flagLines()}

freshet <command> --help shows one command's options.
`;

/** The help of one command. */
function commandUsage(command: string): string {
  return `freshet ${command} <feature_repo.ts>: ${COMMANDS[command]}

Options (flag, or environment variable):
${flagLines(command) || "  (none)"}
`;
}

/** The package's version, from the package.json beside the sources (or the built files). */
async function version(): Promise<string> {
  const { readFile } = await import("node:fs/promises");
  for (const rel of ["../package.json", "../../package.json"]) {
    try {
      const pkg = JSON.parse(await readFile(new URL(rel, import.meta.url), "utf8"));
      if (pkg.name === "freshet") return String(pkg.version);
    } catch {
      // not here
    }
  }
  return "unknown";
}

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
  if (argv[0] === "compact") {
    await (await import("./historical.ts")).compactCommand(argv.slice(1));
    return;
  }
  if (argv[0] === "materialize" && argv.includes("--from-offline")) {
    await (await import("./historical.ts")).materializeFromOfflineCommand(argv.slice(1));
    return;
  }
  const { values, positionals } = parseFlags(argv);
  const [command, repoPath] = positionals;
  if (values.version) {
    console.log(`freshet ${await version()} (${runtime} ${runtimeVersion()})`);
    return;
  }
  if (values.help && command && command in COMMANDS && command !== "historical" && command !== "compact") {
    console.log(commandUsage(command));
    return;
  }
  if (values.help || !command) {
    console.log(USAGE);
    return;
  }
  if (!["serve", "consume", "materialize", "describe", "replay"].includes(command)) {
    const near = closest(command, Object.keys(COMMANDS), 2);
    throw new FreshetError("INVALID_CONFIG", `unknown command "${command}"${near ? `; did you mean ${near}?` : ""}: use ${Object.keys(COMMANDS).join(", ")} (freshet --help)`);
  }
  if (!repoPath) throw new FreshetError("INVALID_CONFIG", `freshet ${command} needs a feature repo path, e.g. freshet ${command} examples/driver_stats/feature_repo.ts`);
  if (positionals.length > 2) throw new FreshetError("INVALID_CONFIG", `freshet ${command} takes one feature repo path, got also ${JSON.stringify(positionals[2])} (flags start with --; freshet --help)`);
  // Every flag and env value is checked before anything starts.
  const settings = readSettings(values, process.env);
  if (command !== "consume" && values.application !== undefined) throw new FreshetError("INVALID_CONFIG", `--application applies to freshet consume only, not ${command}`);
  const log = createLogger({ format: settings.logFormat, level: settings.logLevel });
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
    logger: log,
  };
  const port = settings.port;

  if (command === "describe") {
    console.log(JSON.stringify((await loadRepo(repoPath)).describe({ cwd: process.cwd() }), null, 2));
    return;
  }
  if (command === "serve") return await serveCommand(listening(config, settings, log), port ?? 8080, settings, log);
  if (command === "replay") return await replayCommand(config, values["dead-letters"], values["dead-letter-topic"], values.out, log);
  if (command === "consume") return await consumeCommand(port === undefined ? config : listening(config, settings, log), port, settings, values.source, log);
  return await materializeCommand(config, values.view, values.start, values.end, log);
}

function runtimeVersion(): string {
  const g = globalThis as { Bun?: { version: string }; Deno?: { version: { deno: string } } };
  return g.Bun?.version ?? g.Deno?.version.deno ?? process.versions.node;
}

/**
 * Listens, or says in one line why it cannot: a port in use or an address
 * this machine does not have is a configuration mistake (exit 2), not a stack.
 */
async function listen(app: FetchApp, port: number, hostname: string): Promise<RunningServer> {
  const { serve } = await adapter();
  try {
    return await serve(app, { port, hostname });
  } catch (e) {
    const err = e as { code?: string; message?: string; name?: string };
    const text = `${err.code ?? ""} ${err.name ?? ""} ${err.message ?? ""}`;
    if (/EADDRINUSE|AddrInUse|address already in use/i.test(text)) {
      throw new FreshetError("INVALID_CONFIG", `port ${port} on ${hostname} is in use by another process: stop it, or pass --port <n> (--port 0 picks a free port)`);
    }
    if (/EADDRNOTAVAIL|AddrNotAvailable|EACCES|PermissionDenied|ENOTFOUND|EAI_AGAIN/i.test(text)) {
      throw new FreshetError("INVALID_CONFIG", `cannot listen on ${hostname}:${port} (${(err.message ?? text).split("\n")[0]}): use --host 127.0.0.1 or an address of this machine, and a port above 1023 unless running as root`);
    }
    throw e;
  }
}

/**
 * The AWS SDK prints an 8-line warning on Node < 22 at every start; the log
 * says it once, in one line, instead (unless the user set the SDK's own switch).
 */
function sayNodeSupportOnce(log: CliLogger): void {
  const major = Number(process.versions.node?.split(".")[0]);
  if (runtime !== "node" || !(major < 22) || process.env.AWS_SDK_JS_NODE_VERSION_SUPPORT_WARNING_DISABLED !== undefined) return;
  process.env.AWS_SDK_JS_NODE_VERSION_SUPPORT_WARNING_DISABLED = "true";
  log.warn(`[freshet] [kinesis] Node ${process.versions.node} is end-of-life: AWS SDK releases after January 2027 need Node 22 or later; upgrade Node to keep getting them`);
}

/** One line per HTTP request, for --log-requests. */
function requestLog(app: FetchApp, log: CliLogger): FetchApp {
  return {
    fetch: async (req: Request) => {
      const t = performance.now();
      const res = await app.fetch(req);
      const path = new URL(req.url).pathname;
      log.info(`[http] ${req.method} ${path.length > 200 ? `${path.slice(0, 200)}...` : path} ${res.status} ${(performance.now() - t).toFixed(1)} ms ${res.headers.get("x-request-id") ?? "-"}`);
      return res;
    },
  };
}

/**
 * Says at startup, plainly, when the store cannot be reached: the command
 * still starts (the store may come up after it), and what that means is said.
 */
async function checkStore(host: Host, log: CliLogger, meanwhile: string): Promise<void> {
  const ping = host.online.ping;
  if (!ping) return;
  let timer: ReturnType<typeof setTimeout> | undefined;
  try {
    await Promise.race([
      ping.call(host.online),
      new Promise<never>((_, reject) => (timer = setTimeout(() => reject(new Error("no answer within 2 s")), 2000))),
    ]);
  } catch (e) {
    log.warn(`[freshet] store ${host.online.name} is unreachable at startup: ${(e as Error).message}; starting anyway: ${meanwhile} until it is back`);
  } finally {
    clearTimeout(timer);
  }
}

/** The config of a command that listens: refused on a non-loopback address without credentials, Host-checked on loopback without them. */
function listening(config: HostConfig, settings: Settings, log: CliLogger): HostConfig {
  const { loopbackOnly, warning } = listenPolicy(settings);
  if (warning) log.warn(warning);
  return { ...config, loopbackOnly };
}

async function serveCommand(config: HostConfig, port: number, settings: Settings, log: CliLogger) {
  const host = await createHost(config);
  const { onShutdown } = await adapter();
  const hostname = settings.hostname;
  await checkStore(host, log, "pushes and reads answer 503 (GET /health says so)");
  const server = await listen(settings.logRequests ? requestLog(host.app, log) : host.app, port, hostname).catch(async (e) => {
    await host.close().catch(() => {});
    throw e;
  });
  const pushSource = [...host.registry.sources.values()].find((s) => s.kind === "push");
  const view = pushSource && host.registry.viewsForSource(pushSource.name)[0];
  log.info(`[freshet] serving project "${host.registry.project}" on http://localhost:${server.port} (${runtime}, store ${host.online.name}, listening on ${hostname}${access(settings)})`);
  log.info(`[freshet] status page: http://localhost:${server.port}/${settings.readToken !== undefined ? " (it asks for the read token)" : ""}; metrics: /metrics; API: /openapi.json`);
  if (view && pushSource) {
    const inputs = Object.keys(view.schema.entries ?? {}).filter((f) => !view.joinKeys.includes(f) && f !== view.timestampField);
    const sample = sampleRow(view.joinKeys, inputs, view.timestampField!);
    // The tokens themselves are never printed: the examples read them from the environment.
    const writeAuth = settings.writeToken !== undefined ? ` -H "authorization: Bearer $FRESHET_WRITE_TOKEN"` : "";
    const readAuth = settings.readToken !== undefined ? ` -H "authorization: Bearer $FRESHET_READ_TOKEN"` : "";
    log.info(`[freshet] push a row:\n  curl -s -X POST http://localhost:${server.port}/push -H 'content-type: application/json'${writeAuth} -d '${JSON.stringify({ push_source_name: pushSource.name, df: sample, to: "online" })}'`);
    log.info(`[freshet] read it back:\n  curl -s -X POST http://localhost:${server.port}/get-online-features -H 'content-type: application/json'${readAuth} -d '${JSON.stringify({ entities: { [view.joinKeys[0]]: [1001] }, features: view.features.map((f) => `${view.name}:${f}`) })}'`);
  }
  onShutdown(async () => {
    await server.close();
    await host.close();
    log.flush();
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

async function consumeCommand(config: HostConfig, port: number | undefined, settings: Settings, only: string | undefined, log: CliLogger) {
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
  const { onShutdown } = await adapter();
  await checkStore(host, log, "the sources stay paused");
  const server = port === undefined ? undefined : await listen(settings.logRequests ? requestLog(host.app, log) : host.app, port, hostname).catch(async (e) => {
    await host.close().catch(() => {});
    throw e;
  });
  if (server) log.info(`[freshet] metrics on http://localhost:${server.port}/metrics`);
  const sources: StreamSource[] = [];
  for (const def of defs) {
    if (def.kind === "kafka") {
      const { kafkaConsumer } = await import("../plugins/sources/kafka.ts");
      // The environment wins over the definition; the heartbeat follows it unless the definition sets one.
      sources.push(kafkaConsumer(def, { logger: log, sessionTimeout: settings.kafkaSessionTimeoutMs }));
    } else if (def.kind === "kinesis") {
      sayNodeSupportOnce(log);
      const { kinesisConsumer } = await import("../plugins/sources/kinesis.ts");
      sources.push(kinesisConsumer(def, { meta: host.online.meta, logger: log, application: applications.get(def.name) }));
    }
  }
  const done = Promise.all(sources.map((s) => {
    log.info(`[freshet] consuming ${s.kind} source "${s.name}" into ${host.online.name}`);
    return consume(s, host.processor, { signal: ac.signal, logger: log });
  }));
  onShutdown(async () => {
    ac.abort();
    await done;
    await server?.close();
    await host.close();
    log.flush();
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

async function materializeCommand(config: HostConfig, viewName: string | undefined, start: string | undefined, end: string | undefined, log: CliLogger) {
  const host = await createHost(config);
  const { countFileRows, readFileSource, progressLogger } = await import("../plugins/sources/file.ts");
  const { materialize } = await import("../mod.ts");
  const views = viewName ? [host.registry.view(viewName)] : [...host.registry.views.values()].filter((v) => v.source.batchSource);
  if (views.length === 0) throw new FreshetError("INVALID_CONFIG", "no view has a batch source; set batchSource: fileSource({...}) on its source");
  for (const view of views) {
    const batch = view.source.batchSource;
    if (!batch) throw new FreshetError("INVALID_CONFIG", `view "${view.name}" has no batch source; set batchSource on source "${view.source.name}"`);
    const total = await countFileRows(batch).catch(() => undefined);
    const p = await materialize(host.processor, view, { start, end, read: readFileSource(batch), total, onProgress: progress(log, progressLogger) });
    log.info(`[freshet] materialized ${view.name}: ${p.read} rows read, ${p.inRange} in range, ${p.written} written, ${p.stale} stale, ${p.expired} expired (outside the ttl), ${p.invalid} invalid (dead-lettered)`);
  }
  await host.close();
  log.flush();
}

/**
 * `freshet replay`: dead letters from a file or a Kafka dead-letter topic
 * through the pipeline again. Letters that still fail go to `--out`, never
 * to the file being read.
 */
async function replayCommand(config: HostConfig, file: string | undefined, topic: string | undefined, out: string | undefined, log: CliLogger) {
  const { resolve } = await import("node:path");
  if ((file === undefined) === (topic === undefined)) {
    throw new FreshetError("INVALID_CONFIG", "freshet replay needs --dead-letters <file> or --dead-letter-topic <topic> (one of them), e.g. freshet replay repo.ts --dead-letters data/dead-letters.jsonl");
  }
  const registry = await loadRepo(config.repo as string);
  let total: number | undefined;
  let chunks: AsyncIterable<import("../mod.ts").DeadLetter[]>;
  let from: string;
  if (file !== undefined) {
    const { readDeadLetterFile } = await import("../plugins/stores/file/index.ts");
    const read = await readDeadLetterFile(file, { onTorn: (line) => log.warn(`[freshet] ${file} line ${line} is torn (a crash during an append): left out`) });
    total = read.total;
    chunks = read.chunks;
    from = file;
    out ??= `${file}.still-failing.jsonl`;
  } else {
    const def = [...registry.sources.values()].find((s) => s.kind === "kafka" && s.deadLetterTopic === topic);
    if (!def || def.kind !== "kafka") {
      const topics = [...registry.sources.values()].flatMap((s) => (s.kind === "kafka" && s.deadLetterTopic ? [s.deadLetterTopic] : []));
      throw new FreshetError("INVALID_CONFIG", `no Kafka source of this repo has deadLetterTopic "${topic}"${topics.length ? `; the repo's dead-letter topics: ${topics.join(", ")}` : ""}`);
    }
    const { readKafkaDeadLetters } = await import("../plugins/sources/kafka.ts");
    const read = await readKafkaDeadLetters({ brokers: def.kafkaBootstrapServers, topic: topic!, ssl: def.ssl, sasl: def.sasl, logger: log });
    total = read.total;
    chunks = read.chunks;
    from = `topic ${topic}`;
    out ??= `${config.dataDir ?? "./data"}/replay-${topic}.still-failing.jsonl`;
  }
  if (file !== undefined && resolve(out) === resolve(file)) throw new FreshetError("INVALID_CONFIG", `--out ${out} is the file being replayed; give another file for the letters that still fail`);
  const host = await createHost({ ...config, repo: registry, deadLetters: out });
  const { replayDeadLetters } = await import("../mod.ts");
  log.info(`[freshet] replaying ${total ?? "the"} dead letters of ${from} into ${host.online.name}; letters that still fail go to ${out}`);
  const tty = (process.stderr as { isTTY?: boolean }).isTTY === true;
  let last = 0;
  let p: Awaited<ReturnType<typeof replayDeadLetters>>;
  try {
    p = await replayDeadLetters(host.processor, chunks, {
      total,
      onProgress: (q) => {
        const t = Date.now();
        if (q.done || t - last < (tty ? 200 : 5000)) return;
        last = t;
        const line = `replay: ${q.read}${q.total ? `/${q.total} (${Math.floor((q.read / q.total) * 100)}%)` : ""} letters, ${q.passed} pass, ${Object.values(q.failed).reduce((a, b) => a + b, 0)} still fail`;
        if (tty) process.stderr.write(`\r\x1b[K${line}`);
        else log.info(`[freshet] ${line}`);
      },
    });
  } finally {
    if (tty) process.stderr.write("\r\x1b[K");
    await host.close();
  }
  const failed = Object.entries(p.failed);
  const nFailed = failed.reduce((a, [, n]) => a + n, 0);
  log.info(`[freshet] replayed ${p.read} dead letters of ${from}: ${p.passed} now pass (${p.written} rows written, ${p.stale} stale, ${p.expired} expired, ${p.skipped} skipped by the UDF), ${nFailed} still fail${nFailed ? ` (${failed.map(([r, n]) => `${r} ${n}`).join(", ")}) -> ${out}` : ""}${p.alreadyReplayed ? `, ${p.alreadyReplayed} already replayed before (nothing done)` : ""}`);
  log.flush();
}

/**
 * Materialize's progress: on a terminal, one redrawn line with a bar,
 * percentage, rate and ETA; piped, a log line a second.
 */
function progress(log: CliLogger, progressLogger: typeof import("../plugins/sources/file.ts").progressLogger): (p: MaterializeProgress) => void {
  const tty = (process.stderr as { isTTY?: boolean }).isTTY === true;
  if (!tty) return progressLogger((line) => log.info(line), 1000);
  return progressLogger((line, done) => process.stderr.write(`\r\x1b[K${line.replace(/^\[freshet\] /, "")}${done ? "\n" : ""}`), 200, { bar: true });
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
