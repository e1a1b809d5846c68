//! Responses the connection layer writes itself, before or instead of the router (a slow head,
//! a full server, a head hyper could not parse). The envelope is `ApiError`'s, as everywhere;
//! only the HTTP/1.1 framing is written here, because there is no hyper connection to write
//! them through.

use crate::http::ApiError;

/// A complete HTTP/1.1 response for `error` that closes the connection.
pub fn response(error: &ApiError) -> Vec<u8> {
    // Serialising the envelope (plain strings and numbers) cannot fail.
    let body = serde_json::to_vec(&error.failure()).unwrap_or_default();
    let status = error.status();
    let mut head = format!(
        "HTTP/1.1 {} {}\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n",
        status.as_u16(),
        status.canonical_reason().unwrap_or("Error"),
        body.len()
    );
    if let Some(secs) = error
        .retry_after()
        .and_then(|v| v.to_str().ok().map(str::to_owned))
    {
        head.push_str(&format!("retry-after: {secs}\r\n"));
    }
    head.push_str("\r\n");
    let mut bytes = head.into_bytes();
    bytes.extend_from_slice(&body);
    bytes
}

/// The error for a response hyper composed itself after a request head it could not parse.
/// hyper writes those with an empty body, before any service sees the request, and has no
/// hook to change them: `io` recognises them on their way out ([`automatic_status`]) and
/// writes this instead. This is the one place hyper's own refusals are rewritten.
pub fn for_parse_error(status: u16) -> ApiError {
    match status {
        414 => ApiError::UriTooLong,
        431 => ApiError::HeadersTooLarge,
        _ => ApiError::MalformedHead("malformed HTTP request"),
    }
}

/// The status of a response hyper wrote on its own: only those are `HTTP/1.1 4xx` with an
/// empty body (every response of the router carries an envelope).
pub fn automatic_status(written: &[u8]) -> Option<u16> {
    let head = written.strip_prefix(b"HTTP/1.1 ")?;
    let status: u16 = std::str::from_utf8(head.get(..3)?).ok()?.parse().ok()?;
    // Every response passes through here: look no further than a 4xx's head.
    if !(400..500).contains(&status) {
        return None;
    }
    let end = written
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .map_or(written.len(), |at| at + 2);
    let empty = written[..end]
        .windows(b"content-length: 0\r\n".len())
        .any(|w| w.eq_ignore_ascii_case(b"content-length: 0\r\n"));
    empty.then_some(status)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn recognises_hypers_own_error_responses_only() {
        let hyper =
            b"HTTP/1.1 431 Request Header Fields Too Large\r\ncontent-length: 0\r\ndate: x\r\n\r\n";
        assert_eq!(automatic_status(hyper), Some(431));
        let ours = response(&ApiError::MalformedHead("x"));
        assert_eq!(automatic_status(&ours), None);
        assert_eq!(
            automatic_status(b"HTTP/1.1 201 Created\r\ncontent-length: 0\r\n\r\n"),
            None
        );
    }

    #[test]
    fn a_canned_failure_is_a_complete_envelope() {
        let bytes = response(&ApiError::Overloaded);
        let text = String::from_utf8(bytes).unwrap();
        let (head, body) = text.split_once("\r\n\r\n").unwrap();
        assert!(head.starts_with("HTTP/1.1 503 Service Unavailable\r\n"));
        assert!(head.contains("retry-after: 1"));
        assert!(head.contains(&format!("content-length: {}", body.len())));
        let v: serde_json::Value = serde_json::from_str(body).unwrap();
        assert_eq!(v["success"], false);
        assert_eq!(v["errors"][0]["code"], 1500);
    }

    #[test]
    fn hypers_refusals_keep_their_status() {
        for status in [400, 414, 431] {
            assert_eq!(for_parse_error(status).status().as_u16(), status);
        }
        let slow = String::from_utf8(response(&ApiError::HeadTimeout)).unwrap();
        assert!(slow.starts_with("HTTP/1.1 408 Request Timeout\r\n"));
        assert!(slow.contains("\"code\":1400"));
    }
}
