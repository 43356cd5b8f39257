// @runtimes node
// The benchmarks run, on a tiny input, and write well-formed result files.
// Speed is not checked here: bench/ measures it (npm run bench).
import { describe, it } from "node:test";
import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import { mkdtempSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { dirname, join, resolve } from "node:path";
import { fileURLToPath } from "node:url";
import process from "node:process";
import { checkEntry, meets, parseOptions, RUNTIMES } from "../bench/lib.ts";

const root = resolve(dirname(fileURLToPath(import.meta.url)), "..");

function runBench(args: string[], timeoutMs: number): Promise<{ code: number | null; out: string }> {
  return new Promise((done) => {
    const p = spawn(process.execPath, ["--import", "tsx", "bench/run.ts", ...args], { cwd: root, stdio: ["ignore", "pipe", "pipe"] });
    let out = "";
    p.stdout.on("data", (d) => (out += d));
    p.stderr.on("data", (d) => (out += d));
    const timer = setTimeout(() => p.kill("SIGKILL"), timeoutMs);
    p.on("close", (code) => {
      clearTimeout(timer);
      done({ code, out });
    });
  });
}

describe("bench", () => {
  it("reads its options from flags and the environment", () => {
    const o = parseOptions(["http", "--small", "--runs", "1", "--results", "/tmp/x", "--runtime", "bun,deno"], {});
    assert.deepEqual([o.names, o.small, o.runs, o.duration, o.warmup, o.resultsDir, o.runtimes], [["http"], true, 1, 1, 0, "/tmp/x", ["bun", "deno"]]);
    const d = parseOptions([], { BENCH_RUNS: "7", BENCH_DURATION: "3" });
    assert.deepEqual([d.runs, d.duration, d.small, d.runtimes], [7, 3, false, RUNTIMES]);
    assert.throws(() => parseOptions(["--runtime", "python"], {}), /unknown runtime/);
    assert.ok(meets(">= 0.5", 0.5) && !meets(">= 0.5", 0.49) && meets("<= 2", 1.9) && meets("== 1", 1) && !meets("== 1", 2) && !meets(">= 0.5", null));
  });

  it("runs every benchmark on a tiny input and writes well-formed results", { timeout: 170_000 }, async () => {
    const dir = mkdtempSync(join(tmpdir(), "freshet-bench-test-"));
    try {
      const { code, out } = await runBench(["http", "redis-roundtrips", "--small", "--runs", "1", "--results", dir], 160_000);
      assert.equal(code, 0, `bench/run.ts exited with ${code}:\n${out.slice(-4000)}`);
      assert.match(out, /\bid\s+runtime\s+metric\s+value\s+baseline\s+ratio\s+goal/, "prints a table");
      const expected: Record<string, string[]> = { http: ["P3", "P4", "P6"], "redis-roundtrips": ["P7"] };
      for (const [name, ids] of Object.entries(expected)) {
        const entries = JSON.parse(readFileSync(join(dir, `${name}.json`), "utf8"));
        assert.ok(Array.isArray(entries), `${name}.json holds an array`);
        for (const e of entries) checkEntry(e);
        const got = entries.map((e: { id: string; runtime: string }) => `${e.id}/${e.runtime}`).sort();
        assert.deepEqual(got, ids.flatMap((id) => RUNTIMES.map((r) => `${id}/${r}`)).sort(), `${name}.json has one entry per id and runtime`);
        for (const e of entries) {
          assert.equal(e.runs, e.id === "P7" ? 4 : 1);
          if (e.id === "P7") assert.equal(e.ratio, null);
          else assert.ok(e.baseline > 0 && e.value > 0 && e.ratio > 0, `${e.id} ${e.runtime} measured something`);
          if (!e.met) assert.match(out, new RegExp(`MISSED: ${e.id} on ${e.runtime}`), "a missed goal is said out loud");
        }
        const txt = readFileSync(join(dir, `${name}.txt`), "utf8");
        assert.match(txt, /id\s+runtime/);
      }
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });

  it("runs the aggregation benchmark (P10) on a tiny input and writes well-formed results", { timeout: 120_000 }, async () => {
    const dir = mkdtempSync(join(tmpdir(), "freshet-bench-test-"));
    try {
      const { code, out } = await runBench(["p10", "--small", "--runs", "1", "--results", dir], 110_000);
      assert.equal(code, 0, `bench/run.ts exited with ${code}:\n${out.slice(-4000)}`);
      const entries = JSON.parse(readFileSync(join(dir, "aggregations.json"), "utf8"));
      assert.equal(entries.length, 3, "ingest on Redis, ingest on SQLite, read p99");
      for (const e of entries) {
        checkEntry(e);
        assert.equal(e.id, "P10");
        assert.ok(e.baseline > 0 && e.value > 0 && e.ratio > 0, `${e.metric} measured something`);
        if (!e.met) assert.match(out, /MISSED: P10 on node/, "a missed goal is said out loud");
      }
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });

  it("runs the Kafka and Kinesis benchmarks on a tiny input (Node) and writes well-formed results", { timeout: 200_000 }, async () => {
    const dir = mkdtempSync(join(tmpdir(), "freshet-bench-test-"));
    try {
      const { code, out } = await runBench(["kafka", "kinesis", "--small", "--runs", "1", "--results", dir], 190_000);
      assert.equal(code, 0, `bench/run.ts exited with ${code}:\n${out.slice(-4000)}`);
      const expected: Record<string, string[]> = { kafka: ["P1", "P2", "P5", "P8"], kinesis: ["P9"] };
      for (const [name, ids] of Object.entries(expected)) {
        const entries = JSON.parse(readFileSync(join(dir, `${name}.json`), "utf8"));
        assert.ok(Array.isArray(entries), `${name}.json holds an array`);
        for (const e of entries) checkEntry(e);
        assert.deepEqual(entries.map((e: { id: string; runtime: string }) => `${e.id}/${e.runtime}`).sort(), ids.map((id) => `${id}/node`).sort());
        for (const e of entries) {
          assert.equal(e.runs, 1);
          if (e.id === "P5" || e.id === "P8") assert.ok(e.ratio === null && e.value > 0, `${e.id} measured something`);
          else assert.ok(e.baseline > 0 && e.value > 0 && e.ratio > 0, `${e.id} measured something`);
          if (!e.met) assert.match(out, new RegExp(`MISSED: ${e.id} on ${e.runtime}`), "a missed goal is said out loud");
        }
        assert.match(readFileSync(join(dir, `${name}.txt`), "utf8"), /Notes:/);
      }
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});
