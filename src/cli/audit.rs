//! `csrd audit`: the audit log, oldest first, as tab-separated lines or JSON.

use anyhow::{Context, bail};
use clap::Args;

use super::session::cli_client;
use super::tenant::TenantFilter;
use super::text::plain;
use crate::db::audit::AuditRecord;
use crate::settings::DbSettings;

#[derive(Debug, Args)]
pub struct AuditArgs {
    #[command(flatten)]
    pub tenant: TenantFilter,
    /// Only events since then: an RFC 3339 time (`2026-11-27T12:00:00Z`) or an age (`90s`,
    /// `15m`, `2h`, `7d`).
    #[arg(long)]
    pub since: Option<String>,
    /// Only this action (`csr.create`) or family (`csr`, `token`, `auth`).
    #[arg(long)]
    pub action: Option<String>,
    /// The newest this many events, at most.
    #[arg(long, default_value_t = 1000)]
    pub limit: i64,
    /// One JSON object per line.
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub db: DbSettings,
}

pub(super) async fn query(args: AuditArgs) -> anyhow::Result<()> {
    let owner = args.tenant.owner()?;
    let since = args
        .since
        .as_deref()
        .map(|s| parse_since(s, chrono::Utc::now()))
        .transpose()?;
    let filter = crate::db::audit::AuditFilter {
        owner,
        since,
        action: args.action,
        limit: args.limit.max(1),
    };
    let client = cli_client(&args.db).await?;
    for r in crate::db::audit::read(&**client, &filter).await? {
        if args.json {
            println!("{}", serde_json::to_string(&r)?);
        } else {
            println!("{}", record_line(r));
        }
    }
    Ok(())
}

/// `--since`: an RFC 3339 time, or an age such as `15m` before `now`.
fn parse_since(
    s: &str,
    now: chrono::DateTime<chrono::Utc>,
) -> anyhow::Result<chrono::DateTime<chrono::Utc>> {
    if let Ok(at) = chrono::DateTime::parse_from_rfc3339(s) {
        return Ok(at.with_timezone(&chrono::Utc));
    }
    let (number, unit) = s.split_at(s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len()));
    let n: i64 = number
        .parse()
        .with_context(|| format!("--since {s:?}: an RFC 3339 time or an age like 15m"))?;
    let age = match unit {
        "s" => chrono::Duration::seconds(n),
        "m" => chrono::Duration::minutes(n),
        "h" => chrono::Duration::hours(n),
        "d" => chrono::Duration::days(n),
        _ => bail!("--since {s:?}: the unit must be s, m, h or d"),
    };
    Ok(now - age)
}

/// One record as a tab-separated line: `-` for what it lacks, stored strings made plain.
fn record_line(r: AuditRecord) -> String {
    let owner = match (&r.owner_kind, &r.owner_id) {
        (Some(k), Some(id)) => format!("{k}:{id}"),
        _ => "-".into(),
    };
    let dash = |v: &Option<String>| plain(v.as_deref().unwrap_or("-")).into_owned();
    format!(
        "{}\t{}\t{}\t{}:{}\t{}\t{}\t{}\trequest={}\ttrace={}{}",
        r.at.format("%Y-%m-%dT%H:%M:%S%.3fZ"),
        plain(&r.action),
        plain(&r.outcome),
        plain(&r.actor_kind),
        dash(&r.actor),
        plain(&owner),
        dash(&r.target),
        dash(&r.remote_addr),
        dash(&r.request_id),
        dash(&r.trace_id),
        // JSON text: its strings' control characters are already escaped.
        r.detail.map(|d| format!("\t{d}")).unwrap_or_default()
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::{TimeZone, Utc};

    fn noon() -> chrono::DateTime<Utc> {
        Utc.with_ymd_and_hms(2026, 11, 27, 12, 0, 0).unwrap()
    }

    #[test]
    fn since_takes_an_rfc3339_time_in_any_offset() {
        assert_eq!(parse_since("2026-11-27T12:00:00Z", noon()).unwrap(), noon());
        assert_eq!(
            parse_since("2026-11-27T13:00:00+01:00", noon()).unwrap(),
            noon()
        );
    }

    #[test]
    fn since_takes_an_age_before_now() {
        let ago = |s| noon() - parse_since(s, noon()).unwrap();
        assert_eq!(ago("90s"), chrono::Duration::seconds(90));
        assert_eq!(ago("15m"), chrono::Duration::minutes(15));
        assert_eq!(ago("2h"), chrono::Duration::hours(2));
        assert_eq!(ago("7d"), chrono::Duration::days(7));
    }

    #[test]
    fn since_refuses_other_units_and_missing_numbers() {
        let why = |s| format!("{:#}", parse_since(s, noon()).unwrap_err());
        assert_eq!(why("3w"), r#"--since "3w": the unit must be s, m, h or d"#);
        assert!(why("15").contains("the unit must be s, m, h or d"));
        assert!(
            why("m").starts_with(r#"--since "m": an RFC 3339 time or an age like 15m"#),
            "{}",
            why("m")
        );
        assert!(why("yesterday").contains("an RFC 3339 time or an age like 15m"));
    }

    fn record() -> AuditRecord {
        AuditRecord {
            id: 1,
            at: noon(),
            action: "token.create".into(),
            outcome: "ok".into(),
            actor_kind: "operator".into(),
            actor: Some("ops".into()),
            owner_kind: None,
            owner_id: None,
            target: None,
            remote_addr: None,
            request_id: None,
            trace_id: None,
            detail: None,
        }
    }

    #[test]
    fn a_record_line_dashes_what_it_lacks() {
        assert_eq!(
            record_line(record()),
            "2026-11-27T12:00:00.000Z\ttoken.create\tok\toperator:ops\t-\t-\t-\trequest=-\ttrace=-"
        );
    }

    #[test]
    fn a_record_line_shows_the_owner_and_detail_and_escapes_stored_strings() {
        let r = AuditRecord {
            owner_kind: Some("account".into()),
            owner_id: Some("a1".into()),
            target: Some("evil\nline".into()),
            detail: Some(serde_json::json!({"name": "x\ny"})),
            ..record()
        };
        assert_eq!(
            record_line(r),
            "2026-11-27T12:00:00.000Z\ttoken.create\tok\toperator:ops\taccount:a1\tevil\\nline\t-\
             \trequest=-\ttrace=-\t{\"name\":\"x\\ny\"}"
        );
    }
}
