/** The Worker entry: the push receiver and feature server for the edge_push repo. */
import { createWorker } from "../../adapters/workers.ts";
import repo from "./feature_repo.ts";

export default createWorker(repo);
