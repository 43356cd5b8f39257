// Checked by tsconfig.bun.json against bun-types, never run: the real `Bun`
// global must fit the shim adapters/bun.ts declares, so that the adapter calls
// Bun.serve the way Bun types it.
import type { BunServeApi } from "../../adapters/bun.ts";

export const bun: BunServeApi = Bun;
