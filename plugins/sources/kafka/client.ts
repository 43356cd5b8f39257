/**
 * @module
 * The kafkajs client of a Kafka source: brokers, client id, TLS and SASL
 * from the definition, kafkajs loaded on first use, and kafkajs' log bridged
 * to Freshet's logger at WARN with the noise taken out.
 */
import type { Kafka, KafkaConfig, LogEntry, logCreator, RetryOptions } from "kafkajs";
import type { KafkaSasl, KafkaTls, Logger } from "../../../core/index.ts";
import { FreshetError, missingPackage } from "../../../core/errors.ts";
import { redactUrl } from "../../../core/registry.ts";

/** Where and how to connect: the connection fields of a `kafkaSource` definition. */
export interface KafkaConnection {
  /** `["b1:9092", "b2:9092"]` or `"b1:9092,b2:9092"`. */
  brokers: string | string[];
  /** The Kafka client id. Default `freshet`. */
  clientId?: string;
  /** `true` for TLS with the system's CAs, or the CA, client certificate and key (PEM). */
  ssl?: KafkaTls;
  /** SASL PLAIN, SCRAM-SHA-256/512 or OAUTHBEARER. */
  sasl?: KafkaSasl;
  /** kafkajs' retry policy for connections and requests. */
  retry?: RetryOptions;
}

type KafkajsModule = typeof import("kafkajs");
let kafkajsModule: Promise<KafkajsModule> | undefined;

/** Loads kafkajs once, on first use, so that importing a feature repo pulls in no Kafka client. */
export function loadKafkajs(): Promise<KafkajsModule> {
  // kafkajs is CommonJS; runtimes differ in whether its exports sit on `default`.
  return (kafkajsModule ??= import("kafkajs").catch(missingPackage("kafkajs", "the Kafka source", "kafka")).then((m) => ((m as unknown as { default?: KafkajsModule }).default ?? m) as KafkajsModule));
}

/** Splits and checks a broker list. */
export function brokerList(brokers: string | string[] | undefined, label: string): string[] {
  const list = (typeof brokers === "string" ? brokers.split(",") : brokers ?? []).map((b) => String(b).trim()).filter(Boolean);
  if (list.length === 0) {
    throw new FreshetError("INVALID_CONFIG", 'no Kafka brokers: set kafkaBootstrapServers (or brokers), e.g. "localhost:9092"', { plugin: "kafka", definition: label });
  }
  const bad = list.find((b) => !/^[^\s:/]+:\d+$/.test(b) && !/^\[[0-9a-fA-F:]+\]:\d+$/.test(b));
  // The message shows the broker without any user info: a password typed into the list must not reach the log.
  if (bad) throw new FreshetError("INVALID_CONFIG", `broker "${redactUrl(bad)}" is not host:port${bad.includes("@") ? " (credentials go in sasl: { mechanism, username, password })" : ""}`, { plugin: "kafka", definition: label });
  return list;
}

/**
 * The kafkajs client configuration of a connection: brokers, client id,
 * TLS and SASL passed through as kafkajs takes them, and the log bridge.
 *
 * @example
 * ```ts
 * const config = kafkaClientConfig({ brokers: "b1:9093", ssl: true, sasl: { mechanism: "scram-sha-512", username: "u", password: "p" } }, { label: "trips" })
 * ```
 */
export function kafkaClientConfig(conn: KafkaConnection, opts: { label: string; logger?: Logger }): KafkaConfig {
  const config: KafkaConfig = {
    brokers: brokerList(conn.brokers, opts.label),
    clientId: conn.clientId ?? "freshet",
    logLevel: WARN,
    logCreator: kafkajsLogBridge(opts.logger ?? console, opts.label),
  };
  if (conn.ssl !== undefined && conn.ssl !== false) config.ssl = conn.ssl;
  if (conn.sasl !== undefined) {
    const mechanism = conn.sasl.mechanism;
    if (!["plain", "scram-sha-256", "scram-sha-512", "oauthbearer"].includes(mechanism)) {
      throw new FreshetError("INVALID_CONFIG", `sasl.mechanism "${mechanism}" is not supported: use "plain", "scram-sha-256", "scram-sha-512" or "oauthbearer"`, { plugin: "kafka", definition: opts.label });
    }
    // Same shapes as kafkajs'; its type is a union per mechanism that a union of mechanisms does not narrow to.
    config.sasl = conn.sasl as KafkaConfig["sasl"];
    // SASL PLAIN sends the password in clear; without TLS that is almost always a mistake.
    if (mechanism === "plain" && !config.ssl) opts.logger?.warn(`[freshet] [kafka] "${opts.label}": SASL PLAIN without ssl sends the password in clear text`);
  }
  if (conn.retry) config.retry = conn.retry;
  return config;
}

/** Creates a kafkajs client for a connection. */
export async function createKafka(conn: KafkaConnection, opts: { label: string; logger?: Logger }): Promise<Kafka> {
  const config = kafkaClientConfig(conn, opts);
  const { Kafka } = await loadKafkajs();
  return new Kafka(config);
}

// kafkajs' logLevel values (its enum is a runtime value; these keep the module free of it until first use).
const ERROR = 1;
const WARN = 2;

/** How long an identical kafkajs message stays quiet after it was logged. */
const QUIET_MS = 30_000;

/**
 * A kafkajs `logCreator` writing to a Freshet logger at WARN and above.
 * Connection-level response errors are dropped (kafkajs retries them, and
 * the layer that gives up logs once), a rebalance is logged as info, and an
 * identical message is logged at most once per 30 s with a repeat count.
 *
 * @example
 * ```ts
 * new Kafka({ brokers, logCreator: kafkajsLogBridge(console, "trips") })
 * ```
 */
export function kafkajsLogBridge(logger: Logger, label: string): logCreator {
  const recent = new Map<string, { at: number; repeats: number }>();
  return () => ({ namespace, level, log }: LogEntry) => {
    if (level > WARN) return;
    const { message, error } = log;
    if (namespace === "Connection" && message.startsWith("Response ")) return;
    const now = Date.now();
    const key = `${namespace}\u0000${message}\u0000${error ?? ""}`;
    const seen = recent.get(key);
    if (seen && now - seen.at < QUIET_MS) {
      seen.repeats++;
      return;
    }
    if (recent.size > 200) recent.clear();
    recent.set(key, { at: now, repeats: 0 });
    const repeats = seen?.repeats ? ` (and ${seen.repeats} more like it in the last ${Math.round((now - seen.at) / 1000)} s)` : "";
    const text = `[freshet] [kafka] "${label}": kafkajs ${namespace}: ${message}${error && !message.includes(error) ? `: ${error}` : ""}${repeats}`;
    const rebalance = /rebalanc/i.test(message) || /rebalanc/i.test(String(error ?? ""));
    if (rebalance) logger.info(text);
    else if (level === ERROR) logger.error(text);
    else logger.warn(text);
  };
}
