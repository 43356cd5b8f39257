/** The same receiver on Deno (Deno Deploy): `deno run -A examples/edge_push/deno.ts`. */
import process from "node:process";
import { createWorker } from "../../adapters/workers.ts";
import repo from "./feature_repo.ts";

const worker = createWorker(repo);
declare const Deno: { serve(opts: { port: number }, h: (r: Request) => Promise<Response>): unknown };
Deno.serve({ port: Number(process.env.PORT ?? 8080) }, (req) => worker.fetch(req, process.env));
