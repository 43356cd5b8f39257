// @runtimes node
// Reliability scenario 10, the long run: one million events through Kafka (librdkafka's mock
// cluster) into Redis, consumed by Freshet while they are produced. It drives bench/kafka.ts's
// P8 run, which samples the consumer's RSS every second and checks the counts and the lag; this
// test holds it to the scenario: every event accounted for, lag back to zero, memory flat.
import { test } from "node:test";
import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import { mkdtempSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { dirname, join, resolve } from "node:path";
import { fileURLToPath } from "node:url";
import process from "node:process";

const root = resolve(dirname(fileURLToPath(import.meta.url)), "../..");
const N = 1_000_000;

test("scenario 10 (long run): 1M events through Kafka into Redis, every one accounted for, lag 0, RSS flat", { timeout: 600_000 }, async () => {
  const dir = mkdtempSync(join(tmpdir(), "freshet-long-run-"));
  try {
    const { code, out } = await new Promise<{ code: number | null; out: string }>((done) => {
      const p = spawn(process.execPath, ["--import", "tsx", "bench/kafka.ts", "p8", "--runs", "1", "--runtime", "node", "--results", dir], {
        cwd: root,
        stdio: ["ignore", "pipe", "pipe"],
        // Node 24's V8 sizes the young generation up to several times Node 20/22's under allocation pressure
        // (a garbage-churning loop peaks at 540 MB RSS on Node 24, 363 MB on 20, 348 MB on 22, 380 MB on 24
        // with --max-semi-space-size=16): the bound is on Freshet's memory, so Node 24 runs with 20/22's size.
        env: { ...process.env, BENCH_P8_RECORDS: String(N), ...(Number(process.versions.node.split(".")[0]) >= 24 ? { NODE_OPTIONS: `${process.env.NODE_OPTIONS ?? ""} --max-semi-space-size=16`.trim() } : {}) },
      });
      let out = "";
      p.stdout.on("data", (d) => (out += d));
      p.stderr.on("data", (d) => (out += d));
      const timer = setTimeout(() => p.kill("SIGKILL"), 580_000);
      p.on("close", (c) => {
        clearTimeout(timer);
        done({ code: c, out });
      });
    });
    assert.equal(code, 0, `the long run failed:\n${out.slice(-4000)}`);
    const line = out.split("\n").find((l) => l.includes(`${N} events in`));
    assert.ok(line, `the run reports its ${N} events:\n${out.slice(-2000)}`);
    // Counts: written + stale + late + invalid = produced, and nothing invalid or late in this stream.
    const m = /written (\d+) \+ stale (\d+) \+ late (\d+) \+ invalid (\d+) = (\d+) = produced/.exec(line);
    assert.ok(m, line);
    assert.equal(Number(m[1]) + Number(m[2]), N, line);
    assert.deepEqual([Number(m[3]), Number(m[4])], [0, 0]);
    assert.match(line, /committed offsets = high watermarks \(lag 0\)/);
    assert.match(line, /consumer\.lag\(\) all 0/);
    assert.match(line, /flat \(last <= middle \+ 10%\)/, "RSS is flat over the run");
    const entries = JSON.parse(readFileSync(join(dir, "kafka.json"), "utf8")) as { id: string; value: number }[];
    const p8 = entries.find((e) => e.id === "P8");
    assert.ok(p8 && p8.value > 0 && p8.value <= 200, `peak RSS ${p8?.value} MB within 200 MB`);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});
