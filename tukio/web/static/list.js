// The executions page: filters (kept in the URL), a table refreshed every second, more pages on demand.

import { call } from "./api.js";
import { badge, duration, el, time } from "./format.js";
import { poll } from "./poll.js";

const STATES = ["pending", "finished", "exception", "cancelled", "timeout"];
const FILTERS = ["state", "failed", "template", "node"];

function filterForm(query, apply) {
  const state = el("select", { name: "state", "aria-label": "state" }, el("option", { value: "" }, "any state"),
    STATES.map((s) => el("option", { value: s, selected: query.get("state") === s }, s === "pending" ? "running" : s)));
  const failed = el("select", { name: "failed", "aria-label": "failed tasks" }, el("option", { value: "" }, "any outcome"),
    el("option", { value: "true", selected: query.get("failed") === "true" }, "with failed tasks"),
    el("option", { value: "false", selected: query.get("failed") === "false" }, "without failed tasks"));
  const template = el("input", { name: "template", placeholder: "template", value: query.get("template") || "" });
  const node = el("input", { name: "node", placeholder: "node", value: query.get("node") || "" });
  const form = el("form", { class: "filters" }, state, failed, template, node, el("button", { type: "submit" }, "Filter"));
  form.addEventListener("change", () => form.requestSubmit());
  form.addEventListener("submit", (event) => {
    event.preventDefault();
    const next = new URLSearchParams();
    for (const name of FILTERS) {
      const value = form.elements[name].value.trim();
      if (value) next.set(name, value);
    }
    apply(next);
  });
  return form;
}

function row(item) {
  return el("tr", { "data-id": item.id },
    el("td", { class: "mono" }, el("a", { href: `/executions/${encodeURIComponent(item.id)}` }, item.id)),
    el("td", {}, item.template || "–", item.version ? el("span", { class: "muted" }, ` @${item.version.slice(0, 8)}`) : null),
    el("td", {}, badge(item.state, item.failed)),
    el("td", {}, item.node || "–"),
    el("td", {}, time(item.start)),
    el("td", { class: "num" }, duration(item.start, item.end)),
    el("td", { class: "error-text", title: item.error || "" }, item.error ? item.error.split("\n")[0] : ""));
}

export function showList(page) {
  let query = new URLSearchParams(location.search);
  let extra = [];  // rows of the pages loaded with "more"
  let next = null;
  const body = el("tbody");
  const more = el("button", { type: "button", class: "more", hidden: true }, "More");
  const table = el("table", { class: "executions" },
    el("thead", {}, el("tr", {}, ["Execution", "Template", "State", "Node", "Started", "Duration", "Error"].map((h) => el("th", {}, h)))),
    body);
  const empty = el("p", { class: "muted empty", hidden: true }, "No execution matches.");
  page.append(el("h1", {}, "Executions"), filterForm(query, (chosen) => {
    query = chosen;
    extra = [];
    history.replaceState(null, "", chosen.toString() ? `/?${chosen}` : "/");
    refresh();
  }), table, empty, more);

  async function load(after) {
    const params = new URLSearchParams(query);
    params.set("limit", "50");
    if (after) params.set("after", after);
    return call(`/api/executions?${params}`);
  }
  async function refresh() {
    const first = await load(null);
    if (!extra.length) next = first.next;
    body.replaceChildren(...first.items.map(row), ...extra.map(row));
    empty.hidden = body.children.length > 0;
    more.hidden = !next;
  }
  more.addEventListener("click", async () => {
    const page = await load(next);
    extra = extra.concat(page.items);
    next = page.next;
    body.append(...page.items.map(row));
    more.hidden = !next;
  });
  return poll(refresh, 1000);
}
