/**
 * GET /openapi.json (issue 14): generated from the valibot schemas the app
 * validates with. Every route of the app is in it; bodies valid per its
 * schemas (checked by Ajv, an independent JSON Schema validator) are
 * accepted, bodies invalid per them are refused, and the answers match the
 * response schemas.
 */
import { describe, it } from "node:test";
import assert from "node:assert/strict";
import { Ajv2020 } from "ajv/dist/2020.js";
import * as v from "valibot";
import { createProcessor, entity, featureRepo, featureService, pushSource, streamFeatureView } from "../../mod.ts";
import { pushApp } from "../../plugins/sources/push.ts";
import { memoryDeadLetters, memoryOffline, memoryStore } from "../../plugins/stores/memory.ts";

const driver = entity({ name: "driver", joinKeys: ["driver_id"] });
const push = pushSource({ name: "driver_stats_push_source", timestampField: "event_timestamp" });
const stats = streamFeatureView({
  name: "driver_hourly_stats",
  entities: [driver],
  source: push,
  ttl: "PT2H",
  schema: v.object({ driver_id: v.number(), conv_rate: v.number(), string_feature: v.optional(v.string()), event_timestamp: v.string() }),
});
const repo = featureRepo({ project: "openapi_test", definitions: [stats, featureService({ name: "svc", features: [stats] })] });

function setup(opts: { readToken?: string } = {}) {
  const app = pushApp({ processor: createProcessor({ registry: repo, online: memoryStore(), offline: memoryOffline(), deadLetters: memoryDeadLetters() }), ...opts });
  const call = async (method: string, path: string, body?: unknown, headers: Record<string, string> = {}) => {
    const res = await app.request(path, { method, body: body === undefined ? undefined : JSON.stringify(body), headers: { "content-type": "application/json", ...headers } });
    const type = res.headers.get("content-type") ?? "";
    return { status: res.status, type, body: type.includes("json") ? await res.json() : await res.text() };
  };
  return { app, call };
}

async function spec(call: ReturnType<typeof setup>["call"]) {
  const doc = (await call("GET", "/openapi.json")).body;
  const ajv = new Ajv2020({ strict: false });
  ajv.addSchema({ $id: "doc", components: doc.components });
  const validator = (name: string) => {
    const f = ajv.getSchema(`doc#/components/schemas/${name}`);
    assert.ok(f, `components.schemas.${name} exists`);
    return f;
  };
  return { doc, validator };
}

