import { describe, it } from "node:test";
import assert from "node:assert/strict";
import { parseDuration, parseEventTime } from "../../mod.ts";

describe("parseEventTime", () => {
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
  it("reads epoch seconds and milliseconds, as numbers or strings", () => {
    assert.equal(parseEventTime(t / 1000), t);
    assert.equal(parseEventTime(t), t);
    assert.equal(parseEventTime(String(t / 1000)), t);
    assert.equal(parseEventTime(String(t)), t);
    assert.equal(parseEventTime(1652439582.5), t + 500);
    assert.equal(parseEventTime(new Date(t)), t);
  });
  it("refuses what is not a time", () => {
    for (const bad of ["yesterday", "", "2022-13-01T00:00:00Z", "2022-05-13T25:00:00", null, undefined, {}, [], NaN, "12:00"]) {
      assert.equal(parseEventTime(bad), undefined, JSON.stringify(bad));
    }
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
    for (const bad of ["", "2 hours", "-1s", -5, "h", null]) assert.equal(parseDuration(bad), undefined, String(bad));
  });
});
