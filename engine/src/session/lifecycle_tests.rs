//! The session lifecycle against a scripted IdP, in paused time: what happens on login,
//! refresh, failure, timeouts and close — and that no credential ever reaches a log line.

use std::collections::VecDeque;
use std::io::Write;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use base64::Engine as _;
use futures::future::BoxFuture;
use sqe_engine_config::AuthMode;
use tokio::time::{Instant, sleep};

use super::manager::{SessionManager, SessionPolicy};
use super::scheduler::RefreshOutcome;
use super::store::InMemorySessionStore;
use super::{EndReason, Session, SessionHandle};
use crate::auth::{IdpError, TokenGrant, TokenIssuer};
use crate::context::LocalContextFactory;
use crate::error::EngineError;
use crate::metrics::Metrics;
use crate::secret::Secret;

/// A scripted IdP: each grant pops the next scripted result (default: success), optionally
/// after a delay, and every token it issues contains a recognisable marker.
#[derive(Default)]
struct FakeIdp {
    issued: AtomicUsize,
    refreshes: AtomicUsize,
    script: Mutex<VecDeque<Result<(), IdpError>>>,
    delay: Mutex<Duration>,
    lifetime_secs: Mutex<u64>,
    seen_refresh_tokens: Mutex<Vec<String>>,
}

const PASSWORD: &str = "PASSWORD-hunter2";
const MACHINE_CLIENT: &str = "etl-job";
const MACHINE_SECRET: &str = "PASSWORD-etl-secret";

fn fake_jwt(user: &str, n: usize) -> String {
    let b64 = |s: &str| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(s);
    format!(
        "{}.{}.SECRET-ACCESS-{n}",
        b64(r#"{"alg":"RS256"}"#),
        b64(&format!(
            r#"{{"preferred_username":"{user}","realm_access":{{"roles":["reader"]}}}}"#
        ))
    )
}

impl FakeIdp {
    fn new(lifetime_secs: u64) -> Arc<Self> {
        let f = Self::default();
        *f.lifetime_secs.lock().unwrap() = lifetime_secs;
        Arc::new(f)
    }

    fn script(&self, results: Vec<Result<(), IdpError>>) {
        self.script.lock().unwrap().extend(results);
    }

    async fn grant(&self, user: &str) -> Result<TokenGrant, IdpError> {
        let delay = *self.delay.lock().unwrap();
        if !delay.is_zero() {
            sleep(delay).await;
        }
        if let Some(r) = self.script.lock().unwrap().pop_front() {
            r?;
        }
        let n = self.issued.fetch_add(1, Ordering::SeqCst);
        Ok(TokenGrant {
            access_token: Secret::new(fake_jwt(user, n)),
            refresh_token: Some(Secret::new(format!("SECRET-REFRESH-{n}"))),
            expires_in: Duration::from_secs(*self.lifetime_secs.lock().unwrap()),
        })
    }
}

impl TokenIssuer for FakeIdp {
    fn password<'a>(
        &'a self,
        user: &'a str,
        password: &'a Secret,
    ) -> BoxFuture<'a, Result<TokenGrant, IdpError>> {
        Box::pin(async move {
            if password.expose() != PASSWORD {
                return Err(IdpError::Rejected {
                    code: "invalid_grant".into(),
                });
            }
            self.grant(user).await
        })
    }
    fn client_credentials<'a>(
        &'a self,
        client_id: &'a str,
        secret: &'a Secret,
    ) -> BoxFuture<'a, Result<TokenGrant, IdpError>> {
        Box::pin(async move {
            if client_id != MACHINE_CLIENT || secret.expose() != MACHINE_SECRET {
                return Err(IdpError::Rejected {
                    code: "unauthorized_client".into(),
                });
            }
            self.grant(&format!("service-account-{client_id}")).await
        })
    }
    fn refresh<'a>(&'a self, rt: &'a Secret) -> BoxFuture<'a, Result<TokenGrant, IdpError>> {
        self.refreshes.fetch_add(1, Ordering::SeqCst);
        self.seen_refresh_tokens
            .lock()
            .unwrap()
            .push(rt.expose().to_string());
        Box::pin(self.grant("alice"))
    }
}

