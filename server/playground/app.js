// The playground's wiring: tabs, the single run, the compare view and the evaluation
// viewer. See server/playground.py for how the page is served.

import {getJSON} from "./api.js";
import {RunView} from "./run.js";
import * as evalview from "./evalview.js";

const $ = (id) => document.getElementById(id);
let config = {auth: false, thinking_continuation: "Wait"};

function apiKey() { return $("api-key").value.trim() || null; }

function intOrNull(input) {
  const v = input.value.trim();
  return v === "" ? null : Number(v);
}

// Request body from a set of inputs; fields left empty are not sent.
function body(question, fields) {
  const out = {messages: [{role: "user", content: question}]};
  for (const [name, value] of Object.entries(fields)) {
    // "" is a value for the continuation only (no string: suppress the end attempt)
    const empty = value === "" && name !== "thinking_continuation";
    if (value !== null && !empty && !Number.isNaN(value)) out[name] = value;
  }
  return out;
}

function markInvalid(form, param) {
  for (const input of form.querySelectorAll("[aria-invalid]")) input.removeAttribute("aria-invalid");
  if (!param) return;
  const input = form.querySelector(`[name="${param}"]`);
  if (input) { input.setAttribute("aria-invalid", "true"); input.focus(); }
}

// ------------------------------------------------------------------------- tabs
function setupTabs() {
  const tabs = [...document.querySelectorAll('[role="tab"]')];
  const select = (tab) => {
    for (const t of tabs) {
      const on = t === tab;
      t.setAttribute("aria-selected", String(on));
      t.tabIndex = on ? 0 : -1;
      $(t.getAttribute("aria-controls")).hidden = !on;
    }
    tab.focus();
  };
  tabs.forEach((tab, i) => {
    tab.addEventListener("click", () => select(tab));
    tab.addEventListener("keydown", (e) => {
      const step = e.key === "ArrowRight" ? 1 : e.key === "ArrowLeft" ? -1 : 0;
      if (step) select(tabs[(i + step + tabs.length) % tabs.length]);
    });
  });
}

// ----------------------------------------------------------------------- single
function setupSingle() {
  const form = $("single-form");
  const view = new RunView($("single-out"));
  const submit = async (e) => {
    e?.preventDefault();
    markInvalid(form, null);
    $("run").disabled = true;
    const param = await view.run(body($("question").value, {
      thinking_min: intOrNull($("tmin")), thinking_max: intOrNull($("tmax")),
      thinking_waits: intOrNull($("twaits")),
      thinking_continuation: continuation($("cont"), $("cont-none")),
      thinking_deadline_ms: intOrNull($("deadline")),
      thinking_early_stop: earlyStop($("es-every"), $("es-agree")),
      temperature: intOrNull($("temperature")), seed: intOrNull($("seed")),
      max_tokens: intOrNull($("max-tokens")),
    }), apiKey(), config.thinking_continuation);
    $("run").disabled = false;
    markInvalid(form, param);
  };
  form.addEventListener("submit", submit);
  $("question").addEventListener("keydown", (e) => {
    if (e.key === "Enter" && (e.ctrlKey || e.metaKey)) submit(e);
  });
}

// thinking_early_stop from its two fields: none without "every"; "agree" defaults to 2.
function earlyStop(every, agree) {
  const k = intOrNull(every);
  return k === null ? null : {every: k, agree: intOrNull(agree) ?? 2};
}

// The continuation field: empty means the server's default; the box sends "" (no string).
function continuation(text, none) {
  return none.checked ? "" : (text.value || null);
}

// ---------------------------------------------------------------------- compare
const PRESETS = [{thinking_max: 8}, {}, {thinking_max: 32}, {thinking_min: 24}];

function column(i, preset = {}) {
  const box = document.createElement("div");
  box.className = "column";
  box.dataset.column = String(i);
  box.innerHTML = `
    <fieldset><legend>Budget ${i + 1}</legend>
      <label>thinking_min <input name="thinking_min" type="number" min="0" step="1" placeholder="none"></label>
      <label>thinking_max <input name="thinking_max" type="number" min="0" step="1" placeholder="none"></label>
      <label>thinking_waits <input name="thinking_waits" type="number" min="0" step="1" placeholder="none"></label>
      <label>continuation <input name="thinking_continuation" type="text" placeholder="${config.thinking_continuation}"></label>
      <label><input name="no_continuation" type="checkbox"> no string</label>
    </fieldset><div class="run"></div>`;
  for (const [k, v] of Object.entries(preset)) box.querySelector(`[name="${k}"]`).value = v;
  box.view = new RunView(box.querySelector(".run"));
  return box;
}

function setupCompare() {
  const cols = $("columns");
  const add = () => {
    if (cols.children.length < 4) cols.append(column(cols.children.length, PRESETS[cols.children.length]));
    $("add-column").disabled = cols.children.length >= 4;
    $("remove-column").disabled = cols.children.length <= 2;
  };
  add(); add();
  $("add-column").addEventListener("click", add);
  $("remove-column").addEventListener("click", () => {
    if (cols.children.length > 2) cols.lastElementChild.remove();
    $("add-column").disabled = false;
    $("remove-column").disabled = cols.children.length <= 2;
  });
  $("compare-form").addEventListener("submit", async (e) => {
    e.preventDefault();
    $("compare-run").disabled = true;
    const shared = {temperature: intOrNull($("compare-temperature")),
                    seed: intOrNull($("compare-seed")),
                    max_tokens: intOrNull($("compare-max-tokens"))};
    await Promise.all([...cols.children].map(async (box) => {
      const v = (n) => box.querySelector(`[name="${n}"]`);
      markInvalid(box, null);
      const param = await box.view.run(body($("compare-question").value, {
        ...shared, thinking_min: intOrNull(v("thinking_min")),
        thinking_max: intOrNull(v("thinking_max")),
        thinking_waits: intOrNull(v("thinking_waits")),
        thinking_continuation: continuation(v("thinking_continuation"), v("no_continuation")),
      }), apiKey(), config.thinking_continuation);
      markInvalid(box, param);
    }));
    $("compare-run").disabled = false;
  });
}

// ------------------------------------------------------------------------- eval
function setupEval() {
  $("results-file").addEventListener("change", async (e) => {
    const file = e.target.files[0];
    const err = $("eval-error");
    err.hidden = true;
    if (!file) return;
    try {
      evalview.render(JSON.parse(await file.text()),
                      {summary: $("eval-summary"), chart: $("eval-chart"),
                       questions: $("eval-questions")});
    } catch (exc) {
      err.textContent = `Cannot read ${file.name}: ${exc.message}`;
      err.hidden = false;
    }
  });
}

async function main() {
  setupTabs();
  try {
    config = await getJSON("/playground/config.json");
  } catch (_) { /* keep the defaults */ }
  $("key-row").hidden = !config.auth;
  $("model-line").textContent = `model ${config.model ?? "(loading)"}, thinking format ` +
    `${config.thinking_format ?? "none"}, context ${config.max_model_len ?? "?"} tokens` +
    (config.auth ? "; this server needs an API key" : "");
  setupSingle();
  setupCompare();
  setupEval();
  document.body.dataset.ready = "true";
}

main();
