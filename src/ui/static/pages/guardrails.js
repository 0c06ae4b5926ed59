"use strict";
(function () {
  const { api, el, table, fill, card, guarded, qs, when } = TG;
  guarded(async () => {
    const from = Math.floor(Date.now() / 1000) - 86400;
    const [g, usage] = await Promise.all([
      api("GET", "guardrails"),
      api("GET", "v1/usage?" + qs({ from, limit: 1000 })),
    ]);
    fill("cards", card("Service", g.url || "none"), card("Timeout", g.timeout_ms + " ms"),
      card("Verdict cache", g.cache_ttl_secs === null ? "off" : g.cache_ttl_secs + " s"),
      card("Global policies", g.global.length ? g.global.join(", ") : "none"));
    const rows = [];
    for (const p of g.policies) {
      for (const e of p.entries) rows.push(Object.assign({ policy: p.name, global: p.global }, e));
    }
    fill("policies", table([
      ["Policy", (r) => r.policy + (r.global ? " (global)" : "")], ["Profile", (r) => r.profile],
      ["Mode", (r) => r.mode], ["On", (r) => r.on], ["Scope", (r) => r.scope],
      ["If unavailable", (r) => r.on_unavailable], ["Service", (r) => r.url || "default"],
    ], rows, "No policies configured."));
    // Newest first: the store answers oldest first.
    const verdicts = [];
    for (const r of usage.data.slice().reverse()) {
      for (const v of r.guardrails || []) verdicts.push(Object.assign({ time: r.timestamp, key: r.key_id, model: r.model }, v));
    }
    fill("verdicts", table([
      ["Time", (v) => when(v.time)], ["Key", (v) => v.key], ["Model", (v) => v.model],
      ["Profile", (v) => v.profile], ["Stage", (v) => v.stage],
      ["Verdict", (v) => el("span", { class: v.verdict === "flagged" ? "inactive" : "" }, v.verdict)],
      ["Blocked", (v) => (v.blocked ? "yes" : "no")], ["Latency", (v) => v.latency_ms + " ms"],
    ], verdicts.slice(0, 200), "No guardrail verdicts in the last 24 hours."));
  })();
})();
