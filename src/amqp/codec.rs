//! How the domain's jobs and completions look on the wire: JSON bodies (a job carries a format
//! version), W3C trace context in string headers, and the `x-death` header RabbitMQ adds when
//! it dead-letters a message. Public request data only: never key bytes.

use lapin::types::{AMQPValue, FieldTable};
use serde::{Deserialize, Serialize};

use crate::domain::{Completion, CreateJob};
use crate::queue::{PublishError, TraceContext};

pub const JOB_VERSION: u8 = 1;

fn job_version() -> u8 {
    JOB_VERSION
}

/// A job as published: the domain job plus the format version. A job without a version (as
/// the Idempotency-Key record stores it) is version 1.
#[derive(Serialize, Deserialize)]
struct JobMessage<'a> {
    #[serde(default = "job_version")]
    version: u8,
    #[serde(flatten)]
    job: std::borrow::Cow<'a, CreateJob>,
}

#[derive(Debug, thiserror::Error)]
pub enum DecodeError {
    #[error("malformed job message")]
    Json(#[from] serde_json::Error),
    #[error("unsupported job format version {0}")]
    Version(u8),
}

pub fn encode_job(job: &CreateJob) -> Result<Vec<u8>, PublishError> {
    let message = JobMessage {
        version: JOB_VERSION,
        job: std::borrow::Cow::Borrowed(job),
    };
    serde_json::to_vec(&message).map_err(PublishError::Encode)
}

pub fn decode_job(body: &[u8]) -> Result<CreateJob, DecodeError> {
    let message: JobMessage<'static> = serde_json::from_slice(body)?;
    if message.version != JOB_VERSION {
        return Err(DecodeError::Version(message.version));
    }
    Ok(message.job.into_owned())
}

pub fn encode_completion(completion: &Completion) -> Result<Vec<u8>, PublishError> {
    serde_json::to_vec(completion).map_err(PublishError::Encode)
}

pub fn decode_completion(body: &[u8]) -> Result<Completion, serde_json::Error> {
    serde_json::from_slice(body)
}

/// The current span's trace context as message headers.
pub fn trace_headers() -> FieldTable {
    let mut table = FieldTable::default();
    for (k, v) in crate::telemetry::current_context_headers() {
        table.insert(k.into(), AMQPValue::LongString(v.as_str().into()));
    }
    table
}

/// The trace context a publisher attached.
pub fn trace_context(headers: Option<&FieldTable>) -> TraceContext {
    ["traceparent", "tracestate"]
        .into_iter()
        .filter_map(|k| string_header(headers?, k).map(|v| (k.to_owned(), v)))
        .collect()
}

fn string_header(headers: &FieldTable, name: &str) -> Option<String> {
    match headers.inner().get(name)? {
        AMQPValue::LongString(s) => Some(s.to_string()),
        AMQPValue::ShortString(s) => Some(s.to_string()),
        _ => None,
    }
}

/// RabbitMQ's reason for dead-lettering (`delivery_limit`, `rejected`, …) from `x-death`.
pub fn death_cause(headers: Option<&FieldTable>) -> Option<String> {
    let first = match headers?.inner().get("x-death")? {
        AMQPValue::FieldArray(a) => a.as_slice().first()?.clone(),
        _ => return None,
    };
    let AMQPValue::FieldTable(death) = first else {
        return None;
    };
    string_header(&death, "reason")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::{AccountId, CreateCsr, NamePolicy, Owner, OwnerKind};
    use lapin::types::FieldArray;

    fn job() -> CreateJob {
        let body = serde_json::json!({
            "common_name": "acme.io", "country": "US", "state": "CA", "locality": "SF",
            "organization": "Acme", "sans": ["acme.io"]
        });
        let request = CreateCsr::parse(
            body.to_string().as_bytes(),
            OwnerKind::Account,
            NamePolicy::Permissive,
        )
        .unwrap();
        CreateJob::new(
            Owner::Account(AccountId::parse(&"b".repeat(32)).unwrap()),
            request,
            "i".into(),
        )
    }

    #[test]
    fn jobs_round_trip_with_their_version_and_without_one() {
        let j = job();
        let wire = encode_job(&j).unwrap();
        let v: serde_json::Value = serde_json::from_slice(&wire).unwrap();
        assert_eq!(v["version"], 1);
        assert_eq!(decode_job(&wire).unwrap(), j);
        let stored = serde_json::to_vec(&j).unwrap();
        assert_eq!(decode_job(&stored).unwrap(), j, "a stored job is version 1");
        let mut future = v.clone();
        future["version"] = 2.into();
        assert!(matches!(
            decode_job(future.to_string().as_bytes()),
            Err(DecodeError::Version(2))
        ));
        assert!(decode_job(b"{}").is_err());
    }

    #[test]
    fn the_death_cause_is_read_from_x_death() {
        let mut death = FieldTable::default();
        death.insert(
            "reason".into(),
            AMQPValue::LongString("delivery_limit".into()),
        );
        let mut headers = FieldTable::default();
        headers.insert(
            "x-death".into(),
            AMQPValue::FieldArray(FieldArray::from(vec![AMQPValue::FieldTable(death)])),
        );
        assert_eq!(
            death_cause(Some(&headers)).as_deref(),
            Some("delivery_limit")
        );
        assert_eq!(death_cause(None), None);
    }
}
