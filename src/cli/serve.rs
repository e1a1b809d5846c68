//! The service's own commands: `csrd serve | ingress | worker` (run until SIGTERM or Ctrl-C,
//! then finish the in-flight work) and `csrd migrate`.

use crate::settings::{DbSettings, Settings};
use crate::startup::{self, Role};

pub(super) async fn serve(role: Role, settings: Settings) -> anyhow::Result<()> {
    let running = startup::start(role, &settings, None).await?;
    let token = running.shutdown_token();
    tokio::spawn(async move {
        wait_for_signal().await;
        tracing::info!("shutdown requested; finishing in-flight work");
        token.cancel();
    });
    running.wait().await;
    tracing::info!("stopped");
    Ok(())
}

async fn wait_for_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate()).expect("installing the SIGTERM handler");
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
}

pub(super) async fn migrate(db: DbSettings) -> anyhow::Result<()> {
    let applied = startup::migrate(&db).await?;
    eprintln!("{}", applied_line(&applied));
    Ok(())
}

/// What `csrd migrate` reports on stderr: the migrations it applied, by name.
fn applied_line(applied: &[String]) -> String {
    format!(
        "migrations applied: {}",
        if applied.is_empty() {
            "none (up to date)".into()
        } else {
            applied.join(", ")
        }
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_applied_migrations_are_named_or_none() {
        assert_eq!(applied_line(&[]), "migrations applied: none (up to date)");
        assert_eq!(
            applied_line(&["V1__init".into(), "V2__audit".into()]),
            "migrations applied: V1__init, V2__audit"
        );
    }
}
