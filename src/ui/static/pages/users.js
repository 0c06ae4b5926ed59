"use strict";
(function () {
  const { api, el, table, field, jsonField, jsonValue, twoStep, fill, guarded, qs, usd } = TG;
  let after = null;
  let next = null;

  const list = guarded(async () => {
    const r = await api("GET", "v1/users?" + qs({ limit: 50, after }));
    next = r.next_cursor;
    document.getElementById("next").disabled = !next;
    fill("list", table([
      ["User", (u) => el("button", { type: "button", class: "secondary", "data-open": u.user_id }, u.user_id)],
      ["Spend", (u) => (u.standing ? usd(u.standing.spend) : null)],
      ["Budget", (u) => (u.limits && u.limits.max_budget ? usd(u.limits.max_budget) : null)],
      ["Blocked", (u) => (u.blocked ? "yes" : "no")],
    ], r.data, "No users yet."));
  });

  // The edit form as a PATCH body: an empty field clears its value.
  function edits(form) {
    const f = new FormData(form);
    const text = (k) => (f.get(k) || "").toString().trim();
    const num = (k) => (text(k) === "" ? null : Number(text(k)));
    return {
      alias: text("alias") || null,
      max_budget: num("max_budget"),
      budget_duration: text("budget_duration") || null,
      rpm_limit: num("rpm_limit"),
      tpm_limit: num("tpm_limit"),
      metadata: jsonValue(form, "metadata"),
    };
  }

  const open = guarded(async (id) => {
    const u = await api("GET", "v1/users/" + encodeURIComponent(id));
    const keys = await api("GET", "v1/keys?" + qs({ user_id: id, limit: 100 }));
    const d = document.getElementById("detail");
    d.hidden = false;
    const form = el("form", { class: "grid", id: "edit" },
      field("Name", "alias", u.alias, { maxlength: 200 }),
      field("Budget (USD)", "max_budget", u.limits.max_budget, { inputmode: "decimal" }),
      field("Budget period", "budget_duration", u.limits.budget_period),
      field("Requests per minute", "rpm_limit", u.limits.rpm_limit, { inputmode: "numeric" }),
      field("Tokens per minute", "tpm_limit", u.limits.tpm_limit, { inputmode: "numeric" }),
      jsonField("Metadata (JSON object)", "metadata", u.metadata),
      el("button", { type: "submit" }, "Save"));
    form.addEventListener("submit", guarded(async (ev) => {
      ev.preventDefault();
      await api("PATCH", "v1/users/" + encodeURIComponent(u.user_id), edits(form));
      await list();
      await open(u.user_id);
    }));
    const del = twoStep({ id: "delete" }, "Delete user", "Confirm delete (their keys stop working)", async () => {
      await api("DELETE", "v1/users/" + encodeURIComponent(u.user_id));
      d.hidden = true;
      d.replaceChildren();
      await list();
    });
    const st = u.standing || {};
    d.replaceChildren(el("h2", {}, "User ", el("span", { id: "detail-name" }, u.user_id),
      u.alias ? el("small", {}, " ", u.alias) : null),
      el("p", { id: "detail-standing" }, "Spend ", usd(st.spend), st.max_budget ? " of " + usd(st.max_budget) : "",
        u.limits.budget_period ? " / " + u.limits.budget_period : ""),
      form, el("p", { class: "pager" }, del),
      el("h3", {}, "Keys"),
      table([["Name", (k) => el("a", { href: "/ui/keys?" + qs({ id: k.id }) }, k.name || k.id)],
        ["Prefix", (k) => k.prefix], ["Spend", (k) => usd(k.standing.spend)],
        ["Status", (k) => (k.active ? "active" : "revoked")]], keys.data, "This user has no keys."));
  });

  document.getElementById("list").addEventListener("click", (ev) => {
    const b = ev.target.closest("[data-open]");
    if (b) open(b.getAttribute("data-open"));
  });
  document.getElementById("create").addEventListener("submit", guarded(async (ev) => {
    ev.preventDefault();
    const f = new FormData(ev.target);
    const body = { user_id: f.get("user_id").toString().trim() };
    const budget = f.get("max_budget").toString().trim();
    if (budget) body.max_budget = Number(budget);
    const period = f.get("budget_duration").toString().trim();
    if (period) body.budget_duration = period;
    await api("POST", "v1/users", body);
    ev.target.reset();
    await list();
  }));
  document.getElementById("next").addEventListener("click", () => { if (next) { after = next; list(); } });
  list();
})();
