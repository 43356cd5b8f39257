import { describe, it } from "node:test";
import assert from "node:assert/strict";
import * as v from "valibot";
import { entity, featureRepo, fileSource, FreshetError, kafkaSource, kinesisSource, pushSource, streamFeatureView } from "../../mod.ts";

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
  it("rejects unknown option keys, naming the closest known one", () => {
    const k = { name: "k", kafkaBootstrapServers: "127.0.0.1:9092", topic: "t", timestampField: "ts" };
    // Typos that were accepted silently, while the consumer joined the default group.
    throwsWith(() => kafkaSource({ ...k, groupID: "my-group" } as never), /kafkaSource\(\) has no option "groupID"; did you mean "groupId"\?/);
    throwsWith(() => kafkaSource({ ...k, batchsize: 5 } as never), /kafkaSource\(\) has no option "batchsize"; did you mean "batchSize"\?/);
    throwsWith(() => kinesisSource({ name: "s", streamName: "x", region: "us-east-1", pollIntervalMS: 5 } as never), /did you mean "pollIntervalMs"/);
    throwsWith(() => pushSource({ name: "p", timestampFeild: "ts" } as never), /pushSource\(\) has no option "timestampFeild"; did you mean "timestampField"\?/);
    throwsWith(() => entity({ name: "driver", joinkeys: ["driver_id"] } as never), /did you mean "joinKeys"/);
    throwsWith(() => fileSource({ name: "f", path: "x.jsonl", timestampFeld: "ts" } as never), /did you mean "timestampField"/);
    throwsWith(() => view({ tll: "1h" }), /streamFeatureView\(\) has no option "tll"; did you mean "ttl"\?/);
    // Nothing close: the known options are listed.
    throwsWith(() => kafkaSource({ ...k, partitionAssigner: "x" } as never), /has no option "partitionAssigner"; known options: name, .*groupId/);
    // The definition is named in the message.
    throwsWith(() => kafkaSource({ ...k, groupID: "g" } as never), /"k"|\bk\b/);
    // The correct spellings, and undefined values (a spread of optional fields), are accepted.
    assert.equal(kafkaSource({ ...k, groupId: "my-group", batchSize: 5 }).groupId, "my-group");
    assert.equal(kafkaSource({ ...k, groupID: undefined } as never).name, "k");
    // A definition spread into a new one keeps loading (its `kind` is replaced).
    assert.equal(pushSource({ ...push, name: "p2" }).name, "p2");
  });
  it("describes sources without TLS keys, SASL or AWS credentials, and with repo-relative paths", () => {
    const KEY = "-----BEGIN PRIVATE KEY-----\nMIIEvQIBADANBgkqhkiG9w0BAQEFAASC\n-----END PRIVATE KEY-----";
    const batch = fileSource({ name: "hist", path: "/srv/app/features/data/history.jsonl", timestampField: "ts" });
    const kafka = kafkaSource({
      name: "k", kafkaBootstrapServers: ["broker-1:9093", "sasl-user:kafka-pw-123@broker-2:9093"], topic: "t", timestampField: "ts",
      ssl: { ca: "CA-PEM-CONTENT", cert: "CERT-PEM-CONTENT", key: KEY, rejectUnauthorized: true, servername: "kafka.internal" },
      sasl: { mechanism: "scram-sha-512", username: "svc-user-apikey", password: "sasl-pw-456" },
      batchSource: batch,
    });
    const kinesis = kinesisSource({
      name: "s", streamName: "events", region: "us-east-1", timestampField: "ts",
      endpoint: "https://AKIDINURL:secretinurl@kinesis.internal:4567/?X-Amz-Security-Token=tok-789",
      credentials: { accessKeyId: "AKIAIOSFODNN7EXAMPLE", secretAccessKey: "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY", sessionToken: "session-tok-000" },
    });
    const rider = entity({ name: "rider", joinKeys: ["rider_id"] });
    const ks = v.object({ rider_id: v.number(), trips: v.number(), ts: v.string() });
    const repo = featureRepo({
      project: "secrets",
      definitions: [
        streamFeatureView({ name: "from_kafka", entities: [rider], source: kafka, schema: ks, ttl: "1h" }),
        streamFeatureView({ name: "from_kinesis", entities: [rider], source: kinesis, schema: ks, ttl: "1h" }),
      ],
    });
    const secrets = ["PRIVATE KEY", "MIIEvQ", "CA-PEM-CONTENT", "CERT-PEM-CONTENT", "sasl-pw-456", "svc-user-apikey", "kafka-pw-123", "AKIAIOSFODNN7EXAMPLE", "wJalrXUtnFEMI", "session-tok-000", "AKIDINURL", "secretinurl", "tok-789", "/srv/app"];
    for (const d of [repo.describe(), repo.describe({ cwd: "/srv/app" }), repo.describe({ cwd: "/elsewhere" })]) {
      const text = JSON.stringify(d);
      for (const s of secrets) assert.ok(!text.includes(s), `${s} is not in ${text}`);
    }
    const byName = (d: ReturnType<typeof repo.describe>, n: string) => d.sources.find((s) => s.name === n) as Record<string, any>;
    const d = repo.describe({ cwd: "/srv/app" });
    const k = byName(d, "k");
    // What is configured still shows, without its content.
    assert.deepEqual(k.ssl, { ca: "[set]", cert: "[set]", key: "[redacted]", rejectUnauthorized: true, servername: "kafka.internal" });
    assert.deepEqual(k.sasl, { mechanism: "scram-sha-512", username: "[redacted]", password: "[redacted]" });
    assert.deepEqual(k.kafkaBootstrapServers, ["broker-1:9093", "[redacted]@broker-2:9093"]);
    assert.equal(k.batchSource.path, "features/data/history.jsonl", "relative to cwd");
    assert.equal(byName(repo.describe({ cwd: "/srv/app/other" }), "k").batchSource.path, "../features/data/history.jsonl");
    assert.equal(byName(repo.describe(), "k").batchSource.path, "history.jsonl", "without a cwd, the file name only");
    const s = byName(d, "s");
    assert.equal(s.credentials, "[redacted]");
    assert.equal(s.endpoint, "https://[redacted]@kinesis.internal:4567/?[redacted]");
    assert.equal(s.region, "us-east-1");
    // A relative path stays as written.
    const rel = featureRepo({ project: "r", definitions: [streamFeatureView({ name: "v", entities: [rider], source: pushSource({ name: "p", batchSource: fileSource({ name: "h", path: "data/h.jsonl", timestampField: "ts" }) }), schema: ks, ttl: "1h" })] });
    assert.equal((rel.describe({ cwd: "/x" }).sources[0] as Record<string, any>).batchSource.path, "data/h.jsonl");
  });
});
