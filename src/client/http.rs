//! One API request as the client makes it against a server it does not trust: the answer is
//! read chunk by chunk up to a limit the caller picks (an answer past it is an error, never
//! buffered whole), and "later" answers are retried within a time budget, never for ever.
//!
//! Retried: a request that failed on the way (connect, send, timeout, a body cut short), 429,
//! and 5xx other than 500 and 501. The pause is the answer's `Retry-After` (seconds) but at
//! least [`RETRY_FLOOR`], else an exponential backoff from 1 s to 30 s with jitter. A retry
//! that would end past the budget is not made: the call fails and says what it last got.

use std::time::{Duration, Instant};

use hyper::body::Bytes;
use serde::de::DeserializeOwned;
use serde_json::Value;

use super::{Api, Budgets};

/// A server asking for a retry sooner than this (`Retry-After: 0`) gets it this late.
pub const RETRY_FLOOR: Duration = Duration::from_secs(1);
const BACKOFF_CAP: Duration = Duration::from_secs(30);

/// Answer size limits, by what is asked. Each is far above what csrd sends.
pub mod limits {
    /// A results page: 100 CSRs (the client asks for no more) of at most ~95 KB each (150
    /// SANs of 253 characters, listed and again inside the PEM); a few KiB each in practice.
    /// Kept near that worst case: reading up to it holds about 1.5 times it at once.
    pub const RESULTS_PAGE: usize = 16 * 1024 * 1024;
    /// A submission's answer: a 400 may list an error for each of 10,000 items, several each.
    pub const SUBMISSION: usize = 16 * 1024 * 1024;
    /// A single create's answer: one CSR, or its errors.
    pub const CREATE: usize = 1024 * 1024;
    /// A batch's status: a few counters.
    pub const STATUS: usize = 64 * 1024;
}

/// A call that cannot succeed: the run stops with this message.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct CallFailed(pub String);

/// What the server answered.
pub struct Answer {
    pub status: u16,
    pub body: Vec<u8>,
}

impl Answer {
    /// The body as JSON, or null when it is not JSON.
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or(Value::Null)
    }

    /// The body as `T`, or a message saying what `what` should have been.
    pub fn parse<T: DeserializeOwned>(&self, what: &str) -> Result<T, CallFailed> {
        serde_json::from_slice(&self.body).map_err(|e| {
            CallFailed(format!(
                "the API's answer to {what} ({}) is not what it should be: {e}; body starts {:?}",
                self.status,
                String::from_utf8_lossy(&self.body[..self.body.len().min(200)])
            ))
        })
    }

    /// The `errors` of the answer, for a message.
    pub fn errors(&self) -> String {
        let errors = &self.json()["errors"];
        if errors.is_null() {
            format!(
                "(no errors in the body: {:?})",
                String::from_utf8_lossy(&self.body[..self.body.len().min(200)])
            )
        } else {
            errors.to_string()
        }
    }
}

/// One request to make: what it is (for messages), and how much of an answer to accept.
pub struct Call<'a> {
    pub what: &'a str,
    pub method: reqwest::Method,
    pub url: &'a str,
    pub idempotency_key: Option<&'a str>,
    pub json_body: Option<Bytes>,
    pub limit: usize,
}

/// Why one attempt got no answer to give the caller.
enum Attempt {
    /// Worth another try: what happened, and when the server asked to be asked again.
    Later(String, Option<Duration>),
    Failed(CallFailed),
}

