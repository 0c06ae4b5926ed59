//! Keys: list with search and paging, create (the secret shown once), edit, rotate,
//! revoke, and each key's spend chart.

use super::{Audience, Page};

pub const PAGE: Page = Page {
    slug: "keys",
    title: "Keys",
    audience: Audience::Operators,
    body: r#"<section><h2>Create a key</h2>
<form id="create" class="grid">
<label>Name <input name="name" maxlength="200"></label>
<label>User id <input name="user_id"></label>
<label>Budget (USD) <input name="max_budget" inputmode="decimal"></label>
<label>Budget period <input name="budget_duration" placeholder="daily, monthly, 30d"></label>
<label>Requests per minute <input name="rpm_limit" inputmode="numeric"></label>
<label>Tokens per minute <input name="tpm_limit" inputmode="numeric"></label>
<label>Allowed models <input name="allowed_models" placeholder="comma-separated; empty: all"></label>
<label>Expires <input name="expires_at" type="date"></label>
<button type="submit">Create key</button>
</form>
<div id="secret" class="secret" hidden></div>
</section>
<section><h2>All keys</h2>
<form id="search" class="inline"><input name="q" placeholder="Search name, id, prefix or user" aria-label="Search keys"><button type="submit">Search</button></form>
<div id="list"></div>
<div class="pager"><button type="button" id="prev">Previous</button> <button type="button" id="next">Next</button></div>
</section>
<section id="detail" hidden></section>
<p class="error" id="error" role="alert"></p>"#,
    script: include_str!("../static/pages/keys.js"),
};
