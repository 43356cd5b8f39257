import { describe, it } from "node:test";
import assert from "node:assert/strict";
import {
  checkFutureSkew,
  DEFAULT_MAX_FUTURE_SKEW_MS,
  MAX_EVENT_TIME,
  MIN_EVENT_TIME,
  parseDuration,
  readDuration,
  parseEventTime,
  readEventTime,
  toIso,
} from "../../core/time.ts";
import * as v from "valibot";
import { entity, pushSource, streamFeatureView } from "../../core/definitions.ts";

/** Epoch ms of a UTC date-time, correct for years 0-99 too (unlike Date.UTC). */
function utc(y: number, mo: number, d: number, h = 0, mi = 0, s = 0, ms = 0): number {
  const dt = new Date(0);
  dt.setUTCFullYear(y, mo - 1, d);
  dt.setUTCHours(h, mi, s, ms);
  return dt.getTime();
}

function errorOf(v: unknown): string {
  const r = readEventTime(v);
  assert.ok("error" in r, `expected ${String(v)} to be refused, got ${JSON.stringify(r)}`);
  return r.error;
}

function refused(values: unknown[]): void {
  for (const v of values) {
    const label = typeof v === "bigint" ? `${v}n` : typeof v === "symbol" ? "symbol" : JSON.stringify(v) ?? String(v);
    assert.equal(parseEventTime(v), undefined, label);
    assert.ok("error" in readEventTime(v), label);
  }
}

