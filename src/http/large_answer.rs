//! Answers that may be megabytes (a page of 50 certificate chains, a page of CSRs with 150
//! SANs each), sent so that what they hold is bounded: in pieces of [`PIECE`] bytes, each a
//! copy, holding the answer's place among the process's large answers (see
//! `Limits::admit_large_answer`) until the last piece is taken. hyper takes a piece only when
//! it has room to write it, so a client that does not read keeps the place — and at most one
//! answer's memory — until the write timeout cuts it.

use std::convert::Infallible;

use axum::body::{Body, Bytes};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;

use crate::fairshare::Permit;

/// What one piece of an answer holds.
const PIECE: usize = 64 * 1024;

/// `value` as JSON with `status`, holding `place` until it is sent.
pub fn large_json(status: StatusCode, value: &impl Serialize, place: Permit) -> Response {
    // Serialising owned plain data into a Vec cannot fail.
    let bytes = serde_json::to_vec(value).unwrap_or_default();
    let length = bytes.len();
    let pieces = futures_util::stream::unfold(
        (bytes, 0usize, Some(place)),
        |(bytes, at, mut place)| async move {
            if at >= bytes.len() {
                // The last piece is taken: the place is free for another answer.
                place.take();
                return None;
            }
            let end = (at + PIECE).min(bytes.len());
            let piece = Bytes::copy_from_slice(&bytes[at..end]);
            Some((Ok::<_, Infallible>(piece), (bytes, end, place)))
        },
    );
    let mut response = (status, Body::from_stream(pieces)).into_response();
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    headers.insert(header::CONTENT_LENGTH, HeaderValue::from(length));
    response
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::{Owner, OwnerKind};
    use crate::fairshare::{Ask, FairGate, Lane};
    use http_body_util::BodyExt as _;

    #[tokio::test]
    async fn the_place_is_held_until_the_last_piece_is_taken() {
        let gate = FairGate::new(1);
        let place = gate
            .acquire(Ask {
                tenant: Owner::parse(OwnerKind::Account, &"a".repeat(32)).unwrap(),
                lane: Lane::Interactive,
                size: 1,
                cost: 1.0,
                weight: 1.0,
            })
            .await;
        let page = serde_json::json!({ "result": vec!["x".repeat(1000); 300] });
        let response = large_json(StatusCode::OK, &page, place);
        let length: usize = response.headers()[header::CONTENT_LENGTH]
            .to_str()
            .unwrap()
            .parse()
            .unwrap();
        let mut body = response.into_body();
        let first = body.frame().await.unwrap().unwrap().into_data().unwrap();
        assert_eq!(first.len(), PIECE);
        assert!(
            gate.try_acquire_idle(1).is_none(),
            "held while pieces remain"
        );
        let mut received = first.len();
        while let Some(frame) = body.frame().await {
            received += frame.unwrap().into_data().unwrap().len();
        }
        assert_eq!(received, length);
        assert!(gate.try_acquire_idle(1).is_some(), "given back once sent");
    }
}
