import { memoryStore } from "../../plugins/stores/memory.ts";
import { testOnlineStore } from "../conformance/online-store.ts";

testOnlineStore("memory", async () => {
  let offset = 0;
  const store = memoryStore({ now: () => Date.now() + offset });
  return { store, advance: async (ms) => void (offset += ms) };
});
