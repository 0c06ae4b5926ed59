//! The console's pages: one module per page, each a [`Page`] (its slug, title, who may see
//! it, an HTML shell and its script), drawn in one layout by [`render`]. To add a page:
//! write `pages/<slug>.rs` and `static/pages/<slug>.js`, and list it in [`PAGES`].
//!
//! Shells hold no user data: the scripts fetch it from `/ui/api/` and render it as text.

mod budgets;
pub(super) mod guardrails;
mod keys;
mod me;
mod models;
mod overview;
mod traces;
mod usage;
mod users;

use bytes::Bytes;

use super::guard::escape;
use super::session::{Role, Session};
use crate::local::Answer;

pub struct Page {
    /// The path under `/ui/` and the name of its script.
    pub slug: &'static str,
    pub title: &'static str,
    /// Who sees the page.
    pub audience: Audience,
    /// The page's static markup, inside the layout's `<main>`.
    pub body: &'static str,
    /// The page's script, served at `/ui/static/pages/<slug>.js`.
    pub script: &'static str,
}

/// Who may open a page: operators (and named admins), key holders, or both.
pub enum Audience {
    Operators,
    KeyHolders,
    /// Both; the API answers each with what it may read (a key holder: its own).
    Everyone,
}

impl Page {
    pub fn allows(&self, role: &Role) -> bool {
        match self.audience {
            Audience::Operators => role.is_operator(),
            Audience::KeyHolders => !role.is_operator(),
            Audience::Everyone => true,
        }
    }
}

/// Every page, in the navigation's order.
pub const PAGES: &[&Page] = &[
    &overview::PAGE,
    &keys::PAGE,
    &usage::PAGE,
    &models::PAGE,
    &users::PAGE,
    &budgets::PAGE,
    &guardrails::PAGE,
    &me::PAGE,
    &traces::PAGE,
];

pub fn find(slug: &str) -> Option<&'static Page> {
    PAGES.iter().copied().find(|p| p.slug == slug)
}

/// Where a session lands after login.
pub fn home(role: &Role) -> &'static str {
    if role.is_operator() {
        overview::PAGE.slug
    } else {
        me::PAGE.slug
    }
}

/// A page in the layout: navigation, the CSRF token for the scripts, logout.
pub fn render(page: &Page, s: &Session) -> String {
    let nav: String = PAGES
        .iter()
        .filter(|p| p.allows(&s.role))
        .map(|p| {
            let current = if p.slug == page.slug {
                " aria-current=\"page\""
            } else {
                ""
            };
            format!("<a href=\"/ui/{}\"{current}>{}</a>", p.slug, p.title)
        })
        .collect();
    let who = match &s.role {
        Role::Operator { .. } => "operator".to_string(),
        Role::Admin { name } => format!("admin {}", escape(name)),
        Role::KeyHolder { key_id } => format!("key {}", escape(key_id)),
    };
    let csrf = escape(&s.csrf);
    format!(
        r#"<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<meta name="csrf-token" content="{csrf}">
<title>{title} · tollgate</title>
<link rel="stylesheet" href="/ui/static/app.css">
<script src="/ui/static/app.js" defer></script>
<script src="/ui/static/pages/{slug}.js" defer></script>
</head><body>
<header><span class="brand">tollgate</span><nav>{nav}</nav>
<form method="post" action="/ui/logout" class="logout"><span class="who">{who}</span>
<input type="hidden" name="csrf" value="{csrf}"><button type="submit">Log out</button></form></header>
<main id="page-{slug}"><h1>{title}</h1>
{body}
</main></body></html>"#,
        title = page.title,
        slug = page.slug,
        body = page.body,
    )
}

/// A page outside the layout (login, errors); `body` is trusted markup.
pub fn bare(title: &str, body: &str) -> String {
    format!(
        r#"<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{} · tollgate</title>
<link rel="stylesheet" href="/ui/static/app.css">
</head><body class="bare"><main>{body}</main></body></html>"#,
        escape(title)
    )
}

/// The embedded assets: the layout's stylesheet and script, and each page's script.
pub fn asset(name: &str) -> Option<Answer> {
    let (ct, body): (&'static str, &'static str) = match name {
        "app.css" => ("text/css; charset=utf-8", include_str!("../static/app.css")),
        "app.js" => (
            "text/javascript; charset=utf-8",
            include_str!("../static/app.js"),
        ),
        n => {
            let slug = n.strip_prefix("pages/")?.strip_suffix(".js")?;
            ("text/javascript; charset=utf-8", find(slug)?.script)
        }
    };
    Some(Answer::new(200, ct, Bytes::from_static(body.as_bytes())))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An attribute named `on…=` (an inline event handler, which the CSP would block).
    fn has_inline_handler(html: &str) -> bool {
        html.match_indices(" on").any(|(i, _)| {
            let rest = &html[i + 3..];
            let name: String = rest
                .chars()
                .take_while(|c| c.is_ascii_alphabetic())
                .collect();
            !name.is_empty() && rest[name.len()..].starts_with('=')
        })
    }

    #[test]
    fn every_page_has_a_unique_slug_and_a_script() {
        for (i, p) in PAGES.iter().enumerate() {
            assert!(PAGES[..i].iter().all(|q| q.slug != p.slug));
            assert!(asset(&format!("pages/{}.js", p.slug)).is_some());
            // Shells are static: no inline script, no inline handlers.
            assert!(!p.body.contains("<script"));
            assert!(!has_inline_handler(p.body), "{}", p.slug);
        }
        assert!(asset("pages/nope.js").is_none());
        assert!(asset("../mod.rs").is_none());
    }
}