describe("parseEventTime: ISO 8601", () => {
  const t = Date.UTC(2022, 4, 13, 10, 59, 42);
  it("reads ISO 8601 with and without offset, T or space; no offset is UTC", () => {
    assert.equal(parseEventTime("2022-05-13T10:59:42Z"), t);
    assert.equal(parseEventTime("2022-05-13 10:59:42+00:00"), t);
    assert.equal(parseEventTime("2022-05-13 10:59:42"), t);
    assert.equal(parseEventTime("2022-05-13T10:59:42"), t);
    assert.equal(parseEventTime("2022-05-13T12:59:42+02:00"), t);
    assert.equal(parseEventTime("2022-05-13T05:59:42-0500"), t);
    assert.equal(parseEventTime("2022-05-13T10:59:42.250Z"), t + 250);
    assert.equal(parseEventTime("2022-05-13T10:59:42.123456+00:00"), t + 123);
    assert.equal(parseEventTime("2022-05-13"), Date.UTC(2022, 4, 13));
  });
  it("reads lowercase t and z, a comma fraction, minutes without seconds, surrounding blanks and one space before the offset", () => {
    assert.equal(parseEventTime("2022-05-13t10:59:42z"), t);
    assert.equal(parseEventTime("2022-05-13T10:59:42,250Z"), t + 250);
    assert.equal(parseEventTime("2022-05-13T10:59"), t - 42_000);
    assert.equal(parseEventTime("  2022-05-13T10:59:42Z \n"), t);
    assert.equal(parseEventTime("2022-05-13 10:59:42 +0000"), t);
    assert.equal(parseEventTime("2022-05-13 10:59:42.5 -07:00"), t + 7 * 3_600_000 + 500);
  });
  it("reads every offset form: Z, ±hh:mm, ±hhmm, ±hh, up to ±18:00", () => {
    assert.equal(parseEventTime("2022-05-13T12:59:42+02"), t);
    assert.equal(parseEventTime("2022-05-13T12:59:42+0200"), t);
    assert.equal(parseEventTime("2022-05-13T16:29:42+05:30"), t);
    assert.equal(parseEventTime("2022-05-13T16:29:42+0530"), t);
    assert.equal(parseEventTime("2022-05-13T01:14:42-09:45"), t);
    assert.equal(parseEventTime("2022-05-13T10:59:42-00:00"), t);
    assert.equal(parseEventTime("2022-05-14T04:59:42+18:00"), t);
    assert.equal(parseEventTime("2022-05-12T16:59:42-18:00"), t);
    assert.equal(parseEventTime("2022-05-12T16:59:42-18"), t);
  });
  it("refuses offsets beyond ±18:00 or with minutes over 59, and malformed offsets", () => {
    refused(["2022-05-13T10:59:42+18:01", "2022-05-13T10:59:42-1801", "2022-05-13T10:59:42+19", "2022-05-13T10:59:42+99:00",
      "2022-05-13T10:59:42+05:60", "2022-05-13T10:59:42+5", "2022-05-13T10:59:42+05:3", "2022-05-13T10:59:42+053", "2022-05-13T10:59:42UTC",
      "2022-05-13T10:59:42ZZ", "2022-05-13T10:59:42  +00:00"]);
    assert.match(errorOf("2022-05-13T10:59:42+19:00"), /offset \+19:00: offsets are at most ±18:00/);
    assert.match(errorOf("2022-05-13T10:59:42+05:60"), /offset minutes are 00 to 59/);
  });
  it("reads fractions of 1 to 9 digits, truncated (not rounded) to the millisecond", () => {
    assert.equal(parseEventTime("2022-05-13T10:59:42.1Z"), t + 100);
    assert.equal(parseEventTime("2022-05-13T10:59:42.12Z"), t + 120);
    assert.equal(parseEventTime("2022-05-13T10:59:42.123Z"), t + 123);
    assert.equal(parseEventTime("2022-05-13T10:59:42.1239Z"), t + 123);
    assert.equal(parseEventTime("2022-05-13T10:59:42.999999999Z"), t + 999);
    assert.equal(parseEventTime("2022-05-13T10:59:42.000000001Z"), t);
    assert.equal(parseEventTime("1969-12-31T23:59:59.9995Z"), -1); // before 1970 too: the millisecond that contains it
    refused(["2022-05-13T10:59:42.1234567890Z", "2022-05-13T10:59:42.Z", "2022-05-13T10:59:42.", "2022-05-13T10:59.5"]);
  });
  it("reads a date alone as midnight UTC, and refuses an offset after a date alone", () => {
    assert.equal(parseEventTime("2026-12-03"), Date.UTC(2026, 11, 3));
    refused(["2026-12-03Z", "2026-12-03+02:00", "2026-12-03T", "2026-12-03 x"]);
  });
  it("refuses impossible calendar dates (the old parse rolled Feb 31 over to Mar 3)", () => {
    refused(["2026-02-31", "2026-02-30", "2026-02-29", "2026-04-31", "2026-06-31", "2026-09-31", "2026-11-31",
      "2026-02-31T00:00:00Z", "2026-04-31 12:00", "2026-01-32", "2026-12-32", "2026-01-00", "2026-00-10", "2026-13-01", "2026-99-99"]);
    for (const [d, ok] of [["01-31", true], ["03-31", true], ["04-30", true], ["05-31", true], ["06-30", true], ["07-31", true],
      ["08-31", true], ["09-30", true], ["10-31", true], ["11-30", true], ["12-31", true], ["02-28", true]] as const) {
      assert.equal(parseEventTime(`2026-${d}`) !== undefined, ok, d);
    }
    assert.match(errorOf("2026-02-31"), /^"2026-02-31" is not a calendar date: February 2026 has 28 days$/);
    assert.match(errorOf("2026-04-31T10:00:00Z"), /is not a calendar date: April 2026 has 30 days/);
    assert.match(errorOf("2026-13-01"), /month 13: months are 01 to 12/);
  });
  it("knows leap years: Feb 29 in 2024 and 2000 and 0004, not in 2025, 1900, 2100 or 0100", () => {
    assert.equal(parseEventTime("2024-02-29"), Date.UTC(2024, 1, 29));
    assert.equal(parseEventTime("2000-02-29T23:59:59.999Z"), Date.UTC(2000, 1, 29, 23, 59, 59, 999));
    assert.equal(parseEventTime("0004-02-29"), utc(4, 2, 29));
    assert.equal(parseEventTime("2400-02-29"), Date.UTC(2400, 1, 29));
    refused(["2025-02-29", "1900-02-29", "2100-02-29", "0100-02-29", "2023-02-29T12:00:00Z"]);
    assert.match(errorOf("1900-02-29"), /February 1900 has 28 days/);
    assert.match(errorOf("2024-02-30"), /February 2024 has 29 days/);
  });
  it("agrees with the calendar for every day of a 400-year cycle's worth of sample dates", () => {
    for (let y = 1896; y <= 2404; y += 4) {
      for (const yy of [y, y + 1]) {
        for (let mo = 1; mo <= 12; mo++) {
          for (const d of [28, 29, 30, 31]) {
            const real = new Date(Date.UTC(yy, mo - 1, d)).getUTCDate() === d;
            const s = `${yy}-${String(mo).padStart(2, "0")}-${d}`;
            assert.equal(parseEventTime(s), real ? Date.UTC(yy, mo - 1, d) : undefined, s);
          }
        }
      }
    }
  });
  it("reads years 0001-0099 as those years (not 1900-1999) and 0100, 0999, 1000, 9999 right", () => {
    assert.equal(parseEventTime("0001-01-01T00:00:00Z"), utc(1, 1, 1));
    assert.equal(parseEventTime("0001-01-01T00:00:00Z"), MIN_EVENT_TIME);
    assert.equal(parseEventTime("0012-06-15T08:30:00+01:00"), utc(12, 6, 15, 7, 30));
    assert.equal(parseEventTime("0099-12-31T23:59:59.999Z"), utc(99, 12, 31, 23, 59, 59, 999));
    assert.equal(parseEventTime("0099-03-04 05:06:07.891234567"), utc(99, 3, 4, 5, 6, 7, 891));
    assert.equal(parseEventTime("0100-01-01"), utc(100, 1, 1));
    assert.equal(parseEventTime("0999-07-04T12:00:00Z"), utc(999, 7, 4, 12));
    assert.equal(parseEventTime("1000-01-01"), Date.UTC(1000, 0, 1));
    assert.equal(parseEventTime("9999-12-31T23:59:59.999Z"), MAX_EVENT_TIME);
    assert.notEqual(parseEventTime("0050-01-01"), Date.UTC(1950, 0, 1));
    assert.ok(new Date(parseEventTime("0050-01-01")!).getUTCFullYear() === 50);
  });
  it("refuses year 0000 and anything after 9999, judged on the instant after the offset", () => {
    refused(["0000-01-01", "0000-12-31T23:59:59.999Z", "0001-01-01T00:30:00+01:00", "9999-12-31T23:59:59.999-00:01",
      "9999-12-31T24:00:00", "10000-01-01", "+010000-01-01T00:00:00Z", "-000001-01-01T00:00:00Z", "99-01-01"]);
    assert.equal(parseEventTime("0000-12-31T23:00:00-02:00"), utc(1, 1, 1, 1)); // 0001-01-01T01:00Z
    assert.equal(parseEventTime("9999-12-31T23:59:59+01:00"), utc(9999, 12, 31, 22, 59, 59));
    assert.match(errorOf("0000-01-01"), /^"0000-01-01" is outside the supported range \(years 0001 to 9999\)$/);
  });
  it("checks hours, minutes and seconds; 24:00:00 is the end of the day", () => {
    assert.equal(parseEventTime("2026-03-01T23:59:59Z"), Date.UTC(2026, 2, 1, 23, 59, 59));
    assert.equal(parseEventTime("2026-03-01T00:00:00Z"), Date.UTC(2026, 2, 1));
    assert.equal(parseEventTime("2026-02-28T24:00:00Z"), Date.UTC(2026, 2, 1));
    assert.equal(parseEventTime("2026-02-28T24:00"), Date.UTC(2026, 2, 1));
    assert.equal(parseEventTime("2026-02-28T24:00:00.000000+01:00"), Date.UTC(2026, 1, 28, 23));
    assert.equal(parseEventTime("2026-12-31T24:00:00Z"), Date.UTC(2027, 0, 1));
    refused(["2026-02-28T24:00:01", "2026-02-28T24:01", "2026-02-28T24:00:00.001", "2026-02-28T25:00:00", "2026-02-28T99:00",
      "2026-02-28T12:60", "2026-02-28T12:00:61", "2026-02-28T12:00:99", "2026-02-28T1:00:00", "2026-02-28T12:0:00", "2026-02-28T12",
      "2026-02-28T12:00:0", "12:00", "T12:00:00Z"]);
    assert.match(errorOf("2026-02-28T25:00:00"), /hour 25: hours are 00 to 23/);
    assert.match(errorOf("2026-02-28T12:60"), /minute 60: minutes are 00 to 59/);
    assert.match(errorOf("2026-02-28T12:00:61"), /second 61: seconds are 00 to 59/);
  });
  it("reads a leap second (:60) at 23:59:60 UTC on a month's last day as 23:59:59.999, and refuses :60 elsewhere", () => {
    const last = Date.UTC(2016, 11, 31, 23, 59, 59, 999);
    assert.equal(parseEventTime("2016-12-31T23:59:60Z"), last);
    assert.equal(parseEventTime("2016-12-31T23:59:60.5Z"), last);
    assert.equal(parseEventTime("2016-12-31T18:59:60-05:00"), last);
    assert.equal(parseEventTime("2017-01-01T05:29:60+05:30"), last);
    assert.equal(parseEventTime("2015-06-30T23:59:60Z"), Date.UTC(2015, 5, 30, 23, 59, 59, 999));
    assert.equal(parseEventTime("2024-02-29T23:59:60Z"), Date.UTC(2024, 1, 29, 23, 59, 59, 999));
    assert.ok(parseEventTime("2016-12-31T23:59:60Z")! > parseEventTime("2016-12-31T23:59:59.998Z")!);
    assert.ok(parseEventTime("2016-12-31T23:59:60Z")! < parseEventTime("2017-01-01T00:00:00Z")!);
    refused(["2016-12-30T23:59:60Z", "2016-12-31T23:58:60Z", "2016-12-31T22:59:60Z", "2016-12-31T23:59:60+01:00", "2024-02-28T23:59:60Z",
      "2016-12-31T12:34:60"]);
    assert.match(errorOf("2016-12-30T23:59:60Z"), /leap second is only allowed at 23:59:60 UTC on the last day of a month/);
  });
  it("round-trips random instants across the whole range (Date.parse as the oracle)", () => {
    let seed = 12345;
    const rand = () => (seed = (seed * 1103515245 + 12345) % 2 ** 31) / 2 ** 31;
    for (let i = 0; i < 2000; i++) {
      const ms = Math.floor(MIN_EVENT_TIME + rand() * (MAX_EVENT_TIME - MIN_EVENT_TIME));
      const iso = toIso(ms);
      assert.equal(parseEventTime(iso), ms, iso);
      assert.equal(parseEventTime(iso), Date.parse(iso), iso);
      assert.equal(parseEventTime(iso.replace("T", " ").replace("Z", "")), ms, iso);
    }
  });
});

