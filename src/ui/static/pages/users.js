"use strict";
(function () {
  const { api, el, table, fill, guarded, qs, usd } = TG;
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

  const open = guarded(async (id) => {
    const keys = await api("GET", "v1/keys?" + qs({ user_id: id, limit: 100 }));
    const d = document.getElementById("detail");
    d.hidden = false;
    d.replaceChildren(el("h2", {}, "Keys of ", el("span", {}, id)),
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
