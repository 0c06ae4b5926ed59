//! Overview: traffic, errors and spend, latency over the last hour, top models and keys,
//! deployments with their breakers, the store.

use super::{Audience, Page};

pub const PAGE: Page = Page {
    slug: "overview",
    title: "Overview",
    audience: Audience::Operators,
    body: r#"<section class="cards" id="cards" aria-live="polite"></section>
<section><h2>Requests per hour, last 24 hours</h2><canvas id="hourly" class="chart" width="900" height="180"></canvas></section>
<div class="cols">
<section><h2>Top models by spend this month</h2><div id="top-models"></div></section>
<section><h2>Top keys by spend this month</h2><div id="top-keys"></div></section>
</div>
<section><h2>Deployments</h2><div id="deployments"></div></section>
<section><h2>Sessions</h2><p>Console sessions end after the configured idle time or at logout.</p>
<button type="button" id="revoke-sessions">Log out every other session</button> <span id="revoke-result"></span></section>
<p class="error" id="error" role="alert"></p>"#,
    script: include_str!("../static/pages/overview.js"),
};
