/**
 * The P6 baseline: one raw HMGET round trip with ioredis, from the runtime
 * this script runs on, measured one at a time (closed loop, like the
 * single-connection load on /get-online-features). Prints one JSON line:
 * `{"count", "p50_us", "p99_us", "mean_us"}`.
 *
 *   node --import tsx bench/raw-hmget.ts --url redis://127.0.0.1:6379 --key k --fields a,b,_ts --duration 8
 */
import process from "node:process";
import { Redis } from "ioredis";

const args = process.argv.slice(2);
const arg = (name: string, fallback?: string) => {
  const i = args.indexOf(`--${name}`);
  if (i >= 0 && i + 1 < args.length) return args[i + 1];
  if (fallback !== undefined) return fallback;
  throw new Error(`raw-hmget: --${name} is required`);
};
const url = arg("url");
const key = arg("key");
const fields = arg("fields").split(",");
const durationMs = Number(arg("duration", "5")) * 1000;
const warmupOps = Number(arg("warmup-ops", "2000"));

// The client settings of redisStore that matter here: no offline queue, no retries.
const redis = new Redis(url, { enableOfflineQueue: false, maxRetriesPerRequest: 0, lazyConnect: true });
await redis.connect();
const check = await redis.hmget(key, ...fields);
if (check.every((v) => v === null)) throw new Error(`raw-hmget: ${key} has none of ${fields.join(",")}`);
for (let i = 0; i < warmupOps; i++) await redis.hmget(key, ...fields);

const samples: number[] = [];
const end = performance.now() + durationMs;
for (;;) {
  const t0 = performance.now();
  if (t0 >= end) break;
  await redis.hmget(key, ...fields);
  samples.push((performance.now() - t0) * 1000);
}
samples.sort((a, b) => a - b);
const at = (p: number) => samples[Math.min(samples.length - 1, Math.max(0, Math.ceil((p / 100) * samples.length) - 1))];
const mean = samples.reduce((a, b) => a + b, 0) / samples.length;
console.log(JSON.stringify({ count: samples.length, p50_us: at(50), p99_us: at(99), mean_us: mean }));
redis.disconnect();
process.exit(0);
