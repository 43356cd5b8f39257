/**
 * @module
 * Freshet: streaming feature ingestion for the edge. This entry re-exports the
 * core; plugins and adapters have entry points of their own
 * (`freshet/stores/redis`, `freshet/sources/kafka`, ...).
 *
 * @example
 * ```ts
 * import { entity, pushSource, streamFeatureView, featureRepo } from "freshet"
 * ```
 */
export * from "./core/index.ts";
