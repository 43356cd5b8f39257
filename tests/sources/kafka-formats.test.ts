// Formats (JSON, Avro plain and Confluent-framed, schema registry) and the
// Kafka client configuration and log bridge. No broker needed.
import { test } from "node:test";
import assert from "node:assert/strict";
import { Buffer } from "node:buffer";
import { createServer } from "node:http";
import type { AddressInfo } from "node:net";
import * as avscNs from "avsc";
import { jsonFormat } from "../../plugins/formats/json.ts";
import { avroFormat } from "../../plugins/formats/avro.ts";
import { kafkaClientConfig, kafkajsLogBridge } from "../../plugins/sources/kafka.ts";
import { FreshetError } from "../../core/errors.ts";
import { recordingLogger } from "../fixtures/kafka-harness.ts";

const avsc = ((avscNs as unknown as { default?: typeof avscNs }).default ?? avscNs) as typeof avscNs;
const enc = (s: string) => new TextEncoder().encode(s);

const tripV1 = { type: "record", name: "Trip", fields: [{ name: "driver_id", type: "long" }, { name: "conv_rate", type: "double" }, { name: "event_timestamp", type: { type: "long", logicalType: "timestamp-millis" } }] };
const tripV2 = { ...tripV1, fields: [...tripV1.fields, { name: "city", type: ["null", "string"], default: null }] };

/** Confluent wire format: 0x00, the schema id as 4 bytes big-endian, the Avro body. */
function framed(id: number, body: Uint8Array): Uint8Array {
  const out = Buffer.alloc(5 + body.length);
  out.writeUInt32BE(id, 1);
  Buffer.from(body).copy(out, 5);
  return out;
}

