//! Usage explorer: filters, group-by, an hourly or daily chart, totals, records and export.

use super::{Audience, Page};

pub const PAGE: Page = Page {
    slug: "usage",
    title: "Usage",
    audience: Audience::Operators,
    body: r#"<form id="filters" class="grid">
<label>Key id <input name="key_id"></label>
<label>User id <input name="user_id"></label>
<label>Model <input name="model"></label>
<label>Provider <input name="provider"></label>
<label>Session <input name="session_id"></label>
<label>Status <input name="status" inputmode="numeric"></label>
<label>From <input name="from" type="datetime-local"></label>
<label>To <input name="to" type="datetime-local"></label>
<label>Group by <select name="group_by"><option value="model">model</option><option value="key">key</option><option value="user">user</option><option value="end_user">end user</option><option value="session">session</option><option value="provider">provider</option><option value="day">day</option><option value="hour">hour</option></select></label>
<label>Chart buckets <select name="bucket"><option value="hour">hour</option><option value="day">day</option></select></label>
<button type="submit">Show</button>
</form>
<section class="cards" id="totals"></section>
<section><h2>Requests over time</h2><canvas id="series" class="chart" width="900" height="180"></canvas></section>
<section><h2>Grouped</h2><div id="groups"></div></section>
<section><h2>Records</h2><p><a id="csv" download="usage.csv">Export CSV</a> · <a id="jsonl" download="usage.jsonl">Export JSONL</a></p><div id="records"></div>
<div class="pager"><button type="button" id="more">More</button></div></section>
<p class="error" id="error" role="alert"></p>"#,
    script: include_str!("../static/pages/usage.js"),
};
