// @runtimes node
/**
 * Reliability scenario 12, crash inside a push: `freshet serve` is SIGKILLed
 * during a burst of pushes with webhook-ids, several times, on the file store
 * and on Redis. Every request that got a 2xx is in the store; every request
 * that did not is processed when retried (a "duplicate" answer only ever
 * comes once its rows are stored); redeliveries while the first is still
 * pending get 409, never a false 200.
 */
import { describe, it, before, after } from "node:test";
import assert from "node:assert/strict";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { freePort, sleep, startChild, waitFor, type Child } from "../services/system.ts";
import { startRedis, type RedisService } from "../services/redis.ts";

const root = new URL("../../", import.meta.url).pathname;
const REPO = "examples/driver_stats/feature_repo.ts";
const ROWS_PER_REQUEST = 4;

interface Req {
  id: string;
  body: string;
  drivers: number[];
  trips: number;
  acked: boolean;
}

async function startServer(port: number, store: string, dataDir: string): Promise<Child> {
  const child = startChild(process.execPath, ["--import", "tsx", "adapters/cli.ts", "serve", REPO, "--port", String(port), "--store", store, "--data-dir", dataDir], {
    cwd: root,
    env: { FRESHET_PENDING_TTL_MS: "400" },
  });
  await waitFor("freshet serve", async () => {
    try {
      return (await fetch(`http://127.0.0.1:${port}/health`)).status === 200;
    } catch {
      return false;
    }
  }, { child: child.proc, output: child.output, timeoutMs: 30_000 });
  return child;
}

function request(seq: number): Req {
  const drivers = Array.from({ length: ROWS_PER_REQUEST }, (_, i) => 100_000 + seq * ROWS_PER_REQUEST + i);
  const t = new Date().toISOString();
  const body = JSON.stringify({
    push_source_name: "driver_stats_push_source",
    df: { driver_id: drivers, conv_rate: drivers.map(() => 0.5), acc_rate: drivers.map(() => 0.5), avg_daily_trips: drivers.map(() => seq), event_timestamp: drivers.map(() => t) },
    to: "online_and_offline",
  });
  return { id: `msg_${seq}_${Math.random().toString(36).slice(2, 8)}`, body, drivers, trips: seq, acked: false };
}

const push = (port: number, r: Req) =>
  fetch(`http://127.0.0.1:${port}/push`, { method: "POST", headers: { "content-type": "application/json", "webhook-id": r.id }, body: r.body });

async function readTrips(port: number, drivers: number[]): Promise<(number | null)[]> {
  const res = await fetch(`http://127.0.0.1:${port}/get-online-features`, {
    method: "POST",
    headers: { "content-type": "application/json" },
    body: JSON.stringify({ entities: { driver_id: drivers }, features: ["driver_hourly_stats:avg_daily_trips"] }),
  });
  assert.equal(res.status, 200);
  return (await res.json()).results[1].values;
}

async function scenario(store: string, dataDir: string) {
  const port = await freePort();
  const all: Req[] = [];
  let seq = 0;
  let falseDuplicates = 0;
  let conflicts = 0;
  let unacked = 0;
  let server = await startServer(port, store, dataDir);
  for (let round = 0; round < 4; round++) {
    // A burst: 8 concurrent senders; the server is SIGKILLed in the middle of it.
    const burst = Array.from({ length: 150 }, () => request(seq++));
    all.push(...burst);
    let next = 0;
    const sender = async () => {
      while (next < burst.length) {
        const r = burst[next++];
        try {
          const res = await push(port, r);
          const body = await res.json();
          if (res.status === 200 && body.status === "ok") r.acked = true;
        } catch { /* the server died under this request */ }
      }
    };
    const senders = Promise.all(Array.from({ length: 8 }, sender));
    await sleep(50 + Math.random() * 250);
    await server.stop("SIGKILL");
    await senders;
    unacked += burst.filter((x) => !x.acked).length;
    server = await startServer(port, store, dataDir);

    // Every acknowledged request is durable: its rows are there after the crash.
    for (const r of all.filter((x) => x.acked)) {
      assert.deepEqual(await readTrips(port, r.drivers), r.drivers.map(() => r.trips), `acknowledged ${r.id} survived the crash (round ${round})`);
    }
    // Every other request is processed when retried; "duplicate" only where the rows are there.
    for (const r of burst.filter((x) => !x.acked)) {
      for (let attempt = 0; ; attempt++) {
        assert.ok(attempt < 100, `${r.id} still not accepted`);
        const res = await push(port, r);
        const body = await res.json();
        if (res.status === 409) {
          conflicts++;
          await sleep(100);
          continue;
        }
        assert.equal(res.status, 200, JSON.stringify(body));
        if (body.status === "duplicate") {
          const got = await readTrips(port, r.drivers);
          if (got.some((v) => v !== r.trips)) falseDuplicates++;
        }
        r.acked = true;
        break;
      }
    }
  }
  assert.equal(falseDuplicates, 0, "no retry was answered duplicate for rows that were not stored");
  // A second delivery of any request is a duplicate now, and the store holds exactly every row.
  for (const r of all.slice(0, 20)) assert.equal((await (await push(port, r)).json()).status, "duplicate");
  for (let i = 0; i < all.length; i += 50) {
    const chunk = all.slice(i, i + 50);
    const got = await readTrips(port, chunk.flatMap((r) => r.drivers));
    assert.deepEqual(got, chunk.flatMap((r) => r.drivers.map(() => r.trips)));
  }
  await server.stop();
  console.log(`[scenario 12] ${store.split(":")[0]}: ${all.length} requests, ${unacked} unacknowledged at the kills and retried, ${conflicts} answered 409 while pending`);
  assert.ok(unacked > 0, "the kills hit requests in flight");
  return { requests: all.length, conflicts };
}

describe("scenario 12: SIGKILL inside a burst of pushes with webhook-ids", () => {
  let redis: RedisService;
  const dirs: string[] = [];
  const tempDir = () => {
    const d = mkdtempSync(join(tmpdir(), "freshet-push-crash-"));
    dirs.push(d);
    return d;
  };
  before(async () => {
    redis = await startRedis();
  });
  after(async () => {
    await redis?.stop();
    for (const d of dirs) rmSync(d, { recursive: true, force: true });
  });

  it("file store: every 2xx is stored, every retry is processed, never a false duplicate", { timeout: 180_000 }, async () => {
    const dir = tempDir();
    const r = await scenario(`file:${dir}`, dir);
    assert.equal(r.requests, 600);
  });

  it("Redis: every 2xx is stored, every retry is processed, never a false duplicate", { timeout: 180_000 }, async () => {
    const r = await scenario(redis.url, tempDir());
    assert.equal(r.requests, 600);
  });
});
