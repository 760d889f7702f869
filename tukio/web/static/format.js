// Small helpers shared by the pages: elements, times, durations, states.

export function el(tag, attributes = {}, ...children) {
  const node = document.createElement(tag);
  for (const [name, value] of Object.entries(attributes)) {
    if (value === undefined || value === null || value === false) continue;
    if (name.startsWith("on")) node.addEventListener(name.slice(2), value);
    else node.setAttribute(name, value === true ? "" : value);
  }
  for (const child of children.flat()) {
    if (child !== undefined && child !== null) node.append(child instanceof Node ? child : String(child));
  }
  return node;
}

export function time(iso) {
  if (!iso) return "–";
  const date = new Date(iso);
  return date.toLocaleString(undefined, { hour12: false });
}

export function duration(start, end) {
  if (!start) return "";
  const ms = (end ? new Date(end) : new Date()) - new Date(start);
  if (ms < 1000) return `${Math.max(ms, 0)} ms`;
  if (ms < 60000) return `${(ms / 1000).toFixed(1)} s`;
  const minutes = Math.floor(ms / 60000);
  return minutes < 60 ? `${minutes} min ${Math.round((ms % 60000) / 1000)} s` : `${(minutes / 60).toFixed(1)} h`;
}

// A task or execution state as shown: 'pending' while it runs, 'not started' without one.
export function stateLabel(state) {
  if (!state) return "not started";
  return state === "pending" ? "running" : state;
}

export function badge(state, failed = false) {
  const label = stateLabel(state);
  return el("span", { class: `badge state-${state || "none"}`, "data-state": state || "none" }, label,
    failed && state === "finished" ? el("span", { class: "failed-mark", title: "a task failed" }, " !") : null);
}

export function setStatus(text, error = false) {
  const status = document.getElementById("status");
  status.textContent = text;
  status.classList.toggle("error", error);
}
