"use strict";
(function () {
  const { api, table, fill, card, guarded, qs, usd, when, chart, series } = TG;
  const FILTERS = ["key_id", "user_id", "model", "provider", "session_id", "status"];
  const form = document.getElementById("filters");
  let cursor = null;
  let shown = [];

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

  const RECORD_COLUMNS = [
    ["Time", (r) => when(r.timestamp)], ["Key", (r) => r.key_id], ["User", (r) => r.user_id],
    ["Model", (r) => r.model], ["Provider", (r) => r.provider], ["Status", (r) => r.status],
    ["Tokens", (r) => r.total_tokens], ["Cost", (r) => usd(r.cost)], ["Latency", (r) => r.latency_ms + " ms"],
  ];

  const more = guarded(async () => {
    const r = await api("GET", "v1/usage?" + qs(Object.assign(filters(), { limit: 50, cursor })));
    shown = shown.concat(r.data);
    cursor = r.next_cursor;
    document.getElementById("more").disabled = !cursor;
    fill("records", table(RECORD_COLUMNS, shown, "No records match."));
  });

  const show = guarded(async () => {
    const f = filters();
    const by = new FormData(form).get("group_by").toString();
    const bucket = new FormData(form).get("bucket").toString();
    const now = Math.floor(Date.now() / 1000);
    const to = f.to || now;
    const from = f.from || to - (bucket === "day" ? 29 * 86400 : 23 * 3600);
    const [grouped, timeline] = await Promise.all([
      api("GET", "v1/usage?" + qs(Object.assign({}, f, { group_by: by }))),
      // No `to` unless one was asked for: a record of this very second must not be cut off.
      api("GET", "v1/usage?" + qs(Object.assign({}, f, { from, group_by: bucket }))),
    ]);
    const t = grouped.totals;
    fill("totals", card("Requests", t.requests), card("Errors", t.errors), card("Spend", usd(t.cost)),
      card("Prompt tokens", t.prompt_tokens), card("Completion tokens", t.completion_tokens),
      card("Cached tokens", t.cached_tokens));
    const s = series(timeline.data, from, to, bucket, (g) => g.requests);
    chart(document.getElementById("series"), s.labels, s.values);
    fill("groups", table([["Group", (g) => g.group], ["Requests", (g) => g.requests], ["Errors", (g) => g.errors],
      ["Tokens", (g) => g.total_tokens], ["Spend", (g) => usd(g.cost)]], grouped.data, "No records match."));
    for (const format of ["csv", "jsonl"]) {
      document.getElementById(format).setAttribute("href", "/ui/api/v1/usage?" + qs(Object.assign({}, f, { format })));
    }
    cursor = null;
    shown = [];
    await more();
  });

  // Filters can come in the address (links from the keys page).
  const initial = new URLSearchParams(location.search);
  for (const k of FILTERS) if (initial.get(k)) form.elements[k].value = initial.get(k);
  form.addEventListener("submit", (ev) => {
    ev.preventDefault();
    history.replaceState(null, "", "/ui/usage?" + qs(filters()));
    show();
  });
  document.getElementById("more").addEventListener("click", () => more());
  show();
})();
