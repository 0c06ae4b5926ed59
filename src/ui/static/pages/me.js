"use strict";
(function () {
  const { api, table, fill, card, guarded, qs, usd, when, dayStart, chart, series } = TG;

  guarded(async () => {
    const from = dayStart() - 29 * 86400;
    const now = Math.floor(Date.now() / 1000);
    const [me, daily, recent] = await Promise.all([
      api("GET", "me"),
      api("GET", "v1/usage?" + qs({ group_by: "day", from })),
      api("GET", "v1/usage?" + qs({ from: now - 86400, limit: 1000 })),
    ]);
    const st = me.standing || {};
    fill("cards",
      card("Key", me.name || me.id),
      card("Prefix", me.prefix),
      card("Spend", usd(st.spend)),
      card("Budget", st.max_budget === null ? "none" : usd(st.max_budget)),
      card("Remaining", st.remaining === null ? "no limit" : usd(st.remaining)),
      card("Resets", st.resets_at ? when(st.resets_at) : "never"),
      card("Expires", me.expires_at ? when(me.expires_at) : "never"));
    const s = series(daily.data, from, now, "day", (g) => Number(g.cost));
    chart(document.getElementById("daily"), s.labels, s.values, (v) => usd(v));
    fill("records", table([
      ["Time", (r) => when(r.timestamp)], ["Model", (r) => r.model], ["Status", (r) => r.status],
      ["Tokens", (r) => r.total_tokens], ["Cost", (r) => usd(r.cost)], ["Latency", (r) => r.latency_ms + " ms"],
    ], recent.data.slice().reverse().slice(0, 50), "No requests in the last 24 hours."));
  })();
})();
