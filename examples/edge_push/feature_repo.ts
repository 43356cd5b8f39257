/**
 * An edge feature repo: webhook events about users become online features,
 * pushed and served from a Worker (or Deno Deploy, or Bun) on Upstash.
 */
import * as v from "valibot";
import { entity, featureRepo, pushSource, streamFeatureView } from "../../mod.ts";

const user = entity({ name: "user", joinKeys: ["user_id"] });

const events = pushSource({ name: "user_events", timestampField: "ts" });

const activity = streamFeatureView({
  name: "user_activity",
  entities: [user],
  source: events,
  ttl: "7d",
  watermarkDelay: "10m",
  // An event more than 10 minutes behind the newest one is dead-lettered as late (README.md says where), not written.
  dropLate: true,
  schema: v.object({
    user_id: v.string(),
    last_page: v.string(),
    cart_items: v.pipe(v.number(), v.integer(), v.minValue(0)),
    cart_value: v.number(),
    ts: v.union([v.string(), v.number()]),
  }),
});

export default featureRepo({ project: "edge_push", definitions: [user, events, activity] });
