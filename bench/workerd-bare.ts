/**
 * The P3 baseline on workerd (bench/workerd.ts): a bare Hono Worker answering
 * 200. Unlike bench/bare-hono.ts it drains the body (without parsing it):
 * workerd closes a keep-alive connection whose request body was left unread,
 * and wrk then counts every request as a read error.
 */
import { Hono } from "hono";

const app = new Hono();
app.all("*", async (c) => {
  await c.req.arrayBuffer();
  return c.json({ status: "ok" });
});
export default app;
