"use strict";
(function () {
  const { api, el, table, field, jsonField, jsonValue, twoStep, fill, guarded, qs, usd, when, dayStart, chart, series } = TG;
  const PAGE = 20;
  let query = "";
  let cursors = [null]; // the cursor of each page seen; the last is the current page's
  let next = null;

  // The form's fields as a key body: empty fields are left out (create) or cleared (edit).
  function body(form, clearEmpty) {
    const f = new FormData(form);
    const out = {};
    const text = (k) => (f.get(k) || "").toString().trim();
    const put = (k, v) => { if (v !== "" && v !== undefined) out[k] = v; else if (clearEmpty) out[k] = null; };
    if (f.has("name")) put("name", text("name"));
    if (f.has("user_id") && !clearEmpty) put("user_id", text("user_id"));
    put("max_budget", text("max_budget") === "" ? "" : Number(text("max_budget")));
    put("budget_duration", text("budget_duration"));
    put("rpm_limit", text("rpm_limit") === "" ? "" : Number(text("rpm_limit")));
    put("tpm_limit", text("tpm_limit") === "" ? "" : Number(text("tpm_limit")));
    const models = text("allowed_models").split(",").map((m) => m.trim()).filter(Boolean);
    if (models.length) out.allowed_models = models;
    else if (clearEmpty) out.allowed_models = null; // null: every model ([] would allow none)
    const exp = text("expires_at");
    if (exp) out.expires_at = exp + "T23:59:59Z";
    else if (clearEmpty) out.expires_at = null;
    return out;
  }

  // The secret, shown once: it lives only in this page's memory until the next navigation.
  function showSecret(target, k, verb) {
    target.hidden = false;
    target.replaceChildren(
      el("strong", {}, "Key " + verb + ". Copy it now: it is shown only this once and cannot be shown again."),
      el("code", { id: "secret-value" }, k.key),
      el("button", { type: "button", "data-copy": "secret-value" }, "Copy"));
  }

  const list = guarded(async () => {
    const cursor = cursors[cursors.length - 1];
    const r = await api("GET", "v1/keys?" + qs({ limit: PAGE, after: cursor, q: query }));
    next = r.next_cursor;
    document.getElementById("next").disabled = !next;
    document.getElementById("prev").disabled = cursors.length < 2;
    fill("list", table([
      ["Name", (k) => el("button", { type: "button", class: "secondary", "data-open": k.id }, k.name || "(unnamed)")],
      ["Id", (k) => k.id], ["Prefix", (k) => k.prefix], ["User", (k) => k.user_id],
      ["Spend", (k) => usd(k.standing.spend)],
      ["Budget", (k) => (k.limits.max_budget ? usd(k.limits.max_budget) + (k.limits.budget_period ? " / " + k.limits.budget_period : "") : null)],
      ["Status", (k) => (k.active ? "active" : el("span", { class: "inactive" }, "revoked"))],
      ["Expires", (k) => (k.expires_at ? when(k.expires_at) : null)],
    ], r.data, query ? "No key matches." : "No keys yet."));
  });

  const open = guarded(async (id) => {
    const k = await api("GET", "v1/keys/" + encodeURIComponent(id));
    const d = document.getElementById("detail");
    d.hidden = false;
    const form = el("form", { class: "grid", id: "edit" },
      field("Name", "name", k.name, { maxlength: 200 }),
      field("Budget (USD)", "max_budget", k.limits.max_budget),
      field("Budget period", "budget_duration", k.limits.budget_period),
      field("Requests per minute", "rpm_limit", k.limits.rpm_limit),
      field("Tokens per minute", "tpm_limit", k.limits.tpm_limit),
      field("Allowed models", "allowed_models", (k.allowed_models || []).join(", ")),
      field("Expires", "expires_at", k.expires_at ? new Date(k.expires_at * 1000).toISOString().slice(0, 10) : "", { type: "date" }),
      jsonField("Metadata (JSON object)", "metadata", k.metadata),
      el("button", { type: "submit" }, "Save"));
    form.addEventListener("submit", guarded(async (ev) => {
      ev.preventDefault();
      const b = body(form, true);
      b.metadata = jsonValue(form, "metadata"); // null clears it; the API checks it is an object
      await api("PATCH", "v1/keys/" + encodeURIComponent(k.id), b);
      await list();
      await open(k.id);
    }));
    const secret = el("div", { class: "secret", id: "rotated", hidden: true });
    const rotate = el("button", { type: "button", class: "secondary" }, "Rotate");
    rotate.addEventListener("click", guarded(async () => {
      showSecret(secret, await api("POST", "v1/keys/" + encodeURIComponent(k.id) + "/rotate"), "rotated");
    }));
    // Two steps instead of a confirm() dialog.
    const revoke = twoStep({ id: "revoke", "data-armed": k.active ? null : "1" },
      k.active ? "Revoke" : "Reactivate", "Confirm revoke", async () => {
        await api("PATCH", "v1/keys/" + encodeURIComponent(k.id), { active: !k.active });
        await list();
        await open(k.id);
      });
    const st = k.standing;
    d.replaceChildren(
      el("h2", {}, "Key ", el("span", { id: "detail-name" }, k.name || "(unnamed)"), " ", el("small", {}, k.id)),
      el("p", {}, "Metadata ", el("code", { id: "detail-metadata" }, JSON.stringify(k.metadata || {}))),
      el("p", {}, "Spend ", usd(st.spend), st.max_budget ? " of " + usd(st.max_budget) : "",
        st.remaining ? " · remaining " + usd(st.remaining) : "",
        st.resets_at ? " · resets " + when(st.resets_at) : "",
        " · ", k.active ? "active" : "revoked"),
      el("h3", {}, "Spend per day, last 30 days"),
      el("canvas", { id: "key-chart", class: "chart", width: 900, height: 180 }),
      form, el("p", { class: "pager" }, rotate, revoke), secret,
      el("p", {}, el("a", { href: "/ui/usage?" + qs({ key_id: k.id }) }, "This key's usage"), " · ",
        el("a", { href: "/ui/traces?" + qs({ key_id: k.id }), id: "key-traces" }, "This key's traces")));
    const from = dayStart() - 29 * 86400;
    const now = Math.floor(Date.now() / 1000);
    const u = await api("GET", "v1/usage?" + qs({ group_by: "day", key_id: k.id, from }));
    const s = series(u.data, from, now, "day", (g) => Number(g.cost));
    chart(document.getElementById("key-chart"), s.labels, s.values, (v) => usd(v));
    history.replaceState(null, "", "/ui/keys?" + qs({ id: k.id }));
  });

  document.getElementById("list").addEventListener("click", (ev) => {
    const b = ev.target.closest("[data-open]");
    if (b) open(b.getAttribute("data-open"));
  });
  document.getElementById("create").addEventListener("submit", guarded(async (ev) => {
    ev.preventDefault();
    const form = ev.target;
    const k = await api("POST", "v1/keys", body(form, false));
    form.reset();
    showSecret(document.getElementById("secret"), k, "created");
    await list();
  }));
  document.getElementById("search").addEventListener("submit", (ev) => {
    ev.preventDefault();
    query = new FormData(ev.target).get("q").toString().trim();
    cursors = [null];
    list();
  });
  document.getElementById("next").addEventListener("click", () => { if (next) { cursors.push(next); list(); } });
  document.getElementById("prev").addEventListener("click", () => { if (cursors.length > 1) { cursors.pop(); list(); } });
  list();
  const id = new URLSearchParams(location.search).get("id");
  if (id) open(id);
})();
