//! `csrd token create|list|revoke` and `csrd user create|list|revoke`: the lifecycle of API
//! tokens and legacy X-Auth-Email / X-Auth-Key users. A secret is printed once, by the command
//! that made it; listings never hold one.

use anyhow::{Context, bail};
use chrono::{DateTime, Utc};
use clap::{Args, Subcommand};

use super::session::{cli_client, operator_event};
use super::text::plain;
use crate::audit::{Actor, AuditEvent};
use crate::auth::{ApiKey, ApiToken, Permission, Scope};
use crate::db::credentials::{self, CredentialListing};
use crate::domain::{AccountId, ZoneId};
use crate::settings::DbSettings;

#[derive(Debug, Args)]
pub struct ScopeArgs {
    /// An account the credential may act on (repeatable).
    #[arg(long = "account")]
    pub accounts: Vec<String>,
    /// A zone the credential may act on (repeatable).
    #[arg(long = "zone")]
    pub zones: Vec<String>,
}

impl ScopeArgs {
    fn parse(&self) -> anyhow::Result<Scope> {
        let scope = Scope {
            accounts: self
                .accounts
                .iter()
                .map(|a| {
                    AccountId::parse(a)
                        .with_context(|| format!("account id {a:?} is not 32 lowercase hex"))
                })
                .collect::<anyhow::Result<_>>()?,
            zones: self
                .zones
                .iter()
                .map(|z| {
                    ZoneId::parse(z)
                        .with_context(|| format!("zone id {z:?} is not 32 lowercase hex"))
                })
                .collect::<anyhow::Result<_>>()?,
        };
        if scope.is_empty() {
            bail!("give at least one --account or --zone");
        }
        Ok(scope)
    }
}

#[derive(Debug, Subcommand)]
pub enum TokenCommand {
    /// Create an API token; prints the token alone on stdout (it is shown only once).
    Create {
        #[command(flatten)]
        scope: ScopeArgs,
        /// `read` (list, get), `write` (everything but key delivery) or `key-delivery` (only
        /// key recipients and their deliveries).
        #[arg(long, value_parser = ["read", "write", "key-delivery"])]
        permission: String,
        /// A label for the token.
        #[arg(long)]
        name: Option<String>,
        /// Expire the token after this many days (1 to 36,500).
        #[arg(long, value_parser = clap::value_parser!(u32).range(1..=36_500))]
        expires_in_days: Option<u32>,
        #[command(flatten)]
        db: DbSettings,
    },
    /// List the tokens (never their secrets): id, public prefix, scope, expiry, revocation.
    List {
        /// One JSON object per line.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        db: DbSettings,
    },
    /// Revoke a token by its id (from `token list`); it stops working within
    /// CSRD_CREDENTIAL_CACHE_MS on every ingress.
    Revoke {
        id: uuid::Uuid,
        #[command(flatten)]
        db: DbSettings,
    },
}

#[derive(Debug, Subcommand)]
pub enum UserCommand {
    /// Create a user (or give an existing one a new key); prints the global API key alone on stdout.
    Create {
        #[arg(long)]
        email: String,
        #[command(flatten)]
        scope: ScopeArgs,
        #[command(flatten)]
        db: DbSettings,
    },
    /// List the legacy users (never their keys).
    List {
        /// One JSON object per line.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        db: DbSettings,
    },
    /// Revoke a legacy user's key.
    Revoke {
        #[arg(long)]
        email: String,
        #[command(flatten)]
        db: DbSettings,
    },
}

pub(super) async fn token(command: TokenCommand, operator: &Actor) -> anyhow::Result<()> {
    match command {
        TokenCommand::Create {
            scope,
            permission,
            name,
            expires_in_days,
            db,
        } => {
            let request =
                NewToken::from_flags(&scope, &permission, name, expires_in_days, Utc::now())?;
            create_token(request, &db, operator).await
        }
        TokenCommand::List { json, db } => list_tokens(json, &db).await,
        TokenCommand::Revoke { id, db } => revoke_token(id, &db, operator).await,
    }
}

