/**
 * The feature repo of the benchmarks: one entity (`user_id`), one push
 * source, and one stream feature view of 10 numeric features with a schema,
 * a ttl and a watermark (no UDF: P1 measures that). P3/P4 push into it, P6
 * reads its 10 features for one entity, P7 writes batches through it.
 */
import * as v from "valibot";
import { entity, featureRepo, pushSource, streamFeatureView } from "../mod.ts";

/** The 10 feature names, f0..f9. */
export const FEATURES = Array.from({ length: 10 }, (_, i) => `f${i}`);

export const user = entity({ name: "user", joinKeys: ["user_id"] });

export const benchPush = pushSource({ name: "bench_push", timestampField: "event_timestamp" });

const statsOptions = {
  name: "bench_stats",
  entities: [user],
  source: benchPush,
  ttl: "1d",
  watermarkDelay: "1h",
  schema: v.object({
    user_id: v.pipe(v.number(), v.integer()),
    ...Object.fromEntries(FEATURES.map((f) => [f, v.number()])),
    event_timestamp: v.union([v.string(), v.number()]),
  }),
  features: FEATURES,
  online: true,
};

// P7 writes online and offline (a file); HTTP pushes say to: "online".
export const benchStats = streamFeatureView({ ...statsOptions, offline: true });

/** The same repo for a Worker (bench/workerd.ts), which has no offline store. */
export const workerRepo = featureRepo({ project: "bench", definitions: [user, benchPush, streamFeatureView({ ...statsOptions, offline: false })] });

export default featureRepo({ project: "bench", definitions: [user, benchPush, benchStats] });