fn policy() -> SessionPolicy {
    SessionPolicy {
        refresh_buffer: Duration::from_secs(60),
        idle_timeout: Duration::from_secs(900),
        max_lifetime: Duration::from_secs(8 * 3600),
        max_sessions: 3,
        max_sessions_per_user: 3,
        modes: vec![AuthMode::Password, AuthMode::ClientCredentials],
        username_claim: "preferred_username".into(),
        roles_claim: "realm_access.roles".into(),
        engine_client_id: "sqe".into(),
    }
}

fn manager(idp: Arc<FakeIdp>, policy: SessionPolicy) -> (Arc<SessionManager>, Arc<Metrics>) {
    let metrics = Arc::new(Metrics::new());
    let factory = Arc::new(LocalContextFactory::new(64 << 20, 1));
    let m = Arc::new(SessionManager::new(
        policy,
        Arc::new(InMemorySessionStore::new()),
        idp,
        None,
        metrics.clone(),
        factory,
    ));
    tokio::spawn(m.clone().run_scheduler());
    (m, metrics)
}

async fn login(m: &SessionManager, user: &str) -> Result<(String, Arc<Session>), EngineError> {
    let (h, s) = m
        .login_basic(
            user,
            &Secret::new(PASSWORD),
            None,
            AuthMode::Password,
            false,
        )
        .await?;
    Ok((h.secret().expose().to_string(), s))
}

