//! The shared store against a real `redis-server` (Debian's, on loopback, no persistence), one
//! per test.

use std::time::Duration;

use sqe_engine_config::AuthMode;

use super::*;
use crate::session::test_redis::redis;
use redis::AsyncCommands;

fn keys(bytes: &[u8]) -> ClusterKeys {
    ClusterKeys::new(bytes.iter().map(|b| [*b; 32]).collect()).unwrap()
}

fn record(access: &str) -> SessionRecord {
    SessionRecord {
        id: "0123456789abcdef".into(),
        user: "alice".into(),
        roles: vec![],
        subject: Some("f1d2".into()),
        mode: AuthMode::Password,
        access: access.into(),
        refresh: Some("eyJyZWZyZXNoIn0".into()),
        machine: None,
        obtained_at_ms: 1,
        expires_at_ms: 2,
        absolute_deadline_ms: 3,
        last_used_ms: 1,
    }
}

const TTL: Duration = Duration::from_secs(60);

#[tokio::test]
async fn a_session_written_by_one_replica_is_read_by_another_and_the_store_sees_no_token() {
    let r = redis();
    let a = SharedSessions::open(&r.url, None, None, keys(&[1])).unwrap();
    let b = SharedSessions::open(&r.url, None, None, keys(&[1])).unwrap();
    let handle = HandleSecrets::generate();
    assert!(
        a.create(&handle, &record("eyJhY2Nlc3Mi"), TTL)
            .await
            .unwrap()
    );
    assert!(
        !a.create(&handle, &record("eyJvdGhlciI"), TTL)
            .await
            .unwrap()
    );
    let seen = b.read(&handle).await.unwrap().unwrap();
    assert_eq!(seen.record.access, "eyJhY2Nlc3Mi");
    assert_eq!(seen.generation, 0);
    // What the store holds: no token, no session id.
    let client = redis::Client::open(r.url.as_str()).unwrap();
    let mut conn = client.get_multiplexed_async_connection().await.unwrap();
    let names: Vec<String> = redis::cmd("KEYS")
        .arg("*")
        .query_async(&mut conn)
        .await
        .unwrap();
    assert_eq!(names, vec![record_key(&handle)]);
    let raw: Vec<u8> = conn.get(&names[0]).await.unwrap();
    assert!(!raw.windows(3).any(|w| w == b"eyJ"));
    // Another handle opens nothing, even under the same name.
    let stranger = HandleSecrets {
        sid: handle.sid,
        record: [9; 32],
    };
    assert!(matches!(
        b.read(&stranger).await,
        Err(SharedError::Seal(SealError::Refused))
    ));
}

#[tokio::test]
async fn a_record_is_replaced_only_over_the_generation_it_was_read_at() {
    let r = redis();
    let a = SharedSessions::open(&r.url, None, None, keys(&[1])).unwrap();
    let b = SharedSessions::open(&r.url, None, None, keys(&[1])).unwrap();
    let handle = HandleSecrets::generate();
    a.create(&handle, &record("eyJ0b2tlbjAi"), TTL)
        .await
        .unwrap();
    assert!(
        a.replace(&handle, 0, &record("eyJ0b2tlbjEi"))
            .await
            .unwrap()
    );
    // B read generation 0 before A's refresh landed: its write is refused.
    assert!(!b.replace(&handle, 0, &record("eyJzdGFsZSI")).await.unwrap());
    let now = b.read(&handle).await.unwrap().unwrap();
    assert_eq!(
        (now.generation, now.record.access.as_str()),
        (1, "eyJ0b2tlbjEi")
    );
    assert_eq!(b.generation(&handle).await.unwrap(), Some(1));
    // A logout on B: A's next write does not bring the session back.
    b.delete(&handle).await.unwrap();
    assert!(!a.replace(&handle, 1, &record("eyJhZnRlciI")).await.unwrap());
    assert!(a.read(&handle).await.unwrap().is_none());
    assert_eq!(a.generation(&handle).await.unwrap(), None);
}

