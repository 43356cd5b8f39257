/**
 * @module
 * Event-time parsing, the representable time range, the future-skew check
 * and durations: every time check in one place. Timestamps without an offset
 * are UTC (Feast issue #3307 fails on them; Freshet accepts them).
 */

/** The earliest event time Freshet stores: 0001-01-01T00:00:00.000Z, in epoch milliseconds. */
export const MIN_EVENT_TIME: number = -62_135_596_800_000;

/** The latest event time Freshet stores: 9999-12-31T23:59:59.999Z, in epoch milliseconds. */
export const MAX_EVENT_TIME = 253_402_300_799_999;

/**
 * How far (5 minutes, in milliseconds) an event time may lie ahead of the
 * reference time (the later of the local clock and the broker's timestamp)
 * before the row is refused.
 *
 * Why a limit at all: the online store keeps the latest row per entity
 * (latest wins by event time), so one row stamped far in the future (a
 * producer with a broken clock, a microsecond value sent as milliseconds)
 * would win against every correct row after it and freeze that entity until
 * the wall clock catches up, possibly for years. Why 5 minutes: it covers
 * ordinary clock skew between producers, brokers and this process (NTP keeps
 * hosts within well under a second; a few minutes absorbs a badly synced VM
 * or phone), while anything further ahead is almost certainly wrong.
 */
export const DEFAULT_MAX_FUTURE_SKEW_MS = 300_000;

const RANGE = "outside the supported range (years 0001 to 9999)";
const ACCEPTED = "use ISO 8601 or an epoch in s, ms, µs or ns";
const DAY = 86_400_000;
/** 400 Gregorian years are exactly 146097 days. */
const FOUR_CENTURIES = 146_097 * DAY;
const MONTHS = ["January", "February", "March", "April", "May", "June", "July", "August", "September", "October", "November", "December"];

// year-month-day, then optionally [T t or space] hh:mm[:ss[.fraction]] and an optional offset
// (one optional space before it, as Go and some SQL clients print).
const ISO = /^(\d{4})-(\d{2})-(\d{2})(?:[Tt ](\d{2}):(\d{2})(?::(\d{2})(?:[.,](\d{1,9}))?)? ?(Z|z|[+-]\d{2}(?::?\d{2})?)?)?$/;
const NUMERIC = /^[+-]?\d+(?:\.\d+)?(?:[eE][+-]?\d+)?$/;

