//! Key delivery end to end, with the real parts: nginx serves TLS with keys csrd made, which
//! `csrd agent sync` installed from sealed deliveries; the stock `age` CLI opens a delivery
//! too. Needs nginx, age, openssl and curl (`scripts/test` installs them).

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use csrd::auth::Permission;
use reqwest::Method;
use serde_json::{Value, json};

use csrd_test_support::process::run_ok;
use csrd_test_support::*;

const CSRD: &str = env!("CARGO_BIN_EXE_csrd");

fn sh(program: &str, args: &[&str]) -> std::process::Output {
    Command::new(program)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("{program} runs (is it installed?): {e}"))
}

fn ok(program: &str, args: &[&str]) -> String {
    let out = sh(program, args);
    assert!(
        out.status.success(),
        "{program} {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// A directory of the test's own (mode 0700), removed when dropped.
struct Dir(PathBuf);

impl Dir {
    fn new() -> Self {
        use std::os::unix::fs::PermissionsExt as _;
        let p = std::env::temp_dir().join(format!("csrd-agent-e2e-{}", uuid::Uuid::new_v4()));
        std::fs::create_dir_all(p.join("tls")).unwrap();
        std::fs::create_dir_all(p.join("logs")).unwrap();
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o700)).unwrap();
        Self(p)
    }
    fn path(&self, rest: &str) -> PathBuf {
        self.0.join(rest)
    }
    fn s(&self, rest: &str) -> String {
        self.path(rest).to_string_lossy().into_owned()
    }
}

impl Drop for Dir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// nginx serving shop.example.com and www.example.com on `port`, from files in `dir/tls`.
struct Nginx<'a> {
    dir: &'a Dir,
}

impl<'a> Nginx<'a> {
    fn configure(dir: &'a Dir, port: u16) -> Self {
        let server = |name: &str| {
            format!(
                "server {{ listen 127.0.0.1:{port} ssl; server_name {name}.example.com;
                   ssl_certificate {tls}/{name}.pem; ssl_certificate_key {tls}/{name}.key;
                   return 200 \"{name}\\n\"; }}\n",
                tls = dir.s("tls")
            )
        };
        let conf = format!(
            "worker_processes 1; pid {pid}; error_log {logs}/error.log;
             events {{}}
             http {{ access_log off;
               client_body_temp_path {logs}/body; proxy_temp_path {logs}/proxy;
               fastcgi_temp_path {logs}/fastcgi; uwsgi_temp_path {logs}/uwsgi;
               scgi_temp_path {logs}/scgi;
               {shop}{www} }}\n",
            pid = dir.s("logs/nginx.pid"),
            logs = dir.s("logs"),
            shop = server("shop"),
            www = server("www"),
        );
        std::fs::write(dir.path("nginx.conf"), conf).unwrap();
        Self { dir }
    }

    fn argv(&self, first: &[&str]) -> Vec<String> {
        let mut v: Vec<String> = vec!["nginx".into()];
        v.extend(first.iter().map(|s| s.to_string()));
        v.extend([
            "-p".into(),
            self.dir.s(""),
            "-c".into(),
            self.dir.s("nginx.conf"),
        ]);
        v
    }

    fn start(&self) {
        let argv = self.argv(&[]);
        let args: Vec<&str> = argv[1..].iter().map(String::as_str).collect();
        ok("nginx", &args);
    }
}

impl Drop for Nginx<'_> {
    fn drop(&mut self) {
        let argv = self.argv(&["-s", "stop"]);
        // Never `sh` here: a panic while unwinding (nginx missing) would abort the run.
        let _ = Command::new("nginx").args(&argv[1..]).output();
    }
}

