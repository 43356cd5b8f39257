import { describe, it } from "node:test";
import assert from "node:assert/strict";
import * as v from "valibot";
import { entity, featureRepo, FreshetError, kafkaSource, pushSource, streamFeatureView } from "../../mod.ts";

const driver = entity({ name: "driver", joinKeys: ["driver_id"] });
const push = pushSource({ name: "p", timestampField: "ts" });
const schema = v.object({ driver_id: v.number(), conv_rate: v.number(), ts: v.string() });
const view = (o: Record<string, unknown> = {}) => streamFeatureView({ name: "stats", entities: [driver], source: push, schema, ttl: "1h", ...o });

function throwsWith(fn: () => unknown, pattern: RegExp) {
  assert.throws(fn, (e: unknown) => {
    assert.ok(e instanceof FreshetError, "a FreshetError");
    assert.equal(e.code, "INVALID_DEFINITION");
    assert.match(e.message, pattern);
    return true;
  });
}

describe("registry", () => {
  it("resolves features, timestamp field and join keys, and describes itself", () => {
    const repo = featureRepo({ project: "demo", definitions: [view({ tags: { team: "x" } })] });
    const v0 = repo.view("stats");
    assert.deepEqual(v0.features, ["conv_rate"]);
    assert.equal(v0.timestampField, "ts");
    assert.deepEqual(v0.joinKeys, ["driver_id"]);
    const d = repo.describe();
    assert.equal(d.project, "demo");
    assert.deepEqual(d.entities.map((e) => e.name), ["driver"]);
    assert.deepEqual(d.sources.map((s) => s.name), ["p"]);
    assert.equal(d.featureViews[0].ttlSeconds, 3600);
    assert.deepEqual(d.featureViews[0].tags, { team: "x" });
    assert.deepEqual(JSON.parse(JSON.stringify(d)), d, "plain JSON");
  });
  it("rejects a duplicate name", () => {
    throwsWith(() => featureRepo({ project: "d", definitions: [view(), view()] }), /defined twice.*unique name/);
    throwsWith(() => featureRepo({ project: "d", definitions: [pushSource({ name: "stats" }), view()] }), /defined twice/);
  });
  it("rejects a join key missing from the schema, saying how to fix it", () => {
    const other = entity({ name: "rider", joinKeys: ["rider_id"] });
    throwsWith(() => featureRepo({ project: "d", definitions: [view({ entities: [other] })] }), /join key "rider_id" is not in the schema; add it/);
  });
  it("rejects a missing timestamp field", () => {
    throwsWith(() => featureRepo({ project: "d", definitions: [view({ source: pushSource({ name: "q" }) })] }), /no timestamp field: set timestampField/);
  });
  it("rejects an unknown source", () => {
    throwsWith(() => featureRepo({ project: "d", definitions: [view({ source: "nope" })] }), /unknown source "nope"/);
  });
  it("rejects bad ttl, bad names, bad sources at definition time", () => {
    throwsWith(() => view({ ttl: "forever" }), /ttl "forever" is not a duration/);
    throwsWith(() => entity({ name: "has space" }), /needs a name/);
    throwsWith(() => kafkaSource({ name: "k", kafkaBootstrapServers: "", topic: "t" }), /kafkaBootstrapServers is required/);
    throwsWith(() => streamFeatureView({ name: "x", entities: [driver], source: push, schema: {} as never, ttl: 1 }), /schema must be a valibot schema/);
    throwsWith(() => view({ aggregations: [{ column: "conv_rate", function: "sum", timeWindow: "1h", slideInterval: "7m" }] }), /not a multiple of slideInterval/);
  });
  it("accepts a source by name", () => {
    const repo = featureRepo({ project: "d", definitions: [push, view({ source: "p" })] });
    assert.equal(repo.view("stats").source.name, "p");
    assert.equal(repo.viewsForSource("p").length, 1);
  });
});