/**
 * Parses an event timestamp to epoch milliseconds, or returns `undefined`
 * when it is not a valid time in the supported range. The same parse as
 * {@link readEventTime}, without the reason.
 *
 * Accepted, always resulting in a time between {@link MIN_EVENT_TIME} and
 * {@link MAX_EVENT_TIME} (years 0001 to 9999; anything outside is refused):
 *
 * - **ISO 8601** `YYYY-MM-DD`, optionally followed by `T`, `t` or a space and
 *   `hh:mm`, `hh:mm:ss` or `hh:mm:ss.f` (`.` or `,`, 1 to 9 digits, truncated to
 *   the millisecond), and an offset `Z`, `z`, `±hh:mm`, `±hhmm` or `±hh` (at most
 *   ±18:00, one space before it allowed). No offset means UTC; a date alone is
 *   midnight UTC (an offset after a date alone is refused). The date must exist
 *   (February 29 only in leap years: 2024 and 2000, not 2025 or 1900); hours
 *   are 00 to 23, minutes and seconds 00 to 59. Two exceptions:
 *   `24:00`, `24:00:00` (fraction all zeros) is the end of the day, i.e. the
 *   next day's 00:00; and `:60`, a leap second, is accepted only where one
 *   can occur, at 23:59:60 UTC (after the offset) on the last day of a month,
 *   and is read as 23:59:59.999 (so it sorts after every other instant of that
 *   second and before the next minute). Years 0000-0099 are those years (not
 *   1900-1999); year 0000 itself is outside the range.
 * - **Epoch numbers**: a `number`, a `bigint` or a numeric string (optional
 *   sign, optional fraction, optional exponent), read by magnitude:
 *
 *   | absolute value      | unit         | why it is unambiguous                          |
 *   | ------------------- | ------------ | ---------------------------------------------- |
 *   | `< 1e11`            | seconds      | 1e11 s is the year 5138: every real seconds value fits |
 *   | `1e11` to `< 1e14`  | milliseconds | 1e11 ms is 1973-03-03, 1e14 ms the year 5138    |
 *   | `1e14` to `< 1e17`  | microseconds | the same span in µs                             |
 *   | `1e17` to `< 1e20`  | nanoseconds  | the same span in ns                             |
 *   | `>= 1e20`           | refused      |                                                 |
 *
 *   The price of reading by magnitude: a millisecond value before 1973-03-03
 *   (and after 1966-10-24, for negatives) is read as seconds, and likewise
 *   µs/ns values of that span shift one unit. Negative values count back from
 *   1970 down to 0001-01-01 (-62135596800 s). The result is the millisecond
 *   that contains the instant (rounded down, also for negatives, as ISO
 *   fractions are truncated). Bigints and numeric strings are read exactly
 *   (no precision lost beyond the millisecond); a `number` is read as its
 *   shortest decimal form, so `1652439582.123` is `...582123` ms.
 * - A valid **`Date`** in range.
 *
 * Refused: `NaN`, `±Infinity`, booleans, `null`, `undefined`, objects,
 * arrays, empty or blank strings, and anything else.
 *
 * @example
 * ```ts
 * parseEventTime("2022-05-13 10:59:42")        // 1652439582000 (UTC)
 * parseEventTime("2022-05-13T10:59:42+02:00")  // 1652432382000
 * parseEventTime(1652439582)                    // seconds -> 1652439582000
 * parseEventTime(1652439582000000n)             // µs -> 1652439582000
 * parseEventTime("2026-02-31")                  // undefined: not a calendar date
 * ```
 */
export function parseEventTime(value: unknown): number | undefined {
  const r = read(value);
  return typeof r === "number" ? r : undefined;
}

/**
 * {@link parseEventTime} with a reason: `{ ms }` (epoch milliseconds) when
 * the value is a valid event time, else `{ error }`, a sentence for people
 * (it goes into dead letters and 422 answers) saying what is wrong and what
 * is accepted.
 *
 * @example
 * ```ts
 * readEventTime("2026-02-31")  // { error: '"2026-02-31" is not a calendar date: February 2026 has 28 days' }
 * readEventTime(1e20)          // { error: "1e20 is outside the supported range (years 0001 to 9999): ..." }
 * readEventTime("abc")         // { error: 'cannot parse "abc" as an event time: use ISO 8601 or an epoch in s, ms, µs or ns' }
 * readEventTime(1652439582)    // { ms: 1652439582000 }
 * ```
 */
export function readEventTime(value: unknown): { ms: number } | { error: string } {
  const r = read(value);
  return typeof r === "number" ? { ms: r } : { error: r };
}

/**
 * Checks that an event time is not too far in the future: returns a reason
 * when `eventTime` is later than `max(now, brokerTime) + maxSkewMs`, else
 * `undefined`. All arguments are epoch milliseconds; `brokerTime` (the
 * broker's append or arrival timestamp, when the source has one) lets a
 * consumer whose own clock is behind accept what the broker already saw.
 * See {@link DEFAULT_MAX_FUTURE_SKEW_MS} for why and how much.
 *
 * @example
 * ```ts
 * checkFutureSkew(Date.now() + 60_000, Date.now(), DEFAULT_MAX_FUTURE_SKEW_MS)    // undefined
 * checkFutureSkew(Date.now() + 3_600_000, Date.now(), DEFAULT_MAX_FUTURE_SKEW_MS) // "event time ... is 1h ahead of ..."
 * ```
 */