#[tokio::test]
async fn one_replica_at_a_time_holds_a_sessions_refresh_lock() {
    let r = redis();
    let a = SharedSessions::open(&r.url, None, None, keys(&[1])).unwrap();
    let b = SharedSessions::open(&r.url, None, None, keys(&[1])).unwrap();
    let handle = HandleSecrets::generate();
    assert!(a.lock(&handle, "pod-a", TTL).await.unwrap());
    assert!(!b.lock(&handle, "pod-b", TTL).await.unwrap());
    // Only the holder lets it go.
    b.unlock(&handle, "pod-b").await.unwrap();
    assert!(!b.lock(&handle, "pod-b", TTL).await.unwrap());
    a.unlock(&handle, "pod-a").await.unwrap();
    assert!(b.lock(&handle, "pod-b", TTL).await.unwrap());
    // A holder that died lets go when the lock expires.
    let other = HandleSecrets::generate();
    assert!(
        a.lock(&other, "pod-a", Duration::from_millis(100))
            .await
            .unwrap()
    );
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(b.lock(&other, "pod-b", TTL).await.unwrap());
}

#[tokio::test]
async fn a_rotated_key_list_reads_old_records_and_asks_for_a_reseal() {
    let r = redis();
    let old = SharedSessions::open(&r.url, None, None, keys(&[1])).unwrap();
    let rolled = SharedSessions::open(&r.url, None, None, keys(&[2, 1])).unwrap();
    let dropped = SharedSessions::open(&r.url, None, None, keys(&[2])).unwrap();
    let handle = HandleSecrets::generate();
    old.create(&handle, &record("eyJvbGQi"), TTL).await.unwrap();
    let seen = rolled.read(&handle).await.unwrap().unwrap();
    assert!(seen.reseal);
    assert!(matches!(
        dropped.read(&handle).await,
        Err(SharedError::Seal(SealError::RetiredKey))
    ));
    assert!(
        rolled
            .replace(&handle, seen.generation, &seen.record)
            .await
            .unwrap()
    );
    let resealed = dropped.read(&handle).await.unwrap().unwrap();
    assert!(!resealed.reseal);
    assert_eq!(resealed.record.access, "eyJvbGQi");
}

#[tokio::test]
async fn a_store_that_is_down_is_unavailable_not_unknown() {
    let r = redis();
    let url = r.url.clone();
    let a = SharedSessions::open(&url, None, None, keys(&[1])).unwrap();
    let handle = HandleSecrets::generate();
    a.create(&handle, &record("eyJ1cCI"), TTL).await.unwrap();
    let mut r = r;
    r.stop();
    let read = tokio::time::timeout(Duration::from_secs(10), a.read(&handle))
        .await
        .expect("answers within 10 s");
    assert!(matches!(read, Err(SharedError::Unavailable(_))), "{read:?}");
}

#[tokio::test]
async fn a_touch_keeps_the_record_alive_and_reads_its_generation() {
    let r = redis();
    let a = SharedSessions::open(&r.url, None, None, keys(&[1])).unwrap();
    let handle = HandleSecrets::generate();
    a.create(&handle, &record("eyJ0b3VjaCI"), Duration::from_millis(300))
        .await
        .unwrap();
    for _ in 0..4 {
        tokio::time::sleep(Duration::from_millis(150)).await;
        let seen = a.touch(&handle, Duration::from_millis(300)).await.unwrap();
        assert_eq!(seen, Some(0));
    }
    // Left alone past its idle time, it is gone for every replica.
    tokio::time::sleep(Duration::from_millis(400)).await;
    assert_eq!(
        a.touch(&handle, Duration::from_millis(300)).await.unwrap(),
        None
    );
    assert!(a.read(&handle).await.unwrap().is_none());
}

#[tokio::test]
async fn a_password_protected_store_is_reached_with_the_password_apart_from_the_url() {
    let r = redis();
    let admin = redis::Client::open(r.url.as_str()).unwrap();
    let mut conn = admin.get_multiplexed_async_connection().await.unwrap();
    let _: () = redis::cmd("CONFIG")
        .arg("SET")
        .arg("requirepass")
        .arg("store-pw")
        .query_async(&mut conn)
        .await
        .unwrap();
    let handle = HandleSecrets::generate();
    let without = SharedSessions::open(&r.url, None, None, keys(&[1])).unwrap();
    assert!(matches!(
        without.read(&handle).await,
        Err(SharedError::Unavailable(_))
    ));
    let with = SharedSessions::open(&r.url, Some("store-pw"), None, keys(&[1])).unwrap();
    assert!(with.read(&handle).await.unwrap().is_none());
}

