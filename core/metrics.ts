/**
 * @module
 * Counters, gauges and histograms, rendered as Prometheus text for
 * `GET /metrics`. Written by hand rather than taken from prom-client, which
 * needs Node's globals (`process`, `perf_hooks`, `cluster`) and so cannot run
 * on Workers; this one uses nothing but the language.
 */

/** The labels of one series, by name. */
export type Labels = Record<string, string>;
/** The kinds of metric. */
export type MetricKind = "counter" | "gauge" | "histogram";

interface Sample {
  labels: Labels;
  value: number;
  /** Histograms: cumulative counts per bucket of {@link Family.buckets}, and the sum of observations. */
  buckets?: number[];
  sum?: number;
}

interface Family {
  help: string;
  type: MetricKind;
  /** The label names in the order they are rendered. */
  labels?: readonly string[];
  buckets?: readonly number[];
  values: Map<string, Sample>;
}

/** A small metrics registry. */
export interface Metrics {
  /** Adds `by` (default 1) to a counter. */
  inc(name: string, labels?: Labels, by?: number): void;
  /** Sets a gauge. */
  set(name: string, labels: Labels, value: number): void;
  /** Removes one series of a gauge (a partition no longer held). */
  remove(name: string, labels: Labels): void;
  /** Records one observation in a histogram (a duration in seconds, say). */
  observe(name: string, labels: Labels, value: number): void;
  /** A counter's or gauge's value, or a histogram's count of observations. */
  get(name: string, labels?: Labels): number;
  /** Sum of a counter over all label sets that include `labels`. */
  sum(name: string, labels?: Labels): number;
  /** Every series of a counter or gauge: its labels and value. */
  series(name: string): { labels: Labels; value: number }[];
  /** All series as Prometheus text. */
  render(): string;
}

/** Upper bounds of the HTTP latency histogram, in seconds. */
const LATENCY_BUCKETS = [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10];

/** A metric Freshet exports: its help text, type and label names (every sample of it carries exactly these). */
export interface MetricDefinition {
  /** The HELP line. */
  readonly help: string;
  /** Counter, gauge or histogram. */
  readonly type: MetricKind;
  /** Its label names, in the order they are rendered. */
  readonly labels: readonly string[];
}

/** Every metric Freshet exports, by name. `/metrics` lists each of them (HELP and TYPE) even before its first sample. */
export const METRICS: Readonly<Record<string, MetricDefinition>> = {
  freshet_records_total: { help: "Records by source, view and outcome (written, stale, expired, late, invalid, duplicate).", type: "counter", labels: ["source", "view", "outcome"] },
  freshet_late_arrivals_total: { help: "Records behind the watermark that were kept (latest-wins views); each is also counted under its outcome.", type: "counter", labels: ["source", "view"] },
  freshet_batches_total: { help: "Batches processed by source and result.", type: "counter", labels: ["source", "result"] },
  freshet_store_errors_total: { help: "Store failures by store.", type: "counter", labels: ["store"] },
  freshet_http_requests_total: { help: "HTTP requests by route (the route's template), method and status.", type: "counter", labels: ["route", "method", "status"] },
  freshet_http_request_duration_seconds: { help: "HTTP request latency by route (the route's template), method and status, in seconds.", type: "histogram", labels: ["route", "method", "status"] },
  freshet_view_newest_event_seconds: { help: "Event time of the newest record a view has taken, in Unix seconds: its freshness is time() minus this.", type: "gauge", labels: ["view"] },
  freshet_source_lag: { help: "Source lag per partition or shard (records for Kafka, ms for Kinesis).", type: "gauge", labels: ["source", "partition"] },
  freshet_source_partitions: { help: "Partitions or shards this process holds; while 0, its lag is unknown (not 0).", type: "gauge", labels: ["source"] },
  freshet_source_events_per_second: { help: "Source throughput over the last interval.", type: "gauge", labels: ["source"] },
  freshet_materialized_rows_total: { help: "Rows written by materialize.", type: "counter", labels: ["view"] },
  freshet_dead_letters_dropped_total: { help: "Dead letters deleted by the dead-letter sink's retention (rotated files beyond the number kept).", type: "counter", labels: ["sink"] },
  freshet_dead_letter_files_dropped_total: { help: "Rotated dead-letter files deleted by the retention.", type: "counter", labels: ["sink"] },
};

