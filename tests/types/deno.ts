// Checked by `deno check` (npm run typecheck), never run: the real `Deno`
// global must fit the shim adapters/deno.ts declares, so that the adapter calls
// Deno.serve and Deno.addSignalListener the way Deno types them.
import type { DenoServeApi } from "../../adapters/deno.ts";

export const deno: DenoServeApi = Deno;
