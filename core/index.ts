/**
 * @module
 * Freshet's core: definitions, registry, processor, consume loop, materialize,
 * errors and the contracts that plugins implement.
 */
export * from "./aggregations.ts";
export * from "./contracts.ts";
export * from "./definitions.ts";
export * from "./entity-key.ts";
export * from "./errors.ts";
export * from "./metrics.ts";
export * from "./online.ts";
export * from "./local.ts";
export * from "./processor.ts";
export * from "./consume.ts";
export * from "./outage.ts";
export * from "./replay.ts";
export * from "./materialize.ts";
export * from "./historical.ts";
export * from "./historical-aggregates.ts";
export * from "./registry.ts";
export * from "./time.ts";
