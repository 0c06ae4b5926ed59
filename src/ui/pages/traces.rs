//! Traces: the stored request traces (`traces.capture`), filtered and paged with the API's
//! cursor, and one request's detail (its phase timeline, attempts, translation pair, usage,
//! and with `capture: full` its bodies, collapsed).
//! Operators see every trace; a key holder the traces of their own key (the API restricts).

use super::{Audience, Page};

pub const PAGE: Page = Page {
    slug: "traces",
    title: "Traces",
    audience: Audience::Everyone,
    body: r#"<section id="list-view">
<form id="filters" class="grid">
<label>Key id <input name="key_id"></label>
<label>User id <input name="user_id"></label>
<label>Model <input name="model"></label>
<label>Status <input name="status" inputmode="numeric"></label>
<label>Min latency (ms) <input name="min_latency_ms" inputmode="numeric"></label>
<label>From <input name="from" type="datetime-local"></label>
<label>To <input name="to" type="datetime-local"></label>
<button type="submit">Show</button>
</form>
<div id="list"></div>
<div class="pager"><button type="button" id="prev">Newer</button> <button type="button" id="next">Older</button></div>
<p class="hint">Newest first. Requests are traced when the gateway's <code>traces.capture</code> is on (<code>metadata</code>: no body; <code>full</code>: the request, upstream and answer bodies too, redacted).</p>
</section>
<section id="detail" hidden></section>
<p class="error" id="error" role="alert"></p>"#,
    script: include_str!("../static/pages/traces.js"),
};