export function checkFutureSkew(eventTime: number, now: number, maxSkewMs: number, brokerTime?: number): string | undefined {
  const byBroker = brokerTime !== undefined && brokerTime > now;
  const ref = byBroker ? brokerTime : now;
  if (!(eventTime > ref + maxSkewMs)) return undefined;
  const what = byBroker ? "the broker timestamp" : "the current time";
  return `event time ${isoOrNumber(eventTime)} is ${formatMs(eventTime - ref)} ahead of ${what} ${isoOrNumber(ref)}: ` +
    `at most ${formatMs(maxSkewMs)} of future skew is allowed (a future event time would win latest-wins and freeze the entity)`;
}

/** The whole parse: epoch ms, or the reason as a string (no allocation on success). */
function read(value: unknown): number | string {
  switch (typeof value) {
    case "string":
      return readString(value);
    case "number":
      return readNumber(value);
    case "bigint":
      return readDecimal(String(value), `${value}n`);
    case "undefined":
      return `cannot read undefined as an event time: ${ACCEPTED}`;
    case "boolean":
      return `cannot read ${value} as an event time: ${ACCEPTED}`;
  }
  if (value instanceof Date) {
    const t = value.getTime();
    if (Number.isNaN(t)) return `an invalid Date is not an event time: ${ACCEPTED}`;
    return t < MIN_EVENT_TIME || t > MAX_EVENT_TIME ? `the Date ${value.toISOString()} is ${RANGE}` : t;
  }
  const what = value === null ? "null" : Array.isArray(value) ? "an array" : typeof value === "object" ? "an object" : `a ${typeof value}`;
  return `cannot read ${what} as an event time: ${ACCEPTED}`;
}

function readNumber(n: number): number | string {
  if (!Number.isFinite(n)) return `${n} is not an event time: ${ACCEPTED}`;
  if (Number.isSafeInteger(n)) {
    // the common case, exact in doubles: integer s, ms or µs (safe integers stop at 9.007e15 µs).
    const a = Math.abs(n);
    let ms: number;
    if (a < 1e11) ms = n * 1000;
    else if (a < 1e14) ms = n;
    else ms = (n - (((n % 1000) + 1000) % 1000)) / 1000; // floor(n / 1000) without rounding error
    if (ms === 0) return 0; // no -0
    return inRange(ms) ? ms : `${n} is ${RANGE}: read as epoch ${a < 1e11 ? "seconds" : a < 1e14 ? "milliseconds" : "microseconds"}`;
  }
  const a = Math.abs(n);
  if (a < 1e14) {
    // a fractional s or ms value (time.time() floats): floor(x) is exact unless x lies within the
    // rounding error (below 2^-52 |x|) of an integer; x = r / 1000 exactly is then r (the shortest
    // decimal form of n is r / 1000, as doubles below 1e11 are far finer than 0.001); else read the
    // decimal form.
    const x = a < 1e11 ? n * 1000 : n;
    const f = Math.floor(x);
    const d = x - f;
    const eps = (Math.abs(x) + 1) * 1e-15;
    let ms: number | undefined;
    if (d > eps && 1 - d > eps) ms = f;
    else if (a < 1e11 && Math.round(x) / 1000 === n) ms = Math.round(x);
    if (ms !== undefined) {
      if (ms === 0) return 0; // no -0
      return inRange(ms) ? ms : `${n} is ${RANGE}: read as epoch ${a < 1e11 ? "seconds" : "milliseconds"}`;
    }
  }
  return readDecimal(String(n), displayNumber(n));
}

/**
 * Reads a decimal literal (optional sign, digits, optional fraction, optional
 * exponent; what `String()` of a number or bigint gives and what NUMERIC
 * matches) exactly, without going through a double.
 */
