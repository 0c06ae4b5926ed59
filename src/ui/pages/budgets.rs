//! Budgets and pricing: named budgets (create, edit, delete), and price overrides (set,
//! remove) beside the built-in table.

use super::{Audience, Page};

pub const PAGE: Page = Page {
    slug: "budgets",
    title: "Budgets and pricing",
    audience: Audience::Operators,
    body: r#"<section><h2>Named budgets</h2>
<form id="create-budget" class="grid">
<label>Budget id <input name="budget_id" maxlength="128" placeholder="empty: generated"></label>
<label>Name <input name="name" maxlength="200"></label>
<label>Limit (USD) <input name="max_budget" inputmode="decimal" required></label>
<label>Period <input name="budget_duration" placeholder="daily, monthly, 30d"></label>
<label>Alignment <select name="budget_alignment"><option>calendar</option><option>rolling</option></select></label>
<button type="submit">Create budget</button>
</form>
<div id="budgets"></div>
<div id="budget-detail" hidden></div></section>
<section><h2>Price overrides</h2><p>USD per million tokens. An override replaces the built-in price for a model key (<code>provider:model</code>, <code>model</code> or <code>prefix*</code>).</p>
<form id="set-price" class="grid">
<label>Model key <input name="model_key" maxlength="256" required></label>
<label>Input <input name="input" inputmode="decimal" required></label>
<label>Output <input name="output" inputmode="decimal" required></label>
<label>Cache read <input name="cache_read" inputmode="decimal"></label>
<label>Cache write <input name="cache_write" inputmode="decimal"></label>
<button type="submit">Set price</button>
</form>
<div id="overrides"></div></section>
<section><h2>All prices</h2><p>Overrides (source <code>api</code>) and the built-in table.</p>
<form id="search" class="inline"><input name="q" placeholder="Filter models" aria-label="Filter prices"></form>
<div id="prices"></div></section>
<p class="error" id="error" role="alert"></p>"#,
    script: include_str!("../static/pages/budgets.js"),
};
