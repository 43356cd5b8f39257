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
 * rows agree. Returns `undefined` naming the missing key when one is absent.
 *
 * @example
 * ```ts
 * entityKeyOf(["driver_id"], { driver_id: 1001 })  // { key: "driver_id=1001" }
 * ```
 */
export function entityKeyOf(joinKeys: readonly string[], row: Row): { key: string } | { missing: string } {
  let key = "";
  for (const k of joinKeys) {
    const v = row[k];
    if (v === undefined || v === null || v === "" || (typeof v === "object")) return { missing: k };
    if (key) key += "&";
    key += encodeURIComponent(k) + "=" + encodeURIComponent(typeof v === "number" || typeof v === "bigint" ? String(v) : String(v));
  }
  return { key };
}

/** Parses a serialized entity key back into its join-key values (as strings). */
export function parseEntityKey(key: string): Record<string, string> {
  const out: Record<string, string> = {};
  for (const pair of key.split("&")) {
    const i = pair.indexOf("=");
    out[decodeURIComponent(pair.slice(0, i))] = decodeURIComponent(pair.slice(i + 1));
  }
  return out;
}
