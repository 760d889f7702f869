// Draws an execution's graph as inline SVG: a layered layout, left to right, one box per task.

import { duration, stateLabel } from "./format.js";

const SVG = "http://www.w3.org/2000/svg";
const WIDTH = 170;
const HEIGHT = 50;
const GAP_X = 64;
const GAP_Y = 22;
const MARGIN = 12;

function svg(tag, attributes = {}, ...children) {
  const node = document.createElementNS(SVG, tag);
  for (const [name, value] of Object.entries(attributes)) node.setAttribute(name, value);
  node.append(...children);
  return node;
}

// Each task's layer: the length of the longest path from a root to it.
function layers(ids, graph) {
  const parents = new Map(ids.map((id) => [id, []]));
  for (const [id, successors] of Object.entries(graph)) {
    for (const next of successors) parents.get(next).push(id);
  }
  const layer = new Map();
  const depth = (id, seen = new Set()) => {
    if (layer.has(id)) return layer.get(id);
    if (seen.has(id)) return 0;  // a cycle (never in a valid template): drawn anyway
    seen.add(id);
    const value = Math.max(-1, ...parents.get(id).map((p) => depth(p, seen))) + 1;
    layer.set(id, value);
    return value;
  };
  ids.forEach((id) => depth(id));
  return { layer, parents };
}

// Positions: by layer, then within a layer by the mean position of the parents (fewer crossings).
function layout(graph) {
  const ids = [...new Set([...Object.keys(graph), ...Object.values(graph).flat()])];
  const { layer, parents } = layers(ids, graph);
  const columns = [];
  for (const id of ids) (columns[layer.get(id)] ||= []).push(id);
  const row = new Map();
  columns.forEach((column) => {
    const weight = (id) => {
      const rows = parents.get(id).map((p) => row.get(p));
      return rows.length ? rows.reduce((a, b) => a + b, 0) / rows.length : 0;
    };
    column.sort((a, b) => weight(a) - weight(b) || a.localeCompare(b));
    column.forEach((id, index) => row.set(id, index));
  });
  const tallest = Math.max(1, ...columns.map((c) => c.length));
  const position = new Map();
  columns.forEach((column, x) => {
    const offset = ((tallest - column.length) * (HEIGHT + GAP_Y)) / 2;
    column.forEach((id, y) => position.set(id, {
      x: MARGIN + x * (WIDTH + GAP_X),
      y: MARGIN + offset + y * (HEIGHT + GAP_Y),
    }));
  });
  return {
    position,
    width: MARGIN * 2 + columns.length * WIDTH + Math.max(0, columns.length - 1) * GAP_X,
    height: MARGIN * 2 + tallest * HEIGHT + (tallest - 1) * GAP_Y,
  };
}

function clip(text, size) {
  return text.length > size ? `${text.slice(0, size - 1)}…` : text;
}

export function drawDag(graph, tasks, selected, onSelect) {
  const { position, width, height } = layout(graph);
  const root = svg("svg", { class: "dag", viewBox: `0 0 ${width} ${height}`, width, height, role: "img",
    "aria-label": "the execution's tasks" });
  root.append(svg("defs", {}, svg("marker", { id: "arrow", viewBox: "0 0 10 10", refX: "9", refY: "5",
    markerWidth: "7", markerHeight: "7", orient: "auto-start-reverse" }, svg("path", { d: "M0,0 L10,5 L0,10 z", class: "arrow" }))));
  for (const [id, successors] of Object.entries(graph)) {
    const from = position.get(id);
    for (const next of successors) {
      const to = position.get(next);
      const x1 = from.x + WIDTH, y1 = from.y + HEIGHT / 2, x2 = to.x, y2 = to.y + HEIGHT / 2;
      const bend = (x2 - x1) / 2;
      root.append(svg("path", { class: "edge", d: `M${x1},${y1} C${x1 + bend},${y1} ${x2 - bend},${y2} ${x2 - 2},${y2}`,
        "marker-end": "url(#arrow)" }));
    }
  }
  for (const [id, { x, y }] of position) {
    const task = tasks.get(id);
    const state = task ? task.state : null;
    const group = svg("g", { class: `node state-${state || "none"}${id === selected ? " selected" : ""}`,
      "data-task": id, "data-state": state || "none", transform: `translate(${x},${y})`, tabindex: "0" },
      svg("title", {}, `${id}${task && task.name ? ` (${task.name})` : ""}: ${stateLabel(state)}`),
      svg("rect", { width: WIDTH, height: HEIGHT, rx: "7" }),
      svg("text", { x: "12", y: "20", class: "name" }, clip(id, 21)),
      svg("text", { x: "12", y: "38", class: "detail" },
        `${stateLabel(state)}${task && task.start ? ` · ${duration(task.start, task.end)}` : ""}`));
    group.addEventListener("click", () => onSelect(id));
    group.addEventListener("keydown", (event) => { if (event.key === "Enter") onSelect(id); });
    root.append(group);
  }
  return root;
}
