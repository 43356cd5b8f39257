// Scenario 7 (reliability.md): ProvisionedThroughputExceeded and
// ExpiredIterator errors, injected by a small HTTP proxy in front of
// kinesalite for some GetRecords calls.
// - Reads stay within the per-shard limit: at least 200 ms between two
//   GetRecords calls on one shard, as the proxy sees them, and the backoff
//   grows with jitter while the throttling lasts.
// - After an expired iterator the consumer takes a fresh iterator after its
//   checkpoint, and nothing is skipped.
import { describe, it } from "node:test";
import assert from "node:assert/strict";
import { createServer, request, type IncomingMessage, type Server, type ServerResponse } from "node:http";
import { consume, createProcessor } from "../../mod.ts";
import { kinesisConsumer, kinesisKeys } from "../../plugins/sources/kinesis.ts";
import { memoryDeadLetters, memoryStore } from "../../plugins/stores/memory.ts";
import { createStream } from "../services/kinesis.ts";
import { decodeJson, kinesisRepo, lastPerShard, putAll, unique, until, versions, useKinesisTestBed } from "./kinesis-fixtures.ts";

type Fault = "throttle" | "expired";

interface Call {
  shardId: string;
  n: number;
  at: number;
  fault?: Fault;
}

interface IteratorRequest {
  shardId: string;
  type: string;
  sequenceNumber?: string;
  at: number;
}

/** A proxy that forwards to `target`, learns which shard each iterator reads, and fails GetRecords calls as `plan` says. */
async function faultProxy(target: string, plan: (shardId: string, n: number) => Fault | undefined) {
  const upstream = new URL(target);
  const shardOfIterator = new Map<string, string>();
  const calls: Call[] = [];
  const iterators: IteratorRequest[] = [];
  const count = new Map<string, number>();
  const body = (m: IncomingMessage) => new Promise<Buffer>((resolve, reject) => {
    const chunks: Buffer[] = [];
    m.on("data", (c: Buffer) => chunks.push(c));
    m.on("end", () => resolve(Buffer.concat(chunks)));
    m.on("error", reject);
  });
  const server: Server = createServer(async (req: IncomingMessage, res: ServerResponse) => {
    const at = Date.now();
    const target = String(req.headers["x-amz-target"] ?? "");
    const input = await body(req);
    const json = input.length ? JSON.parse(input.toString("utf8")) : {};
    let shardId: string | undefined;
    if (target.endsWith(".GetRecords")) {
      shardId = shardOfIterator.get(json.ShardIterator) ?? "?";
      const n = (count.get(shardId) ?? 0) + 1;
      count.set(shardId, n);
      const fault = plan(shardId, n);
      calls.push({ shardId, n, at, fault });
      if (fault) {
        const type = fault === "throttle" ? "ProvisionedThroughputExceededException" : "ExpiredIteratorException";
        const message = fault === "throttle" ? "Rate exceeded for shard" : "Iterator expired";
        res.writeHead(400, { "content-type": "application/x-amz-json-1.1", "x-amzn-requestid": "proxy" });
        res.end(JSON.stringify({ __type: type, message }));
        return;
      }
    } else if (target.endsWith(".GetShardIterator")) {
      shardId = json.ShardId;
      iterators.push({ shardId: json.ShardId, type: json.ShardIteratorType, sequenceNumber: json.StartingSequenceNumber, at });
    }
    const headers = { ...req.headers, host: upstream.host, "content-length": String(input.length) };
    const up = request({ host: upstream.hostname, port: upstream.port, method: req.method, path: req.url, headers }, async (ur) => {
      const out = await body(ur);
      if (shardId && ur.statusCode === 200) {
        const parsed = JSON.parse(out.toString("utf8"));
        const next = parsed.ShardIterator ?? parsed.NextShardIterator;
        if (next) shardOfIterator.set(next, shardId);
      }
      const h = { ...ur.headers };
      delete h["transfer-encoding"];
      h["content-length"] = String(out.length);
      res.writeHead(ur.statusCode ?? 500, h);
      res.end(out);
    });
    up.on("error", (e) => {
      res.writeHead(502);
      res.end(String(e));
    });
    up.end(input);
  });
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  const addr = server.address();
  const port = typeof addr === "object" && addr ? addr.port : 0;
  return {
    endpoint: `http://127.0.0.1:${port}`,
    calls,
    iterators,
    close: () => new Promise<void>((resolve) => {
      server.closeAllConnections?.();
      server.close(() => resolve());
    }),
  };
}

