//! Models and providers: the models served (configured and discovered), providers and
//! deployments with their breakers.

use super::{Audience, Page};

pub const PAGE: Page = Page {
    slug: "models",
    title: "Models",
    audience: Audience::Operators,
    body: r#"<section><h2>Providers</h2><div id="providers"></div></section>
<section><h2>Deployments</h2><div id="deployments"></div></section>
<section><h2>Models</h2><div id="models"></div></section>
<p class="error" id="error" role="alert"></p>"#,
    script: include_str!("../static/pages/models.js"),
};
