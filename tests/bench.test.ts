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
import { checkEntry, meets, node24, parseOptions, RUNTIMES } from "../bench/lib.ts";

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
          else assert.ok((e.baseline ?? 0) > 0 && e.value > 0 && (e.ratio ?? 0) > 0, `${e.id} ${e.runtime} measured something`);
          if (!e.met) assert.match(out, new RegExp(`MISSED: ${e.id} on ${e.runtime}`), "a missed goal is said out loud");
        }
        const txt = readFileSync(join(dir, `${name}.txt`), "utf8");
        assert.match(txt, /id\s+runtime/);
      }
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });

  it("runs P3 on workerd (miniflare, Upstash store) on a tiny input and writes a well-formed result", { timeout: 120_000 }, async () => {
    const dir = mkdtempSync(join(tmpdir(), "freshet-bench-test-"));
    try {
      const { code, out } = await runBench(["workerd", "--small", "--runs", "1", "--results", dir], 110_000);
      assert.equal(code, 0, `bench/run.ts exited with ${code}:\n${out.slice(-4000)}`);
      const entries = JSON.parse(readFileSync(join(dir, "workerd.json"), "utf8"));
      for (const e of entries) checkEntry(e);
      assert.deepEqual(entries.map((e: { id: string; runtime: string }) => `${e.id}/${e.runtime}`), ["P3/workerd"]);
      assert.ok(entries[0].baseline > 0 && entries[0].value > 0, "measured something");
      assert.match(readFileSync(join(dir, "workerd.txt"), "utf8"), /written 100\.0% of \d+ rows/, "every pushed row was written");
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
        assert.ok((e.baseline ?? 0) > 0 && e.value > 0 && (e.ratio ?? 0) > 0, `${e.metric} measured something`);
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
          else assert.ok((e.baseline ?? 0) > 0 && e.value > 0 && (e.ratio ?? 0) > 0, `${e.id} measured something`);
          if (!e.met) assert.match(out, new RegExp(`MISSED: ${e.id} on ${e.runtime}`), "a missed goal is said out loud");
        }
        assert.match(readFileSync(join(dir, `${name}.txt`), "utf8"), /Notes:/);
      }
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
  it("runs the SQLite store benchmarks (P11 and the flat-cost table) on a tiny input on every runtime", { timeout: 120_000 }, async () => {
    const dir = mkdtempSync(join(tmpdir(), "freshet-bench-test-"));
    try {
      const { code, out } = await runBench(["sqlite-writes", "flat-cost", "--small", "--runs", "1", "--results", dir], 110_000);
      assert.equal(code, 0, `bench/run.ts exited with ${code}:\n${out.slice(-4000)}`);
      const p11 = JSON.parse(readFileSync(join(dir, "sqlite-writes.json"), "utf8"));
      for (const e of p11) checkEntry(e);
      // Node 20 with libsql (or node:sqlite on 22+), Node 24 with both drivers when it is installed, Bun, Deno.
      const nodeMetrics = p11.filter((e: { runtime: string }) => e.runtime === "node").map((e: { metric: string }) => e.metric);
      const onNode20 = Number(process.versions.node.split(".")[0]) < 22;
      assert.equal(nodeMetrics.length, onNode20 ? (node24() ? 3 : 1) : 2, `Node configurations: ${nodeMetrics.join("; ")}`);
      if (!onNode20) assert.ok(nodeMetrics.some((m: string) => /node:sqlite on Node/.test(m)) && nodeMetrics.some((m: string) => /libsql on Node/.test(m)));
      else if (node24()) assert.ok(nodeMetrics.some((m: string) => /node:sqlite on Node 24/.test(m)) && nodeMetrics.some((m: string) => /libsql on Node 24/.test(m)));
      else assert.match(out, /no Node 24 binary/, "says that Node 24 was not measured");
      assert.deepEqual(p11.map((e: { runtime: string }) => e.runtime).filter((r: string) => r !== "node"), ["bun", "deno"]);
      assert.match(p11.find((e: { runtime: string }) => e.runtime === "bun").metric, /bun:sqlite on Bun/);
      assert.match(p11.find((e: { runtime: string }) => e.runtime === "deno").metric, /node:sqlite on Deno/);
      for (const e of p11) {
        assert.ok(e.id === "P11" && e.goal === ">= 0.8" && e.runs === 1, JSON.stringify(e));
        assert.ok((e.baseline ?? 0) > 0 && e.value > 0 && (e.ratio ?? 0) > 0, `P11 ${e.metric} measured something`);
        assert.ok(e.versions.sqlite, "names the SQLite version");
        if (!e.met) assert.match(out, new RegExp(`MISSED: P11 on ${e.runtime}`), "a missed goal is said out loud");
      }
      assert.match(readFileSync(join(dir, "sqlite-writes.txt"), "utf8"), /Notes:[\s\S]*store\/raw/);

      const flat = JSON.parse(readFileSync(join(dir, "flat-cost.json"), "utf8"));
      for (const e of flat) checkEntry(e);
      assert.deepEqual(flat.map((e: { runtime: string; metric: string }) => `${e.runtime} ${/file store/.test(e.metric) ? "file" : /sqlite/.test(e.metric) ? "sqlite" : e.metric}`),
        RUNTIMES.flatMap((r) => [`${r} file`, `${r} sqlite`]));
      for (const e of flat) {
        assert.ok(e.value > 0 && e.baseline > 0 && e.ratio > 0 && e.runs === 40, JSON.stringify(e));
        if (!e.met) assert.match(out, new RegExp(`MISSED: P11 on ${e.runtime}`), "a missed goal is said out loud");
      }
      const txt = readFileSync(join(dir, "flat-cost.txt"), "utf8");
      for (const r of RUNTIMES) for (const size of ["100", "1k"]) {
        assert.match(txt, new RegExp(`${r}\\s+file\\s+${size}\\s+existing p50 [\\d.]+ ms p99 [\\d.]+ ms\\s+new p50 [\\d.]+ ms p99`), `the table has the file store at ${size} on ${r}`);
        assert.match(txt, new RegExp(`${r}\\s+sqlite \\([a-z:]+\\)\\s+${size}\\s+existing p50`), `the table has SQLite at ${size} on ${r}`);
      }
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });

  it("runs P13 (two freshet consume vs one on a 3-master Redis Cluster) on a tiny input and writes well-formed results", { timeout: 120_000 }, async () => {
    const dir = mkdtempSync(join(tmpdir(), "freshet-bench-test-"));
    try {
      const { code, out } = await runBench(["p13", "--small", "--runs", "1", "--results", dir], 110_000);
      assert.equal(code, 0, `bench/run.ts exited with ${code}:\n${out.slice(-4000)}`);
      const entries = JSON.parse(readFileSync(join(dir, "cluster.json"), "utf8"));
      for (const e of entries) checkEntry(e);
      assert.deepEqual(entries.map((e: { id: string; runtime: string }) => `${e.id}/${e.runtime}`), ["P13/node"]);
      assert.ok(entries[0].baseline > 0 && entries[0].value > 0 && entries[0].goal === ">= 1.6");
      if (!entries[0].met) assert.match(out, /MISSED: P13 on node/);
      assert.match(readFileSync(join(dir, "cluster.txt"), "utf8"), /2 consumer\(s\): \d+ events/);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });

  it("runs P12 (historical retrieval) on a tiny input and finds the same answer as the hand-written DuckDB ASOF JOIN", { timeout: 170_000 }, async () => {
    const dir = mkdtempSync(join(tmpdir(), "freshet-bench-test-"));
    try {
      const { code, out } = await runBench(["p12", "--small", "--runs", "1", "--results", dir], 160_000);
      assert.equal(code, 0, `bench/run.ts exited with ${code}:\n${out.slice(-4000)}`);
      const entries = JSON.parse(readFileSync(join(dir, "historical.json"), "utf8"));
      for (const e of entries) checkEntry(e);
      assert.deepEqual(entries.map((e: { id: string; runtime: string }) => `${e.id}/${e.runtime}`), ["P12/node"]);
      assert.ok(entries[0].baseline > 0 && entries[0].value > 0);
      if (!entries[0].met) assert.match(out, /MISSED: P12 on node/);
      assert.match(readFileSync(join(dir, "historical.txt"), "utf8"), /same answer: yes/);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});