pub(super) async fn user(command: UserCommand, operator: &Actor) -> anyhow::Result<()> {
    match command {
        UserCommand::Create { email, scope, db } => {
            create_user(NewUser::from_flags(&email, &scope)?, &db, operator).await
        }
        UserCommand::List { json, db } => list_users(json, &db).await,
        UserCommand::Revoke { email, db } => revoke_user(&email, &db, operator).await,
    }
}

/// A token to create, its flags checked: nothing is stored before all of them are.
#[derive(Debug)]
struct NewToken {
    scope: Scope,
    permission: Permission,
    name: Option<String>,
    expires: Option<DateTime<Utc>>,
}

impl NewToken {
    fn from_flags(
        scope: &ScopeArgs,
        permission: &str,
        name: Option<String>,
        expires_in_days: Option<u32>,
        now: DateTime<Utc>,
    ) -> anyhow::Result<Self> {
        let scope = scope.parse()?;
        let permission = Permission::parse(permission)
            .context("permission must be read, write or key-delivery")?;
        if let Some(name) = &name {
            crate::auth::valid_label(name).map_err(|why| anyhow::anyhow!("--name {why}"))?;
        }
        Ok(Self {
            scope,
            permission,
            name,
            expires: expiry(expires_in_days, now)?,
        })
    }

    /// What the `token.create` event records of it (never the secret).
    fn audit_detail(&self) -> serde_json::Value {
        serde_json::json!({
            "name": self.name,
            "permission": self.permission.as_str(),
            "accounts": self.scope.accounts.iter().map(|a| a.as_str()).collect::<Vec<_>>(),
            "zones": self.scope.zones.iter().map(|z| z.as_str()).collect::<Vec<_>>(),
            "expires_at": self.expires,
        })
    }
}

/// `--expires-in-days`: when a token made `now` expires.
fn expiry(days: Option<u32>, now: DateTime<Utc>) -> anyhow::Result<Option<DateTime<Utc>>> {
    days.map(|d| {
        now.checked_add_signed(chrono::Duration::days(i64::from(d)))
            .context("--expires-in-days is too far in the future")
    })
    .transpose()
}

async fn create_token(request: NewToken, db: &DbSettings, operator: &Actor) -> anyhow::Result<()> {
    let token = ApiToken::generate();
    let client = cli_client(db).await?;
    let id = credentials::insert_token(
        &**client,
        &token,
        request.name.as_deref(),
        request.permission,
        &request.scope,
        request.expires,
    )
    .await?;
    operator_event(
        &**client,
        AuditEvent::new("token.create", "ok", operator.clone())
            .target(id)
            .detail(request.audit_detail()),
    )
    .await?;
    #[allow(
        clippy::disallowed_methods,
        reason = "the one time a token's secret is shown: to the operator who made it"
    )]
    let shown = token.reveal();
    println!("{shown}");
    Ok(())
}

async fn list_tokens(json: bool, db: &DbSettings) -> anyhow::Result<()> {
    let client = cli_client(db).await?;
    print_credentials(&credentials::list_tokens(&**client).await?, json);
    Ok(())
}

async fn revoke_token(id: uuid::Uuid, db: &DbSettings, operator: &Actor) -> anyhow::Result<()> {
    let client = cli_client(db).await?;
    if !credentials::revoke_token(&**client, id).await? {
        bail!("no unrevoked token has id {id}");
    }
    operator_event(
        &**client,
        AuditEvent::new("token.revoke", "ok", operator.clone()).target(id),
    )
    .await?;
    println!("revoked token {id}");
    Ok(())
}

/// A legacy user to create (or re-key), its flags checked.
#[derive(Debug)]
struct NewUser {
    /// Lowercased: emails are stored and looked up that way.
    email: String,
    scope: Scope,
}

impl NewUser {
    fn from_flags(email: &str, scope: &ScopeArgs) -> anyhow::Result<Self> {
        let scope = scope.parse()?;
        if !crate::auth::valid_email(email) {
            bail!("{:?} is not an email address", plain(email));
        }
        Ok(Self {
            email: email.to_ascii_lowercase(),
            scope,
        })
    }
}