/// A CA and a certificate for 127.0.0.1 signed by it, made with `openssl` in `dir`.
fn certificates(dir: &std::path::Path) {
    let openssl = |args: &[&str]| {
        let out = std::process::Command::new("openssl")
            .args(args)
            .current_dir(dir)
            .output()
            .expect("openssl is on PATH");
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    std::fs::write(dir.join("ext"), "subjectAltName=IP:127.0.0.1\n").unwrap();
    let rsa = ["-newkey", "rsa:2048", "-nodes", "-days", "1"];
    openssl(
        &[
            &["req", "-x509"][..],
            &rsa,
            &[
                "-keyout",
                "ca.key",
                "-out",
                "ca.pem",
                "-subj",
                "/CN=sqe-test-ca",
            ],
        ]
        .concat(),
    );
    openssl(
        &[
            &["req"][..],
            &rsa[..3],
            &[
                "-keyout",
                "s.key",
                "-out",
                "s.csr",
                "-subj",
                "/CN=127.0.0.1",
            ],
        ]
        .concat(),
    );
    openssl(&[
        "x509",
        "-req",
        "-in",
        "s.csr",
        "-CA",
        "ca.pem",
        "-CAkey",
        "ca.key",
        "-CAcreateserial",
        "-out",
        "s.pem",
        "-days",
        "1",
        "-extfile",
        "ext",
    ]);
}

#[tokio::test]
async fn a_tls_store_is_reached_through_the_ca_it_is_configured_with() {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let dir = std::env::temp_dir().join(format!("sqe-tls-store-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    certificates(&dir);
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .unwrap();
    let mut server = std::process::Command::new("redis-server")
        .args([
            "--port",
            "0",
            "--tls-port",
            &port.to_string(),
            "--bind",
            "127.0.0.1",
        ])
        .args(["--tls-cert-file", "s.pem", "--tls-key-file", "s.key"])
        .args(["--tls-ca-cert-file", "ca.pem", "--tls-auth-clients", "no"])
        .args(["--save", "", "--appendonly", "no"])
        .current_dir(&dir)
        .stdout(std::process::Stdio::null())
        .spawn()
        .unwrap();
    for _ in 0..100 {
        if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let url = format!("rediss://127.0.0.1:{port}/");
    let ca = std::fs::read(dir.join("ca.pem")).unwrap();
    let trusted = SharedSessions::open(&url, None, Some(ca), keys(&[1])).unwrap();
    let handle = HandleSecrets::generate();
    assert!(
        trusted
            .create(&handle, &record("eyJ0bHMi"), TTL)
            .await
            .unwrap()
    );
    assert!(trusted.read(&handle).await.unwrap().is_some());
    // Without the CA the store's certificate is not trusted: no session goes over that link.
    let untrusted = SharedSessions::open(&url, None, None, keys(&[1])).unwrap();
    assert!(matches!(
        untrusted.read(&handle).await,
        Err(SharedError::Unavailable(_))
    ));
    let _ = server.kill();
    let _ = server.wait();
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test]
async fn a_replaced_record_keeps_its_expiry_only_use_pushes_it_back() {
    let r = redis();
    let a = SharedSessions::open(&r.url, None, None, keys(&[1])).unwrap();
    let handle = HandleSecrets::generate();
    a.create(&handle, &record("eyJ0dGwi"), Duration::from_millis(400))
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(200)).await;
    // A refresh (a replace) does not make an idle session live longer.
    assert!(a.replace(&handle, 0, &record("eyJ0dGwyIg")).await.unwrap());
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(a.read(&handle).await.unwrap().is_none());
}

#[tokio::test]
async fn a_retried_lock_attempt_finds_the_lock_it_already_holds() {
    let r = redis();
    let a = SharedSessions::open(&r.url, None, None, keys(&[1])).unwrap();
    let handle = HandleSecrets::generate();
    assert!(a.lock(&handle, "pod-a-1", TTL).await.unwrap());
    assert!(a.lock(&handle, "pod-a-1", TTL).await.unwrap());
    assert!(!a.lock(&handle, "pod-a-2", TTL).await.unwrap());
}
