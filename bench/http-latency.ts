/**
 * The P6 measurement: POSTs the same request over one keep-alive HTTP/1.1
 * connection, one at a time (closed loop), from the runtime this script runs
 * on, over a raw `node:net` socket, and times each round trip exactly as
 * bench/raw-hmget.ts times an HMGET. (wrk corrects its latencies for
 * coordinated omission, which a closed-loop baseline does not: its p99
 * would not compare.) Prints one JSON line:
 * `{"count", "p50_us", "p99_us", "mean_us"}`.
 *
 *   node --import tsx bench/http-latency.ts --url http://127.0.0.1:8080/get-online-features --body '{...}' --duration 8
 */
import process from "node:process";
import { connect } from "node:net";
import { Buffer } from "node:buffer";

const args = process.argv.slice(2);
const arg = (name: string, fallback?: string) => {
  const i = args.indexOf(`--${name}`);
  if (i >= 0 && i + 1 < args.length) return args[i + 1];
  if (fallback !== undefined) return fallback;
  throw new Error(`http-latency: --${name} is required`);
};
const url = new URL(arg("url"));
const body = Buffer.from(arg("body"));
const durationMs = Number(arg("duration", "5")) * 1000;
const warmupOps = Number(arg("warmup-ops", "2000"));

const request = Buffer.concat([
  Buffer.from(`POST ${url.pathname} HTTP/1.1\r\nHost: ${url.host}\r\nContent-Type: application/json\r\nContent-Length: ${body.length}\r\nConnection: keep-alive\r\n\r\n`),
  body,
]);

const socket = connect({ host: url.hostname, port: Number(url.port) });
socket.setNoDelay(true);
await new Promise<void>((resolve, reject) => {
  socket.once("connect", () => resolve());
  socket.once("error", reject);
});

let buf: Buffer = Buffer.alloc(0);
let waiting: ((status: number) => void) | undefined;
let failed: Error | undefined;
socket.on("error", (e) => (failed = e));
socket.on("close", () => (failed ??= new Error("the server closed the connection")));

/** Resolves with the status once `buf` holds one whole response (Content-Length or chunked). */
function tryComplete() {
  if (!waiting) return;
  const end = buf.indexOf("\r\n\r\n");
  if (end < 0) return;
  const head = buf.subarray(0, end).toString("latin1");
  const status = Number(head.slice(9, 12));
  const cl = /\r\ncontent-length:\s*(\d+)/i.exec(head);
  let total: number;
  if (cl) {
    total = end + 4 + Number(cl[1]);
    if (buf.length < total) return;
  } else if (/\r\ntransfer-encoding:\s*chunked/i.test(head)) {
    const last = buf.indexOf("\r\n0\r\n\r\n", end);
    if (last < 0) return;
    total = last + 7;
  } else {
    throw new Error(`http-latency: a response with neither content-length nor chunked encoding:\n${head}`);
  }
  buf = buf.subarray(total);
  const w = waiting;
  waiting = undefined;
  w(status);
}
socket.on("data", (d: Buffer) => {
  buf = buf.length ? Buffer.concat([buf, d]) : d;
  tryComplete();
});

function roundTrip(): Promise<number> {
  if (failed) return Promise.reject(failed);
  return new Promise((resolve) => {
    waiting = resolve;
    socket.write(request);
  });
}

for (let i = 0; i < warmupOps; i++) {
  const status = await roundTrip();
  if (status !== 200) throw new Error(`http-latency: ${url} answered ${status}`);
}
const samples: number[] = [];
let bad = 0;
const stop = performance.now() + durationMs;
for (;;) {
  const t0 = performance.now();
  if (t0 >= stop) break;
  if ((await roundTrip()) !== 200) bad++;
  samples.push((performance.now() - t0) * 1000);
}
if (bad) throw new Error(`http-latency: ${bad} of ${samples.length} answers were not 200`);
samples.sort((a, b) => a - b);
const at = (p: number) => samples[Math.min(samples.length - 1, Math.max(0, Math.ceil((p / 100) * samples.length) - 1))];
const mean = samples.reduce((a, b) => a + b, 0) / samples.length;
console.log(JSON.stringify({ count: samples.length, p50_us: at(50), p99_us: at(99), mean_us: mean }));
socket.destroy();
process.exit(0);