describe("scenario 7: Kinesis throttling and iterator expiry", () => {
  const bed = useKinesisTestBed();

  it("backs off within the per-shard read limit and resumes from the checkpoint with nothing skipped", { timeout: 60_000 }, async () => {
    const stream = unique("throttle");
    await createStream(bed.client, stream, 2);
    // Calls 2-4 of each shard are throttled three times running, 6 and 11
    // find their iterator expired, 8 is throttled once more.
    const plan = (_shard: string, n: number): Fault | undefined =>
      [2, 3, 4, 8].includes(n) ? "throttle" : [6, 11].includes(n) ? "expired" : undefined;
    const proxy = await faultProxy(bed.svc.endpoint, plan);
    const { source, registry, view } = kinesisRepo({
      streamName: stream, endpoint: proxy.endpoint, region: "us-east-1",
      credentials: { accessKeyId: "a", secretAccessKey: "b" }, pollIntervalMs: 50, limit: 12,
    });
    const store = memoryStore();
    const processor = createProcessor({ registry, online: store, deadLetters: memoryDeadLetters() });
    const keys = kinesisKeys(source.name, stream);
    const delivered: string[] = [];
    const ac = new AbortController();
    const consumer = kinesisConsumer(source, { meta: store.meta, workerId: "w", leaseTtlMs: 5000, discoverEveryMs: 500, throttle: { initialMs: 300, maxMs: 2000 } });
    const puts = await putAll(bed.client, stream, versions(10, 1, 24));
    const run = consume(consumer, processor, {
      signal: ac.signal, logEveryMs: 0,
      onBatch: (_r, b) => delivered.push(...b.records.map((r) => {
        const row = decodeJson(r.value)!;
        return `${row.driver_id}/${row.version}`;
      })),
    });
    const last = lastPerShard(puts);
    try {
      await until("every shard checkpointed at its last record", async () => {
        for (const [shard, seq] of last) if ((await store.meta.getCheckpoint(keys.checkpoint(shard))) !== seq) return false;
        return true;
      }, 40_000);
    } finally {
      ac.abort();
      await run;
      await proxy.close();
    }

    // Nothing skipped: every record delivered, every key at its newest version.
    const seen = new Set(delivered);
    for (let d = 1; d <= 10; d++) for (let ver = 1; ver <= 24; ver++) assert.ok(seen.has(`${d}/${ver}`), `driver ${d} version ${ver} delivered`);
    const rows = await store.read(view, Array.from({ length: 10 }, (_, i) => `driver_id=${i + 1}`), ["version"]);
    assert.deepEqual(rows.map((r) => r.version.value), Array(10).fill(24));

    for (const shard of last.keys()) {
      const calls = proxy.calls.filter((c) => c.shardId === shard);
      assert.ok(calls.length >= 12, `${shard}: the plan ran through (${calls.length} calls)`);
      assert.ok(calls.filter((c) => c.fault === "throttle").length >= 4 && calls.some((c) => c.fault === "expired"), `${shard}: faults injected`);
      // At least 200 ms between two GetRecords calls on one shard, whatever happened.
      for (let i = 1; i < calls.length; i++) {
        const gap = calls[i].at - calls[i - 1].at;
        assert.ok(gap >= 200, `${shard}: call ${calls[i].n} came ${gap} ms after call ${calls[i - 1].n}`);
      }
      // The backoff grows while the throttling lasts: after the third
      // throttle in a row (ceiling 1200 ms, jittered to at least half).
      const third = calls.find((c) => c.n === 4)!;
      const next = calls.find((c) => c.n === 5)!;
      assert.ok(next.at - third.at >= 600, `${shard}: ${next.at - third.at} ms after the third throttle in a row`);
      // After each expired iterator: a fresh iterator after the checkpoint, before the next read.
      for (const expired of calls.filter((c) => c.fault === "expired")) {
        const fresh = proxy.iterators.find((it) => it.shardId === shard && it.at > expired.at);
        assert.ok(fresh, `${shard}: a new iterator after expiry at call ${expired.n}`);
        assert.equal(fresh.type, "AFTER_SEQUENCE_NUMBER");
        assert.ok(fresh.sequenceNumber && puts.some((p) => p.shardId === shard && p.sequenceNumber === fresh.sequenceNumber), "it starts after a record of this shard");
        const following = calls.find((c) => c.n === expired.n + 1)!;
        assert.ok(fresh.at < following.at, "the next read uses the fresh iterator");
      }
    }
    // Nothing was read twice: each expiry resumed exactly after the last acknowledged record.
    assert.equal(delivered.length, new Set(delivered).size, "no duplicates");
  });
});
