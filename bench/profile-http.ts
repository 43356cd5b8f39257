/**
 * Where the time of one HTTP request goes, on Node: `freshet serve` run with
 * `--cpu-prof` under a short wrk load (P3: 1 row per push, P4: 500 rows per
 * push, P6: get-online-features of 10 features), then the profile's self
 * time summed by package and by function. For the bench notes, not a
 * benchmark: it prints the summary and leaves the .cpuprofile files (open
 * them in Chrome DevTools) in the directory it names.
 *
 *   npx tsx bench/profile-http.ts [--store redis|sqlite] [--case p3,p4,p6] [--duration 6] [--connections n] [--node node_modules/node24/bin/node]
 *
 * `--connections` overrides the case's own (P3 32, P4 8, P6 1): P6's work per
 * request shows better with the server busy than in one latency-bound loop.
 */
import { mkdtempSync, readdirSync, readFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import process from "node:process";
import { startRedis } from "../tests/services/redis.ts";
import { freePort, startChild, waitFor } from "../tests/services/system.ts";
import { FEATURES } from "./feature_repo.ts";
import { pushScript, staticScript, wrk } from "./http.ts";
import { ROOT, withCpu, cpuNote } from "./lib.ts";

const argv = process.argv.slice(2);
const opt = (name: string, fallback: string) => {
  const i = argv.indexOf(`--${name}`);
  return i >= 0 ? argv[i + 1] : fallback;
};
const storeKind = opt("store", "redis");
const cases = opt("case", "p3,p4,p6").split(",");
const duration = Number(opt("duration", "6"));
const connections = argv.includes("--connections") ? Number(opt("connections", "1")) : undefined;
// Node 24 strips types itself, so the profile keeps the source's line numbers (tsx's output has none).
const node = opt("node", process.execPath);
const nodeArgs = /node24|node22|bun$/.test(node) ? [] : ["--import", "tsx"];

interface Profile { nodes: { id: number; callFrame: { functionName: string; url: string; lineNumber: number } }[]; samples: number[]; timeDeltas: number[] }

/** Self time by package (node_modules/<pkg>, or the repo file) and by function, as shares of the sampled time. */
export function summarize(p: Profile, topN = 20): string {
  const byId = new Map(p.nodes.map((n) => [n.id, n]));
  const self = new Map<number, number>();
  let total = 0;
  for (let i = 0; i < p.samples.length; i++) {
    const d = p.timeDeltas[i] ?? 0;
    total += d;
    self.set(p.samples[i], (self.get(p.samples[i]) ?? 0) + d);
  }
  const fns = new Map<string, number>(), pkgs = new Map<string, number>();
  for (const [id, t] of self) {
    const cf = byId.get(id)!.callFrame;
    const url = cf.url.replace(/^.*node_modules\//, "npm:").replace(`file://${ROOT}/`, "");
    const pkg = url.startsWith("npm:") ? url.split("/").slice(0, url.startsWith("npm:@") ? 2 : 1).join("/") : url.startsWith("node:") ? "node internals" : url || cf.functionName;
    const k = `${cf.functionName || "(anonymous)"} ${url}:${cf.lineNumber + 1}`;
    fns.set(k, (fns.get(k) ?? 0) + t);
    pkgs.set(pkg, (pkgs.get(pkg) ?? 0) + t);
  }
  const top = (m: Map<string, number>, n: number) => [...m].sort((a, b) => b[1] - a[1]).slice(0, n).map(([k, t]) => `${((100 * t) / total).toFixed(1).padStart(5)}%  ${k}`).join("\n");
  // Who calls the heaviest native frames (writeUtf8String, writev, ...): the nearest frame with a file.
  const parent = new Map<number, number>();
  for (const n of p.nodes as (Profile["nodes"][number] & { children?: number[] })[]) for (const c of n.children ?? []) parent.set(c, n.id);
  const callers = new Map<string, number>();
  for (const [id, t] of self) {
    const cf = byId.get(id)!.callFrame;
    if (cf.url || cf.functionName.startsWith("(")) continue;
    let up = parent.get(id);
    const chain: string[] = [];
    while (up !== undefined && chain.length < 8) {
      const f = byId.get(up)!.callFrame;
      if (f.url && !(chain.length > 0 && f.url.startsWith("node:") && chain.length < 7 && !f.url.includes("_http"))) chain.push(`${f.functionName || "(anonymous)"} ${f.url.replace(/^.*node_modules\//, "npm:").replace(`file://${ROOT}/`, "")}:${f.lineNumber + 1}`);
      up = parent.get(up);
    }
    const k = `${cf.functionName} <- ${chain.join(" <- ")}`;
    callers.set(k, (callers.get(k) ?? 0) + t);
  }
  return `sampled ${(total / 1e6).toFixed(2)} s\n-- self time by package or file\n${top(pkgs, 15)}\n-- self time by function\n${top(fns, topN)}\n-- native frames by caller\n${top(callers, 8)}`;
}

const redis = storeKind === "redis" ? await startRedis() : undefined;
const dir = mkdtempSync(join(tmpdir(), "freshet-prof-"));
try {
  for (const c of cases) {
    const port = await freePort();
    const store = redis ? redis.url : `sqlite:${join(dir, `${c}.db`)}`;
    const profDir = join(dir, c);
    const child = startChild(node, ["--cpu-prof", "--cpu-prof-dir", profDir, ...nodeArgs, "adapters/cli.ts", "serve", "bench/feature_repo.ts", "--store", store, "--port", String(port), "--host", "127.0.0.1", "--data-dir", dir], { cwd: ROOT });
    const url = `http://127.0.0.1:${port}`;
    await waitFor("freshet serve", async () => (await fetch(`${url}/health`).then((r) => r.ok, () => false)), { timeoutMs: 60_000, intervalMs: 200, child: child.proc, output: child.output });
    let script: string, target = url, conns: number;
    if (c === "p6") {
      const df: Record<string, unknown[]> = { user_id: [42], event_timestamp: [new Date().toISOString()] };
      for (const [i, f] of FEATURES.entries()) df[f] = [i / 10];
      await (await fetch(`${url}/push`, { method: "POST", headers: { "content-type": "application/json" }, body: JSON.stringify({ push_source_name: "bench_push", df, to: "online" }) })).text();
      script = staticScript("POST", JSON.stringify({ entities: { user_id: [42] }, features: FEATURES.map((f) => `bench_stats:${f}`) }));
      target = `${url}/get-online-features`;
      conns = 1;
    } else {
      script = pushScript(c === "p4" ? 500 : 1, 1e9 * (cases.indexOf(c) + 1));
      conns = c === "p4" ? 8 : 32;
    }
    conns = connections ?? conns;
    await wrk(target, script, conns, 2); // warm-up, not profiled apart (a short share of the profile)
    const { result: r, cpu } = await withCpu({ server: child.proc.pid }, () => wrk(target, script, conns, duration));
    await child.stop();
    const file = readdirSync(profDir).find((f) => f.endsWith(".cpuprofile"))!;
    const rps = (r.requests - r.status) / (r.duration_us / 1e6);
    console.log(`\n===== ${c} on ${storeKind}: ${rps.toFixed(0)} req/s, wrk p50 ${(r.p50_us / 1000).toFixed(2)} ms p99 ${(r.p99_us / 1000).toFixed(2)} ms, ${cpuNote(cpu)}, ${cpu.server === undefined ? "" : `${Math.round((cpu.server * 1e6) / rps)} us server CPU per request`}; profile ${join(profDir, file)}`);
    console.log(summarize(JSON.parse(readFileSync(join(profDir, file), "utf8")) as Profile));
  }
} finally {
  await redis?.stop();
}