async fn create_user(user: NewUser, db: &DbSettings, operator: &Actor) -> anyhow::Result<()> {
    let key = ApiKey::generate();
    let client = cli_client(db).await?;
    credentials::upsert_user(&**client, &user.email, &key, &user.scope).await?;
    operator_event(
        &**client,
        AuditEvent::new("user.create", "ok", operator.clone()).target(&user.email),
    )
    .await?;
    #[allow(
        clippy::disallowed_methods,
        reason = "the one time a legacy key is shown: to the operator who made it"
    )]
    let shown = key.reveal();
    println!("{shown}");
    Ok(())
}

async fn list_users(json: bool, db: &DbSettings) -> anyhow::Result<()> {
    let client = cli_client(db).await?;
    print_credentials(&credentials::list_users(&**client).await?, json);
    Ok(())
}

async fn revoke_user(email: &str, db: &DbSettings, operator: &Actor) -> anyhow::Result<()> {
    let client = cli_client(db).await?;
    let email = email.to_ascii_lowercase();
    if !credentials::revoke_user(&**client, &email).await? {
        bail!("no unrevoked user has email {}", plain(&email));
    }
    operator_event(
        &**client,
        AuditEvent::new("user.revoke", "ok", operator.clone()).target(&email),
    )
    .await?;
    println!("revoked user {}", plain(&email));
    Ok(())
}

fn print_credentials(listing: &[CredentialListing], json: bool) {
    for c in listing {
        if json {
            println!("{}", serde_json::to_string(c).unwrap_or_default());
        } else {
            println!("{}", credential_line(c, Utc::now()));
        }
    }
}

/// One credential as a tab-separated line, its stored strings made plain.
fn credential_line(c: &CredentialListing, now: DateTime<Utc>) -> String {
    format!(
        "{}\t{}\t{}\t{}\taccounts={}\tzones={}\tcreated {}\t{}",
        plain(&c.id),
        plain(c.lookup_id.as_deref().unwrap_or("-")),
        plain(c.name.as_deref().unwrap_or("-")),
        c.permission,
        c.accounts.join(","),
        c.zones.join(","),
        c.created_at.format("%Y-%m-%d %H:%M"),
        status(c, now)
    )
}

