#!/usr/bin/env node
// The test runner behind `npm test`: runs every tests/**/*.test.ts on Node
// (node --import tsx --test), then Bun (bun test), then Deno (deno test -A).
//
//   node scripts/test.mjs                       all files, all runtimes
//   node scripts/test.mjs --runtime bun         one runtime (repeatable, or "node,deno")
//   node scripts/test.mjs redis tests/x.test.ts  only files whose path contains an argument
//
// A test file opts out of runtimes with a first-line comment naming the ones
// it runs on, e.g. `// @runtimes node` (heavy fault tests that need one run).
//
// Environment: TEST_TIMEOUT_MIN (per runtime, default 20), TEST_CONCURRENCY
// (Node files in parallel, default 1), DENO_NO_CHECK=1 (skip Deno's type check).
import { spawn } from "node:child_process";
import { existsSync, readFileSync, readdirSync } from "node:fs";
import { dirname, join, relative, resolve, sep } from "node:path";
import { fileURLToPath, pathToFileURL } from "node:url";
import process from "node:process";

const root = resolve(dirname(fileURLToPath(import.meta.url)), "..");
const RUNTIMES = ["node", "bun", "deno"];
const timeoutMin = Number(process.env.TEST_TIMEOUT_MIN ?? 20);

// ---- arguments --------------------------------------------------------------
const selected = [];
const filters = [];
const argv = process.argv.slice(2);
for (let i = 0; i < argv.length; i++) {
  const a = argv[i];
  if (a === "--runtime" || a.startsWith("--runtime=")) {
    const v = a.includes("=") ? a.slice(a.indexOf("=") + 1) : argv[++i];
    for (const r of (v ?? "").split(",")) {
      if (!RUNTIMES.includes(r)) fail(`unknown runtime "${r}": use one of ${RUNTIMES.join(", ")}`);
      selected.push(r);
    }
  } else if (a === "--help" || a === "-h") {
    console.log("usage: node scripts/test.mjs [--runtime node|bun|deno] [file or path filter ...]");
    process.exit(0);
  } else {
    filters.push(relative(root, resolve(a)).split(sep).join("/"));
  }
}
const runtimes = selected.length ? RUNTIMES.filter((r) => selected.includes(r)) : RUNTIMES;

function fail(msg) {
  console.error(`test.mjs: ${msg}`);
  process.exit(2);
}

// ---- test files ---------------------------------------------------------------
function walk(dir) {
  const out = [];
  for (const e of readdirSync(dir, { withFileTypes: true })) {
    if (e.name === "node_modules" || e.name.startsWith(".")) continue;
    const p = join(dir, e.name);
    if (e.isDirectory()) out.push(...walk(p));
    else if (e.name.endsWith(".test.ts")) out.push(relative(root, p).split(sep).join("/"));
  }
  return out;
}

/** Runtimes named by a first-line `// @runtimes a b` / `a,b` comment; all if none. */
function runtimesOf(file) {
  const first = readFileSync(join(root, file), "utf8").split("\n", 1)[0];
  const m = /^\s*\/\/\s*@runtimes\s+(.+)$/.exec(first);
  return m ? m[1].split(/[\s,]+/).filter(Boolean) : RUNTIMES;
}

const testsDir = join(root, "tests");
const all = existsSync(testsDir) ? walk(testsDir).sort() : [];
const files = filters.length ? all.filter((f) => filters.some((q) => f.includes(q))) : all;
if (!files.length) fail(`no test files match ${filters.length ? filters.join(" ") : "tests/**/*.test.ts"}`);

// ---- system binaries ------------------------------------------------------------
// Same logic the helpers use (tests/services/system.ts), loaded through tsx,
// so a missing redis-server/kcat is installed once here, before any test runs.
{
  const { register } = await import("tsx/esm/api");
  const unregister = register();
  const { ensureBinary } = await import(pathToFileURL(join(root, "tests/services/system.ts")).href);
  for (const [bin, pkg] of [["redis-server", "redis-server"], ["kcat", "kcat"]]) {
    try {
      ensureBinary(bin, pkg);
    } catch (e) {
      // Not fatal here: tests that need it fail with the same message.
      console.error(`test.mjs: warning: ${e.message}`);
    }
  }
  await unregister();
}

// ---- one runtime ---------------------------------------------------------------
const bin = (name) => join(root, "node_modules", ".bin", name);

function command(rt, list) {
  switch (rt) {
    case "node":
      // A test that hangs fails after 5 minutes, and a file whose handles stay
      // open (a client still reconnecting) is not allowed to stall the run.
      return [process.execPath, ["--import", "tsx", "--test", "--test-reporter=spec", "--test-timeout=300000", "--test-force-exit", `--test-concurrency=${process.env.TEST_CONCURRENCY ?? 1}`, ...list]];
    case "bun":
      // bun test treats arguments without "./" as name filters, not paths.
      // Its default per-test timeout is 5 s; Node and Deno have none, so give
      // it a large one (tests that need a bound set { timeout } themselves).
      return [bin("bun"), ["test", "--timeout", "300000", ...list.map((f) => `./${f}`)]];
    case "deno":
      return [bin("deno"), ["test", "-A", ...(process.env.DENO_NO_CHECK === "1" ? ["--no-check"] : []), ...list]];
  }
}

