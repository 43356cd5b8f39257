/**
 * @module
 * The CLI's flags and environment variables, validated at startup: every
 * mistake is a one-line `INVALID_CONFIG` error (exit 2) that says how to fix
 * it, never a silent default. Also the listening policy: loopback by
 * default, and a non-loopback listener needs a credential unless it is
 * explicitly meant to be open.
 */
import { parseArgs } from "node:util";
import { FreshetError } from "../mod.ts";
import { closest, isApplicationName } from "../core/definitions.ts";
import { parseSize, SIZE_HINT } from "./size.ts";

/** The flags every command accepts (strict: any other is refused). */
export const FLAGS = {
  port: { type: "string" },
  host: { type: "string" },
  store: { type: "string" },
  "data-dir": { type: "string" },
  "dead-letters": { type: "string" },
  "dead-letter-max-bytes": { type: "string" },
  "dead-letter-keep": { type: "string" },
  "webhook-secret": { type: "string" },
  "write-token": { type: "string" },
  "read-token": { type: "string" },
  "cors-origins": { type: "string" },
  open: { type: "boolean" },
  "max-body": { type: "string" },
  source: { type: "string" },
  application: { type: "string" },
  view: { type: "string" },
  start: { type: "string" },
  end: { type: "string" },
  out: { type: "string" },
  "dead-letter-topic": { type: "string" },
  "log-format": { type: "string" },
  "log-level": { type: "string" },
  "log-requests": { type: "boolean" },
  help: { type: "boolean", short: "h" },
  version: { type: "boolean", short: "v" },
} as const;

type FlagName = keyof typeof FLAGS;
type Values = { [K in FlagName]?: (typeof FLAGS)[K]["type"] extends "boolean" ? boolean : string };
type Env = Record<string, string | undefined>;

const fail = (message: string): never => {
  throw new FreshetError("INVALID_CONFIG", message);
};

/**
 * Parses argv strictly: an unknown flag, a flag without its value or a value
 * given to a switch is a one-line error naming the flag, with the closest
 * known one.
 *
 * @example
 * ```ts
 * const { values, positionals } = parseFlags(["serve", "repo.ts", "--port", "0"])
 * ```
 */
export function parseFlags(argv: string[]): { values: Values; positionals: string[] } {
  try {
    const { values, positionals } = parseArgs({ args: argv, allowPositionals: true, strict: true, options: FLAGS });
    return { values: values as Values, positionals };
  } catch (e) {
    const message = (e as Error).message ?? String(e);
    const flag = /'(-[^'\s]*)/.exec(message)?.[1] ?? "";
    const name = flag.replace(/^-+/, "").split("=")[0];
    if (name in FLAGS) {
      const spec = FLAGS[name as FlagName];
      return fail(spec.type === "string" ? `--${name} needs a value (one that starts with "-" is written --${name}=<value>; freshet --help lists the flags)` : `--${name} is a switch and takes no value (freshet --help lists the flags)`);
    }
    const near = closest(name, Object.keys(FLAGS), 2);
    return fail(`unknown flag ${flag || JSON.stringify(message.split("\n")[0])}${near ? `; did you mean --${near}?` : ""} (freshet --help lists the flags)`);
  }
}

/** A setting and where it came from (`--flag` or `ENV_VAR`), for messages. */
interface Setting {
  value: string;
  from: string;
}

/** The flag's value, else the first environment variable that is set. */
function setting(values: Values, flag: FlagName, env: Env, ...vars: string[]): Setting | undefined {
  const v = values[flag];
  if (typeof v === "string") return { value: v, from: `--${flag}` };
  for (const name of vars) if (env[name] !== undefined) return { value: env[name]!, from: name };
  return undefined;
}

const fromEnv = (env: Env, name: string): Setting | undefined => (env[name] === undefined ? undefined : { value: env[name]!, from: name });

/** A secret or token: refused when empty, since an empty one would turn its protection off. */
function secret(s: Setting | undefined): string | undefined {
  if (s === undefined) return undefined;
  if (s.value.trim() === "") fail(`${s.from} is set but empty, which would turn its protection off: give it a value, or leave it unset`);
  return s.value;
}

function size(s: Setting | undefined): number | undefined {
  if (s === undefined) return undefined;
  const n = parseSize(s.value);
  if (n === undefined) fail(`${s.from} ${JSON.stringify(s.value)} is not a size: ${SIZE_HINT}`);
  return n;
}

