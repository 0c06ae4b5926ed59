//! Budgets and pricing: named budgets, and prices (overrides beside the built-in table).

use super::{Audience, Page};

pub const PAGE: Page = Page {
    slug: "budgets",
    title: "Budgets and pricing",
    audience: Audience::Operators,
    body: r#"<section><h2>Named budgets</h2><div id="budgets"></div></section>
<section><h2>Prices</h2><p>Per million tokens. Overrides come from the config and <code>/v1/pricing</code>; the rest is the built-in table.</p>
<form id="search" class="inline"><input name="q" placeholder="Filter models" aria-label="Filter prices"></form>
<div id="prices"></div></section>
<p class="error" id="error" role="alert"></p>"#,
    script: include_str!("../static/pages/budgets.js"),
};