const strip = (s) => s.replace(/\x1b\[[0-9;]*m/g, "");

/** Pass/fail counts from the runner's closing lines, if it printed them. */
function counts(rt, text) {
  const t = strip(text);
  const last = (re) => {
    const all = [...t.matchAll(re)];
    return all.length ? Number(all[all.length - 1][1]) : undefined;
  };
  if (rt === "node") return { passed: last(/^[ℹ#] pass (\d+)/gm), failed: last(/^[ℹ#] fail (\d+)/gm) };
  if (rt === "bun") return { passed: last(/^\s*(\d+) pass$/gm), failed: last(/^\s*(\d+) fail$/gm) };
  // Deno counts a describe() as one test and its it()s as "steps".
  const m = [...t.matchAll(/(?:ok|FAILED) \| (\d+) passed(?: \((\d+) steps?\))? \| (\d+) failed/g)].pop();
  return m ? { passed: Number(m[1]), failed: Number(m[3]), note: m[2] ? ` (top level; ${m[2]} steps passed)` : "" } : {};
}

let current; // the running child, for Ctrl-C
function run(rt, list) {
  const [cmd, args] = command(rt, list);
  if (!existsSync(cmd)) return Promise.resolve({ code: 127, text: "", error: `${cmd} not found (npm install?)` });
  console.log(`\n=== ${rt}: ${list.length} file(s) ===\n$ ${relative(root, cmd) || cmd} ${args.join(" ")}\n`);
  return new Promise((done) => {
    // detached: own process group, so a timeout kills the runtime and every
    // service process its tests started.
    const child = spawn(cmd, args, { cwd: root, detached: true, stdio: ["ignore", "pipe", "pipe"], env: { ...process.env, FRESHET_TEST_RUNTIME: rt } });
    current = child;
    let text = "";
    const keep = (chunk) => (text = (text + chunk).slice(-200_000));
    child.stdout.on("data", (d) => { process.stdout.write(d); keep(d.toString()); });
    child.stderr.on("data", (d) => { process.stderr.write(d); keep(d.toString()); });
    let timedOut = false;
    const timer = setTimeout(() => {
      timedOut = true;
      console.error(`\ntest.mjs: ${rt} run exceeded ${timeoutMin} min (TEST_TIMEOUT_MIN); killing it`);
      killGroup(child);
    }, timeoutMin * 60_000);
    child.on("error", (e) => { clearTimeout(timer); done({ code: 127, text, error: e.message }); });
    child.on("close", (code, signal) => {
      clearTimeout(timer);
      current = undefined;
      done({ code: code ?? 1, text, error: timedOut ? `timed out after ${timeoutMin} min` : signal ? `killed by ${signal}` : undefined });
    });
  });
}

function killGroup(child, signal = "SIGTERM") {
  try { process.kill(-child.pid, signal); } catch { /* gone */ }
  if (signal !== "SIGKILL") setTimeout(() => killGroup(child, "SIGKILL"), 5000).unref();
}

for (const sig of ["SIGINT", "SIGTERM"]) {
  process.on(sig, () => {
    if (current) killGroup(current, "SIGKILL");
    process.exit(130);
  });
}

// ---- main ----------------------------------------------------------------------
const results = [];
for (const rt of runtimes) {
  const list = files.filter((f) => runtimesOf(f).includes(rt));
  if (!list.length) {
    results.push({ rt, skipped: true });
    continue;
  }
  const t0 = Date.now();
  const r = await run(rt, list);
  results.push({ rt, files: list.length, secs: (Date.now() - t0) / 1000, ok: r.code === 0 && !r.error, ...counts(rt, r.text), error: r.error });
}

console.log("\n=== summary ===");
let passed = 0;
let failed = 0;
for (const r of results) {
  if (r.skipped) {
    console.log(`${r.rt.padEnd(5)} skipped (no test file runs on it)`);
    continue;
  }
  passed += r.passed ?? 0;
  // A run that failed without a failed test (load error, type error, timeout) still counts one.
  failed += r.ok ? (r.failed ?? 0) : Math.max(r.failed ?? 0, 1);
  const n = r.passed === undefined ? "counts unknown" : `${r.passed} passed, ${r.failed ?? 0} failed${r.note ?? ""}`;
  console.log(`${r.rt.padEnd(5)} ${r.ok ? "ok    " : "FAILED"} ${n}, ${r.files} file(s), ${r.secs.toFixed(1)} s${r.error ? ` (${r.error})` : ""}`);
}
// A plain closing line that CI tooling reads.
console.log(`total: ${passed} passed, ${failed} failed`);
process.exit(results.every((r) => r.skipped || r.ok) ? 0 : 1);
