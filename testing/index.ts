/**
 * @module
 * The conformance suites Freshet's own plugins pass, for third-party plugins
 * to prove the same contracts: online stores with their metadata
 * (idempotency keys, checkpoints, fenced leases, watermarks), aggregating
 * stores, and stream sources. They are `node:test` suites, so they run
 * under Node, Bun and Deno.
 *
 * @example
 * ```ts
 * import { testOnlineStore } from "freshet/testing"
 * testOnlineStore("my-store", async () => ({ store: myStore() }))
 * ```
 */
export { conformanceRepo, type StoreUnderTest, testOnlineStore } from "./online-store.ts";
export { aggregationRepo, type AggregatingStoreUnderTest, testAggregatingStore } from "./aggregating-store.ts";
export { type SourceUnderTest, testStreamSource } from "./source.ts";
