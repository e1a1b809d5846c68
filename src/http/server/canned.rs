//! Responses the connection layer writes itself, before or instead of the router: still the
//! Cloudflare failure envelope, so a client's error handling sees one shape everywhere.

use crate::domain::ErrorCode;

/// A complete HTTP/1.1 response that closes the connection: `status` with a failure envelope
/// holding one error.
pub fn failure(status: u16, code: ErrorCode, message: &str, retry_after: Option<u32>) -> Vec<u8> {
    let body = serde_json::json!({
        "success": false,
        "errors": [{"code": code.as_u32(), "message": message}],
        "messages": [],
        "result": null,
    })
    .to_string();
    let mut head = format!(
        "HTTP/1.1 {status} {}\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n",
        reason(status),
        body.len()
    );
    if let Some(secs) = retry_after {
        head.push_str(&format!("retry-after: {secs}\r\n"));
    }
    head.push_str("\r\n");
    let mut bytes = head.into_bytes();
    bytes.extend_from_slice(body.as_bytes());
    bytes
}

/// The failure envelope for a response hyper composed itself after a request head it could
/// not parse (it writes those with an empty body).
pub fn for_parse_error(status: u16) -> Vec<u8> {
    let message = match status {
        414 => "request URI too long",
        431 => "request header fields too large, or too many",
        _ => "malformed HTTP request",
    };
    failure(status, ErrorCode::InvalidRequest, message, None)
}

/// 408: a request head that did not arrive in time.
pub fn head_timeout() -> Vec<u8> {
    failure(
        408,
        ErrorCode::InvalidRequest,
        "request head not received in time",
        None,
    )
}

/// 503: every connection slot is serving a request.
pub fn overloaded() -> Vec<u8> {
    failure(
        503,
        ErrorCode::Internal,
        "Service temporarily unavailable; retry later",
        Some(1),
    )
}

fn reason(status: u16) -> &'static str {
    match status {
        400 => "Bad Request",
        408 => "Request Timeout",
        414 => "URI Too Long",
        431 => "Request Header Fields Too Large",
        503 => "Service Unavailable",
        _ => "Error",
    }
}

/// The status of a response hyper wrote on its own: only those are `HTTP/1.1 4xx` with an
/// empty body (every response of the router carries an envelope).
pub fn automatic_status(written: &[u8]) -> Option<u16> {
    let head = written.strip_prefix(b"HTTP/1.1 ")?;
    let status: u16 = std::str::from_utf8(head.get(..3)?).ok()?.parse().ok()?;
    let empty = written
        .windows(b"content-length: 0\r\n".len())
        .any(|w| w.eq_ignore_ascii_case(b"content-length: 0\r\n"));
    ((400..500).contains(&status) && empty).then_some(status)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn recognises_hypers_own_error_responses_only() {
        let hyper =
            b"HTTP/1.1 431 Request Header Fields Too Large\r\ncontent-length: 0\r\ndate: x\r\n\r\n";
        assert_eq!(automatic_status(hyper), Some(431));
        let ours = failure(400, ErrorCode::InvalidRequest, "x", None);
        assert_eq!(automatic_status(&ours), None);
        assert_eq!(
            automatic_status(b"HTTP/1.1 201 Created\r\ncontent-length: 0\r\n\r\n"),
            None
        );
    }

    #[test]
    fn a_canned_failure_is_a_complete_envelope() {
        let bytes = failure(503, ErrorCode::Internal, "busy", Some(1));
        let text = String::from_utf8(bytes).unwrap();
        let (head, body) = text.split_once("\r\n\r\n").unwrap();
        assert!(head.starts_with("HTTP/1.1 503 Service Unavailable\r\n"));
        assert!(head.contains("retry-after: 1"));
        assert!(head.contains(&format!("content-length: {}", body.len())));
        let v: serde_json::Value = serde_json::from_str(body).unwrap();
        assert_eq!(v["success"], false);
        assert_eq!(v["errors"][0]["code"], 1500);
    }
}
