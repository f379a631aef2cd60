// One streamed run rendered in a container: thinking (live), answer, counters, and at the
// end the server's budget object, with each forced continuation highlighted at the
// character offset the server reports and the forced cut marked.

import {APIError, streamChat} from "./api.js";
import {el} from "./dom.js";

export class RunView {
  constructor(container, title = null) {
    this.root = container;
    this.root.replaceChildren();
    if (title) this.root.append(el("h3", {}, title));
    this.error = el("div", {class: "error", role: "alert", hidden: ""});
    this.counters = el("p", {class: "counters", "aria-live": "polite"});
    this.thinking = el("pre", {class: "thinking", "aria-label": "thinking"});
    this.answer = el("pre", {class: "answer", "aria-label": "answer"});
    this.details = el("div", {class: "details"});
    this.root.append(this.error, this.counters,
                     el("h4", {}, "Thinking"), this.thinking,
                     el("h4", {}, "Answer"), this.answer, this.details);
    this.reset();
  }

  reset() {
    this.reasoning = "";
    this.content = "";
    this.live = {thinking: 0, answer: 0, forced: 0};
    this.budget = null;
    this.usage = null;
    this.root.dataset.state = "idle";
    this.error.hidden = true;
    this.thinking.textContent = "";
    this.answer.textContent = "";
    this.details.replaceChildren();
    this.renderCounters();
  }

  renderCounters() {
    const b = this.budget;
    const c = b ? {thinking: b.thinking_tokens, answer: b.answer_tokens,
                   forced: b.continuation_count} : this.live;
    this.counters.replaceChildren(
      el("span", {class: "counter", "data-counter": "thinking"}, `thinking tokens ${c.thinking}`),
      el("span", {class: "counter", "data-counter": "answer"}, `answer tokens ${c.answer}`),
      el("span", {class: "counter", "data-counter": "forced"}, `forced continuations ${c.forced ?? "unknown"}`),
      el("span", {class: "muted"}, b ? "exact (replayed by the server)" :
         this.root.dataset.state === "streaming" ? "live (one chunk ~ one token)" : ""));
  }

  showError(err) {
    this.root.dataset.state = "error";
    const param = err instanceof APIError && err.param ? err.param : null;
    this.error.replaceChildren(
      el("strong", {}, err instanceof APIError ? `Error ${err.status}: ` : "Error: "),
      el("span", {class: "error-message"}, err.message),
      ...(param ? [el("span", {class: "error-param"}, ` (field: ${param})`)] : []));
    this.error.hidden = false;
    return param;
  }

  onChunk(choice, body, contText) {
    const d = choice.delta || {};
    if (d.reasoning) {
      // A live guess: a chunk that starts the continuation while thinking is still below
      // thinking_min, or fewer than thinking_waits were seen, is (almost surely) forced;
      // the exact positions come at the end.
      const min = body.thinking_min, waits = body.thinking_waits;
      const guarded = (min != null && this.live.thinking < min) ||
        (waits != null && this.live.forced < waits);
      if (guarded && contText &&
          d.reasoning.trimStart() && contText.startsWith(d.reasoning.trimStart())) {
        this.live.forced += 1;
      }
      this.reasoning += d.reasoning;
      this.live.thinking += 1;
      this.thinking.append(document.createTextNode(d.reasoning));
    }
    if (d.content) {
      this.content += d.content;
      this.live.answer += 1;
      this.answer.textContent = this.content;
    }
    if (choice.budget) this.budget = choice.budget;
    this.renderCounters();
  }

  async run(body, key, defaultContinuation) {
    this.reset();
    this.root.dataset.state = "streaming";
    const contText = body.thinking_continuation ?? defaultContinuation;  // "": no string
    try {
      await streamChat(body, key, {
        onChunk: (c) => this.onChunk(c, body, contText),
        onUsage: (u) => { this.usage = u; },
      });
    } catch (err) {
      return this.showError(err);
    }
    this.finish();
    return null;
  }

