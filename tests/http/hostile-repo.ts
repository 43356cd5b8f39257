/**
 * The feature repo of the hostile-request battery (tests/http/hostile.test.ts,
 * tests/workers/hostile-edge.test.ts): a narrow view pushed by `events`, and a
 * wide one with 250 features, to reach the per-read caps. Online only, so that
 * the same repo runs in a Worker.
 */
import * as v from "valibot";
import { entity, featureRepo, pushSource, streamFeatureView } from "../../mod.ts";

const user = entity({ name: "user", joinKeys: ["user_id"] });
const events = pushSource({ name: "events", timestampField: "ts" });
const wideEvents = pushSource({ name: "wide_events", timestampField: "ts" });

/** Feature names of the wide view: f0 ... f249. */
export const WIDE_FEATURES = Array.from({ length: 250 }, (_, i) => `f${i}`);

const activity = streamFeatureView({
  name: "activity",
  entities: [user],
  source: events,
  ttl: "7d",
  schema: v.object({ user_id: v.union([v.string(), v.number()]), clicks: v.pipe(v.number(), v.integer(), v.minValue(0)), page: v.string(), ts: v.number() }),
});

const wide = streamFeatureView({
  name: "wide",
  entities: [user],
  source: wideEvents,
  ttl: "7d",
  schema: v.object({ user_id: v.union([v.string(), v.number()]), ts: v.number(), ...Object.fromEntries(WIDE_FEATURES.map((f) => [f, v.optional(v.number())])) }),
});

export default featureRepo({ project: "hostile", definitions: [user, events, wideEvents, activity, wide] });
