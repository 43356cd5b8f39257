/**
 * The feature repo of the streaming benchmarks (P1, P2, P5, P8 on Kafka and
 * P9 on Kinesis): one entity (`user_id`) and one stream feature view over
 * the given source, with everything P1 names: a valibot schema, a UDF (adds
 * `f_sum`, the sum of the 10 features), a watermark (1 h) and a ttl (1 d).
 * Dedupe (newest row per entity in a batch) is always on in the processor.
 *
 * Events are JSON objects `{ user_id, f0..f9, event_timestamp }` (about 130
 * bytes), built by {@link benchEvent}.
 */
import * as v from "valibot";
import { entity, featureRepo, streamFeatureView, type Row, type StreamSourceDef } from "../mod.ts";
import { FEATURES } from "./feature_repo.ts";

export { FEATURES };

/** The view's name in every stream bench. */
export const STREAM_VIEW = "bench_stream_stats";

type Features = Record<"f0" | "f1" | "f2" | "f3" | "f4" | "f5" | "f6" | "f7" | "f8" | "f9", number>;

/** The UDF: one derived feature per row. */
export function addSum(rows: Row[]): Row[] {
  for (const row of rows) {
    const r = row as Row & Features;
    r.f_sum = r.f0 + r.f1 + r.f2 + r.f3 + r.f4 + r.f5 + r.f6 + r.f7 + r.f8 + r.f9;
  }
  return rows;
}

/** A repo whose one view reads `source`. */
export function streamRepo(source: StreamSourceDef) {
  const user = entity({ name: "user", joinKeys: ["user_id"] });
  const view = streamFeatureView({
    name: STREAM_VIEW,
    entities: [user],
    source,
    ttl: "1d",
    watermarkDelay: "1h",
    schema: v.object({
      user_id: v.pipe(v.number(), v.integer()),
      ...Object.fromEntries(FEATURES.map((f) => [f, v.number()])),
      event_timestamp: v.number(),
    }),
    udf: addSum,
    features: [...FEATURES, "f_sum"],
  });
  return { view, registry: featureRepo({ project: "bench", definitions: [source, user, view] }) };
}

/** One event as JSON: entity `user`, event time `ts` (epoch ms), features derived from `seq`. */
export function benchEvent(seq: number, user: number, ts: number): string {
  let s = `{"user_id":${user}`;
  for (let j = 0; j < FEATURES.length; j++) s += `,"${FEATURES[j]}":${(seq + j) % 1000}`;
  return s + `,"event_timestamp":${ts}}`;
}
