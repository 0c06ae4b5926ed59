//! A key holder's own key: spend, remaining budget, reset time, recent usage.

use super::{Audience, Page};

pub const PAGE: Page = Page {
    slug: "me",
    title: "My key",
    audience: Audience::KeyHolders,
    body: r#"<section class="cards" id="cards"></section>
<section><h2>Spend per day, last 30 days</h2><canvas id="daily" class="chart" width="900" height="180"></canvas></section>
<section><h2>Recent requests (last 24 hours, newest first)</h2><div id="records"></div></section>
<p class="error" id="error" role="alert"></p>"#,
    script: include_str!("../static/pages/me.js"),
};
