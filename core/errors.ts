/**
 * @module
 * The one error class of Freshet. Every error has a stable `code`, a
 * `retriable` flag and an optional `cause`. Messages read
 * `[freshet] [plugin] view "name": what went wrong, and how to fix it`.
 */

/** Stable error codes. A caller may switch on them; their meaning never changes. */
export type ErrorCode =
  | "INVALID_DEFINITION"
  | "INVALID_CONFIG"
  | "INVALID_INPUT"
  /** A request bigger than one atomic step of the store: send less at a time (HTTP 413). */
  | "TOO_LARGE"
  | "STORE_UNAVAILABLE"
  | "SOURCE_UNAVAILABLE"
  | "LEASE_LOST"
  | "ABORTED"
  | "INTERNAL";

/** Options for {@link FreshetError}. */
export interface FreshetErrorOptions {
  /** The plugin that raised it: "kafka", "redis", "push", ... */
  plugin?: string;
  /** The definition it concerns: a view, source or entity name. */
  definition?: string;
  /** Whether retrying the same operation later may succeed. */
  retriable?: boolean;
  /** The underlying error. */
  cause?: unknown;
  /** For input errors: the path of the offending field, e.g. `df.conv_rate[3]`. */
  field?: string;
}

/**
 * The error Freshet throws.
 *
 * @example
 * ```ts
 * try { await store.write(view, rows) } catch (e) {
 *   if (e instanceof FreshetError && e.retriable) retryLater()
 * }
 * ```
 */
export class FreshetError extends Error {
  /** Always "FreshetError". */
  override readonly name = "FreshetError";
  /** The stable error code. */
  readonly code: ErrorCode;
  /** Whether retrying the same operation later may succeed. */
  readonly retriable: boolean;
  /** The plugin that raised it. */
  readonly plugin?: string;
  /** The definition it concerns. */
  readonly definition?: string;
  /** For input errors: the path of the offending field. */
  readonly field?: string;

  /** Makes an error; the message gets the `[freshet] [plugin] "definition": ` prefix. */
  constructor(code: ErrorCode, message: string, opts: FreshetErrorOptions = {}) {
    const where = (opts.plugin ? `[${opts.plugin}] ` : "") +
      (opts.definition ? `"${opts.definition}": ` : "");
    super(`[freshet] ${where}${message}`, opts.cause === undefined ? undefined : { cause: opts.cause });
    this.code = code;
    this.retriable = opts.retriable ?? (code === "STORE_UNAVAILABLE" || code === "SOURCE_UNAVAILABLE");
    this.plugin = opts.plugin;
    this.definition = opts.definition;
    this.field = opts.field;
  }
}

/**
 * Shorthand for a definition error that says how to fix it.
 *
 * @example
 * ```ts
 * throw definitionError("driver_stats", 'join key "driver_id" is not in the schema; add it to schema')
 * ```
 */
export function definitionError(definition: string, message: string): FreshetError {
  return new FreshetError("INVALID_DEFINITION", message, { definition, plugin: "registry" });
}

/** Wraps any error from a store client as a retriable STORE_UNAVAILABLE, keeping FreshetErrors as they are. */
export function storeUnavailable(plugin: string, cause: unknown, definition?: string): FreshetError {
  if (cause instanceof FreshetError) return cause;
  const msg = cause instanceof Error ? cause.message : String(cause);
  return new FreshetError("STORE_UNAVAILABLE", `store unavailable: ${msg}`, { plugin, definition, cause, retriable: true });
}

/** Whether an error is worth retrying: a retriable FreshetError. */
export function isRetriable(error: unknown): boolean {
  return error instanceof FreshetError && error.retriable;
}

/**
 * For `import("sdk").catch(missingPackage(...))`: the SDKs are optional peer
 * dependencies, loaded by the plugin that needs them on first use. When the
 * package is not installed this throws an INVALID_CONFIG error that says which
 * package to install for what; any other load error is rethrown as it is.
 *
 * @example
 * ```ts
 * const { Kafka } = await import("kafkajs").catch(missingPackage("kafkajs", "the Kafka source", "kafka"))
 * ```
 */
export function missingPackage(pkg: string, use: string, plugin?: string): (cause: unknown) => never {
  return (cause) => {
    const text = String((cause as Error)?.message ?? cause);
    const code = (cause as { code?: unknown })?.code;
    const notFound = code === "ERR_MODULE_NOT_FOUND" || code === "MODULE_NOT_FOUND" || /cannot find (module|package)|could not (find|resolve)|not found/i.test(text);
    if (notFound && text.includes(pkg)) {
      throw new FreshetError("INVALID_CONFIG", `install ${pkg} to use ${use}: npm install ${pkg}`, { plugin, cause });
    }
    throw cause;
  };
}