function readDecimal(s: string, shown: string): number | string {
  let i = 0;
  const neg = s[0] === "-";
  if (s[0] === "-" || s[0] === "+") i = 1;
  const e = s.search(/[eE]/);
  const mantissa = e < 0 ? s.slice(i) : s.slice(i, e);
  const exp = e < 0 ? 0 : Number(s.slice(e + 1));
  const dot = mantissa.indexOf(".");
  const intDigits = dot < 0 ? mantissa : mantissa.slice(0, dot);
  const all = dot < 0 ? mantissa : intDigits + mantissa.slice(dot + 1);
  // the significant digits, and where the decimal point falls in them.
  let lead = 0;
  while (lead < all.length && all[lead] === "0") lead++;
  const sig = all.slice(lead);
  if (!sig) return 0; // zero, however written
  const point = intDigits.length - lead + exp; // digits of |value| before the point (<= 0: below 1)
  const intLen = Math.max(point, 0);
  let shift: number; // decimal places to move the point right to get milliseconds
  let unit: string;
  if (intLen <= 11) [shift, unit] = [3, "seconds"];
  else if (intLen <= 14) [shift, unit] = [0, "milliseconds"];
  else if (intLen <= 17) [shift, unit] = [-3, "microseconds"];
  else if (intLen <= 20) [shift, unit] = [-6, "nanoseconds"];
  else return `${shown} is ${RANGE}: epoch numbers must be below 1e20 in magnitude (s below 1e11, ms below 1e14, µs below 1e17, ns below 1e20)`;
  const q = point + shift; // digits of the millisecond count, at most 14
  let ms = q > 0 ? Number(sig.slice(0, q).padEnd(q, "0")) : 0;
  if (neg) {
    const fraction = q > 0 ? /[1-9]/.test(sig.slice(q)) : true;
    ms = fraction ? -ms - 1 : -ms; // round down, toward the past
    if (ms === 0) ms = 0; // no -0
  }
  return inRange(ms) ? ms : `${shown} is ${RANGE}: read as epoch ${unit}`;
}

function readString(value: string): number | string {
  const s = value.trim();
  if (!s) return `${value ? "a blank" : "an empty"} string is not an event time: ${ACCEPTED}`;
  const shown = quote(s);
  if (NUMERIC.test(s)) return readDecimal(s, shown);
  const m = ISO.exec(s);
  if (!m) return `cannot parse ${shown} as an event time: ${ACCEPTED}`;
  const [, ys, mos, ds, hs, mis, ss, frac, tz] = m;
  const y = +ys, mo = +mos, d = +ds;
  const h = hs === undefined ? 0 : +hs, mi = mis === undefined ? 0 : +mis;
  let sec = ss === undefined ? 0 : +ss;
  if (mo < 1 || mo > 12) return `${shown} has month ${mos}: months are 01 to 12`;
  const days = daysInMonth(y, mo);
  if (d < 1 || d > days) return `${shown} is not a calendar date: ${d < 1 ? "days start at 01" : `${MONTHS[mo - 1]} ${ys} has ${days} days`}`;
  if (h === 24) {
    if (mi !== 0 || sec !== 0 || (frac !== undefined && /[1-9]/.test(frac))) return `${shown} has hour 24: only 24:00:00 (the end of the day) is allowed with it`;
  } else if (h > 23) return `${shown} has hour ${hs}: hours are 00 to 23 (or 24:00:00, the end of the day)`;
  if (mi > 59) return `${shown} has minute ${mis}: minutes are 00 to 59`;
  const leap = sec === 60;
  if (leap) sec = 59;
  else if (sec > 59) return `${shown} has second ${ss}: seconds are 00 to 59 (60 only for a leap second at 23:59:60 UTC on the last day of a month)`;
  let offset = 0;
  if (tz !== undefined && tz !== "Z" && tz !== "z") {
    const oh = +tz.slice(1, 3);
    const om = tz.length > 3 ? +tz.slice(-2) : 0;
    if (om > 59) return `${shown} has offset ${tz}: offset minutes are 00 to 59`;
    if (oh * 60 + om > 18 * 60) return `${shown} has offset ${tz}: offsets are at most ±18:00`;
    offset = (tz[0] === "-" ? -1 : 1) * (oh * 60 + om) * 60_000;
  }
  const ms = leap ? 999 : frac === undefined ? 0 : +(frac + "00").slice(0, 3);
  // Date.UTC maps years 0-99 to 1900-1999: compute 400 years later and step back.
  const t = (y < 100 ? Date.UTC(y + 400, mo - 1, d, h, mi, sec, ms) - FOUR_CENTURIES : Date.UTC(y, mo - 1, d, h, mi, sec, ms)) - offset;
  if (leap) {
    const next = t + 1; // the instant right after the leap second
    if (((next % DAY) + DAY) % DAY !== 0 || new Date(next).getUTCDate() !== 1) {
      return `${shown} has second 60: a leap second is only allowed at 23:59:60 UTC on the last day of a month`;
    }
  }
  return inRange(t) ? t : `${shown} is ${RANGE}`;
}

