// Unit tests of the Kinesis source's pure parts: KPL de-aggregation (with an
// aggregated record built by hand), the parent-before-child rule, fair shares
// and the SHARD_END sentinel.
import { describe, it } from "node:test";
import assert from "node:assert/strict";
import { createHash } from "node:crypto";
import { compareDecimal } from "../../mod.ts";
import { deaggregate, fairShare, KPL_MAGIC, SHARD_END } from "../../plugins/sources/kinesis.ts";
import { readableShards, toRawRecords } from "../../plugins/sources/kinesis/shards.ts";

// ---- a protobuf writer, just enough for AggregatedRecord -------------------
const enc = new TextEncoder();
const varint = (n: number): number[] => {
  const out: number[] = [];
  while (n >= 0x80) {
    out.push((n % 0x80) | 0x80);
    n = Math.floor(n / 0x80);
  }
  out.push(n);
  return out;
};
const field = (no: number, wire: number) => varint(no * 8 + wire);
const lenField = (no: number, bytes: Uint8Array | number[]) => [...field(no, 2), ...varint(bytes.length), ...bytes];
const uintField = (no: number, n: number) => [...field(no, 0), ...varint(n)];

/** Builds a KPL aggregated record: magic, AggregatedRecord protobuf, MD5 of the protobuf. */
function aggregate(pkTable: string[], records: { pk: number; ehk?: number; data: string; tags?: boolean }[], ehkTable: string[] = []): Uint8Array {
  const body: number[] = [];
  for (const pk of pkTable) body.push(...lenField(1, enc.encode(pk)));
  for (const h of ehkTable) body.push(...lenField(2, enc.encode(h)));
  for (const r of records) {
    const rec = [...uintField(1, r.pk)];
    if (r.ehk !== undefined) rec.push(...uintField(2, r.ehk));
    rec.push(...lenField(3, enc.encode(r.data)));
    // Tag { key = 1; value = 2 }: skipped by the decoder.
    if (r.tags) rec.push(...lenField(4, [...lenField(1, enc.encode("k")), ...lenField(2, enc.encode("v"))]));
    body.push(...lenField(3, rec));
  }
  // An unknown fixed64 field, as a later KPL might add: skipped.
  body.push(...field(9, 1), 1, 2, 3, 4, 5, 6, 7, 8);
  const proto = Uint8Array.from(body);
  const md5 = createHash("md5").update(proto).digest();
  return Uint8Array.from([...KPL_MAGIC, ...proto, ...md5]);
}
const text = (b: Uint8Array) => new TextDecoder().decode(b);

describe("KPL de-aggregation", () => {
  it("unpacks user records in order, with their partition and explicit hash keys", () => {
    const agg = aggregate(["driver-1", "driver-2"], [
      { pk: 0, data: '{"driver_id":1}' },
      { pk: 1, ehk: 0, data: '{"driver_id":2}', tags: true },
      { pk: 0, data: "" },
    ], ["12345678901234567890"]);
    const subs = deaggregate(agg);
    assert.ok(subs);
    assert.deepEqual(subs.map((s) => [s.partitionKey, s.explicitHashKey, text(s.data)]), [
      ["driver-1", undefined, '{"driver_id":1}'],
      ["driver-2", "12345678901234567890", '{"driver_id":2}'],
      ["driver-1", undefined, ""],
    ]);
  });

  it("passes plain records through: no magic, a bad MD5, or a broken protobuf", () => {
    assert.equal(deaggregate(enc.encode('{"driver_id":1}')), undefined);
    assert.equal(deaggregate(new Uint8Array(0)), undefined);
    const agg = aggregate(["k"], [{ pk: 0, data: "x" }]);
    const badMd5 = agg.slice();
    badMd5[badMd5.length - 1] ^= 0xff;
    assert.equal(deaggregate(badMd5), undefined);
    // A partition key index outside the table, with a valid MD5.
    assert.equal(deaggregate(aggregate(["k"], [{ pk: 3, data: "x" }])), undefined);
    // A truncated protobuf, with a valid MD5 over it.
    const proto = Uint8Array.from([...lenField(1, enc.encode("k")), 0x1a, 0x10, 0x08]);
    const truncated = Uint8Array.from([...KPL_MAGIC, ...proto, ...createHash("md5").update(proto).digest()]);
    assert.equal(deaggregate(truncated), undefined);
  });

  it("gives every sub-record the Kinesis sequence number and its subSequence", () => {
    const agg = aggregate(["a"], [{ pk: 0, data: "1" }, { pk: 0, data: "2" }]);
    const at = new Date(T);
    const raw = toRawRecords("s", "shardId-000000000001", [
      { SequenceNumber: "100", Data: enc.encode("plain"), PartitionKey: "p", ApproximateArrivalTimestamp: at },
      { SequenceNumber: "101", Data: agg, PartitionKey: "a", ApproximateArrivalTimestamp: at },
    ]);
    assert.deepEqual(raw.map((r) => [text(r.value as Uint8Array), r.position, r.brokerTime]), [
      ["plain", { kind: "kinesis", stream: "s", shardId: "shardId-000000000001", sequenceNumber: "100" }, T],
      ["1", { kind: "kinesis", stream: "s", shardId: "shardId-000000000001", sequenceNumber: "101", subSequence: 0 }, T],
      ["2", { kind: "kinesis", stream: "s", shardId: "shardId-000000000001", sequenceNumber: "101", subSequence: 1 }, T],
    ]);
  });
});
const T = Date.UTC(2026, 0, 1);

describe("shard lifecycle rules", () => {
  const shards = [
    { shardId: "shardId-000000000000", parents: [], closed: true },
    { shardId: "shardId-000000000001", parents: [], closed: true },
    { shardId: "shardId-000000000002", parents: ["shardId-000000000000"], closed: false },
    { shardId: "shardId-000000000003", parents: ["shardId-000000000000"], closed: true },
    // a merge of 1 and 3
    { shardId: "shardId-000000000004", parents: ["shardId-000000000001", "shardId-000000000003"], closed: false },
    // parent past retention: no longer listed
    { shardId: "shardId-000000000005", parents: ["shardId-000000000099"], closed: false },
  ];
  const ids = (finished: string[]) => readableShards(shards, new Set(finished)).map((s) => s.shardId.slice(-1));

  it("a child is readable only once every listed parent was read to its end", () => {
    assert.deepEqual(ids([]), ["0", "1", "5"]);
    assert.deepEqual(ids(["shardId-000000000000"]), ["1", "2", "3", "5"]);
    assert.deepEqual(ids(["shardId-000000000000", "shardId-000000000001"]), ["2", "3", "5"]);
    assert.deepEqual(ids(["shardId-000000000000", "shardId-000000000001", "shardId-000000000003"]), ["2", "4", "5"]);
  });

  it("fair share rounds up over the live workers and respects the cap", () => {
    assert.equal(fairShare(4, 1), 4);
    assert.equal(fairShare(4, 2), 2);
    assert.equal(fairShare(5, 2), 3);
    assert.equal(fairShare(2, 3), 1);
    assert.equal(fairShare(0, 2), 0);
    assert.equal(fairShare(8, 1, 3), 3);
  });

  it("SHARD_END compares greater than any Kinesis sequence number", () => {
    const biggest = "9".repeat(129); // the API allows up to 129 digits
    assert.equal(compareDecimal(SHARD_END, biggest), 1);
    assert.equal(compareDecimal(SHARD_END, "49680436181055391663839224447235067430566255470565130242"), 1);
  });
});
