import { startRedis } from "/work/main/tests/services/redis.ts";
const t0 = Date.now();
const r = await startRedis();
console.log("started", r.url, Date.now() - t0, "ms");
await r.kill(); console.log("killed");
await r.restart(); console.log("restarted", Date.now() - t0);
await r.stop(); console.log("stopped", Date.now() - t0);