function count(s: Setting | undefined, min: number): number | undefined {
  if (s === undefined) return undefined;
  const n = /^\s*\d+\s*$/.test(s.value) ? Number(s.value) : Number.NaN;
  if (!(Number.isSafeInteger(n) && n >= min)) fail(`${s.from} ${JSON.stringify(s.value)} is not a whole number of at least ${min}`);
  return n;
}

function bool(s: Setting | undefined): boolean {
  if (s === undefined) return false;
  const v = s.value.trim().toLowerCase();
  if (["1", "true", "yes"].includes(v)) return true;
  if (["0", "false", "no"].includes(v)) return false;
  return fail(`${s.from} ${JSON.stringify(s.value)} is not a yes/no value: use 1 or 0`);
}

function text(s: Setting | undefined, example: string): string | undefined {
  if (s === undefined) return undefined;
  if (s.value.trim() === "") fail(`${s.from} is set but empty: give it a value, e.g. ${example}, or leave it unset`);
  return s.value;
}

/** Everything the commands read from flags and env, validated. */
export interface Settings {
  port?: number;
  /** The address to listen on. Default 127.0.0.1. */
  hostname: string;
  store?: string;
  dataDir?: string;
  deadLetters?: string;
  deadLetterMaxBytes?: number;
  deadLetterKeep?: number;
  webhookSecret?: string;
  writeToken?: string;
  readToken?: string;
  corsOrigins?: string[];
  /** Serve without credentials on any address, and without the loopback Host check. */
  open: boolean;
  maxBodyBytes?: number;
  pendingTtlMs?: number;
  upstashToken?: string;
  /** `consume`: the Kafka group session timeout, ms, over the definitions' `sessionTimeout`. */
  kafkaSessionTimeoutMs?: number;
  /** `consume`: the Kinesis application name (checkpoints and leases), for every Kinesis source consumed. */
  application?: string;
  /** `text` (default) or `json` lines. */
  logFormat: "text" | "json";
  logLevel: "debug" | "info" | "warn" | "error";
  /** One log line per HTTP request. */
  logRequests: boolean;
}

function choice<T extends string>(s: Setting | undefined, options: readonly T[], fallback: T): T {
  if (s === undefined) return fallback;
  const v = s.value.trim().toLowerCase() as T;
  if (options.includes(v)) return v;
  const near = closest(v, [...options], 2);
  return fail(`${s.from} ${JSON.stringify(s.value)} is not one of ${options.join(", ")}${near ? `; did you mean ${near}?` : ""}`);
}

/**
 * Reads and validates every flag and environment variable.
 *
 * @example
 * ```ts
 * const settings = readSettings(parseFlags(argv).values, process.env)
 * ```
 */
