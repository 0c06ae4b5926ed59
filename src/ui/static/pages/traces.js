"use strict";
(function () {
  const { api, el, table, fill, card, guarded, qs } = TG;
  const FILTERS = ["key_id", "user_id", "model", "status", "min_latency_ms"];
  const PAGE = 50;
  const form = document.getElementById("filters");
  let cursors = [null]; // the cursor of each page seen; the last is the current page's
  let next = null;

  // Milliseconds since the epoch, to the second (a trace's moment matters more than a record's).
  function at(ms) {
    const d = new Date(ms);
    return isNaN(d) ? String(ms) : d.toISOString().replace("T", " ").slice(0, 19) + " UTC";
  }
  function ms(v) { return v === null || v === undefined ? null : v + " ms"; }

  // The filters as query parameters; times (local input) as Unix seconds.
  function filters() {
    const f = new FormData(form);
    const out = {};
    for (const k of FILTERS) out[k] = (f.get(k) || "").toString().trim();
    for (const k of ["from", "to"]) {
      const v = (f.get(k) || "").toString();
      out[k] = v ? Math.floor(new Date(v).getTime() / 1000) : "";
    }
    return out;
  }

  function link(t) {
    return el("a", { href: "/ui/traces?" + qs({ id: t.request_id }), class: "trace" }, t.request_id);
  }

  const list = guarded(async () => {
    const cursor = cursors[cursors.length - 1];
    const r = await api("GET", "v1/traces?" + qs(Object.assign(filters(), { limit: PAGE, cursor })));
    next = r.next_cursor;
    document.getElementById("next").disabled = !next;
    document.getElementById("prev").disabled = cursors.length < 2;
    fill("list", table([
      ["Time", (t) => at(t.ts_ms)], ["Request id", link], ["Key", (t) => t.key_id],
      ["User", (t) => t.user_id], ["Model", (t) => t.model], ["Provider", (t) => t.provider],
      ["Status", (t) => t.status], ["Latency", (t) => ms(t.timings.last_byte_ms)],
      ["Attempts", (t) => t.attempts],
    ], r.data, "No traces match."));
  });

  // Each upstream attempt and how it ended: the failed ones with their reason, then the one
  // that answered (if any got that far).
  function attempts(t) {
    const rows = t.failed_attempts.map((why, i) => ({ n: i + 1, outcome: "failed", detail: why }));
    if (t.attempts > rows.length) {
      const ok = t.status < 400;
      rows.push({ n: t.attempts, outcome: ok ? "answered" : "ended with an error", detail: "HTTP " + t.status });
    }
    return rows;
  }

  // The phase timeline on a canvas: one lane per phase, from the request's start (0 ms) to
  // its last byte; the bars use the charts' colour, the labels say where each phase ends.
  function timeline(canvas, phases, total) {
    const ratio = window.devicePixelRatio || 1;
    const w = canvas.clientWidth || canvas.width;
    const lane = 26, top = 8, left = 170, right = 70;
    const h = top + phases.length * lane + 20;
    canvas.style.height = h + "px";
    canvas.width = w * ratio;
    canvas.height = h * ratio;
    const g = canvas.getContext("2d");
    g.setTransform(ratio, 0, 0, ratio, 0, 0);
    g.clearRect(0, 0, w, h);
    g.font = "12px system-ui, sans-serif";
    const pw = w - left - right;
    const x = (v) => left + (total > 0 ? (v / total) * pw : 0);
    phases.forEach((p, i) => {
      const y = top + i * lane;
      g.fillStyle = "#666";
      g.textAlign = "right";
      g.fillText(p.name, left - 8, y + 15);
      g.fillStyle = "#2f6fde";
      g.fillRect(x(p.from), y + 4, Math.max(2, x(p.to) - x(p.from)), lane - 10);
      g.fillStyle = "#666";
      g.textAlign = "left";
      g.fillText(p.to + " ms", Math.min(x(p.to) + 6, w - right + 6), y + 15);
    });
    g.strokeStyle = "#bbb";
    g.beginPath();
    g.moveTo(left, h - 16);
    g.lineTo(left + pw, h - 16);
    g.stroke();
    g.fillStyle = "#666";
    g.textAlign = "left";
    g.fillText("0 ms", left, h - 3);
    g.textAlign = "right";
    g.fillText(total + " ms", left + pw, h - 3);
    canvas.dataset.points = String(phases.length);
  }

  // `capture: full`: the kept bodies, each collapsed, shown as text (never as markup).
  function bodies(b) {
    if (!b) return [];
    const part = (id, name, body) => body && el("details", { id },
      el("summary", {}, name + (body.truncated ? " (truncated)" : "")),
      el("pre", { class: "body" }, body.text));
    const kept = [
      part("body-request", "Client request", b.request),
      part("body-upstream", "Sent upstream", b.upstream_request),
      part("body-response", "Answer", b.response),
    ].filter(Boolean);
    if (b.stream_events !== null && b.stream_events !== undefined) {
      kept.push(el("p", { id: "body-events" }, "Streamed answer: " + b.stream_events + " events (its text is not kept)."));
    }
    return [el("h3", {}, "Bodies"), el("div", { id: "bodies" }, kept)];
  }

  const open = guarded(async (id) => {
    const t = await api("GET", "v1/traces/" + encodeURIComponent(id));
    document.getElementById("list-view").hidden = true;
    const d = document.getElementById("detail");
    d.hidden = false;
    const total = t.timings.last_byte_ms;
    const fb = t.timings.first_byte_ms;
    const phases = [];
    if (fb !== null && fb !== undefined) {
      phases.push({ name: "until the first byte", from: 0, to: fb });
      phases.push({ name: "first to last byte", from: fb, to: total });
    } else {
      phases.push({ name: "whole request", from: 0, to: total });
    }
    const translated = t.upstream_format && t.upstream_format !== t.client_format;
    const u = t.usage;
    const back = el("a", { href: "/ui/traces" }, "All traces");
    d.replaceChildren(
      el("p", {}, back),
      el("h2", {}, "Request ", el("code", { id: "detail-id" }, t.request_id)),
      el("div", { class: "cards", id: "detail-cards" },
        card("Status", t.status), card("Latency", ms(total)), card("First byte", ms(fb)),
        card("Attempts", t.attempts), card("Model", t.model),
        card("Served by", t.provider ? t.provider + (t.upstream_model ? " · " + t.upstream_model : "") : null),
        card("Translation", t.upstream_format ? t.client_format + " → " + t.upstream_format + (translated ? "" : " (passthrough)") : t.client_format),
        card("Stream", t.stream ? "yes" : "no")),
      el("h3", {}, "Phase timeline"),
      el("canvas", { id: "timeline", class: "timeline", width: 900, height: 90 }),
      table([["Phase", (p) => p.name], ["From", (p) => ms(p.from)], ["To", (p) => ms(p.to)],
        ["Duration", (p) => ms(p.to - p.from)]], phases),
      el("h3", {}, "Attempts"),
      el("div", { id: "attempts" }, table([["#", (a) => a.n], ["Outcome", (a) => a.outcome],
        ["Detail", (a) => a.detail]], attempts(t), "No upstream attempt: tollgate answered itself.")),
      el("h3", {}, "Usage"),
      table([["Input tokens", (x) => x.input_tokens], ["Output tokens", (x) => x.output_tokens],
        ["Cache read", (x) => x.cache_read_tokens], ["Cache write", (x) => x.cache_write_tokens],
        ["Tool calls", () => t.tool_calls]], [u]),
      el("h3", {}, "Request"),
      table([["Field", (r) => r[0]], ["Value", (r) => r[1]]], [
        ["Time", at(t.ts_ms)], ["Endpoint", t.endpoint], ["Method and path", t.method + " " + t.path],
        ["Key", t.key_id], ["User", t.user_id], ["Session", t.session_id],
        ["Client gone", t.client_gone ? "yes" : "no"], ["Guardrail blocked", t.guardrail_blocked],
        ["Error", t.error]]),
      ...bodies(t.bodies));
    timeline(document.getElementById("timeline"), phases, total);
  });

  // Filters (and the trace to open) can come in the address.
  const initial = new URLSearchParams(location.search);
  for (const k of FILTERS) if (initial.get(k)) form.elements[k].value = initial.get(k);
  form.addEventListener("submit", (ev) => {
    ev.preventDefault();
    history.replaceState(null, "", "/ui/traces?" + qs(filters()));
    cursors = [null];
    list();
  });
  document.getElementById("next").addEventListener("click", () => { if (next) { cursors.push(next); list(); } });
  document.getElementById("prev").addEventListener("click", () => { if (cursors.length > 1) { cursors.pop(); list(); } });
  if (initial.get("id")) open(initial.get("id"));
  else list();
})();
