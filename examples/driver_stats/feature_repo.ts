/**
 * The driver_stats feature repo: Feast's quick-start example as a Freshet
 * repo. One entity, one push source with a batch source for backfills, and one
 * stream feature view with a schema, a ttl, a UDF and a watermark.
 */
import * as v from "valibot";
import { entity, featureRepo, fileSource, pushSource, streamFeatureView } from "../../mod.ts";

export const driver = entity({ name: "driver", joinKeys: ["driver_id"], description: "A driver, by id" });

export const driverStatsHistory = fileSource({
  name: "driver_stats_history",
  path: new URL("./data/driver_stats.jsonl", import.meta.url).pathname,
  timestampField: "event_timestamp",
  createdTimestampColumn: "created",
});

export const driverStatsPush = pushSource({
  name: "driver_stats_push_source",
  batchSource: driverStatsHistory,
  timestampField: "event_timestamp",
  createdTimestampColumn: "created",
  description: "Driver stats pushed by the trips service",
});

export const driverHourlyStats = streamFeatureView({
  name: "driver_hourly_stats",
  entities: [driver],
  source: driverStatsPush,
  ttl: "1d",
  watermarkDelay: "1h",
  schema: v.object({
    driver_id: v.pipe(v.number(), v.integer()),
    conv_rate: v.pipe(v.number(), v.minValue(0), v.maxValue(1)),
    acc_rate: v.pipe(v.number(), v.minValue(0), v.maxValue(1)),
    avg_daily_trips: v.pipe(v.number(), v.integer(), v.minValue(0)),
  }),
  // A UDF sees the validated rows of a batch and returns rows: here it adds a derived feature.
  udf: function addReliability(rows) {
    return rows.map((r) => ({ ...r, reliability: Math.round((Number(r.conv_rate) * Number(r.acc_rate)) * 1000) / 1000 }));
  },
  features: ["conv_rate", "acc_rate", "avg_daily_trips", "reliability"],
  online: true,
  offline: true,
  owner: "ml-platform@example.com",
  tags: { team: "driver_performance" },
});

export default featureRepo({
  project: "driver_stats",
  definitions: [driver, driverStatsPush, driverHourlyStats],
});
