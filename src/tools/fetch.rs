//! The text of the pages search results point at, for backends that give only snippets:
//! 5 s and 5 MB per page, 5 pages at a time, at most 5 redirects, and an SSRF check at
//! every hop (the outbound client checks the URL, each resolved address and each
//! redirect): private, loopback and link-local addresses are refused unless the operator
//! set `allow_private_hosts`. HTML becomes text with `html2text`.

use futures_util::stream::{self, StreamExt};
use std::time::Duration;

use super::search::SearchResult;
use crate::outbound::{self, ClientSettings, HostPolicy};

const PAGE_TIMEOUT: Duration = Duration::from_secs(5);
const PAGE_MAX_BYTES: usize = 5 * 1024 * 1024;
const PARALLEL: usize = 5;
const MAX_REDIRECTS: usize = 5;
/// Lines are wrapped this wide (the model reads text, not a terminal).
const WIDTH: usize = 200;

pub struct Fetcher {
    client: reqwest::Client,
    policy: HostPolicy,
}

impl Fetcher {
    pub fn new(policy: HostPolicy) -> Fetcher {
        let mut settings = ClientSettings::new(policy, PAGE_TIMEOUT);
        settings.max_redirects = MAX_REDIRECTS;
        Fetcher {
            client: outbound::client(settings),
            policy,
        }
    }

    /// A page's text; the error says why it could not be had (never fatal: the result
    /// keeps its snippet).
    pub async fn text(&self, url: &str) -> Result<String, String> {
        let url = outbound::check_url(url, self.policy).map_err(|r| r.0)?;
        let mut res = self.client.get(url).send().await.map_err(|e| {
            outbound::refusal(&e).unwrap_or_else(|| "the page could not be fetched".into())
        })?;
        if !res.status().is_success() {
            return Err(format!("the page answered HTTP {}", res.status().as_u16()));
        }
        let ctype = res
            .headers()
            .get("content-type")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_ascii_lowercase();
        let html = ctype.is_empty() || ctype.contains("html") || ctype.contains("xml");
        if !html && !ctype.starts_with("text/") {
            return Err(format!("not a text page ({ctype})"));
        }
        let mut body = Vec::new();
        while let Some(chunk) = res
            .chunk()
            .await
            .map_err(|_| "the page could not be read".to_string())?
        {
            if body.len() + chunk.len() > PAGE_MAX_BYTES {
                // What arrived is enough for a cut text.
                body.extend_from_slice(&chunk[..PAGE_MAX_BYTES - body.len()]);
                break;
            }
            body.extend_from_slice(&chunk);
        }
        if !html {
            return Ok(String::from_utf8_lossy(&body).into_owned());
        }
        html2text::config::plain_no_decorate()
            .string_from_read(&body[..], WIDTH)
            .map_err(|_| "the page could not be read as HTML".to_string())
    }

    /// Fills in the text of results that have none, `PARALLEL` pages at a time.
    pub async fn fill(&self, results: &mut [SearchResult]) {
        let wanted: Vec<(usize, String)> = results
            .iter()
            .enumerate()
            .filter(|(_, r)| r.text.is_none())
            .map(|(i, r)| (i, r.url.clone()))
            .collect();
        let texts: Vec<(usize, Result<String, String>)> = stream::iter(wanted)
            .map(|(i, url)| async move { (i, self.text(&url).await) })
            .buffer_unordered(PARALLEL)
            .collect()
            .await;
        for (i, t) in texts {
            match t {
                Ok(text) if !text.trim().is_empty() => results[i].text = Some(tidy(&text)),
                Ok(_) => {}
                Err(why) => log::debug!("search result {i}: page not fetched: {why}"),
            }
        }
    }
}

/// Blank lines collapsed (text for a model).
fn tidy(text: &str) -> String {
    text.lines()
        .map(str::trim_end)
        .filter(|l| !l.is_empty())
        .collect::<Vec<_>>()
        .join("\n")
}
