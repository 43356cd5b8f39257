/**
 * @module
 * What the Redis family needs from a transport (one command at a time),
 * and what both transports share on top of it: EVALSHA with its fallback
 * to EVAL, and one reading of Redis' error replies.
 */
import { FreshetError, storeUnavailable } from "../../../core/errors.ts";
import { type LuaScript, scriptSha } from "./scripts.ts";

/**
 * Sends one command and resolves with its reply (strings, integers, null,
 * arrays). An error reply rejects with a {@link RedisReplyError} (or any
 * error named "ReplyError", as ioredis throws); any other rejection is
 * taken as "unavailable", unless it is a FreshetError already.
 * `definition` (a view name) is for the errors the transport raises itself.
 */
export interface RedisTransport {
  send(command: string, args: string[], definition?: string): Promise<unknown>;
  /** One transport per master, for what must visit every node (SCAN on a Redis Cluster). Absent: this one only. */
  masters?(): Promise<RedisTransport[]>;
  /**
   * Resolves once what this client wrote so far is on the replicas it must
   * reach (WAIT), or rejects with a retriable error. Absent: nothing to wait for.
   * Called between the rows of a batch and its metadata, and after the metadata.
   */
  replicated?(): Promise<void>;
}

/**
 * An error reply from Redis, e.g. `NOSCRIPT No matching script`.
 *
 * @example
 * ```ts
 * if (reply.error) throw new RedisReplyError(reply.error)
 * ```
 */
export class RedisReplyError extends Error {
  override readonly name = "ReplyError";
}

/** Error replies that mean "not now" rather than "never": a retry later may succeed. */
export const RETRIABLE_REPLIES: ReadonlySet<string> = new Set([
  "BUSY",
  "LOADING",
  "MASTERDOWN",
  "READONLY",
  "TRYAGAIN",
  "CLUSTERDOWN",
  "OOM",
  "NOREPLICAS",
  "UNBLOCKED",
  "MISCONF",
]);

/** Error replies that mean the credentials are wrong. */
const AUTH_REPLIES: ReadonlySet<string> = new Set(["NOAUTH", "WRONGPASS", "NOPERM"]);

/** The message of an error reply, or undefined for any other error. */
function replyMessage(e: unknown): string | undefined {
  const err = e as { name?: unknown; message?: unknown } | undefined;
  return err?.name === "ReplyError" && typeof err.message === "string" ? err.message : undefined;
}

/**
 * Maps what a transport threw to a FreshetError: error replies by their
 * code, anything else (connection, timeout) as a retriable STORE_UNAVAILABLE.
 *
 * @example
 * ```ts
 * try { await transport.send("PING", []) } catch (e) { throw redisError("redis", e) }
 * ```
 */
export function redisError(plugin: string, e: unknown, definition?: string): FreshetError {
  if (e instanceof FreshetError) return e;
  const msg = replyMessage(e);
  if (msg === undefined) return storeUnavailable(plugin, e, definition);
  const code = msg.split(" ", 1)[0];
  if (AUTH_REPLIES.has(code)) {
    return new FreshetError("INVALID_CONFIG", `Redis refused the credentials (${msg}): check the password or user`, { plugin, definition, retriable: false, cause: e });
  }
  if (RETRIABLE_REPLIES.has(code)) return new FreshetError("STORE_UNAVAILABLE", `store unavailable: ${msg}`, { plugin, definition, retriable: true, cause: e });
  if (code === "CROSSSLOT") {
    return new FreshetError("INVALID_CONFIG", `the keys of one script are in different Cluster slots (${msg}): give the store the cluster's nodes as redis+cluster://host:port,host:port`, { plugin, definition, retriable: false, cause: e });
  }
  if (code === "MOVED" || code === "ASK") {
    // A Cluster client follows redirections itself; one that reaches here is a plain client talking to a Cluster node.
    return new FreshetError("INVALID_CONFIG", `the server is a Redis Cluster node that does not own these keys (${msg}): give the store the cluster's nodes as redis+cluster://host:port,host:port`, { plugin, definition, retriable: false, cause: e });
  }
  if (/max request size/i.test(msg)) {
    return new FreshetError("INVALID_INPUT", `a single row is larger than the request limit (${msg}); make the row smaller`, { plugin, definition, retriable: false, cause: e });
  }
  return new FreshetError("INTERNAL", `Redis replied with an error: ${msg}`, { plugin, definition, retriable: false, cause: e });
}

/**
 * Runs a script: EVALSHA, then EVAL when the server does not know it
 * (first use, restart, SCRIPT FLUSH). Errors are the transport's, unmapped.
 *
 * @example
 * ```ts
 * const reply = await evalScript(transport, BEGIN, [layout.idemKey(key)], [fingerprint, token, "30000"])
 * ```
 */
export async function evalScript(t: RedisTransport, s: LuaScript, keys: string[], args: string[], definition?: string): Promise<unknown> {
  // One array, never a spread: a batch can have 100k+ arguments.
  const rest = [String(keys.length)].concat(keys, args);
  try {
    return await t.send("EVALSHA", [await scriptSha(s)].concat(rest), definition);
  } catch (e) {
    if (!replyMessage(e)?.startsWith("NOSCRIPT")) throw e;
    return await t.send("EVAL", [s.source].concat(rest), definition);
  }
}
