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

const pad = (n) => String(n).padStart(2, "0");

// A time as "2026-01-31 23:59:58", in the browser's time zone.
export function time(iso) {
  if (!iso) return "–";
  const d = new Date(iso);
  return `${d.getFullYear()}-${pad(d.getMonth() + 1)}-${pad(d.getDate())} ${pad(d.getHours())}:${pad(d.getMinutes())}:${pad(d.getSeconds())}`;
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
  const shown = el("span", { class: `badge state-${state || "none"}`, "data-state": state || "none" }, label);
  if (!failed || state === "exception" || state === "timeout") return shown;
  return el("span", { class: "badges" }, shown, el("span", { class: "badge failed", title: "a task failed or timed out" }, "task failed"));
}

export function setStatus(text, error = false) {
  const status = document.getElementById("status");
  status.textContent = text;
  status.classList.toggle("error", error);
}
