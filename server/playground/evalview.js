// The evaluation viewer: an s1-eval results.json -> the scaling curve (inline SVG,
// accuracy vs mean thinking tokens, one line per method) and the graded answers behind
// each point. Everything is read from the file; nothing is sent anywhere.

import {el} from "./dom.js";

const SVG = "http://www.w3.org/2000/svg";
const COLOURS = ["#1f6feb", "#d1242f", "#1a7f37", "#9a6700", "#8250df", "#bf3989"];

function svg(tag, attrs = {}, text = null) {
  const node = document.createElementNS(SVG, tag);
  for (const [k, v] of Object.entries(attrs)) node.setAttribute(k, v);
  if (text != null) node.textContent = text;
  return node;
}

// Points per method: one per setting row that has both numbers, with its setting name.
export function curves(report) {
  const out = new Map();
  for (const row of report.settings || []) {
    if (row.mean_thinking_tokens == null || row.accuracy == null) continue;
    if (!out.has(row.method)) out.set(row.method, []);
    out.get(row.method).push({x: row.mean_thinking_tokens, y: row.accuracy,
                              setting: row.setting, n: row.n});
  }
  const majority = report.methods && report.methods.majority;
  if (majority && majority.points) {
    out.set("majority", majority.points.map(([x, y], i) => ({x, y, setting: null,
                                                            n: (majority.rows || [])[i]?.n})));
  }
  for (const pts of out.values()) pts.sort((a, b) => a.x - b.x);
  return out;
}

export function render(report, {summary, chart, questions}) {
  if (!report || !Array.isArray(report.settings) || !Array.isArray(report.questions)) {
    throw new Error("not an s1-eval results.json (no 'settings' and 'questions' lists)");
  }
  const bench = report.benchmark || {};
  summary.replaceChildren(el("p", {},
    `${bench.name ?? "benchmark"}: ${bench.questions ?? "?"} questions, model ` +
    `${report.model ?? "?"}, ${report.settings.length} settings` +
    (report.complete === false ? " (incomplete)" : "")));
  const lines = curves(report);
  const W = 640, H = 360, L = 56, R = 16, T = 16, B = 48;
  let xmax = 1;
  for (const pts of lines.values()) for (const p of pts) xmax = Math.max(xmax, p.x);
  xmax *= 1.05;
  const X = (x) => L + (W - L - R) * x / xmax, Y = (y) => T + (H - T - B) * (1 - y / 100);
  const root = svg("svg", {viewBox: `0 0 ${W} ${H}`, role: "img", class: "scaling-chart",
                          "aria-label": "accuracy against mean thinking tokens"});
  root.append(svg("line", {x1: L, y1: Y(0), x2: W - R, y2: Y(0), class: "axis"}),
              svg("line", {x1: L, y1: T, x2: L, y2: Y(0), class: "axis"}));
  for (const y of [0, 25, 50, 75, 100]) {
    root.append(svg("line", {x1: L, y1: Y(y), x2: W - R, y2: Y(y), class: "grid"}),
                svg("text", {x: L - 6, y: Y(y) + 4, "text-anchor": "end"}, `${y}%`));
  }
  for (let i = 0; i <= 4; i++) {
    const x = xmax * i / 4;
    root.append(svg("text", {x: X(x), y: Y(0) + 18, "text-anchor": "middle"}, x.toFixed(0)));
  }
  root.append(svg("text", {x: (L + W - R) / 2, y: H - 8, "text-anchor": "middle"},
                  "mean thinking tokens"));
  const legend = el("ul", {class: "legend"});
  let m = 0;
  for (const [method, pts] of lines) {
    const colour = COLOURS[m++ % COLOURS.length];
    const label = report.methods?.[method]?.label ?? method;
    root.append(svg("polyline", {points: pts.map((p) => `${X(p.x)},${Y(p.y)}`).join(" "),
                                 fill: "none", stroke: colour, "stroke-width": 2,
                                 "stroke-dasharray": method === "majority" ? "6 4" : "none"}));
    for (const p of pts) {
      const dot = svg("circle", {cx: X(p.x), cy: Y(p.y), r: 6, fill: colour,
                                 class: "point", tabindex: "0", role: "button",
                                 "data-method": method, "data-setting": p.setting ?? "",
                                 "aria-label": `${label} ${p.setting ?? ""}: ${p.y.toFixed(1)}% ` +
                                   `at ${p.x.toFixed(1)} thinking tokens`});
      dot.append(svg("title", {}, `${p.setting ?? label}: ${p.y.toFixed(1)}% at ${p.x.toFixed(1)}`));
      const open = () => showQuestions(report, method, p, questions);
      dot.addEventListener("click", open);
      dot.addEventListener("keydown", (e) => {
        if (e.key === "Enter" || e.key === " ") { e.preventDefault(); open(); }
      });
      root.append(dot);
    }
    legend.append(el("li", {style: `--c:${colour}`}, label));
  }
  chart.replaceChildren(root, legend);
  questions.replaceChildren(el("p", {class: "muted"}, "Select a point to see its answers."));
}

function showQuestions(report, method, point, target) {
  const rows = report.questions.filter((q) => q.setting === point.setting);
  const head = el("h3", {}, point.setting ? `${point.setting}: ${point.y.toFixed(1)}% at ` +
                  `${point.x.toFixed(1)} mean thinking tokens` : `${method}: per-question ` +
                  "answers are not kept for majority voting");
  const table = el("table", {class: "questions"});
  table.append(el("tr", {}, ...["question", "gold", "extracted", "correct", "thinking tokens",
                                "Waits realised", "cut", "finish"].map((h) => el("th", {scope: "col"}, h))));
  for (const q of rows) {
    const mark = q.correct === true ? "\u2713" : q.correct === false ? "\u2717" : "?";
    table.append(el("tr", {class: q.correct ? "ok" : "bad"},
      el("td", {}, q.question_id), el("td", {}, String(q.gold)), el("td", {}, q.extracted ?? "-"),
      el("td", {}, mark), el("td", {}, String(q.thinking_tokens)),
      el("td", {}, q.waits_realised ?? "?"), el("td", {}, q.forced_cut ? "yes" : "no"),
      el("td", {}, q.finish_reason ?? "-")));
  }
  target.replaceChildren(head, table);
  head.setAttribute("tabindex", "-1");
  head.focus();
}