/// The certificate nginx serves for `name`: its serial (hex) and public key (PEM).
fn served(port: u16, name: &str, ca: &Path) -> Option<(String, String)> {
    let cert = Command::new("sh")
        .arg("-c")
        .arg(format!(
            "openssl s_client -connect 127.0.0.1:{port} -servername {name} -CAfile {} \
             -verify_return_error </dev/null 2>/dev/null | openssl x509",
            ca.display()
        ))
        .output()
        .ok()?;
    if !cert.status.success() {
        return None;
    }
    let pem = String::from_utf8_lossy(&cert.stdout).into_owned();
    let tmp = std::env::temp_dir().join(format!("served-{}.pem", uuid::Uuid::new_v4()));
    std::fs::write(&tmp, &pem).unwrap();
    let t = tmp.to_string_lossy().into_owned();
    let serial = ok("openssl", &["x509", "-in", &t, "-noout", "-serial"]);
    let key = ok("openssl", &["x509", "-in", &t, "-noout", "-pubkey"]);
    let _ = std::fs::remove_file(&tmp);
    Some((serial.trim().trim_start_matches("serial=").to_owned(), key))
}

fn csr_public_key(csr_pem: &str, dir: &Dir) -> String {
    let path = dir.path(&format!("{}.csr", uuid::Uuid::new_v4()));
    std::fs::write(&path, csr_pem).unwrap();
    ok(
        "openssl",
        &["req", "-in", &path.to_string_lossy(), "-noout", "-pubkey"],
    )
}

fn serial_hex(chain: &str, dir: &Dir) -> String {
    let path = dir.path(&format!("{}.pem", uuid::Uuid::new_v4()));
    std::fs::write(&path, chain).unwrap();
    ok(
        "openssl",
        &["x509", "-in", &path.to_string_lossy(), "-noout", "-serial"],
    )
    .trim()
    .trim_start_matches("serial=")
    .to_owned()
}

/// A placeholder self-signed certificate and key for `name`, so nginx starts before the
/// agent's first pass (as a host with an old certificate would).
fn placeholder(dir: &Dir, name: &str) {
    ok(
        "openssl",
        &[
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
            "-nodes",
            "-keyout",
            &dir.s(&format!("tls/{name}.key")),
            "-out",
            &dir.s(&format!("tls/{name}.pem")),
            "-days",
            "1",
            "-subj",
            &format!("/CN={name}.example.com"),
        ],
    );
}

/// Runs a pass from the config's directory with the config named relatively (as an operator
/// on the host would): the state file beside it is then a relative path too.
async fn sync(config: &Path) -> (bool, String) {
    let out = Command::new(CSRD)
        .current_dir(config.parent().unwrap())
        .args(["agent", "sync", "--config"])
        .arg(config.file_name().unwrap())
        .output()
        .unwrap();
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), said)
}