const escape = (v: string) => String(v).replace(/["\\\n]/g, (c) => (c === "\n" ? "\\n" : "\\" + c));

/**
 * Creates a metrics registry. A label set is one series whatever the order
 * of its keys.
 *
 * @example
 * ```ts
 * const m = createMetrics(); m.inc("freshet_records_total", { view: "v", outcome: "written" }); m.render()
 * ```
 */
export function createMetrics(): Metrics {
  const families = new Map<string, Family>();
  for (const [name, d] of Object.entries(METRICS)) families.set(name, { ...d, buckets: d.type === "histogram" ? LATENCY_BUCKETS : undefined, values: new Map() });
  // On the hot path (every batch, every request): a declared metric's labels in their declared order, no sort;
  // any other label set by sorted names. Either way one key per set of labels, whatever the caller's order.
  const keyOf = (f: Family | undefined, labels: Labels) => {
    let key = "";
    if (f?.labels) {
      let found = 0;
      for (const n of f.labels) {
        const v = labels[n];
        if (v !== undefined) (key += n + "\u0000" + v + "\u0001"), found++;
      }
      let given = 0;
      for (const _ in labels) given++;
      if (given === found) return key;
      key = "";
    }
    for (const n of Object.keys(labels).sort()) key += n + "\u0000" + labels[n] + "\u0001";
    return key;
  };
  const family = (name: string, type: MetricKind) => {
    let f = families.get(name);
    if (!f) {
      f = { help: name, type, buckets: type === "histogram" ? LATENCY_BUCKETS : undefined, values: new Map() };
      families.set(name, f);
    }
    return f;
  };
  const labelText = (f: Family, labels: Labels, extra = "") => {
    const names = f.labels ?? Object.keys(labels).sort();
    let out = "";
    for (const k of names) if (k in labels) out += `${out ? "," : ""}${k}="${escape(labels[k])}"`;
    // Labels beyond the declared ones still show (sorted), never silently dropped.
    if (f.labels) for (const k of Object.keys(labels).sort()) if (!f.labels.includes(k)) out += `${out ? "," : ""}${k}="${escape(labels[k])}"`;
    if (extra) out += `${out ? "," : ""}${extra}`;
    return out ? `{${out}}` : "";
  };
  return {
    inc(name, labels = {}, by = 1) {
      if (by === 0) return;
      const f = family(name, "counter");
      const k = keyOf(f, labels);
      const cur = f.values.get(k);
      if (cur) cur.value += by;
      else f.values.set(k, { labels: { ...labels }, value: by });
    },
    set(name, labels, value) {
      const f = family(name, "gauge");
      f.values.set(keyOf(f, labels), { labels: { ...labels }, value });
    },
    observe(name, labels, value) {
      const f = family(name, "histogram");
      const bounds = f.buckets!;
      const k = keyOf(f, labels);
      let s = f.values.get(k);
      if (!s) f.values.set(k, (s = { labels: { ...labels }, value: 0, buckets: new Array(bounds.length).fill(0), sum: 0 }));
      s.value++;
      s.sum! += value;
      for (let i = 0; i < bounds.length; i++) if (value <= bounds[i]) s.buckets![i]++;
    },
    remove(name, labels) {
      const f = families.get(name);
      f?.values.delete(keyOf(f, labels));
    },
    get(name, labels = {}) {
      const f = families.get(name);
      return f?.values.get(keyOf(f, labels))?.value ?? 0;
    },
    sum(name, labels = {}) {
      let total = 0;
      for (const { labels: l, value } of families.get(name)?.values.values() ?? []) {
        if (Object.entries(labels).every(([k, v]) => l[k] === v)) total += value;
      }
      return total;
    },
    series(name) {
      return [...(families.get(name)?.values.values() ?? [])].map((s) => ({ labels: { ...s.labels }, value: s.value }));
    },
    render() {
      let out = "";
      for (const [name, f] of families) {
        out += `# HELP ${name} ${f.help}\n# TYPE ${name} ${f.type}\n`;
        for (const s of f.values.values()) {
          if (f.type !== "histogram") {
            out += `${name}${labelText(f, s.labels)} ${s.value}\n`;
            continue;
          }
          f.buckets!.forEach((le, i) => (out += `${name}_bucket${labelText(f, s.labels, `le="${le}"`)} ${s.buckets![i]}\n`));
          out += `${name}_bucket${labelText(f, s.labels, 'le="+Inf"')} ${s.value}\n`;
          out += `${name}_sum${labelText(f, s.labels)} ${s.sum}\n${name}_count${labelText(f, s.labels)} ${s.value}\n`;
        }
      }
      return out;
    },
  };
}