test("json: objects decode; bad UTF-8, bad JSON and empty messages throw with a reason", async () => {
  const f = jsonFormat();
  assert.equal(f.name, "json");
  assert.deepEqual(await f.decode(enc('{"driver_id": 1001, "conv_rate": 0.5}')), { driver_id: 1001, conv_rate: 0.5 });
  assert.throws(() => f.decode(enc("{not json")), /invalid JSON .*\{not json/);
  assert.throws(() => f.decode(new Uint8Array([0x7b, 0xff, 0xfe, 0x7d])), /not valid UTF-8/);
  assert.throws(() => f.decode(new Uint8Array(0)), /empty message/);
});

test("avro plain: one schema, no header; longs are numbers, timestamps epoch ms", async () => {
  const type = avsc.Type.forSchema(tripV1 as avscNs.Schema);
  const ts = Date.UTC(2024, 4, 13, 10, 59, 42);
  const bytes = type.toBuffer({ driver_id: 1001, conv_rate: 0.25, event_timestamp: ts });
  const f = avroFormat({ schema: tripV1 });
  assert.equal(f.name, "avro");
  assert.deepEqual({ ...(await f.decode(bytes)) as object }, { driver_id: 1001, conv_rate: 0.25, event_timestamp: ts });
  await assert.rejects(async () => await f.decode(bytes.subarray(0, bytes.length - 3)), /truncated Avro body/);
  await assert.rejects(async () => await f.decode(Buffer.concat([bytes, Buffer.from([1, 2])])), /trailing bytes/);
  // A long beyond 2^53 is refused rather than rounded.
  const big = avsc.Type.forSchema({ type: "record", name: "R", fields: [{ name: "x", type: "long" }] } as avscNs.Schema);
  const tap = Buffer.from([0xfe, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01]); // zigzag of 2^63-1
  assert.throws(() => big.fromBuffer(tap), /precision/);
  await assert.rejects(async () => await avroFormat({ schema: { type: "record", name: "R", fields: [{ name: "x", type: "long" }] } }).decode(tap), /cannot decode Avro: potential precision loss/);
});

test("avro confluent: schemas by id, resolved into the reader schema; bad magic, short header, unknown id", async () => {
  const v1 = avsc.Type.forSchema(tripV1 as avscNs.Schema);
  const v2 = avsc.Type.forSchema(tripV2 as avscNs.Schema);
  const f = avroFormat({ schemas: { 1: tripV1, 2: JSON.stringify(tripV2) }, schema: tripV2 });
  assert.equal(f.name, "avro-confluent");
  const a = await f.decode(framed(1, v1.toBuffer({ driver_id: 1, conv_rate: 0.1, event_timestamp: 1000 })));
  assert.deepEqual({ ...(a as object) }, { driver_id: 1, conv_rate: 0.1, event_timestamp: 1000, city: null });
  const b = await f.decode(framed(2, v2.toBuffer({ driver_id: 2, conv_rate: 0.2, event_timestamp: 2000, city: "Oslo" })));
  assert.deepEqual({ ...(b as object) }, { driver_id: 2, conv_rate: 0.2, event_timestamp: 2000, city: "Oslo" });
  await assert.rejects(async () => await f.decode(enc('{"driver_id":1}')), /bad magic byte 0x7b/);
  await assert.rejects(async () => await f.decode(new Uint8Array([0, 0, 1])), /truncated Confluent header: 3 bytes/);
  await assert.rejects(async () => await f.decode(framed(9, new Uint8Array([2]))), /unknown schema id 9: add it to avroFormat\(\{ schemas \}\) or set registryUrl/);
  await assert.rejects(async () => await f.decode(new Uint8Array(0)), /empty message/);
  // Writer schemas alone (no reader schema) decode as written.
  const w = avroFormat({ schemas: { 1: tripV1 } });
  assert.deepEqual({ ...(await w.decode(framed(1, v1.toBuffer({ driver_id: 3, conv_rate: 1, event_timestamp: 3 })))) as object }, { driver_id: 3, conv_rate: 1, event_timestamp: 3 });
});

test("avro: a schema registry is asked once per id; 404 is an unknown id, 5xx a retriable error", async () => {
  const seen: string[] = [];
  const server = createServer((req, res) => {
    seen.push(`${req.url} ${req.headers.authorization ?? ""}`);
    if (req.url === "/schemas/ids/5") {
      res.writeHead(503);
      res.end();
    } else if (req.url === "/schemas/ids/7") {
      res.writeHead(200, { "content-type": "application/vnd.schemaregistry.v1+json" });
      res.end(JSON.stringify({ schema: JSON.stringify(tripV1) }));
    } else {
      res.writeHead(404, { "content-type": "application/json" });
      res.end(JSON.stringify({ error_code: 40403, message: "Schema not found" }));
    }
  });
  await new Promise<void>((r) => server.listen(0, "127.0.0.1", r));
  try {
    const url = `http://127.0.0.1:${(server.address() as AddressInfo).port}/`;
    const f = avroFormat({ registryUrl: url, registryHeaders: { authorization: "Basic dTpw" } });
    const v1 = avsc.Type.forSchema(tripV1 as avscNs.Schema);
    const msgs = [1, 2, 3].map((i) => framed(7, v1.toBuffer({ driver_id: i, conv_rate: 0.5, event_timestamp: i })));
    const out = await Promise.all(msgs.map((m) => f.decode(m)));
    assert.deepEqual(out.map((o) => (o as { driver_id: number }).driver_id), [1, 2, 3]);
    await assert.rejects(async () => await f.decode(framed(8, new Uint8Array([2]))), /unknown schema id 8: the schema registry answered 404/);
    assert.deepEqual(seen, ["/schemas/ids/7 Basic dTpw", "/schemas/ids/8 Basic dTpw"]);
    // A registry that is down is not the record's fault: the error is retriable (and not cached).
    for (let i = 0; i < 2; i++) {
      await assert.rejects(async () => await f.decode(framed(5, new Uint8Array([2]))), (e: unknown) => e instanceof FreshetError && e.retriable && /answered 503/.test(e.message));
    }
    assert.equal(seen.filter((u) => u.startsWith("/schemas/ids/5")).length, 2);
  } finally {
    server.closeAllConnections?.(); // fetch keeps connections alive; close() alone would wait for them
    await new Promise((r) => server.close(r));
  }
});

test("avro: configuration errors fail at definition time", () => {
  assert.throws(() => avroFormat({}), (e: unknown) => e instanceof FreshetError && e.code === "INVALID_CONFIG" && /needs `schema`/.test(e.message));
  assert.throws(() => avroFormat({ schema: "{oops" }), /schema is not valid JSON/);
  assert.throws(() => avroFormat({ schemas: { [-1]: tripV1 } }), /not a schema id/);
});

test("kafka client config: brokers, client id, TLS and SASL go to kafkajs as given", () => {
  const ca = "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n";
  const c = kafkaClientConfig({ brokers: "b1:9093, b2:9093", clientId: "trips-app", ssl: { ca, rejectUnauthorized: true }, sasl: { mechanism: "scram-sha-512", username: "svc", password: "s3cret" } }, { label: "trips" });
  assert.deepEqual(c.brokers, ["b1:9093", "b2:9093"]);
  assert.equal(c.clientId, "trips-app");
  assert.deepEqual(c.ssl, { ca, rejectUnauthorized: true });
  assert.deepEqual(c.sasl, { mechanism: "scram-sha-512", username: "svc", password: "s3cret" });
  const plain = kafkaClientConfig({ brokers: ["localhost:9092"] }, { label: "x" });
  assert.equal(plain.ssl, undefined);
  assert.equal(plain.sasl, undefined);
  assert.equal(plain.clientId, "freshet");
  const oauth = async () => ({ value: "token" });
  assert.equal((kafkaClientConfig({ brokers: "b:1", ssl: true, sasl: { mechanism: "oauthbearer", oauthBearerProvider: oauth } }, { label: "x" }).sasl as { oauthBearerProvider: unknown }).oauthBearerProvider, oauth);
  const log = recordingLogger();
  kafkaClientConfig({ brokers: "b:1", sasl: { mechanism: "plain", username: "u", password: "p" } }, { label: "x", logger: log });
  assert.match(log.lines[0].msg, /SASL PLAIN without ssl/);
  assert.throws(() => kafkaClientConfig({ brokers: "" }, { label: "x" }), /no Kafka brokers/);
  assert.throws(() => kafkaClientConfig({ brokers: "http://b:9092" }, { label: "x" }), /is not host:port/);
  // A password typed into the broker list never reaches the message.
  assert.throws(() => kafkaClientConfig({ brokers: "b1:9092,user:pw-in-list@b2:9092" }, { label: "x" }), (e: Error) => /broker "\[redacted\]@b2:9092" is not host:port \(credentials go in sasl/.test(e.message) && !e.message.includes("pw-in-list"));
  assert.throws(() => kafkaClientConfig({ brokers: "b:1", sasl: { mechanism: "gssapi" } as never }, { label: "x" }), /sasl.mechanism "gssapi"/);
});

test("kafkajs log bridge: WARN and up, connection noise dropped, repeats folded, rebalances as info", () => {
  const log = recordingLogger();
  const entry = kafkajsLogBridge(log, "trips")(2);
  const e = (level: number, namespace: string, message: string, error?: string) =>
    entry({ level, namespace, label: level === 1 ? "ERROR" : "WARN", log: { timestamp: "", message, error } });
  e(1, "Connection", "Response Heartbeat(key: 12, version: 3)", "The group is rebalancing, so a rejoin is needed");
  e(4, "Consumer", "Starting");
  e(2, "Runner", "The group is rebalancing, re-joining", "The group is rebalancing, so a rejoin is needed");
  for (let i = 0; i < 5; i++) e(1, "BrokerPool", "Failed to connect to seed broker, trying another broker from the list", "Connection error: connect ECONNREFUSED 127.0.0.1:9092");
  assert.deepEqual(log.lines.map((l) => l.level), ["info", "error"]);
  assert.match(log.lines[1].msg, /^\[freshet\] \[kafka\] "trips": kafkajs BrokerPool: Failed to connect to seed broker.*: Connection error: connect ECONNREFUSED/);
});
