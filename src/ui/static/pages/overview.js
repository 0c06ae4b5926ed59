"use strict";
(function () {
  const { api, el, table, fill, card, guarded, qs, usd, dayStart, monthStart, chart, series } = TG;

  function percentile(sorted, p) {
    if (!sorted.length) return null;
    return sorted[Math.min(sorted.length - 1, Math.floor((p / 100) * sorted.length))];
  }

  const load = guarded(async () => {
    const now = Math.floor(Date.now() / 1000);
    const [status, today, month, byKey, hourly, lastHour] = await Promise.all([
      api("GET", "status"),
      api("GET", "v1/usage?" + qs({ group_by: "model", from: dayStart() })),
      api("GET", "v1/usage?" + qs({ group_by: "model", from: monthStart() })),
      api("GET", "v1/usage?" + qs({ group_by: "key", from: monthStart() })),
      api("GET", "v1/usage?" + qs({ group_by: "hour", from: now - 23 * 3600 })),
      api("GET", "v1/usage?" + qs({ from: now - 3600, limit: 1000 })),
    ]);
    const lat = lastHour.data.map((r) => r.latency_ms).sort((a, b) => a - b);
    const ttft = lastHour.data.map((r) => r.ttft_ms).filter((v) => v !== null).sort((a, b) => a - b);
    const ms = (v) => (v === null ? null : v + " ms");
    fill("cards",
      card("Requests today", today.totals.requests),
      card("Errors today", today.totals.errors),
      card("Spend today", usd(today.totals.cost)),
      card("Spend this month", usd(month.totals.cost)),
      card("In flight", status.in_flight),
      card("Latency p50 / p99 (1 h)", lat.length ? ms(percentile(lat, 50)) + " / " + ms(percentile(lat, 99)) : null),
      card("TTFT p50 / p99 (1 h)", ttft.length ? ms(percentile(ttft, 50)) + " / " + ms(percentile(ttft, 99)) : null),
      card("Store", status.store),
      card("Keys", status.keys));
    const s = series(hourly.data, now - 23 * 3600, now, "hour", (g) => g.requests);
    chart(document.getElementById("hourly"), s.labels.map((l) => l.slice(11)), s.values);
    const bySpend = (rows) => rows.slice().sort((a, b) => Number(b.cost) - Number(a.cost)).slice(0, 10);
    fill("top-models", table([["Model", (r) => r.group], ["Requests", (r) => r.requests], ["Spend", (r) => usd(r.cost)]],
      bySpend(month.data), "No requests this month."));
    fill("top-keys", table([["Key", (r) => el("a", { href: "/ui/keys?id=" + encodeURIComponent(r.group) }, r.group)],
      ["Requests", (r) => r.requests], ["Spend", (r) => usd(r.cost)]], bySpend(byKey.data), "No requests this month."));
    fill("deployments", table([
      ["Deployment", (r) => r.id], ["Provider", (r) => r.provider],
      ["Breaker", (r) => el("span", { class: "state-" + r.state }, r.state)],
      ["Failures in a row", (r) => r.consecutive_failures],
      ["Retry in", (r) => (r.retry_in_ms === null ? null : r.retry_in_ms + " ms")],
    ], status.deployments, "No deployments configured."));
  });

  document.getElementById("revoke-sessions").addEventListener("click", guarded(async () => {
    const r = await api("DELETE", "sessions");
    document.getElementById("revoke-result").textContent = r.revoked + " other session(s) ended.";
  }));
  load();
})();