describe("parseEventTime: epoch numbers", () => {
  const t = Date.UTC(2022, 4, 13, 10, 59, 42);
  it("reads epoch seconds and milliseconds, as numbers or strings", () => {
    assert.equal(parseEventTime(t / 1000), t);
    assert.equal(parseEventTime(t), t);
    assert.equal(parseEventTime(String(t / 1000)), t);
    assert.equal(parseEventTime(String(t)), t);
    assert.equal(parseEventTime(1652439582.5), t + 500);
    assert.equal(parseEventTime(new Date(t)), t);
  });
  it("reads every unit by magnitude, as numbers, bigints and numeric strings", () => {
    const ms = t + 123;
    const cases: [unknown, number][] = [
      [1652439582, t], [1652439582n, t], ["1652439582", t], [1652439582.123, ms], ["1652439582.123", ms],
      [1652439582123, ms], [1652439582123n, ms], ["1652439582123", ms],
      [1652439582123456, ms], [1652439582123456n, ms], ["1652439582123456", ms], [1652439582123999, ms],
      [1652439582123456789n, ms], ["1652439582123456789", ms], ["1652439582123999999", ms],
      [1652439582123456789, ms], // a double (256 ns precision here): still the right ms
      ["1.652439582123e9", ms], ["1.652439582123E12", ms], ["1652439582123e3", ms], ["+1652439582", t], [" 1652439582 ", t],
    ];
    for (const [v, want] of cases) assert.equal(parseEventTime(v), want, typeof v === "bigint" ? `${v}n` : JSON.stringify(v));
  });
  it("puts the unit boundaries at 1e11, 1e14, 1e17 and refuses from 1e20", () => {
    const cases: [unknown, number][] = [
      [99_999_999_999, 99_999_999_999_000], // the largest seconds value: 5138-11-16T09:46:39Z
      [1e11, 1e11], // from here milliseconds: 1973-03-03T09:46:40Z
      [99_999_999_999_999, 99_999_999_999_999],
      [1e14, 1e11], // from here microseconds
      ["99999999999999999", 99_999_999_999_999],
      [99_999_999_999_999_999n, 99_999_999_999_999], // the largest µs value
      [100_000_000_000_000_000n, 1e11], // from here nanoseconds
      [1e17, 1e11],
      [99_999_999_999_999_999_999n, 99_999_999_999_999], // the largest ns value
      ["99999999999999999999", 99_999_999_999_999],
      ["99999999999999999999.9", 99_999_999_999_999],
      // negatives by the same magnitudes, down to 0001-01-01 in every unit
      [-1e11, -1e11], [-62_135_596_800_000, MIN_EVENT_TIME], [-1e14, -1e11], [-62_135_596_800_000_000n, MIN_EVENT_TIME],
      [-1e17, -1e11], [-62_135_596_800_000_000_000n, MIN_EVENT_TIME], ["-62135596800000000000", MIN_EVENT_TIME],
    ];
    for (const [v, want] of cases) assert.equal(parseEventTime(v), want, typeof v === "bigint" ? `${v}n` : String(v));
    assert.equal(toIso(parseEventTime(99_999_999_999)!), "5138-11-16T09:46:39.000Z");
    assert.equal(toIso(parseEventTime(1e11)!), "1973-03-03T09:46:40.000Z");
    refused([-62_135_596_800_001, -62_135_596_800_000_001n, -62_135_596_800_000_000_001n, -99_999_999_999_999, -99_999_999_999_999_999_999n,
      1e20, -1e20, 1e21, 1.5e20, 10n ** 20n, -(10n ** 20n), 10n ** 30n, "1e20", "-1e20", "100000000000000000000", "1e999999", Number.MAX_VALUE]);
    assert.match(errorOf(1e20), /^1e20 is outside the supported range \(years 0001 to 9999\)/);
    assert.match(errorOf(-1e20), /^-1e20 is outside the supported range/);
    assert.match(errorOf(10n ** 20n), /^100000000000000000000n is outside the supported range/);
    assert.match(errorOf(1e20), /s below 1e11, ms below 1e14, µs below 1e17, ns below 1e20/);
  });
  it("reads a microsecond epoch as microseconds (the old parse made it the year 55,000)", () => {
    assert.equal(parseEventTime(1_700_000_000_000_000), 1_700_000_000_000);
    assert.equal(toIso(parseEventTime("1700000000000000")!), "2023-11-14T22:13:20.000Z");
  });
  it("reads negative epochs back to 0001-01-01 and refuses earlier ones", () => {
    assert.equal(parseEventTime(-1), -1000);
    assert.equal(parseEventTime(-1n), -1000);
    assert.equal(parseEventTime("-1"), -1000);
    assert.equal(parseEventTime(-86_400), -86_400_000);
    assert.equal(parseEventTime(-62_135_596_800), MIN_EVENT_TIME);
    assert.equal(parseEventTime("-62135596800"), MIN_EVENT_TIME);
    assert.equal(parseEventTime(-62_135_596_800n), MIN_EVENT_TIME);
    assert.equal(parseEventTime(-62_135_596_799.999), MIN_EVENT_TIME + 1);
    refused([-62_135_596_801, -62_135_596_800.001, "-62135596800.0001", -62_135_596_801n, -99_999_999_999]);
    assert.match(errorOf(-62_135_596_801), /^-62135596801 is outside the supported range \(years 0001 to 9999\): read as epoch seconds$/);
  });
  it("rounds fractions down to the millisecond, also before 1970", () => {
    assert.equal(parseEventTime(1.0005), 1000);
    assert.equal(parseEventTime(1.9999), 1999);
    assert.equal(parseEventTime(-1.5), -1500);
    assert.equal(parseEventTime(-1.0005), -1001);
    assert.equal(parseEventTime(-0.0005), -1);
    assert.equal(parseEventTime("-0.0000001"), -1);
    assert.equal(parseEventTime(1.5e-7), 0);
    assert.equal(parseEventTime(1652439582123.9), 1652439582123);
    assert.equal(parseEventTime(-1652439582123.1), -1652439582124);
    assert.equal(parseEventTime(-1652439582123456n), -1652439582124);
    assert.equal(parseEventTime(-1652439582123000n), -1652439582123);
    assert.equal(parseEventTime(-1652439582123000001n), -1652439582124);
    assert.equal(parseEventTime(0.1 + 0.2), 300); // 0.30000000000000004 s
  });
  it("reads fractional numbers as their decimal form, floored to the ms (checked against exact BigInt arithmetic)", () => {
    // the reference: the number's shortest decimal form, scaled and floored exactly.
    const exact = (n: number): number | undefined => {
      const [mant, e = "0"] = String(n).split("e");
      const neg = mant.startsWith("-");
      const [i, f = ""] = mant.replace("-", "").split(".");
      const scale = Number(e) - f.length + (Math.abs(n) < 1e11 ? 3 : 0);
      const digits = BigInt(i + f);
      let q = scale >= 0 ? digits * 10n ** BigInt(scale) : digits / 10n ** BigInt(-scale);
      const rem = scale < 0 && digits % 10n ** BigInt(-scale) !== 0n;
      if (neg) q = -q - (rem ? 1n : 0n);
      const ms = Number(q);
      return ms >= MIN_EVENT_TIME && ms <= MAX_EVENT_TIME ? ms : undefined;
    };
    let seed = 99;
    const rand = () => (seed = (seed * 1103515245 + 12345) % 2 ** 31) / 2 ** 31;
    const values: number[] = [1.0005, -1.0005, 0.001, -0.001, 1e-9, -1e-9, 0.1 + 0.2, 1652439582.123, 1652439582.1234567, -1652439582.999,
      99_999_999_999.999, 1e11 + 0.5, 99_999_999_999_999.98, -62_135_596_799.9999, 1.7e9 + 0.0005, 4.35, 1.005, 2.675];
    for (let i = 0; i < 20_000; i++) {
      const secs = (rand() * 2 - 0.3) * 4e9;
      const decimals = Math.floor(rand() * 10);
      values.push(Number(secs.toFixed(decimals)), secs, secs * 1000, Number((secs * 1000).toFixed(decimals % 4)), rand() * 10 - 5);
    }
    for (const n of values) {
      if (Number.isInteger(n)) continue;
      assert.equal(parseEventTime(n), exact(n), String(n));
      assert.equal(parseEventTime(String(n)), exact(n), `"${n}"`);
    }
  });
  it("reads zero, however written, as 0 (never -0)", () => {
    for (const z of [0, -0, 0n, "0", "-0", "0.000", "-0.0", "0e5", "000"]) assert.ok(Object.is(parseEventTime(z), 0), String(z));
  });
  it("reads bigints exactly, not through a double", () => {
    // as doubles these would round up to the next millisecond (or to 1e20, refused)
    assert.equal(parseEventTime(1_652_439_582_123_999_999n), 1_652_439_582_123);
    assert.equal(Number(1_652_439_582_123_999_999n), 1_652_439_582_124_000_000);
    assert.equal(parseEventTime(99_999_999_999_999_999_999n), 99_999_999_999_999);
    assert.equal(parseEventTime(9_007_199_254_740_993n), 9_007_199_254_740); // 2^53 + 1 µs
    assert.equal(parseEventTime(1_652_439_582_124_000_000n), 1_652_439_582_124);
    assert.equal(parseEventTime(9_999_999_999_999_999n), 9_999_999_999_999); // µs, above 2^53
    assert.equal(parseEventTime(9_007_199_254_740_993), 9_007_199_254_740); // the double 2^53 (µs)
  });
  it("refuses what is not a number or a numeric string", () => {
    refused([NaN, Infinity, -Infinity, "NaN", "Infinity", "-Infinity", "0x10", "1_000", "1,5", "1.", ".5", "1e", "--1", "1 2", "١٢٣"]);
    assert.match(errorOf(NaN), /^NaN is not an event time: use ISO 8601 or an epoch in s, ms, µs or ns$/);
    assert.match(errorOf(Infinity), /^Infinity is not an event time/);
  });
});

