/**
 * @module
 * Rules every online store shares: the one comparison that decides which
 * row is newer, when a row expires, and what status a stored value has on read.
 */
import type { FeatureStatus, FeatureValue } from "./contracts.ts";
import type { FeatureView } from "./definitions.ts";

/** The version of a row: its event time, then its created time. */
export interface RowVersion {
  /** Event time, epoch ms. */
  eventTime: number;
  /** Created time, epoch ms: breaks ties between equal event times. */
  createdTime?: number;
}

/**
 * The one comparison that decides "newer", used by the batch dedupe, by
 * every store (the Redis script and the SQL say the same) and by backfills:
 * `incoming` replaces `stored` only when its (event time, created time) is
 * strictly greater. A missing created time is less than any created time.
 * Equal versions are not newer, so the first of equals wins and a replay
 * changes nothing.
 *
 * @example
 * ```ts
 * isNewer({ eventTime: 2 }, { eventTime: 1 })                                  // true
 * isNewer({ eventTime: 1, createdTime: 5 }, { eventTime: 1 })                  // true
 * isNewer({ eventTime: 1 }, { eventTime: 1 })                                  // false: first of equals wins
 * ```
 */
export function isNewer(incoming: RowVersion, stored: RowVersion | undefined): boolean {
  if (!stored) return true;
  if (incoming.eventTime !== stored.eventTime) return incoming.eventTime > stored.eventTime;
  const a = incoming.createdTime ?? -Infinity;
  const b = stored.createdTime ?? -Infinity;
  return a > b;
}

/**
 * When a row of `view` expires: event time + ttl, or undefined when the
 * view keeps values forever (ttl 0). Expiry follows event time, never write
 * time, so an expired key cannot let an older event back in.
 *
 * @example
 * ```ts
 * expiresAt(view, row.eventTime) // row.eventTime + view.ttlMs
 * ```
 */
export function expiresAt(view: Pick<FeatureView, "ttlMs">, eventTime: number): number | undefined {
  return view.ttlMs > 0 ? eventTime + view.ttlMs : undefined;
}

/** Reads one feature of a stored row, with its status. The ttl is enforced here (Feast issue #6821). */
export function featureValue(view: FeatureView, stored: { values: Record<string, unknown>; eventTime: number } | undefined, feature: string, now: number): FeatureValue {
  if (!stored) return { value: null, status: "NOT_FOUND" };
  if (!(feature in stored.values)) return { value: null, status: "NOT_FOUND", eventTime: stored.eventTime };
  const status: FeatureStatus = view.ttlMs > 0 && now - stored.eventTime > view.ttlMs
    ? "OUTSIDE_MAX_AGE"
    : stored.values[feature] === null ? "NULL_VALUE" : "PRESENT";
  return { value: status === "OUTSIDE_MAX_AGE" ? null : stored.values[feature], status, eventTime: stored.eventTime };
}

/** Compares two non-negative decimal integer strings (Kafka offsets, Kinesis sequence numbers). */
export function compareDecimal(a: string, b: string): number {
  const x = a.replace(/^0+(?=\d)/, "");
  const y = b.replace(/^0+(?=\d)/, "");
  if (x.length !== y.length) return x.length < y.length ? -1 : 1;
  return x < y ? -1 : x > y ? 1 : 0;
}