  finish() {
    this.renderThinking();
    this.renderCounters();
    this.renderDetails();
    this.root.dataset.state = "done";
  }

  // The reasoning text with <mark>s at the forced continuations and a cut marker.
  renderThinking() {
    const b = this.budget, text = this.reasoning;
    if (!b) return;
    const marks = b.continuations.map((m, i) => ({...m, kind: "cont", i}));
    if (b.cut) marks.push({...b.cut, kind: "cut"});
    marks.sort((a, z) => a.char - z.char || (a.kind === "cut") - (z.kind === "cut"));
    const cont = b.thinking_continuation || "";
    const parts = [];
    let at = 0;
    for (const m of marks) {
      if (m.char > at) parts.push(document.createTextNode(text.slice(at, m.char)));
      at = Math.max(at, m.char);
      if (m.kind === "cont") {
        // the continuation string as the model's tokenizer wrote it (may carry a space)
        const len = text.slice(m.char).startsWith(cont) ? cont.length : 0;
        parts.push(el("mark", {class: "forced-continuation", "data-char": m.char,
                               "data-token": m.token,
                               title: `forced continuation after ${m.token} thinking tokens`},
                      text.slice(m.char, m.char + len) || "\u2063"));
        at = m.char + len;
      } else {
        parts.push(el("span", {class: "cut-marker", "data-char": m.char, "data-token": m.token,
                               role: "note"},
                      ` \u2702 thinking cut at ${m.token} tokens (` +
                      (b.end === "deadline" ? `deadline, ${b.deadline} ms` :
                       b.end === "settled" ? `settled: the answer ` +
                       `"${b.probes.filter((p) => p.answer != null).at(-1)?.answer}" ` +
                       `${b.early_stop.agree} probes in a row` : "thinking_max") +
                      ") "));
      }
    }
    if (at < text.length) parts.push(document.createTextNode(text.slice(at)));
    this.thinking.replaceChildren(...parts);
  }

  renderDetails() {
    const b = this.budget, u = this.usage;
    const rows = [];
    if (b) {
      rows.push(["limits", `thinking_min ${b.thinking_min ?? "none"}, thinking_max ` +
                 `${b.thinking_max ?? "none"}, thinking_waits ${b.thinking_waits ?? "none"}` +
                 (b.thinking_continuation ? `, continuation "${b.thinking_continuation}"` :
                  b.thinking_continuation === "" ? ", no continuation (suppress only)" : "") +
                 (b.deadline != null ? `, deadline ${b.deadline} ms` : "") +
                 (b.early_stop ? `, early stop every ${b.early_stop.every} agree ` +
                  `${b.early_stop.agree}` : "")]);
      rows.push(["thinking ended", b.end + (b.natural_end ? " (the model ended it)" : "")]);
      rows.push(["forced continuations", b.continuations.length ? b.continuations.map(
        (m) => `token ${m.token} / char ${m.char}`).join("; ") : "none"]);
      rows.push(["cut", b.cut ? `at token ${b.cut.token} / char ${b.cut.char}` : "no"]);
      if (b.probes) {
        rows.push(["answer probes", b.probes.length ? b.probes.map(
          (p) => `token ${p.token}: ${p.answer == null ? "(aborted)" : `"${p.answer}"`}`)
          .join("; ") : "none"]);
      }
    }
    if (u) {
      rows.push(["usage", `prompt ${u.prompt_tokens}, completion ${u.completion_tokens}, ` +
                 `reasoning ${u.completion_tokens_details?.reasoning_tokens ?? "?"}` +
                 (u.probe_tokens != null ? `, probes ${u.probe_tokens} (not billed)` : "")]);
    }
    const table = el("table", {class: "kv"});
    for (const [k, v] of rows) table.append(el("tr", {}, el("th", {scope: "row"}, k), el("td", {}, v)));
    const raw = el("details", {}, el("summary", {}, "budget object (JSON)"),
                   el("pre", {class: "budget-json"}, JSON.stringify(b, null, 2)));
    this.details.replaceChildren(table, raw);
  }
}