function inRange(ms: number): boolean {
  return ms >= MIN_EVENT_TIME && ms <= MAX_EVENT_TIME;
}

function daysInMonth(y: number, mo: number): number {
  if (mo === 2) return y % 4 === 0 && (y % 100 !== 0 || y % 400 === 0) ? 29 : 28;
  return mo === 4 || mo === 6 || mo === 9 || mo === 11 ? 30 : 31;
}

function quote(s: string): string {
  return JSON.stringify(s.length > 80 ? s.slice(0, 77) + "..." : s);
}

/** 1e20 rather than 100000000000000000000, as people write it. */
function displayNumber(n: number): string {
  return Math.abs(n) >= 1e20 ? n.toExponential().replace("e+", "e") : String(n);
}

function isoOrNumber(ms: number): string {
  return Number.isFinite(ms) && Math.abs(ms) <= 8.64e15 ? new Date(ms).toISOString() : String(ms);
}

/** A duration for people: "5m", "1h 2m 3.5s", "250ms", "3d 4h". */
function formatMs(ms: number): string {
  if (!Number.isFinite(ms)) return `${ms} ms`;
  if (ms < 1000) return `${Math.round(ms)}ms`;
  const parts: string[] = [];
  let rest = Math.round(ms);
  for (const [unit, size] of [["d", DAY], ["h", 3_600_000], ["m", 60_000]] as const) {
    if (rest >= size) {
      parts.push(`${Math.floor(rest / size)}${unit}`);
      rest %= size;
    }
  }
  if (rest) parts.push(`${rest % 1000 ? (rest / 1000).toFixed(3).replace(/0+$/, "") : rest / 1000}s`);
  return parts.join(" ");
}

const UNITS: Record<string, number> = { ms: 1, s: 1000, m: 60_000, h: 3_600_000, d: 86_400_000, w: 604_800_000 };
const DURATION_FORMS = 'use seconds (90 or "90"), units ("90s", "5m", "1h30m", "250ms", "1d", "2w") or ISO 8601 ("PT1H", "P1D", "PT1M30S")';

/**
 * Reads a duration as milliseconds, or says what is wrong with it (naming
 * the value). Accepted: a number of seconds (as Feast's ttl), a string of
 * digits (seconds too: `"90"`), unit parts (`"90s"`, `"5m"`, `"1h30m"`,
 * `"1h 30m"`, `"250ms"`, `"1d"`, `"2w"`) and ISO 8601 durations
 * (`"PT1H"`, `"P1D"`, `"PT1M30S"`, `"P1DT12H"`, `"P2W"`, fractions such as
 * `"PT0.5S"`). ISO years and months are refused: they have no fixed length.
 *
 * @example
 * ```ts
 * readDuration("PT1M30S") // { ms: 90000 }
 * readDuration("1 hour")  // { error: '"1 hour" has an unknown unit "hour" ...' }
 * ```
 */