describe("parseEventTime: other values", () => {
  it("accepts a valid Date in range and refuses invalid or out-of-range ones", () => {
    const t = Date.UTC(2022, 4, 13, 10, 59, 42, 7);
    assert.equal(parseEventTime(new Date(t)), t);
    assert.equal(parseEventTime(new Date(MIN_EVENT_TIME)), MIN_EVENT_TIME);
    assert.equal(parseEventTime(new Date(MAX_EVENT_TIME)), MAX_EVENT_TIME);
    refused([new Date(NaN), new Date("nope"), new Date(MIN_EVENT_TIME - 1), new Date(MAX_EVENT_TIME + 1), new Date(8.64e15)]);
    assert.match(errorOf(new Date(NaN)), /invalid Date/);
    assert.match(errorOf(new Date(MAX_EVENT_TIME + 1)), /^the Date \+010000-01-01T00:00:00\.000Z is outside the supported range/);
  });
  it("refuses what is not a time", () => {
    for (const bad of ["yesterday", "", "2022-13-01T00:00:00Z", "2022-05-13T25:00:00", null, undefined, {}, [], NaN, "12:00"]) {
      assert.equal(parseEventTime(bad), undefined, JSON.stringify(bad));
    }
    refused([true, false, Symbol("t"), () => 1, [1652439582], { ms: 1652439582000 }, "   ", "\t", "2022/05/13", "13-05-2022", "2022-5-13",
      "2022-05-13T10:59:42Z garbage", "Fri, 13 May 2022 10:59:42 GMT"]);
    // digits alone are an epoch, never a basic-format date or a year: "20220513" is 20220513 s, "2026" is 2026 s.
    assert.equal(parseEventTime("20220513"), 20_220_513_000);
    assert.equal(parseEventTime("2026"), 2_026_000);
  });
  it("gives reasons that say what is wrong and what is accepted", () => {
    assert.equal(errorOf("abc"), 'cannot parse "abc" as an event time: use ISO 8601 or an epoch in s, ms, µs or ns');
    assert.equal(errorOf(""), "an empty string is not an event time: use ISO 8601 or an epoch in s, ms, µs or ns");
    assert.equal(errorOf("  "), "a blank string is not an event time: use ISO 8601 or an epoch in s, ms, µs or ns");
    assert.equal(errorOf(null), "cannot read null as an event time: use ISO 8601 or an epoch in s, ms, µs or ns");
    assert.equal(errorOf(undefined), "cannot read undefined as an event time: use ISO 8601 or an epoch in s, ms, µs or ns");
    assert.equal(errorOf(true), "cannot read true as an event time: use ISO 8601 or an epoch in s, ms, µs or ns");
    assert.equal(errorOf({}), "cannot read an object as an event time: use ISO 8601 or an epoch in s, ms, µs or ns");
    assert.equal(errorOf([]), "cannot read an array as an event time: use ISO 8601 or an epoch in s, ms, µs or ns");
    assert.match(errorOf("x".repeat(500)), /^cannot parse "x{77}\.\.\." as an event time/); // long values are cut
  });
  it("readEventTime gives the same answer as parseEventTime", () => {
    const values: unknown[] = ["2022-05-13T10:59:42Z", "2026-02-31", 1652439582, 1e20, -1e20, NaN, 1652439582123456789n, "0099-01-01",
      "0000-01-01", new Date(0), null, "", "abc", "2016-12-31T23:59:60Z", "2026-01-01T24:00"];
    for (const v of values) {
      const r = readEventTime(v);
      const p = parseEventTime(v);
      if (p === undefined) assert.ok("error" in r && typeof r.error === "string" && r.error.length > 0);
      else assert.deepEqual(r, { ms: p });
    }
  });
});

