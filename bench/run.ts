/**
 * Runs the benchmarks and prints one table: `npm run bench`, or
 * `npm run bench -- http --runtime bun`, or a smoke run
 * `npm run bench -- --small --runs 1 --results /tmp/bench`.
 *
 * Benchmarks: http (P3, P4, P6 on Node, Bun and Deno), redis-roundtrips
 * (P7), kafka (P1, P2, P5, P8; Node unless --runtime says otherwise; `p1`,
 * `p5` or `p8` alone run only that part), kinesis (P9, same runtimes) and
 * historical (P12, Node), aggregations (P10, Node), cluster (P13, Node:
 * two `freshet consume` against one on a 3-master Redis Cluster), workerd (P3 on
 * workerd through miniflare, Upstash store).
 * Options: see bench/lib.ts. Results go to `<results>/<name>.json`
 * (and a `<name>.txt` with the table and notes). A missed goal is printed
 * as MISSED; it is a result, not an error: the exit code is non-zero only
 * when a benchmark could not run.
 */
import process from "node:process";
import { parseOptions, table, versions, machine, writeResults, type Entry } from "./lib.ts";
import { runHttp } from "./http.ts";
import { runRoundtrips } from "./redis-roundtrips.ts";
import { runKafka } from "./kafka.ts";
import { runKinesis } from "./kinesis.ts";
import { runSqliteWrites } from "./sqlite-writes.ts";
import { runFlatCost } from "./flat-cost.ts";
import { runHistorical } from "./historical.ts";
import { runAggregations } from "./aggregations.ts";
import { runCluster } from "./cluster.ts";
import { runWorkerd } from "./workerd.ts";

const BENCHES: Record<string, (o: ReturnType<typeof parseOptions>) => Promise<{ entries: Entry[]; notes: string[]; failures: string[] }>> = {
  http: (o) => runHttp(o),
  "redis-roundtrips": (o) => runRoundtrips(o),
  kafka: (o) => runKafka(o),
  kinesis: (o) => runKinesis(o),
  "sqlite-writes": (o) => runSqliteWrites(o),
  "flat-cost": (o) => runFlatCost(o),
  historical: (o) => runHistorical(o),
  aggregations: (o) => runAggregations(o),
  cluster: (o) => runCluster(o),
  workerd: (o) => runWorkerd(o),
};
const ALIASES: Record<string, string> = {
  p3: "http", p4: "http", p6: "http", p7: "redis-roundtrips", roundtrips: "redis-roundtrips",
  p1: "kafka", p2: "kafka", p5: "kafka", p8: "kafka", p9: "kinesis",
  p12: "historical", p10: "aggregations", p13: "cluster",
  p11: "sqlite-writes", sqlite: "sqlite-writes", flat: "flat-cost",
};

const opts = parseOptions();
const names = opts.names.length ? [...new Set(opts.names.map((n) => ALIASES[n.toLowerCase()] ?? n))] : Object.keys(BENCHES);
for (const n of names) {
  if (!BENCHES[n]) {
    console.error(`unknown benchmark "${n}": use ${Object.keys(BENCHES).join(", ")}`);
    process.exit(2);
  }
}
console.log(`freshet bench: ${names.join(", ")} on ${opts.runtimes.join(", ")}; ${opts.runs} paired run(s) of ${opts.duration}s${opts.small ? " (small)" : ""}`);
console.log(`machine: ${machine()}; versions: ${Object.entries(versions()).map(([k, v]) => `${k} ${v}`).join(", ")}\n`);

const all: Entry[] = [];
const failures: string[] = [];
for (const name of names) {
  console.log(`### ${name}`);
  const r = await BENCHES[name](opts);
  failures.push(...r.failures.map((f) => `${name}: ${f}`));
  if (r.entries.length) console.log(`wrote ${writeResults(opts.resultsDir, name, r.entries, r.notes)}\n`);
  all.push(...r.entries);
}
console.log("\n" + table(all));
if (failures.length) {
  console.error(`${failures.length} benchmark run(s) failed:\n${failures.join("\n")}`);
  process.exit(1);
}
process.exit(0);