async fn wait_served(port: u16, name: &str, ca: &Path, serial: &str) -> String {
    eventually_within(
        &format!("nginx to serve {name} with serial {serial}"),
        Duration::from_secs(20),
        || async {
            served(port, name, ca)
                .filter(|(s, _)| s == serial)
                .map(|(_, k)| k)
        },
    )
    .await
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

#[tokio::test]
async fn nginx_serves_keys_csrd_made_installed_by_the_agent_from_sealed_deliveries() {
    let app = spawn_app().await;
    let dir = Dir::new();
    let write = app.token(&[], &[ZONE_A], Permission::Write).await;
    let delivery = app.token(&[], &[ZONE_A], Permission::KeyDelivery).await;
    let ca = TestCa::new();
    std::fs::write(dir.path("ca.pem"), &ca.pem).unwrap();

    // 1. Two CSRs created deliverable (P-256 and RSA-2048), one not.
    let create = |name: &str, key_type: &str, sealed: bool| {
        let mut body = with(named_body(name), "key_type", json!(key_type));
        if sealed {
            body = with(body, "key_delivery", json!("sealed"));
        }
        body
    };
    let mut csrs = Vec::new();
    for (name, key_type, sealed) in [
        ("shop.example.com", "p256v1", true),
        ("www.example.com", "rsa2048", true),
        ("plain.example.com", "p256v1", false),
    ] {
        let resp = app
            .create(
                "zones",
                ZONE_A,
                Auth::Bearer(&write),
                &create(name, key_type, sealed),
            )
            .await;
        assert_eq!(resp.status, 201, "{}", resp.body);
        csrs.push(resp.body["result"].clone());
    }
    // 2. Signed by a local CA, uploaded.
    let upload = |csr: &Value| {
        let chain = ca.sign(csr["csr"].as_str().unwrap());
        let body = json!({"certificate": chain, "custom_csr_id": csr["id"]}).to_string();
        let app = &app;
        let write = write.clone();
        async move {
            let r = app
                .send(
                    Method::POST,
                    &format!("/client/v4/zones/{ZONE_A}/custom_certificates"),
                    Auth::Bearer(&write),
                    Some(body),
                )
                .await;
            assert_eq!(r.status, 200, "{}", r.body);
            (r.body["result"]["id"].as_str().unwrap().to_owned(), chain)
        }
    };
    let (_, shop_chain) = upload(&csrs[0]).await;
    let (www_cert_id, www_chain) = upload(&csrs[1]).await;
    upload(&csrs[2]).await;

    // 3. The agent's identity, enrolled with a key-delivery token, approved by an operator.
    let identity = dir.path("identity");
    let recipient = ok(
        CSRD,
        &["agent", "init", "--identity", &identity.to_string_lossy()],
    )
    .trim()
    .to_owned();
    let enrolled = app
        .send(
            Method::POST,
            &format!("/client/v4/zones/{ZONE_A}/key_recipients"),
            Auth::Bearer(&delivery),
            Some(
                json!({"name": "web-1", "recipient": recipient,
                       "hosts": ["shop.example.com", "www.example.com", "plain.example.com"]})
                .to_string(),
            ),
        )
        .await;
    assert_eq!(enrolled.status, 201, "{}", enrolled.body);
    let rid = enrolled.body["result"]["id"].as_str().unwrap().to_owned();
    let fingerprint = enrolled.body["result"]["fingerprint"]
        .as_str()
        .unwrap()
        .to_owned();
    run_ok(
        CSRD,
        &app.iso,
        &["recipient", "approve", &rid, "--fingerprint", &fingerprint],
    );

    // 4. nginx runs on placeholders; the agent installs the delivered keys and reloads it.
    let port = free_port();
    let nginx = Nginx::configure(&dir, port);
    placeholder(&dir, "shop");
    placeholder(&dir, "www");
    nginx.start();
    let token_file = dir.path("token");
    std::fs::write(&token_file, &delivery).unwrap();
    use std::os::unix::fs::PermissionsExt as _;
    std::fs::set_permissions(&token_file, std::fs::Permissions::from_mode(0o600)).unwrap();
    let toml_argv = |argv: Vec<String>| serde_json::to_string(&argv).unwrap();
    // The chains must end at the local CA: a server answering as the API with a chain of its
    // own making is refused.
    let issuers = std::cell::RefCell::new(dir.s("ca.pem"));
    let config_with = |check: Vec<String>, shop_key: &str| {
        format!(
            "api = \"{api}\"\ntoken_file = \"{token}\"\nidentity = \"{identity}\"\n\
             issuers = \"{issuers}\"\n\
             zone = \"{ZONE_A}\"\nrecipient_id = \"{rid}\"\n\
             [[target]]\nhost = \"shop.example.com\"\nkey = \"{shop_key}\"\n\
             fullchain = \"{tls}/shop.pem\"\ncheck = {check}\nreload = {reload}\n\
             [[target]]\ncustom_csr_id = \"{www}\"\nnames = [\"www.example.com\"]\n\
             key = \"{tls}/www.key\"\nfullchain = \"{tls}/www.pem\"\ncheck = {check}\n\
             reload = {reload}\n",
            api = app.url(""),
            token = token_file.display(),
            identity = identity.display(),
            issuers = issuers.borrow(),
            tls = dir.s("tls"),
            www = csrs[1]["id"].as_str().unwrap(),
            check = toml_argv(check),
            reload = toml_argv(nginx.argv(&["-s", "reload"])),
        )
    };
    let config = dir.path("agent.toml");
    let good_check = nginx.argv(&["-t", "-q"]);
    let shop_key = dir.s("tls/shop.key");
    std::fs::write(&config, config_with(good_check.clone(), &shop_key)).unwrap();
    let (all_current, said) = sync(&config).await;
    assert!(all_current, "{said}");
    assert!(
        said.contains("agent: 2 targets: 2 installed, 0 current, 0 failed, 0 gone"),
        "{said}"
    );
    let mode = std::fs::metadata(dir.path("tls/shop.key"))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600);

    // A TLS handshake completes with the CA, and the served key is the CSR's.
    let ca_path = dir.path("ca.pem");
    for (csr, chain, name) in [
        (&csrs[0], &shop_chain, "shop.example.com"),
        (&csrs[1], &www_chain, "www.example.com"),
    ] {
        let key = wait_served(port, name, &ca_path, &serial_hex(chain, &dir)).await;
        assert_eq!(key, csr_public_key(csr["csr"].as_str().unwrap(), &dir));
        let body = ok(
            "curl",
            &[
                "-sS",
                "--cacert",
                &ca_path.to_string_lossy(),
                "--resolve",
                &format!("{name}:{port}:127.0.0.1"),
                &format!("https://{name}:{port}/"),
            ],
        );
        assert_eq!(body.trim(), name.split('.').next().unwrap());
    }
    let (all_current, said) = sync(&config).await;
    assert!(
        all_current && said.contains("0 installed, 2 current"),
        "{said}"
    );

    // 6. The stock age CLI opens a delivery; the CSR without the opt-in is never delivered.
    let page = app
        .send(
            Method::GET,
            &format!("/client/v4/zones/{ZONE_A}/key_recipients/{rid}/deliveries"),
            Auth::Bearer(&delivery),
            None,
        )
        .await;
    assert_eq!(page.body["result_info"]["total_count"], 2, "{}", page.body);
    let ids: Vec<&str> = page.body["result"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["custom_csr_id"].as_str().unwrap())
        .collect();
    assert!(!ids.contains(&csrs[2]["id"].as_str().unwrap()));
    let sealed_path = dir.path("sealed.age");
    std::fs::write(
        &sealed_path,
        page.body["result"][0]["sealed_key"].as_str().unwrap(),
    )
    .unwrap();
    let opened = ok(
        "age",
        &[
            "-d",
            "-i",
            &identity.to_string_lossy(),
            &sealed_path.to_string_lossy(),
        ],
    );
    assert!(opened.starts_with("-----BEGIN PRIVATE KEY-----"));
    let opened_path = dir.path("opened.key");
    std::fs::write(&opened_path, &opened).unwrap();
    let public = ok(
        "openssl",
        &["pkey", "-in", &opened_path.to_string_lossy(), "-pubout"],
    );
    let delivered_csr = csrs
        .iter()
        .find(|c| c["id"] == page.body["result"][0]["custom_csr_id"])
        .unwrap();
    assert_eq!(
        public,
        csr_public_key(delivered_csr["csr"].as_str().unwrap(), &dir)
    );

    // 5. Rotation: a new certificate for the shop CSR is installed and served after reload.
    let (renewed_id, renewed) = upload(&csrs[0]).await;
    let (all_current, said) = sync(&config).await;
    assert!(
        all_current && said.contains("1 installed, 1 current"),
        "{said}"
    );
    wait_served(
        port,
        "shop.example.com",
        &ca_path,
        &serial_hex(&renewed, &dir),
    )
    .await;

    // A failing check puts the previous files back (and nothing is reloaded).
    let before_key = std::fs::read(dir.path("tls/shop.key")).unwrap();
    let before_chain = std::fs::read(dir.path("tls/shop.pem")).unwrap();
    let (third_id, third) = upload(&csrs[0]).await;
    std::fs::write(&config, config_with(vec!["false".into()], &shop_key)).unwrap();
    let (all_current, said) = sync(&config).await;
    assert!(
        !all_current && said.contains("the check failed, the previous files are back"),
        "{said}"
    );
    assert_eq!(std::fs::read(dir.path("tls/shop.key")).unwrap(), before_key);
    assert_eq!(
        std::fs::read(dir.path("tls/shop.pem")).unwrap(),
        before_chain
    );
    assert_ne!(serial_hex(&third, &dir), serial_hex(&renewed, &dir));

    // A symlinked target path is refused, and nothing is written through it.
    let elsewhere = dir.path("elsewhere.key");
    std::fs::write(&elsewhere, b"untouched").unwrap();
    let link = dir.s("tls/link.key");
    std::os::unix::fs::symlink(&elsewhere, &link).unwrap();
    std::fs::write(&config, config_with(good_check.clone(), &link)).unwrap();
    let (all_current, said) = sync(&config).await;
    assert!(
        !all_current && said.contains("is a symlink: refused"),
        "{said}"
    );
    assert_eq!(std::fs::read(&elsewhere).unwrap(), b"untouched");

    std::fs::write(&config, config_with(good_check.clone(), &shop_key)).unwrap();
    let delete = |path: String| {
        let app = &app;
        let write = write.clone();
        async move {
            let r = app
                .send(Method::DELETE, &path, Auth::Bearer(&write), None)
                .await;
            assert_eq!(r.status, 200, "{}", r.body);
        }
    };
    let certs = format!("/client/v4/zones/{ZONE_A}/custom_certificates");

    // A rollback (the newer certificates deleted: the current one is of a lower generation
    // than the one installed) is refused, as an old release replayed would be.
    delete(format!("{certs}/{renewed_id}")).await;
    delete(format!("{certs}/{third_id}")).await;
    let (all_current, said) = sync(&config).await;
    assert!(
        !all_current && said.contains("lower than the installed"),
        "{said}"
    );
    assert_eq!(std::fs::read(dir.path("tls/shop.key")).unwrap(), before_key);

    // A swapped certificate (another key's leaf, as a tampered database would send it) is
    // refused by the agent, and the files stay.
    let www_key = std::fs::read(dir.path("tls/www.key")).unwrap();
    let client = app.pool.get().await.unwrap();
    let www_id = uuid::Uuid::parse_str(csrs[1]["id"].as_str().unwrap()).unwrap();
    client
        .execute(
            "UPDATE custom_certificates SET certificate = $1 WHERE custom_csr_id = $2",
            &[&ca.sign(csrs[2]["csr"].as_str().unwrap()), &www_id],
        )
        .await
        .unwrap();
    let (all_current, said) = sync(&config).await;
    assert!(
        !all_current && said.contains("not the certificate's"),
        "{said}"
    );
    assert_eq!(std::fs::read(dir.path("tls/www.key")).unwrap(), www_key);

    // The CSR deleted (its certificate first): the target is gone, its files are left.
    delete(format!("{certs}/{www_cert_id}")).await;
    delete(format!(
        "/client/v4/zones/{ZONE_A}/custom_csrs/{}",
        csrs[1]["id"].as_str().unwrap()
    ))
    .await;
    let (all_current, said) = sync(&config).await;
    assert!(!all_current && said.contains("gone"), "{said}");
    assert_eq!(std::fs::read(dir.path("tls/www.key")).unwrap(), www_key);

    // Neither the logs nor the database hold the key bytes.
    let key_b64: String = opened
        .lines()
        .filter(|l| !l.starts_with("-----"))
        .collect::<Vec<_>>()
        .join("");
    let dump = pg_dump(&app.iso.database_url);
    for line in opened.lines().filter(|l| !l.starts_with("-----")) {
        assert!(!dump.contains(line), "a key line in pg_dump");
        assert!(!said.contains(line), "a key line in the agent's output");
    }
    assert!(key_b64.len() > 100);
    drop(nginx);
}