describe("event time range", () => {
  it("MIN_EVENT_TIME and MAX_EVENT_TIME are 0001-01-01T00:00:00.000Z and 9999-12-31T23:59:59.999Z", () => {
    assert.equal(MIN_EVENT_TIME, Date.parse("0001-01-01T00:00:00.000Z"));
    assert.equal(MAX_EVENT_TIME, Date.parse("9999-12-31T23:59:59.999Z"));
    assert.equal(MIN_EVENT_TIME, utc(1, 1, 1));
    assert.equal(MAX_EVENT_TIME, utc(9999, 12, 31, 23, 59, 59, 999));
    assert.equal(toIso(MIN_EVENT_TIME), "0001-01-01T00:00:00.000Z");
    assert.equal(toIso(MAX_EVENT_TIME), "9999-12-31T23:59:59.999Z");
    // as epoch numbers: MIN_EVENT_TIME (|n| < 1e14) is milliseconds, and one ms earlier is refused;
    // MAX_EVENT_TIME (|n| >= 1e14) reads as microseconds, i.e. 1978 (epoch numbers end at the year 5138).
    assert.equal(parseEventTime(MIN_EVENT_TIME), MIN_EVENT_TIME);
    assert.equal(parseEventTime(MIN_EVENT_TIME - 1), undefined);
    assert.equal(parseEventTime(MAX_EVENT_TIME), 253_402_300_799);
  });
});

