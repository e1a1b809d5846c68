//! A database and an AMQP prefix of one test's own, so tests run in parallel and leave nothing
//! behind.

use csrd::amqp::{QueueLimits, Topology};
use csrd::crypto::{KekId, Keyring};
use csrd::db::build_pool;
use csrd::settings::Settings;

/// The Postgres server the tests create their databases on (user `postgres`, trust auth).
pub fn admin_url() -> String {
    std::env::var("CSRD_TEST_DATABASE_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".into())
}

pub fn amqp_url() -> String {
    std::env::var("CSRD_TEST_AMQP_URL").unwrap_or_else(|_| csrd::settings::DEFAULT_AMQP_URL.into())
}

/// A fresh database, an AMQP prefix and a KEK of one test's own. Dropping it deletes the
/// database and, when the test used the broker, every queue and exchange of the prefix.
pub struct Isolation {
    pub db_name: String,
    pub database_url: String,
    pub prefix: String,
    pub keks: String,
    /// False for in-memory apps: their tests must not need RabbitMQ at all.
    pub uses_broker: bool,
    /// The server (as an admin URL) the database was created on, and is dropped from.
    admin: String,
}

impl Isolation {
    pub async fn new() -> Self {
        let base = admin_url();
        Self::on_server(&base, |db_name| match base.rsplit_once('/') {
            Some((head, _)) => format!("{head}/{db_name}"),
            None => panic!("CSRD_TEST_DATABASE_URL must end in /dbname"),
        })
        .await
    }

    /// A database created through `admin` (a URL of the server's `postgres` database), that
    /// csrd reaches at `url_for(db_name)` (a failover URL naming several hosts, say).
    pub async fn on_server(admin: &str, url_for: impl FnOnce(&str) -> String) -> Self {
        let suffix = uuid::Uuid::new_v4().simple().to_string();
        let db_name = format!("csrd_test_{suffix}");
        let pool = build_pool(admin, 1, "csrd-tests").unwrap();
        pool.get()
            .await
            .expect("Postgres must be running for the integration tests (see scripts/test)")
            .batch_execute(&format!("CREATE DATABASE {db_name}"))
            .await
            .unwrap();
        let database_url = url_for(&db_name);
        let keks = Keyring::generate_entry(&KekId::parse("test-kek").unwrap()).to_string();
        Self {
            db_name,
            database_url,
            prefix: format!("csrdtest-{suffix}"),
            keks,
            uses_broker: true,
            admin: admin.to_owned(),
        }
    }

    pub fn settings(&self) -> Settings {
        let mut s = Settings::defaults();
        s.db.database_url = self.database_url.clone();
        s.db.db_pool_size = 8;
        s.broker.amqp_url = amqp_url();
        s.broker.amqp_prefix = self.prefix.clone();
        s.keys.keks = Some(self.keks.clone().into());
        s.worker.workers = Some(2);
        // Tests run many apps at once on two cores: no background key generation unless a
        // test asks for a pool.
        s.worker.key_pool_rsa2048 = 0;
        s.worker.key_pool_p256 = 0;
        s.worker.key_pool_rsa3072 = 0;
        s.worker.key_pool_rsa4096 = 0;
        s.worker.key_pool_p384 = 0;
        s.http.listen = "127.0.0.1:0".parse().unwrap();
        s.http.admin_listen = "127.0.0.1:0".parse().unwrap();
        // Many tests create quickly from one account; the rate limit has its own tests.
        s.tenants.tenant_rate = 0.0;
        s
    }

    /// Environment for a `csrd` child process.
    pub fn env(&self) -> Vec<(&'static str, String)> {
        vec![
            ("DATABASE_URL", self.database_url.clone()),
            ("AMQP_URL", amqp_url()),
            ("CSRD_AMQP_PREFIX", self.prefix.clone()),
            ("CSRD_KEKS", self.keks.clone()),
            ("CSRD_WORKERS", "2".into()),
            ("CSRD_KEY_POOL_RSA2048", "0".into()),
            ("CSRD_ADMIN_LISTEN", "127.0.0.1:0".into()),
            ("CSRD_KEY_POOL_P256", "0".into()),
            ("CSRD_KEY_POOL_RSA3072", "0".into()),
            ("CSRD_KEY_POOL_RSA4096", "0".into()),
            ("CSRD_KEY_POOL_P384", "0".into()),
            ("CSRD_TENANT_RATE", "0".into()),
            ("RUST_LOG", "warn".into()),
        ]
    }

    pub fn topology(&self) -> Topology {
        Topology::new(&self.prefix, QueueLimits::default())
    }
}

impl Drop for Isolation {
    fn drop(&mut self) {
        let db_name = self.db_name.clone();
        let admin = self.admin.clone();
        let topology = self.uses_broker.then(|| self.topology());
        // Drop cannot await: clean up on a thread with a runtime of its own.
        let cleanup = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async move {
                if let Some(topology) = topology {
                    crate::broker::delete_topology(&topology).await;
                }
                let admin = build_pool(&admin, 1, "csrd-tests").unwrap();
                if let Ok(client) = admin.get().await {
                    let _ = client
                        .batch_execute(&format!("DROP DATABASE IF EXISTS {db_name} WITH (FORCE)"))
                        .await;
                }
            });
        });
        let _ = cleanup.join();
    }
}
