import { describe, it } from "node:test";
import assert from "node:assert/strict";
import { createMetrics, METRICS } from "../../core/metrics.ts";

describe("metrics registry", () => {
  it("renders the same labels given in any order as one series (issue 14)", () => {
    const m = createMetrics();
    m.inc("freshet_records_total", { source: "s", view: "v", outcome: "written" });
    m.inc("freshet_records_total", { outcome: "written", view: "v", source: "s" }, 2);
    m.set("freshet_source_lag", { partition: "0", source: "s" }, 5);
    m.set("freshet_source_lag", { source: "s", partition: "0" }, 7);
    const lines = m.render().split("\n").filter((l) => l && !l.startsWith("#"));
    assert.deepEqual(lines, ['freshet_records_total{source="s",view="v",outcome="written"} 3', 'freshet_source_lag{source="s",partition="0"} 7']);
    assert.equal(m.get("freshet_records_total", { view: "v", outcome: "written", source: "s" }), 3);
    assert.equal(m.sum("freshet_records_total", { outcome: "written" }), 3);
    // An undeclared metric, and a declared one with an extra label, are keyed by sorted names.
    m.inc("custom_total", { b: "2", a: "1" });
    m.inc("custom_total", { a: "1", b: "2" });
    m.inc("freshet_store_errors_total", { store: "x", zone: "z" });
    m.inc("freshet_store_errors_total", { zone: "z", store: "x" });
    assert.match(m.render(), /^custom_total\{a="1",b="2"\} 2$/m);
    assert.match(m.render(), /^freshet_store_errors_total\{store="x",zone="z"\} 2$/m);
  });

  it("renders a histogram as cumulative buckets, +Inf, _sum and _count", () => {
    const m = createMetrics();
    const labels = { route: "/push", method: "POST", status: "200" };
    for (const s of [0.0005, 0.003, 0.003, 0.2, 42]) m.observe("freshet_http_request_duration_seconds", labels, s);
    m.observe("freshet_http_request_duration_seconds", { status: "200", method: "POST", route: "/push" }, 0.001);
    const text = m.render();
    const sample = (suffix: string, extra = "") => {
      const re = new RegExp(`^freshet_http_request_duration_seconds_${suffix}\\{route="/push",method="POST",status="200"${extra}\\} (\\S+)$`, "m");
      const got = re.exec(text);
      assert.ok(got, `${suffix}${extra} in\n${text}`);
      return Number(got[1]);
    };
    assert.equal(sample("bucket", ',le="0.001"'), 2); // 0.0005 and 0.001 (le is inclusive)
    assert.equal(sample("bucket", ',le="0.005"'), 4);
    assert.equal(sample("bucket", ',le="0.25"'), 5);
    assert.equal(sample("bucket", ',le="10"'), 5);
    assert.equal(sample("bucket", ',le="\\+Inf"'), 6);
    assert.equal(sample("count"), 6);
    assert.ok(Math.abs(sample("sum") - 42.2075) < 1e-9);
    assert.equal(m.get("freshet_http_request_duration_seconds", labels), 6);
  });

  it("lists every declared metric with HELP and TYPE before its first sample, and escapes label values", () => {
    const m = createMetrics();
    const text = m.render();
    for (const [name, d] of Object.entries(METRICS)) assert.match(text, new RegExp(`^# TYPE ${name} ${d.type}$`, "m"));
    m.inc("freshet_store_errors_total", { store: 'a"b\\c\nd' });
    assert.match(m.render(), /^freshet_store_errors_total\{store="a\\"b\\\\c\\nd"\} 1$/m);
  });
});