describe("toIso", () => {
  it("prints four-digit years below 1000 and round-trips through parseEventTime", () => {
    assert.equal(toIso(utc(1, 1, 1)), "0001-01-01T00:00:00.000Z");
    assert.equal(toIso(utc(99, 3, 4, 5, 6, 7, 891)), "0099-03-04T05:06:07.891Z");
    assert.equal(toIso(utc(100, 1, 1)), "0100-01-01T00:00:00.000Z");
    assert.equal(toIso(utc(999, 12, 31, 23, 59, 59, 999)), "0999-12-31T23:59:59.999Z");
    assert.equal(toIso(Date.UTC(2022, 4, 13, 10, 59, 42)), "2022-05-13T10:59:42.000Z");
    for (const ms of [MIN_EVENT_TIME, utc(99, 12, 31), utc(100, 1, 1), 0, -1, Date.UTC(2022, 4, 13), MAX_EVENT_TIME]) {
      assert.equal(parseEventTime(toIso(ms)), ms, toIso(ms));
    }
  });
});

describe("checkFutureSkew", () => {
  const now = Date.UTC(2026, 0, 1, 12);
  it("DEFAULT_MAX_FUTURE_SKEW_MS is 5 minutes", () => {
    assert.equal(DEFAULT_MAX_FUTURE_SKEW_MS, 300_000);
  });
  it("accepts times up to now + the skew, and past times of any age", () => {
    assert.equal(checkFutureSkew(now, now, DEFAULT_MAX_FUTURE_SKEW_MS), undefined);
    assert.equal(checkFutureSkew(now + 299_999, now, DEFAULT_MAX_FUTURE_SKEW_MS), undefined);
    assert.equal(checkFutureSkew(now + 300_000, now, DEFAULT_MAX_FUTURE_SKEW_MS), undefined);
    assert.equal(checkFutureSkew(MIN_EVENT_TIME, now, DEFAULT_MAX_FUTURE_SKEW_MS), undefined);
    assert.equal(checkFutureSkew(now - 1e12, now, 0), undefined);
  });
  it("refuses times later than now + the skew, with a reason", () => {
    const r = checkFutureSkew(now + 300_001, now, DEFAULT_MAX_FUTURE_SKEW_MS);
    assert.equal(typeof r, "string");
    assert.match(r!, /^event time 2026-01-01T12:05:00\.001Z is 5m 0\.001s ahead of the current time 2026-01-01T12:00:00\.000Z: at most 5m of future skew is allowed/);
    assert.match(checkFutureSkew(now + 3_600_000, now, DEFAULT_MAX_FUTURE_SKEW_MS)!, / 1h ahead /);
    assert.match(checkFutureSkew(now + 1, now, 0)!, / 1ms ahead .*at most 0ms/);
    assert.match(checkFutureSkew(MAX_EVENT_TIME, now, DEFAULT_MAX_FUTURE_SKEW_MS)!, /^event time 9999-12-31T23:59:59\.999Z is \d+d/);
    assert.match(checkFutureSkew(now + 90_061_500, now, 60_000)!, / 1d 1h 1m 1\.5s ahead .*at most 1m /);
  });
  it("measures from the broker time when it is later than the clock", () => {
    const broker = now + 600_000; // the local clock is 10 minutes behind the broker
    assert.equal(checkFutureSkew(now + 800_000, now, DEFAULT_MAX_FUTURE_SKEW_MS, broker), undefined);
    assert.equal(checkFutureSkew(broker + 300_000, now, DEFAULT_MAX_FUTURE_SKEW_MS, broker), undefined);
    const r = checkFutureSkew(broker + 300_001, now, DEFAULT_MAX_FUTURE_SKEW_MS, broker);
    assert.match(r!, /ahead of the broker timestamp 2026-01-01T12:10:00\.000Z/);
    assert.notEqual(checkFutureSkew(now + 800_000, now, DEFAULT_MAX_FUTURE_SKEW_MS), undefined); // without the broker time: refused
  });
  it("an earlier broker time does not tighten the limit", () => {
    const broker = now - 3_600_000;
    assert.equal(checkFutureSkew(now + 300_000, now, DEFAULT_MAX_FUTURE_SKEW_MS, broker), undefined);
    assert.match(checkFutureSkew(now + 300_001, now, DEFAULT_MAX_FUTURE_SKEW_MS, broker)!, /ahead of the current time/);
    assert.equal(checkFutureSkew(now + 300_000, now, DEFAULT_MAX_FUTURE_SKEW_MS, undefined), undefined);
  });
});