describe("GET /openapi.json", () => {
  it("describes every route of the app, and nothing else", async () => {
    const { app, call } = setup();
    const { doc } = await spec(call);
    assert.equal(doc.openapi, "3.1.0");
    const inApp = new Set(app.routes.filter((r) => r.method !== "ALL").map((r) => `${r.method.toLowerCase()} ${r.path}`));
    const inDoc = new Set(Object.entries(doc.paths as Record<string, object>).flatMap(([path, ops]) => Object.keys(ops).map((m) => `${m} ${path}`)));
    assert.deepEqual([...inApp].sort(), [...inDoc].sort());
    assert.ok(inApp.size >= 8, [...inApp].join(", "));
    // Each $ref resolves, and request bodies are the schemas' conversions (the push default is Feast's).
    const refs = JSON.stringify(doc.paths).match(/#\/components\/schemas\/\w+/g)!;
    for (const ref of refs) assert.ok(doc.components.schemas[ref.split("/").pop()!], ref);
    assert.equal(doc.components.schemas.PushRequest.properties.to.default, "online");
    assert.deepEqual(doc.components.schemas.PushRequest.required, ["push_source_name"]);
  });

  it("a body valid per the document is accepted, one invalid per it is refused with 422, and answers match the response schemas", async () => {
    const { call } = setup();
    const { validator } = await spec(call);
    const now = new Date().toISOString();
    const pushes = [
      { push_source_name: "driver_stats_push_source", df: { driver_id: [1001], event_timestamp: [now], conv_rate: [1.0], string_feature: "test2" } },
      { push_source_name: "driver_stats_push_source", df: { driver_id: 1002, event_timestamp: now, conv_rate: 0.5 }, to: "online" },
      { push_source_name: "driver_stats_push_source", rows: [{ driver_id: 1003, event_timestamp: now, conv_rate: 0.25 }], to: "online" },
      { push_source_name: "driver_stats_push_source", df: [{ driver_id: 1004, event_timestamp: now, conv_rate: 0.75 }] },
    ];
    const reads = [
      { entities: { driver_id: [1001, 1002, 9] }, features: ["driver_hourly_stats:conv_rate"] },
      { entities: { driver_id: ["1003"] }, feature_service: "svc", full_feature_names: true },
    ];
    const checkAnswer = (name: string, body: unknown) => {
      const ok = validator(name);
      assert.ok(ok(body), `${name}: ${JSON.stringify(ok.errors)} for ${JSON.stringify(body)}`);
    };
    for (const body of pushes) {
      assert.ok(validator("PushRequest")(body), JSON.stringify(body));
      const res = await call("POST", "/push", body);
      assert.equal(res.status, 200, JSON.stringify(res.body));
      checkAnswer("PushResponse", res.body);
    }
    for (const body of reads) {
      assert.ok(validator("GetOnlineFeaturesRequest")(body), JSON.stringify(body));
      const res = await call("POST", "/get-online-features", body);
      assert.equal(res.status, 200, JSON.stringify(res.body));
      checkAnswer("GetOnlineFeaturesResponse", res.body);
    }
    const badPushes = [
      { df: { driver_id: [1] } },
      { push_source_name: "", df: { driver_id: [1] } },
      { push_source_name: "driver_stats_push_source", df: { driver_id: [1], conv_rate: { nested: 1 } } },
      { push_source_name: "driver_stats_push_source", rows: [1, 2] },
      { push_source_name: "driver_stats_push_source", df: { driver_id: [1] }, to: "elsewhere" },
    ];
    for (const body of badPushes) {
      assert.equal(validator("PushRequest")(body), false, JSON.stringify(body));
      const res = await call("POST", "/push", body);
      assert.equal(res.status, 422, JSON.stringify(body));
      checkAnswer("ErrorResponse", res.body);
      assert.ok(res.body.error.field, JSON.stringify(res.body));
    }
    const badReads: [unknown, string][] = [
      [{ features: ["driver_hourly_stats:conv_rate"] }, "entities"],
      [{ entities: { driver_id: [1, null] }, features: ["driver_hourly_stats:conv_rate"] }, "entities.driver_id[1]"],
      [{ entities: { driver_id: [1] }, features: [7] }, "features[0]"],
      [{ entities: { driver_id: [1] }, features: ["driver_hourly_stats:conv_rate"], full_feature_names: "yes" }, "full_feature_names"],
    ];
    for (const [body, field] of badReads) {
      assert.equal(validator("GetOnlineFeaturesRequest")(body), false, JSON.stringify(body));
      const res = await call("POST", "/get-online-features", body);
      assert.equal(res.status, 422, JSON.stringify(body));
      assert.equal(res.body.error.field, field, JSON.stringify(res.body));
      assert.ok(res.body.error.message.startsWith(field) || res.body.error.message.includes(field.split(/[.[]/)[0]), res.body.error.message);
    }
    checkAnswer("HealthResponse", (await call("GET", "/health")).body);
    checkAnswer("StatusResponse", (await call("GET", "/status")).body);
  });

  it("marks the read and write routes as bearer-secured when the server has tokens, and stays open itself", async () => {
    const { call } = setup({ readToken: "read-token-123" });
    const res = await call("GET", "/openapi.json");
    assert.equal(res.status, 200);
    assert.deepEqual(res.body.paths["/get-online-features"].post.security, [{ bearer: [] }]);
    assert.deepEqual(res.body.paths["/status"].get.security, [{ bearer: [] }]);
    assert.deepEqual(res.body.paths["/health"].get.security, []);
    assert.deepEqual(res.body.paths["/push"].post.security, []);
  });
});