/// Makes the call, retrying within `budgets.retry`. 401 and 403 fail the call: no later
/// request of the run would be let in either.
pub async fn call(api: &Api, budgets: &Budgets, call: Call<'_>) -> Result<Answer, CallFailed> {
    let started = Instant::now();
    let mut attempts: u32 = 0;
    loop {
        attempts += 1;
        let (why, retry_after) = match attempt(api, &call).await {
            Ok(answer) if answer.status == 401 || answer.status == 403 => {
                return Err(CallFailed(format!(
                    "{}: the API refused the credentials ({}): {}",
                    call.what,
                    answer.status,
                    answer.errors()
                )));
            }
            Ok(answer) => return Ok(answer),
            Err(Attempt::Failed(e)) => return Err(e),
            Err(Attempt::Later(why, retry_after)) => (why, retry_after),
        };
        let pause = match retry_after {
            Some(asked) => asked.max(RETRY_FLOOR),
            None => backoff(attempts),
        };
        if started.elapsed() + pause > budgets.retry {
            return Err(CallFailed(format!(
                "{}: gave up after {attempts} attempts in {:.1} s (retry budget {} s, \
                 --retry-budget): last {why}{}",
                call.what,
                started.elapsed().as_secs_f64(),
                budgets.retry.as_secs(),
                retry_after.map_or(String::new(), |d| format!(
                    ", asked to retry after {} s",
                    d.as_secs()
                ))
            )));
        }
        tracing::debug!(what = call.what, %why, ?pause, "retrying");
        tokio::time::sleep(pause).await;
    }
}

async fn attempt(api: &Api, call: &Call<'_>) -> Result<Answer, Attempt> {
    let mut req = api
        .http()
        .request(call.method.clone(), call.url)
        .bearer_auth(api.token());
    if let Some(key) = call.idempotency_key {
        req = req.header("idempotency-key", key);
    }
    if let Some(body) = &call.json_body {
        req = req
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .body(body.clone());
    }
    let resp = req
        .send()
        .await
        .map_err(|e| Attempt::Later(format!("request failed: {e}"), None))?;
    let status = resp.status().as_u16();
    let retry_after = resp
        .headers()
        .get(reqwest::header::RETRY_AFTER)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok())
        .map(Duration::from_secs);
    let body = read_limited(resp, call.limit).await.map_err(|e| match e {
        ReadError::TooLarge => Attempt::Failed(CallFailed(format!(
            "{}: the API's answer ({status}) is larger than {} bytes: stopped reading it",
            call.what, call.limit
        ))),
        ReadError::Transport(e) => Attempt::Later(format!("answer cut short: {e}"), None),
    })?;
    if status == 429 || (502..600).contains(&status) {
        return Err(Attempt::Later(format!("answer {status}"), retry_after));
    }
    Ok(Answer { status, body })
}

enum ReadError {
    TooLarge,
    Transport(reqwest::Error),
}

/// The body, chunk by chunk, refused as soon as it passes `limit` bytes (or says it will).
async fn read_limited(mut resp: reqwest::Response, limit: usize) -> Result<Vec<u8>, ReadError> {
    if resp.content_length().is_some_and(|n| n > limit as u64) {
        return Err(ReadError::TooLarge);
    }
    let mut body = Vec::new();
    while let Some(chunk) = resp.chunk().await.map_err(ReadError::Transport)? {
        if body.len() + chunk.len() > limit {
            return Err(ReadError::TooLarge);
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body)
}

/// 1 s, 2 s, 4 s … up to 30 s, each between 75 % and 125 % of that (so clients that failed
/// together do not come back together), never under the floor.
fn backoff(attempt: u32) -> Duration {
    let base = RETRY_FLOOR.saturating_mul(1 << attempt.saturating_sub(1).min(5));
    let base = base.min(BACKOFF_CAP);
    let jitter = getrandom::u32().unwrap_or(u32::MAX / 2) as f64 / u32::MAX as f64;
    base.mul_f64(0.75 + 0.5 * jitter).max(RETRY_FLOOR)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_grows_to_its_cap_and_never_undercuts_the_floor() {
        for attempt in 1..40 {
            let pause = backoff(attempt);
            assert!(pause >= RETRY_FLOOR, "{attempt}: {pause:?}");
            assert!(pause <= BACKOFF_CAP.mul_f64(1.25), "{attempt}: {pause:?}");
        }
        assert!(backoff(6) >= Duration::from_secs(22));
    }
}
