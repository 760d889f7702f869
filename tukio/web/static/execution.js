// One execution: its graph with each task's state, the selected task's details, cancel and retry.

import { call, confirmAction } from "./api.js";
import { drawDag } from "./dag.js";
import { badge, duration, el, setStatus, stateLabel, time } from "./format.js";
import { go } from "./nav.js";
import { poll } from "./poll.js";

function json(value) {
  return el("pre", { class: "json" }, value === undefined ? "–" : JSON.stringify(value, null, 2));
}

function field(label, ...value) {
  return [el("dt", {}, label), el("dd", {}, ...value)];
}

async function act(text, path, body) {
  if (!(await confirmAction(text))) return null;
  try {
    return await call(path, { method: "POST", body });
  } catch (error) {
    setStatus(`error: ${error.message}`, true);
    return null;
  }
}

export function showExecution(page, execId) {
  const base = `/api/executions/${encodeURIComponent(execId)}`;
  let selected = null;
  let detail = null;
  const head = el("div", { class: "exec-head" });
  const graph = el("div", { class: "graph" });
  const panel = el("section", { class: "task-panel" });
  page.append(el("p", { class: "crumbs" }, el("a", { href: "/" }, "Executions"), " / ", el("span", { class: "mono" }, execId)),
    head, graph, panel);

  async function cancel() {
    const done = await act(`Cancel execution ${execId}? Its running tasks are cancelled.`, `${base}/cancel`);
    if (done) refresh();
  }
  async function resume() {
    const done = await act(`Resume execution ${execId}? Its failed, timed-out or cancelled tasks run again, under the same id.`,
      `${base}/resume`);
    if (done) refresh();
  }
  async function retry(fromTask) {
    const text = fromTask
      ? `Retry from task ${fromTask}? A new execution reuses the outputs upstream of it and runs it and everything downstream again.`
      : `Retry execution ${execId}? A new execution runs it from the start.`;
    const done = await act(text, `${base}/retry`, fromTask ? { from_task: fromTask } : {});
    if (done) go(`/executions/${encodeURIComponent(done.id)}`);
  }

  function render() {
    const running = detail.state === "pending";
    const resumable = !running && (detail.failed || detail.state !== "finished");
    head.replaceChildren(
      el("h1", {}, detail.template || "execution", " ", badge(detail.state, detail.failed)),
      el("dl", { class: "facts" },
        field("Id", el("span", { class: "mono" }, detail.id)),
        field("Version", detail.version || "–"),
        field("Node", detail.node || "–"),
        field("Started", time(detail.start)),
        field("Duration", duration(detail.start, detail.end) || "–"),
        detail.error ? field("Error", el("span", { class: "error-text" }, detail.error.split("\n")[0])) : []),
      el("div", { class: "actions" },
        running ? el("button", { type: "button", class: "danger", id: "cancel", onclick: cancel }, "Cancel") : null,
        resumable ? el("button", { type: "button", id: "resume", onclick: resume }, "Resume") : null,
        el("button", { type: "button", id: "retry", onclick: () => retry(null) }, "Retry")));
    const tasks = new Map(detail.tasks.map((task) => [task.id, task]));
    graph.replaceChildren(drawDag(detail.graph, tasks, selected, (id) => {
      selected = id;
      render();
    }));
    const task = tasks.get(selected);
    if (!selected) {
      panel.replaceChildren(el("p", { class: "muted" }, "Select a task to see its inputs, outputs and error."));
      return;
    }
    panel.replaceChildren(
      el("h2", {}, `Task ${selected}`, " ", badge(task ? task.state : null)),
      el("dl", { class: "facts" },
        field("Name", (task && task.name) || "–"),
        field("Node", (task && task.node) || "–"),
        field("Started", time(task && task.start)),
        field("Duration", (task && duration(task.start, task.end)) || "–"),
        field("Attempts", task ? String(task.attempts) : "–")),
      el("div", { class: "actions" },
        el("button", { type: "button", id: "retry-from", onclick: () => retry(selected) }, `Retry from ${selected}`)),
      el("div", { class: "columns" },
        el("div", {}, el("h3", {}, "Inputs"), json(task ? task.inputs : undefined)),
        el("div", {}, el("h3", {}, "Outputs"), json(task ? task.outputs : undefined))),
      task && task.error ? [el("h3", {}, "Error"), el("pre", { class: "traceback" }, task.error)] : [],
      task && task.events && task.events.length ? [el("h3", {}, `Events received (${task.events.length})`), json(task.events)] : []);
    document.title = `tukio · ${detail.template || execId} · ${stateLabel(detail.state)}`;
  }

  async function refresh() {
    try {
      detail = await call(base);
    } catch (error) {
      if (error.status === 404) {
        head.replaceChildren(el("h1", {}, "Unknown execution"), el("p", { class: "muted" }, error.message));
        return false;
      }
      throw error;
    }
    render();
    return true;  // keep polling: it may be cancelled, resumed or taken over from elsewhere
  }
  return poll(refresh, 1000);
}
