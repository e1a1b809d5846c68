//! A client of the csrd (and Cloudflare) API, for `csrd batch` and `csrd bench`.

pub mod batch;
pub mod certificates;
mod follow;
pub mod http;
pub mod input;
mod item;
pub mod output;
pub mod progress;
pub mod record;
mod singles;
pub mod state;

use std::time::Duration;

use anyhow::Context;

/// Where the API is and who is asking.
#[derive(Clone)]
pub struct Api {
    http: reqwest::Client,
    /// The API base, ending in `/client/v4`.
    base: String,
    token: String,
    /// `accounts/<id>` or `zones/<id>`.
    owner_path: String,
}

impl Api {
    /// `url` is the API base (`http://host:8080/client/v4`) or a bare host, which gets
    /// `/client/v4` appended.
    pub fn new(url: &str, token: String, owner_path: String) -> anyhow::Result<Self> {
        Self::with_request_timeout(url, token, owner_path, Duration::from_secs(120))
    }

    /// As [`Api::new`], with `request_timeout` for each request from connecting to the last
    /// byte of the answer (a server dripping an answer is cut off then).
    pub fn with_request_timeout(
        url: &str,
        token: String,
        owner_path: String,
        request_timeout: Duration,
    ) -> anyhow::Result<Self> {
        let http = reqwest::Client::builder()
            .timeout(request_timeout)
            .pool_max_idle_per_host(256)
            .build()
            .context("building the HTTP client")?;
        Ok(Self {
            http,
            base: api_base(url),
            token,
            owner_path,
        })
    }

    /// An API reached through `http` (a client built with its own trust roots).
    pub fn with_client(
        http: reqwest::Client,
        url: &str,
        token: String,
        owner_path: String,
    ) -> Self {
        Self {
            http,
            base: api_base(url),
            token,
            owner_path,
        }
    }

    pub fn http(&self) -> &reqwest::Client {
        &self.http
    }

    pub fn token(&self) -> &str {
        &self.token
    }

    pub fn owner_path(&self) -> &str {
        &self.owner_path
    }

    /// `…/client/v4/{accounts|zones}/{id}/custom_certificates{suffix}`.
    pub fn certificates_url(&self, suffix: &str) -> String {
        format!(
            "{}/{}/custom_certificates{suffix}",
            self.base, self.owner_path
        )
    }

    /// `…/client/v4/{accounts|zones}/{id}/key_recipients{suffix}`.
    pub fn recipients_url(&self, suffix: &str) -> String {
        format!("{}/{}/key_recipients{suffix}", self.base, self.owner_path)
    }

    /// `…/client/v4/{accounts|zones}/{id}/custom_csrs{suffix}`.
    pub fn csrs_url(&self, suffix: &str) -> String {
        format!("{}/{}/custom_csrs{suffix}", self.base, self.owner_path)
    }
}

/// How long the client keeps trying before it gives up and the run stops (non-zero exit).
#[derive(Debug, Clone, Copy)]
pub struct Budgets {
    /// One request, retried while the answer says "later" (`--retry-budget`).
    pub retry: Duration,
    /// A batch (or a single create answered 202) that makes no progress this long
    /// (`--stall-timeout`).
    pub stall: Duration,
}

/// The API base: `url` without a trailing slash, with `/client/v4` appended unless present.
pub fn api_base(url: &str) -> String {
    let url = url.trim_end_matches('/');
    if url.ends_with("/client/v4") {
        url.to_owned()
    } else {
        format!("{url}/client/v4")
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_bare_host_gets_the_api_path() {
        for (given, base) in [
            ("http://127.0.0.1:8080", "http://127.0.0.1:8080/client/v4"),
            ("http://127.0.0.1:8080/", "http://127.0.0.1:8080/client/v4"),
            ("http://h/client/v4", "http://h/client/v4"),
            (
                "https://api.cloudflare.com/client/v4/",
                "https://api.cloudflare.com/client/v4",
            ),
        ] {
            assert_eq!(super::api_base(given), base);
        }
    }
}