describe("parseDuration", () => {
  it("reads seconds and unit strings", () => {
    assert.equal(parseDuration(30), 30_000);
    assert.equal(parseDuration("2h"), 7_200_000);
    assert.equal(parseDuration("1h30m"), 5_400_000);
    assert.equal(parseDuration("250ms"), 250);
    assert.equal(parseDuration("1d"), 86_400_000);
    assert.equal(parseDuration(0), 0);
  });
  it("refuses junk", () => {
    for (const bad of ["", "2 hours", "-1s", -5, "h", null, "5M", "1h30", "P", "PT", "P1M", "P1Y", "PT1H30", "1 hour"]) assert.equal(parseDuration(bad), undefined, String(bad));
  });
  it("reads ISO 8601 durations, digit strings as seconds, and spaced unit parts (issue 14)", () => {
    const cases: [string, number][] = [
      ["PT1H", 3_600_000], ["P1D", 86_400_000], ["PT1M30S", 90_000], ["P1DT12H", 129_600_000], ["P2W", 1_209_600_000],
      ["PT0.5S", 500], ["pt15m", 900_000], ["PT1,5S", 1500], ["P0D", 0],
      ["90", 90_000], ["0", 0], ["1.5", 1500], [" 90 ", 90_000],
      ["90s", 90_000], ["5m", 300_000], ["1h 30m", 5_400_000], ["2w", 1_209_600_000],
    ];
    for (const [text, ms] of cases) assert.equal(parseDuration(text), ms, text);
  });
  it("says what is wrong, naming the value", () => {
    const error = (v: unknown) => {
      const d = readDuration(v);
      assert.ok("error" in d, String(v));
      return d.error;
    };
    assert.match(error("2 hours"), /^"2 hours" is not a duration: "hours" is not a unit \(ms, s, m, h, d, w\); use seconds .*"PT1H"/);
    assert.match(error("P1M"), /^"P1M" is not a duration: ISO 8601 years and months have no fixed length; give days instead \(P30D\)/);
    assert.match(error("-1s"), /^"-1s" is not a duration: it is negative/);
    assert.match(error(-5), /^-5 is not a duration: a number is seconds, zero or more/);
    assert.match(error(""), /^"" is empty/);
    assert.match(error(null), /^null is not a duration/);
    assert.match(error("PT"), /^"PT" is not a duration: it is not an ISO 8601 duration/);
    assert.deepEqual(readDuration("PT1M30S"), { ms: 90_000 });
  });
  it("definitions name the option and the bad value", () => {
    const driver = entity({ name: "driver", joinKeys: ["driver_id"] });
    const schema = v.object({ driver_id: v.number(), x: v.number(), ts: v.string() });
    const src = pushSource({ name: "s", timestampField: "ts" });
    assert.throws(() => streamFeatureView({ name: "sv", entities: [driver], source: src, schema, ttl: "1 day" }), /"sv": ttl "1 day" is not a duration: "day" is not a unit/);
    assert.throws(() => pushSource({ name: "p", watermarkDelay: "P1M" }), /watermarkDelay "P1M" is not a duration: ISO 8601 years and months/);
    assert.equal(streamFeatureView({ name: "iso", entities: [driver], source: src, schema, ttl: "P1DT2H", watermarkDelay: "90" }).ttlMs, 93_600_000);
    assert.equal(streamFeatureView({ name: "iso2", entities: [driver], source: src, schema, ttl: 0, watermarkDelay: "PT1M30S" }).watermarkDelayMs, 90_000);
  });
});

describe("exports", () => {
  it("the package entry re-exports the time helpers", async () => {
    const mod = await import("../../mod.ts");
    for (const name of ["parseEventTime", "readEventTime", "checkFutureSkew", "parseDuration", "toIso", "MIN_EVENT_TIME", "MAX_EVENT_TIME", "DEFAULT_MAX_FUTURE_SKEW_MS"]) {
      assert.ok(name in mod, name);
    }
  });
});