/// Whether a credential works at `now`: a revocation outranks an expiry.
fn status(c: &CredentialListing, now: DateTime<Utc>) -> String {
    match (&c.revoked_at, &c.expires_at) {
        (Some(at), _) => format!("revoked {}", at.format("%Y-%m-%d %H:%M")),
        (None, Some(at)) if *at <= now => format!("expired {}", at.format("%Y-%m-%d")),
        (None, Some(at)) => format!("expires {}", at.format("%Y-%m-%d")),
        (None, None) => "active".into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    const ACCOUNT: &str = "023e105f4ecef8ad9ca31a8372d0c353";
    const ZONE: &str = "9a7806061c88ada191ed06f989cc3dac";

    fn noon() -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2026, 11, 27, 12, 0, 0).unwrap()
    }

    fn scope(accounts: &[&str], zones: &[&str]) -> ScopeArgs {
        ScopeArgs {
            accounts: accounts.iter().map(|a| a.to_string()).collect(),
            zones: zones.iter().map(|z| z.to_string()).collect(),
        }
    }

    #[test]
    fn a_scope_holds_the_given_accounts_and_zones() {
        let parsed = scope(&[ACCOUNT], &[ZONE]).parse().unwrap();
        assert_eq!(parsed.accounts, vec![AccountId::parse(ACCOUNT).unwrap()]);
        assert_eq!(parsed.zones, vec![ZoneId::parse(ZONE).unwrap()]);
    }

    #[test]
    fn a_scope_needs_well_formed_ids_and_at_least_one() {
        let why = |s: ScopeArgs| s.parse().unwrap_err().to_string();
        assert_eq!(
            why(scope(&["ABC"], &[])),
            r#"account id "ABC" is not 32 lowercase hex"#
        );
        assert_eq!(
            why(scope(&[ACCOUNT], &["z"])),
            r#"zone id "z" is not 32 lowercase hex"#
        );
        assert_eq!(
            why(scope(&[], &[])),
            "give at least one --account or --zone"
        );
    }

    #[test]
    fn an_expiry_is_that_many_days_from_now() {
        assert_eq!(expiry(None, noon()).unwrap(), None);
        assert_eq!(
            expiry(Some(7), noon()).unwrap(),
            Some(Utc.with_ymd_and_hms(2026, 12, 4, 12, 0, 0).unwrap())
        );
        let why = expiry(Some(1), DateTime::<Utc>::MAX_UTC).unwrap_err();
        assert_eq!(
            why.to_string(),
            "--expires-in-days is too far in the future"
        );
    }

    #[test]
    fn a_new_token_checks_its_flags_in_order() {
        let new = |scope, permission, name: Option<&str>| {
            NewToken::from_flags(&scope, permission, name.map(Into::into), None, noon())
                .map_err(|e| e.to_string())
        };
        assert_eq!(
            new(scope(&[], &[]), "admin", None).unwrap_err(),
            "give at least one --account or --zone"
        );
        assert_eq!(
            new(scope(&[ACCOUNT], &[]), "admin", None).unwrap_err(),
            "permission must be read, write or key-delivery"
        );
        assert!(
            new(scope(&[ACCOUNT], &[]), "read", Some("a\nb"))
                .unwrap_err()
                .starts_with("--name "),
        );
        let token = new(scope(&[ACCOUNT], &[]), "write", Some("ci")).unwrap();
        assert_eq!(token.permission, Permission::parse("write").unwrap());
        assert_eq!(token.name.as_deref(), Some("ci"));
    }

    #[test]
    fn the_token_audit_detail_names_its_scope_and_expiry() {
        let token = NewToken::from_flags(
            &scope(&[ACCOUNT], &[ZONE]),
            "read",
            Some("ci".into()),
            Some(1),
            noon(),
        )
        .unwrap();
        assert_eq!(
            token.audit_detail(),
            serde_json::json!({
                "name": "ci",
                "permission": "read",
                "accounts": [ACCOUNT],
                "zones": [ZONE],
                "expires_at": "2026-11-28T12:00:00Z",
            })
        );
    }

    #[test]
    fn a_new_user_has_a_lowercased_valid_email() {
        let user = NewUser::from_flags("Ops@Example.com", &scope(&[ACCOUNT], &[])).unwrap();
        assert_eq!(user.email, "ops@example.com");
        let why = NewUser::from_flags("not an\nemail", &scope(&[ACCOUNT], &[]))
            .unwrap_err()
            .to_string();
        assert_eq!(why, r#""not an\\nemail" is not an email address"#);
    }

    fn listing() -> CredentialListing {
        CredentialListing {
            id: "ops@example.com".into(),
            lookup_id: None,
            name: None,
            permission: "write".into(),
            accounts: vec![ACCOUNT.into()],
            zones: vec![],
            created_at: noon(),
            expires_at: None,
            revoked_at: None,
        }
    }

    #[test]
    fn a_credential_line_dashes_what_it_lacks_and_escapes_stored_strings() {
        assert_eq!(
            credential_line(&listing(), noon()),
            format!(
                "ops@example.com\t-\t-\twrite\taccounts={ACCOUNT}\tzones=\tcreated 2026-11-27 12:00\tactive"
            )
        );
        let named = CredentialListing {
            lookup_id: Some("abcd1234".into()),
            name: Some("evil\nline".into()),
            ..listing()
        };
        assert!(
            credential_line(&named, noon()).starts_with("ops@example.com\tabcd1234\tevil\\nline\t"),
        );
    }

    #[test]
    fn a_revocation_outranks_an_expiry() {
        let day = chrono::Duration::days(1);
        let with = |expires_at, revoked_at| CredentialListing {
            expires_at,
            revoked_at,
            ..listing()
        };
        assert_eq!(status(&with(None, None), noon()), "active");
        assert_eq!(
            status(&with(Some(noon() + day), None), noon()),
            "expires 2026-11-28"
        );
        assert_eq!(
            status(&with(Some(noon()), None), noon()),
            "expired 2026-11-27"
        );
        assert_eq!(
            status(&with(Some(noon() - day), Some(noon())), noon()),
            "revoked 2026-11-27 12:00"
        );
    }
}
