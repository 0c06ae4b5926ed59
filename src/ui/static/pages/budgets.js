"use strict";
(function () {
  const { api, table, fill, guarded, usd } = TG;
  let prices = [];

  function showPrices() {
    const q = (new FormData(document.getElementById("search")).get("q") || "").toString().toLowerCase();
    const rows = prices.filter((p) => !q || JSON.stringify(p).toLowerCase().includes(q)).slice(0, 500);
    fill("prices", table([
      ["Model", (p) => p.model_key], ["Input", (p) => p.input], ["Output", (p) => p.output],
      ["Cache read", (p) => p.cache_read], ["Source", (p) => p.source],
    ], rows, "No prices match."));
  }

  guarded(async () => {
    const [budgets, pricing] = await Promise.all([api("GET", "v1/budgets?limit=1000"), api("GET", "v1/pricing")]);
    fill("budgets", table([
      ["Budget", (b) => b.budget_id], ["Name", (b) => b.name], ["Limit", (b) => usd(b.max_budget)],
      ["Period", (b) => b.budget_period], ["Alignment", (b) => b.budget_alignment],
      ["Users", (b) => b.user_count], ["Keys", (b) => b.key_count],
    ], budgets.data, "No named budgets."));
    prices = pricing.data || [];
    showPrices();
  })();
  document.getElementById("search").addEventListener("input", showPrices);
  document.getElementById("search").addEventListener("submit", (ev) => { ev.preventDefault(); showPrices(); });
})();
