"use strict";
(function () {
  const { api, el, table, field, twoStep, fill, guarded, usd } = TG;
  let prices = [];

  // A form's non-empty fields as a body (numbers where `numeric` says so).
  function body(form, numeric, clearEmpty) {
    const out = {};
    for (const [k, v] of new FormData(form)) {
      const text = v.toString().trim();
      if (text === "") { if (clearEmpty) out[k] = null; continue; }
      out[k] = numeric.includes(k) ? Number(text) : text;
    }
    return out;
  }

  function showPrices() {
    const q = (new FormData(document.getElementById("search")).get("q") || "").toString().toLowerCase();
    const rows = prices.filter((p) => !q || JSON.stringify(p).toLowerCase().includes(q)).slice(0, 500);
    fill("prices", table([
      ["Model", (p) => p.model_key], ["Input", (p) => p.input], ["Output", (p) => p.output],
      ["Cache read", (p) => p.cache_read], ["Source", (p) => p.source],
    ], rows, "No prices match."));
    fill("overrides", table([
      ["Model", (p) => p.model_key], ["Input", (p) => p.input], ["Output", (p) => p.output],
      ["Cache read", (p) => p.cache_read], ["Cache write", (p) => p.cache_write],
      ["", (p) => twoStep({ "data-remove": p.model_key }, "Remove", "Confirm remove", async () => {
        await api("DELETE", "v1/pricing/" + encodeURIComponent(p.model_key));
        await load();
      })],
    ], prices.filter((p) => p.source === "api"), "No overrides: every price is the built-in one."));
  }

  const openBudget = guarded(async (id) => {
    const b = await api("GET", "v1/budgets/" + encodeURIComponent(id));
    const d = document.getElementById("budget-detail");
    d.hidden = false;
    const form = el("form", { class: "grid", id: "edit-budget" },
      field("Name", "name", b.name, { maxlength: 200 }),
      field("Limit (USD)", "max_budget", b.max_budget, { inputmode: "decimal", required: true }),
      field("Period", "budget_duration", b.budget_period),
      el("label", {}, "Alignment", el("select", { name: "budget_alignment" },
        ["calendar", "rolling"].map((a) => el("option", { selected: a === b.budget_alignment }, a)))),
      el("button", { type: "submit" }, "Save"));
    form.addEventListener("submit", guarded(async (ev) => {
      ev.preventDefault();
      const edits = body(form, ["max_budget"], false);
      if (!("name" in edits)) edits.name = null;
      await api("PATCH", "v1/budgets/" + encodeURIComponent(b.budget_id), edits);
      await load();
      await openBudget(b.budget_id);
    }));
    // The API refuses to delete a budget that users or keys still use; its message is shown.
    const del = twoStep({ id: "delete-budget" }, "Delete budget", "Confirm delete", async () => {
      await api("DELETE", "v1/budgets/" + encodeURIComponent(b.budget_id));
      d.hidden = true;
      d.replaceChildren();
      await load();
    });
    d.replaceChildren(el("h3", {}, "Budget ", el("span", { id: "budget-name" }, b.budget_id)),
      el("p", {}, "Used by ", String(b.user_count), " users and ", String(b.key_count), " keys"),
      form, el("p", { class: "pager" }, del));
  });

  const load = guarded(async () => {
    const [budgets, pricing] = await Promise.all([api("GET", "v1/budgets?limit=1000"), api("GET", "v1/pricing")]);
    fill("budgets", table([
      ["Budget", (b) => el("button", { type: "button", class: "secondary", "data-open": b.budget_id }, b.budget_id)],
      ["Name", (b) => b.name], ["Limit", (b) => usd(b.max_budget)],
      ["Period", (b) => b.budget_period], ["Alignment", (b) => b.budget_alignment],
      ["Users", (b) => b.user_count], ["Keys", (b) => b.key_count],
    ], budgets.data, "No named budgets."));
    prices = pricing.data || [];
    showPrices();
  });

  document.getElementById("budgets").addEventListener("click", (ev) => {
    const b = ev.target.closest("[data-open]");
    if (b) openBudget(b.getAttribute("data-open"));
  });
  document.getElementById("create-budget").addEventListener("submit", guarded(async (ev) => {
    ev.preventDefault();
    await api("POST", "v1/budgets", body(ev.target, ["max_budget"], false));
    ev.target.reset();
    await load();
  }));
  document.getElementById("set-price").addEventListener("submit", guarded(async (ev) => {
    ev.preventDefault();
    await api("POST", "v1/pricing", body(ev.target, [], false));
    ev.target.reset();
    await load();
  }));
  document.getElementById("search").addEventListener("input", showPrices);
  document.getElementById("search").addEventListener("submit", (ev) => { ev.preventDefault(); showPrices(); });
  load();
})();
