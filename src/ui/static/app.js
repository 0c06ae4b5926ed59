// tollgate console: helpers shared by every page. No inline script anywhere (the CSP
// forbids it); every value from the server is put into the page as text, never as markup.
"use strict";
(function () {
  const meta = document.querySelector('meta[name="csrf-token"]');
  const csrf = meta ? meta.getAttribute("content") : "";

  // A call to /ui/api/. State-changing calls carry the session's CSRF token.
  async function api(method, path, body) {
    const init = { method, credentials: "same-origin", headers: {} };
    if (method !== "GET") init.headers["x-csrf-token"] = csrf;
    if (body !== undefined) {
      init.headers["content-type"] = "application/json";
      init.body = JSON.stringify(body);
    }
    const r = await fetch("/ui/api/" + path, init);
    if (r.status === 401) {
      window.location.assign("/ui/login");
      throw new Error("Your session has ended; log in again.");
    }
    const text = await r.text();
    let v = null;
    try { v = JSON.parse(text); } catch (_) { v = null; }
    if (!r.ok) {
      const m = v && v.error && v.error.message ? v.error.message : "HTTP " + r.status;
      throw new Error(m);
    }
    return v;
  }

  // An element; string and number children become text nodes. Attributes named on* are
  // refused, so no caller can attach an inline handler by accident.
  function el(tag, attrs, ...children) {
    const e = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs || {})) {
      if (v === null || v === undefined || v === false) continue;
      if (/^on/i.test(k)) throw new Error("inline handlers are not allowed");
      e.setAttribute(k, v === true ? "" : String(v));
    }
    for (const c of children.flat()) {
      if (c === null || c === undefined) continue;
      e.append(c instanceof Node ? c : document.createTextNode(String(c)));
    }
    return e;
  }

  // A table: columns are [label, row => text or Node].
  function table(columns, rows, empty) {
    if (!rows.length) return el("p", { class: "empty" }, empty || "Nothing yet.");
    return el("table", {},
      el("thead", {}, el("tr", {}, columns.map(([label]) => el("th", {}, label)))),
      el("tbody", {}, rows.map((r) => el("tr", {}, columns.map(([, get]) => {
        const v = get(r);
        return el("td", {}, v === null || v === undefined ? "–" : v);
      })))));
  }

  // A labelled input holding a current value (an empty box for null).
  function field(label, name, value, attrs) {
    return el("label", {}, label, el("input", Object.assign({ name, value: value === null || value === undefined ? "" : value }, attrs || {})));
  }

  // A labelled textarea holding a JSON object (metadata), pretty-printed as text.
  function jsonField(label, name, value) {
    const t = el("textarea", { name, rows: 3, spellcheck: "false" });
    t.value = value && Object.keys(value).length ? JSON.stringify(value, null, 2) : "";
    return el("label", { class: "wide" }, label, t);
  }

  // The JSON text of a form field as a value: empty text is null; bad JSON an error on the page.
  function jsonValue(form, name) {
    const text = (new FormData(form).get(name) || "").toString().trim();
    if (!text) return null;
    try { return JSON.parse(text); } catch (_) { throw new Error("'" + name + "' is not valid JSON."); }
  }

  // A button that acts on its second click (the first arms it), instead of a confirm() dialog.
  function twoStep(attrs, label, confirmLabel, action) {
    const b = el("button", Object.assign({ type: "button", class: "danger" }, attrs), label);
    b.addEventListener("click", guarded(async () => {
      if (b.dataset.armed !== "1") {
        b.dataset.armed = "1";
        b.textContent = confirmLabel;
        return;
      }
      await action();
    }));
    return b;
  }

  function fill(id, ...nodes) {
    const t = document.getElementById(id);
    t.replaceChildren(...nodes);
    return t;
  }

  function card(label, value) {
    return el("div", { class: "card" }, el("span", { class: "label" }, label),
      el("span", { class: "value" }, value === null || value === undefined ? "–" : value));
  }

  function showError(e) {
    const t = document.getElementById("error");
    if (t) t.textContent = e ? String(e.message || e) : "";
  }

  // Runs an async action and reports its failure on the page.
  function guarded(f) {
    return async (...args) => {
      showError(null);
      try { await f(...args); } catch (e) { showError(e); }
    };
  }

  function qs(params) {
    const u = new URLSearchParams();
    for (const [k, v] of Object.entries(params)) {
      if (v !== null && v !== undefined && v !== "") u.set(k, v);
    }
    return u.toString();
  }

  function usd(s) {
    if (s === null || s === undefined) return "–";
    const n = Number(s);
    return Number.isFinite(n) ? "$" + (n < 0.01 && n > 0 ? n.toFixed(6) : n.toFixed(2)) : String(s);
  }

  function when(v) {
    if (v === null || v === undefined || v === "") return "–";
    const d = typeof v === "number" ? new Date(v * 1000) : new Date(v);
    return isNaN(d) ? String(v) : d.toISOString().replace("T", " ").slice(0, 16) + " UTC";
  }

  // Unix seconds for the start of today and of this month (UTC).
  function dayStart() { return Math.floor(Date.now() / 86400000) * 86400; }
  function monthStart() {
    const n = new Date();
    return Date.UTC(n.getUTCFullYear(), n.getUTCMonth(), 1) / 1000;
  }

  // A bar chart on a canvas: labels along the bottom, one bar per value. Drawn by hand
  // (no library): the axis, the largest value, the first and last labels.
  const BAR = "#2f6fde";
  function chart(canvas, labels, values, format) {
    const fmt = format || ((v) => String(v));
    const ratio = window.devicePixelRatio || 1;
    const w = canvas.clientWidth || canvas.width;
    const h = canvas.clientHeight || canvas.height;
    canvas.width = w * ratio;
    canvas.height = h * ratio;
    const g = canvas.getContext("2d");
    g.setTransform(ratio, 0, 0, ratio, 0, 0);
    g.clearRect(0, 0, w, h);
    canvas.dataset.points = String(values.length);
    const left = 78, bottom = 22, top = 10, right = 8;
    const pw = w - left - right, ph = h - top - bottom;
    g.font = "12px system-ui, sans-serif";
    g.fillStyle = "#666";
    g.strokeStyle = "#bbb";
    g.beginPath();
    g.moveTo(left, top);
    g.lineTo(left, top + ph);
    g.lineTo(left + pw, top + ph);
    g.stroke();
    if (!values.length) {
      g.fillText("no data", left + 8, top + ph / 2);
      return;
    }
    const max = Math.max(...values, 0);
    g.textAlign = "right";
    g.fillText(fmt(max), left - 6, top + 10);
    g.fillText(fmt(0), left - 6, top + ph);
    const step = pw / values.length;
    const bw = Math.max(1, Math.min(40, step * 0.8));
    g.fillStyle = BAR;
    values.forEach((v, i) => {
      const bh = max > 0 ? Math.max(v > 0 ? 3 : 0, (v / max) * ph) : 0;
      g.fillRect(left + i * step + (step - bw) / 2, top + ph - bh, bw, bh);
    });
    g.fillStyle = "#666";
    g.textAlign = "left";
    g.fillText(labels[0], left, h - 6);
    if (labels.length > 1) {
      g.textAlign = "right";
      g.fillText(labels[labels.length - 1], left + pw, h - 6);
    }
  }

  // Every bucket between from and to (seconds), for a chart with no gaps.
  function buckets(from, to, bucket) {
    const size = bucket === "day" ? 86400 : 3600;
    const out = [];
    for (let t = Math.floor(from / size) * size; t <= to; t += size) {
      const iso = new Date(t * 1000).toISOString();
      out.push(bucket === "day" ? iso.slice(0, 10) : iso.slice(0, 13) + ":00");
    }
    return out;
  }

  // A grouped usage answer (group_by=hour|day) as a series over [from, to].
  function series(groups, from, to, bucket, pick) {
    const byGroup = new Map(groups.map((g) => [g.group, g]));
    const labels = buckets(from, to, bucket);
    return { labels, values: labels.map((l) => (byGroup.has(l) ? pick(byGroup.get(l)) : 0)) };
  }

  document.addEventListener("click", (ev) => {
    const b = ev.target.closest("[data-copy]");
    if (!b) return;
    const src = document.getElementById(b.getAttribute("data-copy"));
    if (src && navigator.clipboard) navigator.clipboard.writeText(src.textContent).then(() => {
      b.textContent = "Copied";
    });
  });

  window.TG = { api, el, table, field, jsonField, jsonValue, twoStep, fill, card, showError, guarded, qs, usd, when, dayStart,
    monthStart, chart, series, buckets };
})();
