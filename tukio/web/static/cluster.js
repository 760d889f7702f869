// The cluster page: the nodes sharing the store, their leases and the executions each owns.

import { call } from "./api.js";
import { el, time } from "./format.js";
import { poll } from "./poll.js";

export function showCluster(page) {
  const body = el("tbody");
  const empty = el("p", { class: "muted empty", hidden: true }, "No node: this store is used by one engine at a time.");
  page.append(el("h1", {}, "Cluster"),
    el("table", { class: "nodes" },
      el("thead", {}, el("tr", {}, ["Node", "State", "Epoch", "Lease expires", "Executions owned"].map((h) => el("th", {}, h)))),
      body),
    empty);
  return poll(async () => {
    const { nodes } = await call("/api/nodes");
    body.replaceChildren(...nodes.map((node) => el("tr", { "data-node": node.name },
      el("td", { class: "mono" }, node.name),
      el("td", {}, el("span", { class: `badge ${node.alive ? "state-finished" : "state-cancelled"}` }, node.alive ? "alive" : "dead")),
      el("td", { class: "num" }, node.epoch ?? "–"),
      el("td", {}, time(node.lease_expires)),
      el("td", { class: "num" }, el("a", { href: `/?node=${encodeURIComponent(node.name)}&state=pending` }, node.owned)))));
    empty.hidden = nodes.length > 0;
  }, 2000);
}