export function readSettings(values: Values, env: Env): Settings {
  const portS = setting(values, "port", env, "FRESHET_PORT", "PORT");
  let port: number | undefined;
  if (portS) {
    if (portS.value.trim() === "") fail(`${portS.from} is set but empty: give a port number (0-65535), or leave it unset`);
    port = /^\s*\d{1,5}\s*$/.test(portS.value) ? Number(portS.value) : Number.NaN;
    if (!(port >= 0 && port < 65536)) fail(`${portS.from} ${portS.value} is not a port number (0-65535)`);
  }
  const hostS = setting(values, "host", env, "FRESHET_HOST");
  // [::1] as in a URL is ::1 to listen on.
  const hostname = text(hostS, "--host 127.0.0.1")?.trim().replace(/^\[(.*)\]$/, "$1") ?? "127.0.0.1";
  if (hostS && !/^[A-Za-z0-9.:\-[\]%]+$/.test(hostname)) fail(`${hostS.from} ${JSON.stringify(hostS.value)} is not an address to listen on: use 127.0.0.1 (default), 0.0.0.0, :: or an interface address`);
  const corsS = setting(values, "cors-origins", env, "FRESHET_CORS_ORIGINS");
  let corsOrigins: string[] | undefined;
  if (corsS) {
    corsOrigins = corsS.value.split(",").map((o) => o.trim()).filter(Boolean);
    const bad = corsOrigins.find((o) => !/^https?:\/\/[^/\s?#]+$/.test(o));
    if (corsOrigins.length === 0 || bad !== undefined) fail(`${corsS.from} ${JSON.stringify(bad ?? corsS.value)} is not an origin list: give origins such as https://app.example,http://localhost:3000 (scheme and host, no path)`);
  }
  const appS = setting(values, "application", env, "FRESHET_KINESIS_APPLICATION");
  if (appS && !isApplicationName(appS.value)) fail(`${appS.from} ${JSON.stringify(appS.value)} is not an application name: use letters, digits, "_", "-" or ".", e.g. --application clicks-to-redis`);
  return {
    port,
    hostname,
    store: text(setting(values, "store", env, "FRESHET_STORE"), "--store file:./data"),
    dataDir: text(setting(values, "data-dir", env, "FRESHET_DATA_DIR"), "--data-dir ./data"),
    deadLetters: text(setting(values, "dead-letters", env, "FRESHET_DEAD_LETTERS"), "--dead-letters ./data/dead-letters.jsonl"),
    deadLetterMaxBytes: size(setting(values, "dead-letter-max-bytes", env, "FRESHET_DEAD_LETTER_MAX_BYTES")),
    deadLetterKeep: count(setting(values, "dead-letter-keep", env, "FRESHET_DEAD_LETTER_KEEP"), 1),
    webhookSecret: secret(setting(values, "webhook-secret", env, "FRESHET_WEBHOOK_SECRET")),
    writeToken: secret(setting(values, "write-token", env, "FRESHET_WRITE_TOKEN")),
    readToken: secret(setting(values, "read-token", env, "FRESHET_READ_TOKEN")),
    corsOrigins,
    open: values.open === true || bool(fromEnv(env, "FRESHET_OPEN")),
    maxBodyBytes: size(setting(values, "max-body", env, "FRESHET_MAX_BODY_BYTES")),
    pendingTtlMs: count(fromEnv(env, "FRESHET_PENDING_TTL_MS"), 1),
    upstashToken: secret(fromEnv(env, "UPSTASH_REDIS_REST_TOKEN")),
    application: appS?.value,
    kafkaSessionTimeoutMs: count(fromEnv(env, "FRESHET_KAFKA_SESSION_TIMEOUT_MS"), 1000),
    logFormat: choice(setting(values, "log-format", env, "FRESHET_LOG_FORMAT"), ["text", "json"] as const, "text"),
    logLevel: choice(setting(values, "log-level", env, "FRESHET_LOG_LEVEL"), ["debug", "info", "warn", "error"] as const, "info"),
    logRequests: values["log-requests"] === true || bool(fromEnv(env, "FRESHET_LOG_REQUESTS")),
  };
}

/** `localhost`, `127.x.x.x` or `::1`, the addresses only this machine reaches. */
export function isLoopbackAddress(host: string): boolean {
  const h = host.toLowerCase().replace(/^\[(.*)\]$/, "$1");
  return h === "localhost" || h === "::1" || /^127\.\d{1,3}\.\d{1,3}\.\d{1,3}$/.test(h);
}

/**
 * The listening policy, like Redis's protected mode: on a non-loopback
 * address a server needs a credential (write token, read token or webhook
 * secret) unless `open` says it is meant to be open; on loopback without
 * one, requests for another Host are refused (DNS rebinding). Returns
 * whether the Host check is on.
 *
 * @example
 * ```ts
 * const loopbackOnly = listenPolicy(settings) // throws INVALID_CONFIG on 0.0.0.0 without a token
 * ```
 */
export function listenPolicy(s: Settings): { loopbackOnly: boolean; warning?: string } {
  const credentials = s.writeToken !== undefined || s.readToken !== undefined || s.webhookSecret !== undefined;
  if (s.open || credentials) {
    const warning = !s.open && s.readToken === undefined && !isLoopbackAddress(s.hostname)
      ? `[freshet] reads (get-online-features, /registry, /metrics) are open to anyone who reaches ${s.hostname}: set FRESHET_READ_TOKEN (or --read-token) to protect them`
      : undefined;
    return { loopbackOnly: false, warning };
  }
  if (!isLoopbackAddress(s.hostname)) {
    fail(`refusing to listen on ${s.hostname} without credentials, where anyone who reaches it could push and read features: set FRESHET_WRITE_TOKEN and FRESHET_READ_TOKEN (or --write-token/--read-token, or --webhook-secret), or pass --open (FRESHET_OPEN=1) to serve it openly on purpose`);
  }
  return { loopbackOnly: true };
}
