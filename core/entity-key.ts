/**
 * @module
 * Entity keys: the join-key values of a row, serialized in a stable order so
 * that the same entity always lands on the same store key.
 */
import type { Row } from "./contracts.ts";

/**
 * Serializes the join keys of a row: keys sorted by name, `name=value`
 * pairs URI-encoded and joined by `&`. Numbers and numeric strings of the
 * same value give the same key (`1001` and `"1001"`), so HTTP and stream
 * rows agree; a bigint is its exact decimal string (`2n ** 60n` and
 * `"1152921504606846976"` agree).
 *
 * Returns `{ missing }` naming the join key when it is absent or empty, and
 * `{ missing, reason }` when its value cannot be a key exactly: a number
 * that is not a safe integer (above 2^53 it has already been rounded, and
 * collides with its neighbours; a fraction or NaN is no identifier), or a
 * string with a lone surrogate (it has no UTF-8 encoding). The reason says
 * how to send it instead.
 *
 * @example
 * ```ts
 * entityKeyOf(["driver_id"], { driver_id: 1001 })  // { key: "driver_id=1001" }
 * entityKeyOf(["id"], { id: 2 ** 60 })              // { missing: "id", reason: "... send it as a string ..." }
 * ```
 */
export function entityKeyOf(joinKeys: readonly string[], row: Row): { key: string } | { missing: string; reason?: string } {
  let key = "";
  for (const k of joinKeys) {
    const v = row[k];
    if (v === undefined || v === null || v === "" || (typeof v === "object")) return { missing: k };
    if (typeof v === "number" && !Number.isSafeInteger(v)) {
      return {
        missing: k,
        reason: Number.isInteger(v)
          ? `join key "${k}" is ${v}, beyond the exact integers of a JSON number (2^53 - 1): it may have been rounded and would collide with its neighbours; send it as a string, e.g. "${k}": "12345678901234567890"`
          : `join key "${k}" is ${v}, not an integer: a numeric join key must be a safe integer (up to 2^53 - 1); send other identifiers as strings`,
      };
    }
    if (typeof v === "string" && LONE_SURROGATE.test(v)) {
      return { missing: k, reason: `join key "${k}" holds a lone surrogate (an unpaired \\u${v.charCodeAt(v.search(LONE_SURROGATE)).toString(16)}), which has no UTF-8 encoding; send valid Unicode text` };
    }
    if (key) key += "&";
    key += encodeURIComponent(k) + "=" + encodeURIComponent(String(v));
  }
  return { key };
}

/** A UTF-16 surrogate without its pair. */
const LONE_SURROGATE = /[\uD800-\uDBFF](?![\uDC00-\uDFFF])|(?<![\uD800-\uDBFF])[\uDC00-\uDFFF]/;

/** Parses a serialized entity key back into its join-key values (as strings). */
export function parseEntityKey(key: string): Record<string, string> {
  const out: Record<string, string> = {};
  for (const pair of key.split("&")) {
    const i = pair.indexOf("=");
    out[decodeURIComponent(pair.slice(0, i))] = decodeURIComponent(pair.slice(i + 1));
  }
  return out;
}
