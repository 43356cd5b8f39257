/**
 * @module
 * Event-time parsing and durations. Timestamps without an offset are UTC
 * (Feast issue #3307 fails on them; Freshet accepts them).
 */

const ISO = /^(\d{4})-(\d{2})-(\d{2})(?:[T ](\d{2}):(\d{2})(?::(\d{2})(?:[.,](\d{1,9}))?)?)?\s*(Z|z|[+-]\d{2}(?::?\d{2})?)?$/;

/** Epoch values below this are seconds; at or above it, milliseconds (1e11 s is the year 5138). */
const SECONDS_LIMIT = 1e11;

/**
 * Parses an event timestamp to epoch milliseconds, or returns `undefined`
 * when it cannot be parsed. Accepts ISO 8601 with or without an offset and
 * with 'T' or a space, a `Date`, and epoch seconds or milliseconds (as a number
 * or a numeric string). No offset means UTC.
 *
 * @example
 * ```ts
 * parseEventTime("2022-05-13 10:59:42")        // 1652439582000 (UTC)
 * parseEventTime("2022-05-13T10:59:42+02:00")  // 1652432382000
 * parseEventTime(1652439582)                    // seconds -> 1652439582000
 * ```
 */
export function parseEventTime(value: unknown): number | undefined {
  if (value instanceof Date) return Number.isNaN(value.getTime()) ? undefined : value.getTime();
  if (typeof value === "number") return epochToMs(value);
  if (typeof value === "bigint") return epochToMs(Number(value));
  if (typeof value !== "string") return undefined;
  const s = value.trim();
  if (/^-?\d+(\.\d+)?$/.test(s)) return epochToMs(Number(s));
  const m = ISO.exec(s);
  if (!m) return undefined;
  const [, y, mo, d, h = "0", mi = "0", sec = "0", frac = "", tz] = m;
  const ms = Number((frac + "000").slice(0, 3));
  let t = Date.UTC(+y, +mo - 1, +d, +h, +mi, +sec, ms);
  if (+mo < 1 || +mo > 12 || +d < 1 || +d > 31 || +h > 23 || +mi > 59 || +sec > 60) return undefined;
  if (tz && tz !== "Z" && tz !== "z") {
    const sign = tz[0] === "-" ? -1 : 1;
    const digits = tz.slice(1).replace(":", "");
    const offset = (+digits.slice(0, 2) * 60 + +(digits.slice(2) || "0")) * 60_000;
    t -= sign * offset;
  }
  return Number.isFinite(t) ? t : undefined;
}

function epochToMs(n: number): number | undefined {
  if (!Number.isFinite(n)) return undefined;
  return Math.abs(n) < SECONDS_LIMIT ? Math.round(n * 1000) : Math.round(n);
}

const UNITS: Record<string, number> = { ms: 1, s: 1000, m: 60_000, h: 3_600_000, d: 86_400_000, w: 604_800_000 };

/**
 * Parses a duration to milliseconds: a number is seconds (as Feast's ttl),
 * a string is `"90s"`, `"15m"`, `"2h"`, `"1d"`, `"1h30m"` or `"250ms"`.
 * Returns `undefined` for anything else.
 *
 * @example
 * ```ts
 * parseDuration("2h")  // 7200000
 * parseDuration(30)    // 30000
 * ```
 */
export function parseDuration(value: unknown): number | undefined {
  if (typeof value === "number") return Number.isFinite(value) && value >= 0 ? value * 1000 : undefined;
  if (typeof value !== "string") return undefined;
  const s = value.trim();
  if (!s) return undefined;
  let total = 0;
  let rest = s;
  const part = /^(\d+(?:\.\d+)?)(ms|s|m|h|d|w)/;
  while (rest) {
    const m = part.exec(rest);
    if (!m) return undefined;
    total += Number(m[1]) * UNITS[m[2]];
    rest = rest.slice(m[0].length);
  }
  return total;
}

/** Formats epoch milliseconds as ISO 8601 UTC. */
export function toIso(ms: number): string {
  return new Date(ms).toISOString();
}
