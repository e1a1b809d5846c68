//! How the domain's jobs and completions look on the wire: JSON bodies (a job carries a format
//! version), W3C trace context in string headers, and the `x-death` header RabbitMQ adds when
//! it dead-letters a message. Public request data only: never key bytes.

use lapin::types::{AMQPValue, FieldTable};
use serde::{Deserialize, Serialize};

use crate::domain::{Completion, CreateChunk, CreateJob};
use crate::queue::{PublishError, TraceContext};

/// Version 2: a chunk of jobs. Version 1 (one job, the body flat) is still read, so jobs queued
/// by an older release are handled after an upgrade.
pub const CHUNK_VERSION: u8 = 2;
const SINGLE_JOB_VERSION: u8 = 1;

#[derive(Serialize)]
struct ChunkMessage<'a> {
    version: u8,
    jobs: &'a [CreateJob],
}

#[derive(Deserialize)]
struct AnyJobMessage {
    #[serde(default = "single_job_version")]
    version: u8,
    #[serde(default)]
    jobs: Option<Vec<CreateJob>>,
    #[serde(flatten)]
    rest: serde_json::Map<String, serde_json::Value>,
}

fn single_job_version() -> u8 {
    SINGLE_JOB_VERSION
}

#[derive(Debug, thiserror::Error)]
pub enum DecodeError {
    #[error("malformed job message")]
    Json(#[from] serde_json::Error),
    #[error("unsupported job format version {0}")]
    Version(u8),
    #[error("a chunk without jobs")]
    Empty,
}

fn encode_error(e: serde_json::Error) -> PublishError {
    PublishError::Encode(std::sync::Arc::new(e))
}

pub fn encode_chunk(chunk: &CreateChunk) -> Result<Vec<u8>, PublishError> {
    let message = ChunkMessage {
        version: CHUNK_VERSION,
        jobs: &chunk.jobs,
    };
    serde_json::to_vec(&message).map_err(encode_error)
}

pub fn decode_chunk(body: &[u8]) -> Result<CreateChunk, DecodeError> {
    let message: AnyJobMessage = serde_json::from_slice(body)?;
    let jobs = match (message.version, message.jobs) {
        (CHUNK_VERSION, Some(jobs)) => jobs,
        (SINGLE_JOB_VERSION, None) => {
            vec![serde_json::from_value(serde_json::Value::Object(
                message.rest,
            ))?]
        }
        (CHUNK_VERSION, None) => return Err(DecodeError::Empty),
        (version, _) => return Err(DecodeError::Version(version)),
    };
    if jobs.is_empty() {
        return Err(DecodeError::Empty);
    }
    Ok(CreateChunk::new(jobs))
}

/// One event carries every completion for one ingress instance from one chunk.
#[derive(Serialize, Deserialize)]
struct CompletionsMessage<'a> {
    completions: std::borrow::Cow<'a, [Completion]>,
}

pub fn encode_completions(completions: &[Completion]) -> Result<Vec<u8>, PublishError> {
    let message = CompletionsMessage {
        completions: std::borrow::Cow::Borrowed(completions),
    };
    serde_json::to_vec(&message).map_err(encode_error)
}

/// Also reads the single completion an older worker sends.
pub fn decode_completions(body: &[u8]) -> Result<Vec<Completion>, serde_json::Error> {
    match serde_json::from_slice::<CompletionsMessage<'static>>(body) {
        Ok(m) => Ok(m.completions.into_owned()),
        Err(_) => serde_json::from_slice::<Completion>(body).map(|c| vec![c]),
    }
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
    fn chunks_round_trip_and_single_jobs_of_version_1_still_decode() {
        let chunk = CreateChunk::new(vec![job(), job()]);
        let wire = encode_chunk(&chunk).unwrap();
        let v: serde_json::Value = serde_json::from_slice(&wire).unwrap();
        assert_eq!(v["version"], 2);
        assert_eq!(decode_chunk(&wire).unwrap(), chunk);

        let single = job();
        let mut v1 = serde_json::to_value(&single).unwrap();
        assert_eq!(
            decode_chunk(v1.to_string().as_bytes()).unwrap(),
            CreateChunk::one(single.clone()),
            "a job without a version is version 1"
        );
        v1["version"] = 1.into();
        assert_eq!(
            decode_chunk(v1.to_string().as_bytes()).unwrap().jobs,
            vec![single]
        );
        let mut future = v.clone();
        future["version"] = 3.into();
        assert!(matches!(
            decode_chunk(future.to_string().as_bytes()),
            Err(DecodeError::Version(3))
        ));
        assert!(matches!(
            decode_chunk(br#"{"version":2,"jobs":[]}"#),
            Err(DecodeError::Empty)
        ));
        assert!(decode_chunk(b"{}").is_err());
    }

    #[test]
    fn completions_travel_together_and_a_single_one_still_decodes() {
        use crate::domain::JobOutcome;
        let a = Completion {
            id: job().id,
            outcome: JobOutcome::Created {
                csr_pem: Some("PEM".into()),
            },
        };
        let b = Completion {
            id: job().id,
            outcome: JobOutcome::Failed { reason: "r".into() },
        };
        let wire = encode_completions(&[a.clone(), b.clone()]).unwrap();
        assert_eq!(decode_completions(&wire).unwrap(), vec![a.clone(), b]);
        let old = serde_json::to_vec(&a).unwrap();
        assert_eq!(decode_completions(&old).unwrap(), vec![a]);
        assert!(decode_completions(b"[]").is_err());
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
