/**
 * examples/grafana/freshet.json (issue 14): every query parses as PromQL
 * (Prometheus' own lezer grammar), and every metric and label it uses is in
 * the /metrics output of a server that took pushes, reads and a stream batch.
 */
import { describe, it } from "node:test";
import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import { parser } from "@prometheus-io/lezer-promql";
import * as v from "valibot";
import { METRICS } from "../../core/metrics.ts";
import { consume, createProcessor, entity, featureRepo, kafkaSource, pushSource, streamFeatureView } from "../../mod.ts";
import { pushApp } from "../../plugins/sources/push.ts";
import { memoryDeadLetters, memoryOffline, memoryStore } from "../../plugins/stores/memory.ts";
import { queueSource } from "../fixtures/queue-source.ts";

const dashboard = JSON.parse(readFileSync(new URL("../../examples/grafana/freshet.json", import.meta.url), "utf8"));

/** The metric names and label names a PromQL expression uses; throws on a syntax error. */
function promql(expr: string): { metrics: Set<string>; labels: Set<string> } {
  const tree = parser.parse(expr);
  const metrics = new Set<string>();
  const labels = new Set<string>();
  tree.iterate({
    enter(n) {
      if (n.type.isError) throw new Error(`PromQL syntax error at ${n.from} in ${expr}`);
      if (n.name === "Identifier" && n.node.parent?.name === "VectorSelector") metrics.add(expr.slice(n.from, n.to));
      if (n.name === "LabelName") labels.add(expr.slice(n.from, n.to));
    },
  });
  return { metrics, labels };
}

/** Serves an app, runs pushes (one late), a read, a 404 and a stream batch with a lag through it, and returns /metrics. */
async function metricsAfterWorkload(): Promise<string> {
  const driver = entity({ name: "driver", joinKeys: ["driver_id"] });
  const stats = streamFeatureView({
    name: "driver_hourly_stats",
    entities: [driver],
    source: pushSource({ name: "push_src", timestampField: "ts", watermarkDelay: "1s" }),
    ttl: 0,
    schema: v.object({ driver_id: v.number(), conv_rate: v.number(), ts: v.number() }),
  });
  const trips = streamFeatureView({
    name: "trips",
    entities: [driver],
    source: kafkaSource({ name: "trips_stream", kafkaBootstrapServers: "127.0.0.1:9", topic: "trips", timestampField: "ts" }),
    ttl: 0,
    schema: v.object({ driver_id: v.number(), n: v.number(), ts: v.number() }),
  });
  const processor = createProcessor({ registry: featureRepo({ project: "grafana", definitions: [stats, trips] }), online: memoryStore(), offline: memoryOffline(), deadLetters: memoryDeadLetters() });
  const app = pushApp({ processor });
  const post = (path: string, body: unknown) => app.request(path, { method: "POST", body: JSON.stringify(body), headers: { "content-type": "application/json" } });
  const t = Date.now();
  assert.equal((await post("/push", { push_source_name: "push_src", df: { driver_id: [1, 2], conv_rate: [0.1, 0.2], ts: [t, t] } })).status, 200);
  assert.equal((await post("/push", { push_source_name: "push_src", df: { driver_id: [3], conv_rate: [0.3], ts: [t - 60_000] } })).status, 200); // late
  assert.equal((await post("/get-online-features", { entities: { driver_id: [1] }, features: ["driver_hourly_stats:conv_rate"] })).status, 200);
  assert.equal((await app.request("/nope")).status, 404);
  const ac = new AbortController();
  const stream = queueSource("trips_stream", { lag: { "0": 3 } });
  const done = consume(stream.source, processor, { signal: ac.signal, logEveryMs: 50 });
  const acked = new Promise<void>((resolve) =>
    stream.send({
      records: [
        { value: JSON.stringify({ driver_id: 1, n: 1, ts: t }), position: { kind: "memory", index: 0 } },
        { value: JSON.stringify({ driver_id: 1, n: "x", ts: t }), position: { kind: "memory", index: 1 } },
      ],
      ack: async () => resolve(),
    })
  );
  await acked;
  await new Promise((r) => setTimeout(r, 150)); // a lag report
  ac.abort();
  await done;
  return await (await app.request("/metrics")).text();
}

/** Metrics this workload cannot produce a sample of (no store outage, no materialize, no retention); they must still be declared. */
const NO_SAMPLE_HERE = new Set(["freshet_store_errors_total", "freshet_materialized_rows_total", "freshet_dead_letters_dropped_total", "freshet_dead_letter_files_dropped_total"]);

describe("the Grafana dashboard", () => {
  it("is an importable dashboard: unique panel ids, one Prometheus datasource variable, every target on it", () => {
    const ids = dashboard.panels.map((p: { id: number }) => p.id);
    assert.equal(new Set(ids).size, ids.length);
    assert.ok(dashboard.panels.length >= 10);
    assert.ok(dashboard.templating.list.some((t: { name: string; type: string; query: string }) => t.name === "datasource" && t.type === "datasource" && t.query === "prometheus"));
    for (const p of dashboard.panels) {
      assert.ok(p.targets.length > 0, p.title);
      for (const t of p.targets) assert.deepEqual(t.datasource, { type: "prometheus", uid: "${datasource}" }, p.title);
    }
  });

  it("queries only metrics and labels that /metrics serves, in valid PromQL", async () => {
    const text = await metricsAfterWorkload();
    const types = new Map([...text.matchAll(/^# TYPE (\w+) (\w+)$/gm)].map((m) => [m[1], m[2]]));
    const labelsOf = (name: string) => new Set([...text.matchAll(new RegExp(`^${name}\\{([^}]*)\\}`, "gm"))].flatMap((m) => [...m[1].matchAll(/(\w+)="/g)].map((x) => x[1])));
    const exprs: string[] = [
      ...dashboard.panels.flatMap((p: { targets: { expr: string }[] }) => p.targets.map((t) => t.expr)),
      ...dashboard.templating.list.filter((t: { type: string }) => t.type === "query").map((t: { definition: string }) => t.definition.replace(/^label_values\((\w+), (\w+)\)$/, "count by ($2) ($1)")),
    ];
    const queried = new Set<string>();
    for (const expr of exprs) {
      const { metrics, labels } = promql(expr.replaceAll("$__rate_interval", "5m").replaceAll("$__range", "1h"));
      assert.ok(metrics.size > 0, expr);
      const available = new Set<string>();
      for (const m of metrics) {
        const family = types.has(m) ? m : m.replace(/_(bucket|sum|count)$/, "");
        assert.ok(types.has(family), `${m} (in ${expr}) is not in /metrics`);
        if (family !== m) assert.equal(types.get(family), "histogram", `${m} is a histogram's series`);
        queried.add(family);
        if (!NO_SAMPLE_HERE.has(family)) assert.ok(text.match(new RegExp(`^${m}[{ ]`, "m")), `${m} has a sample in /metrics`);
        // Labels as served; for a metric without a sample here, as declared (every sample carries exactly those, see push.test.ts).
        for (const l of NO_SAMPLE_HERE.has(family) ? METRICS[family].labels : labelsOf(family === m ? m : `${family}_bucket`)) available.add(l);
      }
      for (const l of labels) assert.ok(available.has(l), `label ${l} (in ${expr}) is on none of ${[...metrics].join(", ")}`);
    }
    // The dashboard covers what an operator watches.
    for (const m of ["freshet_records_total", "freshet_view_newest_event_seconds", "freshet_source_lag", "freshet_http_request_duration_seconds", "freshet_store_errors_total", "freshet_batches_total"]) assert.ok(queried.has(m), m);
  });
});
