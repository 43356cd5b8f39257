/** The Worker of the hostile-request battery: the hostile repo served by createWorker, configured from env bindings. */
import { createWorker } from "../../adapters/workers.ts";
import repo from "../http/hostile-repo.ts";

export default createWorker(repo);
