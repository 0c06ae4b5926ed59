//! Users: create, edit (name, budget, limits, metadata) and delete; standing, and the keys of each.

use super::{Audience, Page};

pub const PAGE: Page = Page {
    slug: "users",
    title: "Users",
    audience: Audience::Operators,
    body: r#"<section><h2>Create a user</h2>
<form id="create" class="grid">
<label>User id <input name="user_id" required></label>
<label>Budget (USD) <input name="max_budget" inputmode="decimal"></label>
<label>Budget period <input name="budget_duration" placeholder="daily, monthly, 30d"></label>
<button type="submit">Create user</button>
</form></section>
<section><h2>All users</h2><div id="list"></div>
<div class="pager"><button type="button" id="next">Next</button></div></section>
<section id="detail" hidden></section>
<p class="error" id="error" role="alert"></p>"#,
    script: include_str!("../static/pages/users.js"),
};