export function readDuration(value: unknown): { ms: number } | { error: string } {
  if (typeof value === "number") {
    if (!Number.isFinite(value) || value < 0) return { error: `${value} is not a duration: a number is seconds, zero or more` };
    return { ms: value * 1000 };
  }
  if (typeof value !== "string") return { error: `${value === null ? "null" : typeof value} is not a duration: ${DURATION_FORMS}` };
  const shown = JSON.stringify(value.length > 60 ? value.slice(0, 60) + "..." : value);
  const s = value.trim();
  if (!s) return { error: `${shown} is empty: ${DURATION_FORMS}` };
  if (/^\d+(?:\.\d+)?$/.test(s)) return { ms: Number(s) * 1000 };
  if (/^p/i.test(s)) return readIsoDuration(s.toUpperCase(), shown);
  let total = 0;
  let rest = s;
  const part = /^(\d+(?:\.\d+)?)(ms|s|m|h|d|w)(?![a-zA-Z])\s*/;
  while (rest) {
    const m = part.exec(rest);
    if (!m) {
      const unit = /^\d+(?:\.\d+)?\s*([a-z]+)/i.exec(rest)?.[1];
      const why = rest.startsWith("-") ? "it is negative" : unit ? `"${unit}" is not a unit (ms, s, m, h, d, w)` : `cannot read "${rest.slice(0, 20)}"`;
      return { error: `${shown} is not a duration: ${why}; ${DURATION_FORMS}` };
    }
    total += Number(m[1]) * UNITS[m[2]];
    rest = rest.slice(m[0].length);
  }
  return { ms: total };
}

/** `PnW` or `PnDTnHnMnS` (upper case), each part optional but one at least. */
function readIsoDuration(s: string, shown: string): { ms: number } | { error: string } {
  const m = /^P(?:(\d+(?:[.,]\d+)?)W)?(?:(\d+(?:[.,]\d+)?)D)?(?:T(?:(\d+(?:[.,]\d+)?)H)?(?:(\d+(?:[.,]\d+)?)M)?(?:(\d+(?:[.,]\d+)?)S)?)?$/.exec(s);
  if (!m || s.endsWith("T") || m.slice(1).every((x) => x === undefined)) {
    const why = /^P[^T]*[YM]/.test(s) ? "ISO 8601 years and months have no fixed length; give days instead (P30D)" : "it is not an ISO 8601 duration of weeks, days, hours, minutes and seconds";
    return { error: `${shown} is not a duration: ${why}; ${DURATION_FORMS}` };
  }
  const n = (x: string | undefined) => (x === undefined ? 0 : Number(x.replace(",", ".")));
  return { ms: Math.round(n(m[1]) * UNITS.w + n(m[2]) * UNITS.d + n(m[3]) * UNITS.h + n(m[4]) * UNITS.m + n(m[5]) * UNITS.s) };
}

/**
 * Parses a duration to milliseconds (the forms of {@link readDuration});
 * `undefined` for anything else.
 *
 * @example
 * ```ts
 * parseDuration("2h")   // 7200000
 * parseDuration(30)     // 30000
 * parseDuration("PT1H") // 3600000
 * ```
 */
export function parseDuration(value: unknown): number | undefined {
  const d = readDuration(value);
  return "ms" in d ? d.ms : undefined;
}

/**
 * Formats epoch milliseconds as ISO 8601 UTC, e.g. `2022-05-13T10:59:42.000Z`.
 * Years 0001-0999 print with four digits (`0099-01-01T00:00:00.000Z`), so
 * every time in MIN_EVENT_TIME..MAX_EVENT_TIME round-trips through
 * {@link parseEventTime}. Throws a `RangeError` for NaN or values beyond the
 * `Date` range (±8.64e15).
 */
export function toIso(ms: number): string {
  return new Date(ms).toISOString();
}