#[tokio::test(start_paused = true)]
async fn a_login_opens_a_session_for_the_token_s_user() {
    let idp = FakeIdp::new(300);
    let (m, metrics) = manager(idp.clone(), policy());
    let (handle, s) = login(&m, "alice").await.unwrap();
    assert_eq!(s.identity.user, "alice");
    assert_eq!(s.identity.roles, vec!["reader"]);
    let again = m.resolve(&handle).await.unwrap();
    assert!(Arc::ptr_eq(&s, &again));
    let token = m.token_for(&s).await.unwrap();
    assert!(token.access_token.expose().ends_with("SECRET-ACCESS-0"));
    assert_eq!(m.active_sessions(), 1);
    assert!(
        metrics
            .encode()
            .contains(r#"sqe_logins_total{mode="password",outcome="ok"} 1"#)
    );
}

#[tokio::test(start_paused = true)]
async fn bad_credentials_give_one_generic_error_and_repeated_ones_are_throttled() {
    let idp = FakeIdp::new(300);
    let (m, _) = manager(idp.clone(), policy());
    for _ in 0..4 {
        let e = m
            .login_basic(
                "mallory",
                &Secret::new("guess"),
                None,
                AuthMode::Password,
                false,
            )
            .await
            .unwrap_err();
        assert!(matches!(e, EngineError::Unauthenticated));
        assert_eq!(e.to_string(), "authentication failed");
    }
    // Fifth attempt inside the backoff window: refused without asking the IdP, even with the
    // right password.
    let e = login(&m, "mallory").await.unwrap_err();
    assert!(matches!(e, EngineError::LoginThrottled { .. }), "{e:?}");
    assert_eq!(idp.issued.load(Ordering::SeqCst), 0);
    sleep(Duration::from_secs(2)).await;
    login(&m, "mallory").await.unwrap();
}

#[tokio::test(start_paused = true)]
async fn an_unreachable_idp_is_unavailable_not_a_bad_password() {
    let idp = FakeIdp::new(300);
    idp.script(vec![Err(IdpError::Unavailable(
        "connection refused".into(),
    ))]);
    let (m, _) = manager(idp, policy());
    let e = login(&m, "alice").await.unwrap_err();
    assert!(matches!(e, EngineError::IdpUnavailable), "{e:?}");
    // ...and it does not count as a failed login.
    login(&m, "alice").await.unwrap();
}

#[tokio::test(start_paused = true)]
async fn the_session_limit_is_resource_exhausted() {
    let (m, _) = manager(FakeIdp::new(300), policy());
    for u in ["a", "b", "c"] {
        login(&m, u).await.unwrap();
    }
    let e = login(&m, "d").await.unwrap_err();
    assert_eq!(e.code(), tonic::Code::ResourceExhausted);
}

#[tokio::test(start_paused = true)]
async fn tokens_are_refreshed_before_expiry_and_every_refresh_changes_the_fingerprint() {
    let idp = FakeIdp::new(20);
    let (m, metrics) = manager(idp.clone(), policy());
    let (_, s) = login(&m, "alice").await.unwrap();
    let mut fingerprints = vec![m.token_for(&s).await.unwrap().fingerprint];
    let t0 = Instant::now();
    // Query every second for 40 s of a 20 s token: never a failure, never an expired token.
    for _ in 0..40 {
        sleep(Duration::from_secs(1)).await;
        let t = m.token_for(&s).await.unwrap();
        if *fingerprints.last().unwrap() != t.fingerprint {
            fingerprints.push(t.fingerprint);
        }
    }
    assert!(t0.elapsed() >= Duration::from_secs(40));
    let refreshes = idp.refreshes.load(Ordering::SeqCst);
    assert!((3..=5).contains(&refreshes), "{refreshes} refreshes");
    assert_eq!(fingerprints.len(), refreshes + 1);
    // Each refresh used the newest refresh token (Keycloak's are single-use).
    let seen = idp.seen_refresh_tokens.lock().unwrap().clone();
    for (i, rt) in seen.iter().enumerate() {
        assert_eq!(rt, &format!("SECRET-REFRESH-{i}"));
    }
    assert!(metrics.encode().contains(&format!(
        r#"sqe_token_refreshes_total{{outcome="ok"}} {refreshes}"#
    )));
}

#[tokio::test(start_paused = true)]
async fn a_request_arriving_during_a_refresh_waits_for_it_and_the_idp_is_called_once() {
    let idp = FakeIdp::new(300);
    let (m, _) = manager(idp.clone(), policy());
    let (_, s) = login(&m, "alice").await.unwrap();
    *idp.delay.lock().unwrap() = Duration::from_secs(2);
    let generation = s.tokens.read().await.generation;
    let (m1, s1) = (m.clone(), s.clone());
    let refresher = tokio::spawn(async move { m1.refresh(&s1, generation).await });
    tokio::task::yield_now().await;
    // Three concurrent callers: two more refresh attempts for the same generation and a query.
    let (m2, s2) = (m.clone(), s.clone());
    let dup = tokio::spawn(async move { m2.refresh(&s2, generation).await });
    let token = m.token_for(&s).await.unwrap();
    assert!(
        token.access_token.expose().ends_with("SECRET-ACCESS-1"),
        "waited for the new token"
    );
    assert_eq!(refresher.await.unwrap(), RefreshOutcome::Refreshed);
    assert_eq!(dup.await.unwrap(), RefreshOutcome::AlreadyFresh);
    assert_eq!(idp.refreshes.load(Ordering::SeqCst), 1);
}

#[tokio::test(start_paused = true)]
async fn a_revoked_refresh_token_ends_the_session() {
    let idp = FakeIdp::new(20);
    let (m, metrics) = manager(idp.clone(), policy());
    let (handle, s) = login(&m, "alice").await.unwrap();
    idp.script(vec![Err(IdpError::Rejected {
        code: "invalid_grant".into(),
    })]);
    sleep(Duration::from_secs(12)).await;
    assert_eq!(idp.refreshes.load(Ordering::SeqCst), 1);
    assert!(matches!(
        m.resolve(&handle).await,
        Err(EngineError::SessionInvalid)
    ));
    assert!(matches!(
        m.token_for(&s).await,
        Err(EngineError::SessionInvalid)
    ));
    assert_eq!(m.active_sessions(), 0);
    let text = metrics.encode();
    assert!(
        text.contains(r#"sqe_token_refreshes_total{outcome="rejected"} 1"#),
        "{text}"
    );
    assert!(
        text.contains(r#"sqe_session_ends_total{reason="refresh_rejected"} 1"#),
        "{text}"
    );
}

#[tokio::test(start_paused = true)]
async fn transient_refresh_failures_are_retried_and_the_session_survives() {
    let idp = FakeIdp::new(20);
    let (m, _) = manager(idp.clone(), policy());
    let (handle, s) = login(&m, "alice").await.unwrap();
    let unavailable = || Err(IdpError::Unavailable("503".into()));
    idp.script(vec![unavailable(), unavailable()]);
    sleep(Duration::from_secs(18)).await;
    assert_eq!(
        idp.refreshes.load(Ordering::SeqCst),
        3,
        "two failures, then success"
    );
    m.resolve(&handle).await.unwrap();
    assert!(
        m.token_for(&s)
            .await
            .unwrap()
            .access_token
            .expose()
            .ends_with("SECRET-ACCESS-1")
    );
}

#[tokio::test(start_paused = true)]
async fn an_idp_down_until_expiry_ends_the_session_at_expiry_not_before() {
    let idp = FakeIdp::new(20);
    let (m, metrics) = manager(idp.clone(), policy());
    let (handle, _) = login(&m, "alice").await.unwrap();
    idp.script(
        (0..100)
            .map(|_| Err(IdpError::Unavailable("down".into())))
            .collect(),
    );
    sleep(Duration::from_secs(19)).await;
    m.resolve(&handle)
        .await
        .expect("still valid while the token is");
    sleep(Duration::from_secs(2)).await;
    assert!(m.resolve(&handle).await.is_err());
    assert!(
        metrics
            .encode()
            .contains(r#"sqe_session_ends_total{reason="token_expired"} 1"#)
    );
    let attempts = idp.refreshes.load(Ordering::SeqCst);
    assert!(
        (3..=8).contains(&attempts),
        "backoff, not a busy loop: {attempts}"
    );
}

#[tokio::test(start_paused = true)]
async fn idle_sessions_end_and_used_ones_do_not() {
    let p = SessionPolicy {
        idle_timeout: Duration::from_secs(60),
        ..policy()
    };
    let (m, _) = manager(FakeIdp::new(300), p);
    let (idle, _) = login(&m, "idle").await.unwrap();
    let (busy, _) = login(&m, "busy").await.unwrap();
    for _ in 0..4 {
        sleep(Duration::from_secs(30)).await;
        m.resolve(&busy).await.unwrap();
    }
    assert!(matches!(
        m.resolve(&idle).await,
        Err(EngineError::SessionInvalid)
    ));
    assert_eq!(m.active_sessions(), 1);
}

#[tokio::test(start_paused = true)]
async fn sessions_end_at_their_absolute_lifetime_even_when_busy() {
    let p = SessionPolicy {
        max_lifetime: Duration::from_secs(100),
        idle_timeout: Duration::from_secs(50),
        ..policy()
    };
    let (m, _) = manager(FakeIdp::new(300), p);
    let (h, _) = login(&m, "alice").await.unwrap();
    for _ in 0..9 {
        sleep(Duration::from_secs(10)).await;
        m.resolve(&h).await.unwrap();
    }
    sleep(Duration::from_secs(11)).await;
    assert!(m.resolve(&h).await.is_err());
}

#[tokio::test(start_paused = true)]
async fn close_ends_the_session_and_drops_its_query_state() {
    let (m, metrics) = manager(FakeIdp::new(300), policy());
    let (h, s) = login(&m, "alice").await.unwrap();
    let token = m.token_for(&s).await.unwrap();
    s.query.context(m.factory(), &s.identity, &token).unwrap();
    assert!(s.query.fingerprint().is_some());
    m.end(&s, EndReason::Closed).await;
    assert!(s.query.fingerprint().is_none());
    assert!(m.resolve(&h).await.is_err());
    assert!(
        metrics
            .encode()
            .contains(r#"sqe_session_ends_total{reason="closed"} 1"#)
    );
}

async fn machine_login(
    m: &SessionManager,
    client: &str,
    secret: &str,
) -> Result<(SessionHandle, Arc<Session>), EngineError> {
    m.login_basic(
        client,
        &Secret::new(secret),
        None,
        AuthMode::ClientCredentials,
        false,
    )
    .await
}

#[tokio::test(start_paused = true)]
async fn a_machine_client_logs_in_as_itself_and_re_fetches_its_own_token() {
    let idp = FakeIdp::new(20);
    let (m, _) = manager(idp.clone(), policy());
    let (_, s) = machine_login(&m, MACHINE_CLIENT, MACHINE_SECRET)
        .await
        .unwrap();
    assert_eq!(s.identity.user, "service-account-etl-job");
    sleep(Duration::from_secs(25)).await;
    assert!(m.token_for(&s).await.is_ok());
    assert_eq!(
        idp.refreshes.load(Ordering::SeqCst),
        0,
        "no refresh token: a new grant with the client's own credentials instead"
    );
    assert!(idp.issued.load(Ordering::SeqCst) >= 3);
}

#[tokio::test(start_paused = true)]
async fn no_machine_login_yields_the_engine_s_own_service_account() {
    let idp = FakeIdp::new(300);
    let (m, _) = manager(idp.clone(), policy());
    for (client, secret) in [
        (MACHINE_CLIENT, "wrong-secret"),
        ("sqe", "anything"),
        ("SQE", MACHINE_SECRET),
        ("nightly-etl", ""),
        ("", MACHINE_SECRET),
    ] {
        let e = machine_login(&m, client, secret).await.unwrap_err();
        assert!(matches!(e, EngineError::Unauthenticated), "{client}: {e:?}");
    }
    assert_eq!(idp.issued.load(Ordering::SeqCst), 0, "no token was issued");
}

#[tokio::test(start_paused = true)]
async fn one_user_at_the_session_cap_does_not_stop_another() {
    let p = SessionPolicy {
        max_sessions: 10,
        max_sessions_per_user: 2,
        ..policy()
    };
    let (m, _) = manager(FakeIdp::new(300), p);
    login(&m, "mallory").await.unwrap();
    login(&m, "mallory").await.unwrap();
    let e = login(&m, "mallory").await.unwrap_err();
    assert!(
        matches!(e, EngineError::TooManyUserSessions { max: 2 }),
        "{e:?}"
    );
    assert_eq!(e.code(), tonic::Code::ResourceExhausted);
    login(&m, "alice").await.unwrap();
}

#[tokio::test(start_paused = true)]
async fn repeated_basic_calls_from_one_client_share_a_session_but_handshakes_do_not() {
    let idp = FakeIdp::new(300);
    let (m, _) = manager(idp.clone(), policy());
    let here: Option<std::net::IpAddr> = Some("10.1.2.3".parse().unwrap());
    let call = |peer, password: &'static str| {
        let m = m.clone();
        async move {
            m.login_basic(
                "alice",
                &Secret::new(password),
                peer,
                AuthMode::Password,
                true,
            )
            .await
        }
    };
    let (h1, s1) = call(here, PASSWORD).await.unwrap();
    let (h2, s2) = call(here, PASSWORD).await.unwrap();
    assert!(Arc::ptr_eq(&s1, &s2));
    assert_eq!(h1.secret().expose(), h2.secret().expose());
    assert_eq!(
        idp.issued.load(Ordering::SeqCst),
        1,
        "the IdP was asked once"
    );
    // Another address, or a handshake, opens its own session.
    let (_, s3) = call(Some("10.9.9.9".parse().unwrap()), PASSWORD)
        .await
        .unwrap();
    assert!(!Arc::ptr_eq(&s1, &s3));
    let (_, s4) = login(&m, "alice").await.unwrap();
    assert!(!Arc::ptr_eq(&s1, &s4));
    // A wrong password never finds the session.
    assert!(call(here, "PASSWORD-wrong").await.is_err());
    // Once the session is closed, the same credentials log in anew.
    m.end(&s1, EndReason::Closed).await;
    let (h5, s5) = call(here, PASSWORD).await.unwrap();
    assert!(!Arc::ptr_eq(&s1, &s5));
    assert_ne!(h1.secret().expose(), h5.secret().expose());
}

#[test]
fn mode_selection_for_basic_logins() {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let (m, _) = manager(FakeIdp::new(300), policy());
        assert_eq!(m.basic_mode(None).unwrap(), AuthMode::Password);
        assert_eq!(
            m.basic_mode(Some(AuthMode::ClientCredentials)).unwrap(),
            AuthMode::ClientCredentials
        );
        assert!(m.basic_mode(Some(AuthMode::Bearer)).is_err());
        let only_cc = SessionPolicy {
            modes: vec![AuthMode::ClientCredentials],
            ..policy()
        };
        let (m, _) = manager(FakeIdp::new(300), only_cc);
        assert_eq!(m.basic_mode(None).unwrap(), AuthMode::ClientCredentials);
        assert!(m.basic_mode(Some(AuthMode::Password)).is_err());
    });
}

/// Collects everything the JSON log layer writes.
#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);
impl Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[test]
fn no_password_token_refresh_token_or_handle_appears_in_logs_or_errors() {
    let captured = Captured::default();
    let writer = captured.clone();
    let subscriber = tracing_subscriber::fmt()
        .json()
        .flatten_event(true)
        .with_env_filter(crate::logging::filter("trace"))
        .with_writer(move || writer.clone())
        .finish();
    let _default = tracing::subscriber::set_default(subscriber);
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .start_paused(true)
        .build()
        .unwrap();
    let mut errors = Vec::new();
    let mut handles = Vec::new();
    rt.block_on(async {
        let idp = FakeIdp::new(20);
        let (m, _) = manager(idp.clone(), policy());
        let (h, s) = login(&m, "alice").await.unwrap();
        handles.push(h.clone());
        sleep(Duration::from_secs(25)).await; // refreshes
        let token = m.token_for(&s).await.unwrap();
        s.query.context(m.factory(), &s.identity, &token).unwrap();
        errors.push(
            m.login_basic(
                "alice",
                &Secret::new("PASSWORD-wrong-1"),
                None,
                AuthMode::Password,
                false,
            )
            .await
            .unwrap_err()
            .to_string(),
        );
        idp.script(vec![Err(IdpError::Rejected {
            code: "invalid_grant".into(),
        })]);
        sleep(Duration::from_secs(15)).await; // refresh rejected → session ends
        errors.push(m.resolve(&h).await.unwrap_err().to_string());
        errors.push(m.resolve("sqe_not-a-handle").await.unwrap_err().to_string());
        let (h2, s2) = login(&m, "bob").await.unwrap();
        handles.push(h2);
        m.end(&s2, EndReason::Closed).await;
    });
    let logs = String::from_utf8(captured.0.lock().unwrap().clone()).unwrap();
    assert!(
        logs.contains(r#""event":"refresh""#) && logs.contains(r#""event":"login""#),
        "{logs}"
    );
    assert!(logs.contains(r#""outcome":"rejected""#), "{logs}");
    let text = format!("{logs}\n{}", errors.join("\n"));
    for secret in [
        "SECRET-ACCESS",
        "SECRET-REFRESH",
        "PASSWORD-",
        "hunter2",
        "eyJ",
    ] {
        assert!(!text.contains(secret), "`{secret}` leaked:\n{text}");
    }
    for h in &handles {
        assert!(!text.contains(h.as_str()), "a session handle leaked");
        assert!(!text.contains(&h[4..20]), "part of a session handle leaked");
    }
}

mod bearer_logins {
    use super::*;
    use crate::auth::IdpError;
    use crate::auth::{BearerPolicy, BearerValidator, JwksSource};
    use jsonwebtoken::jwk::Jwk;
    use jsonwebtoken::{Algorithm, EncodingKey, Header, encode};
    use serde_json::{Value, json};
    use std::time::{SystemTime, UNIX_EPOCH};

    const KEY: &str = include_str!("../auth/testdata/test-rsa-1.pem");
    const ISS: &str = "https://idp.test/realms/sqe";

    struct OneKey;
    impl JwksSource for OneKey {
        fn fetch(&self) -> BoxFuture<'_, Result<Vec<Jwk>, IdpError>> {
            let ek = EncodingKey::from_rsa_pem(KEY.as_bytes()).unwrap();
            let mut j = Jwk::from_encoding_key(&ek, Algorithm::RS256).unwrap();
            j.common.key_id = Some("k1".into());
            Box::pin(async move { Ok(vec![j]) })
        }
    }

    fn bearer_manager() -> Arc<SessionManager> {
        let validator = BearerValidator::new(
            BearerPolicy {
                issuer: ISS.into(),
                audience: "sqe".into(),
                algorithms: vec![Algorithm::RS256],
                allowed_clients: vec!["sqe".into()],
            },
            Box::new(OneKey),
        );
        Arc::new(SessionManager::new(
            policy(),
            Arc::new(InMemorySessionStore::new()),
            FakeIdp::new(300),
            Some(Arc::new(validator)),
            Arc::new(Metrics::new()),
            Arc::new(LocalContextFactory::new(64 << 20, 1)),
        ))
    }

    fn jwt(claims: Value) -> String {
        let mut h = Header::new(Algorithm::RS256);
        h.kid = Some("k1".into());
        encode(
            &h,
            &claims,
            &EncodingKey::from_rsa_pem(KEY.as_bytes()).unwrap(),
        )
        .unwrap()
    }

    fn claims(user: Option<&str>) -> Value {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_secs();
        let mut c =
            json!({"iss": ISS, "aud": "sqe", "azp": "sqe", "typ": "Bearer", "exp": now + 300});
        if let Some(u) = user {
            c["preferred_username"] = json!(u);
        }
        c
    }

    #[tokio::test]
    async fn a_valid_token_that_names_no_user_is_refused_not_run_as_unknown() {
        let m = bearer_manager();
        for c in [claims(None), claims(Some("")), claims(Some("  "))] {
            let e = m.login_bearer(&jwt(c), None).await.unwrap_err();
            assert!(matches!(e, EngineError::Unauthenticated), "{e:?}");
        }
        let s = m
            .login_bearer(&jwt(claims(Some("alice"))), None)
            .await
            .unwrap();
        assert_eq!(s.identity.user, "alice");
    }
}
