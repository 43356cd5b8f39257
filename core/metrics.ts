/**
 * @module
 * Counters and gauges, rendered as Prometheus text for `GET /metrics`.
 */

type Labels = Record<string, string>;

interface Series {
  help: string;
  type: "counter" | "gauge";
  values: Map<string, { labels: Labels; value: number }>;
}

/** A small metrics registry. */
export interface Metrics {
  inc(name: string, labels?: Labels, by?: number): void;
  set(name: string, labels: Labels, value: number): void;
  /** Removes one series of a gauge (a partition no longer held). */
  remove(name: string, labels: Labels): void;
  get(name: string, labels?: Labels): number;
  /** Sum of a counter over all label sets that include `labels`. */
  sum(name: string, labels?: Labels): number;
  render(): string;
}

const HELP: Record<string, [string, "counter" | "gauge"]> = {
  freshet_records_total: ["Records by source, view and outcome (written, stale, expired, late, invalid, duplicate).", "counter"],
  freshet_late_arrivals_total: ["Records behind the watermark that were kept (latest-wins views); each is also counted under its outcome.", "counter"],
  freshet_batches_total: ["Batches processed by source and result.", "counter"],
  freshet_store_errors_total: ["Store failures by store.", "counter"],
  freshet_http_requests_total: ["HTTP requests by route and status.", "counter"],
  freshet_source_lag: ["Source lag per partition or shard (records for Kafka, ms for Kinesis).", "gauge"],
  freshet_source_partitions: ["Partitions or shards this process holds; while 0, its lag is unknown (not 0).", "gauge"],
  freshet_source_events_per_second: ["Source throughput over the last interval.", "gauge"],
  freshet_materialized_rows_total: ["Rows written by materialize.", "counter"],
  freshet_dead_letters_dropped_total: ["Dead letters deleted by the dead-letter sink's retention (rotated files beyond the number kept).", "counter"],
  freshet_dead_letter_files_dropped_total: ["Rotated dead-letter files deleted by the retention.", "counter"],
};

/**
 * Creates a metrics registry.
 *
 * @example
 * ```ts
 * const m = createMetrics(); m.inc("freshet_records_total", { view: "v", outcome: "written" }); m.render()
 * ```
 */
export function createMetrics(): Metrics {
  const series = new Map<string, Series>();
  // On the hot path (every batch): a plain concatenation in the caller's key order, no sort, no JSON.
  const keyOf = (labels: Labels) => {
    let key = "";
    for (const k in labels) key += k + "\u0000" + labels[k] + "\u0001";
    return key;
  };
  const get = (name: string, type: "counter" | "gauge") => {
    let s = series.get(name);
    if (!s) {
      s = { help: HELP[name]?.[0] ?? name, type: HELP[name]?.[1] ?? type, values: new Map() };
      series.set(name, s);
    }
    return s;
  };
  return {
    inc(name, labels = {}, by = 1) {
      if (by === 0) return;
      const s = get(name, "counter");
      const k = keyOf(labels);
      const cur = s.values.get(k);
      if (cur) cur.value += by;
      else s.values.set(k, { labels, value: by });
    },
    set(name, labels, value) {
      get(name, "gauge").values.set(keyOf(labels), { labels, value });
    },
    remove(name, labels) {
      series.get(name)?.values.delete(keyOf(labels));
    },
    get(name, labels = {}) {
      return series.get(name)?.values.get(keyOf(labels))?.value ?? 0;
    },
    sum(name, labels = {}) {
      let total = 0;
      for (const { labels: l, value } of series.get(name)?.values.values() ?? []) {
        if (Object.entries(labels).every(([k, v]) => l[k] === v)) total += value;
      }
      return total;
    },
    render() {
      let out = "";
      for (const [name, s] of series) {
        out += `# HELP ${name} ${s.help}\n# TYPE ${name} ${s.type}\n`;
        for (const { labels, value } of s.values.values()) {
          const l = Object.entries(labels).map(([k, v]) => `${k}="${String(v).replace(/["\\\n]/g, (c) => (c === "\n" ? "\\n" : "\\" + c))}"`).join(",");
          out += `${name}${l ? `{${l}}` : ""} ${value}\n`;
        }
      }
      return out;
    },
  };
}
