//! Sessions any replica serves: replicas (session managers) sharing one real `redis-server`
//! and cluster key list, against an IdP whose refresh tokens are single-use, as in the realm.
//! Real time: the store is a real process.

use std::collections::HashSet;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use base64::Engine as _;
use futures::future::BoxFuture;
use sqe_engine_config::AuthMode;

use super::manager::{SessionManager, SessionPolicy};
use super::scheduler::RefreshOutcome;
use super::seal::ClusterKeys;
use super::shared::SharedSessions;
use super::store::InMemorySessionStore;
use super::test_redis::{Redis, redis};
use super::{EndReason, Session};
use crate::auth::{IdpError, TokenGrant, TokenIssuer};
use crate::context::LocalContextFactory;
use crate::error::EngineError;
use crate::metrics::Metrics;
use crate::secret::Secret;

const PASSWORD: &str = "PASSWORD-hunter2";

/// An IdP whose refresh tokens work once: a second use is refused, as Keycloak does with
/// `revokeRefreshToken`.
#[derive(Default)]
struct SingleUseIdp {
    issued: AtomicUsize,
    refreshes: AtomicUsize,
    reused: AtomicUsize,
    spent: Mutex<HashSet<String>>,
    delay: Mutex<Duration>,
}

impl SingleUseIdp {
    fn grant(&self) -> TokenGrant {
        let n = self.issued.fetch_add(1, Ordering::SeqCst);
        let b64 = |s: &str| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(s);
        TokenGrant {
            access_token: Secret::new(format!(
                "{}.{}.SECRET-ACCESS-{n}",
                b64(r#"{"alg":"RS256"}"#),
                b64(r#"{"preferred_username":"alice","sub":"f1d2"}"#)
            )),
            refresh_token: Some(Secret::new(format!("SECRET-REFRESH-{n}"))),
            expires_in: Duration::from_secs(300),
        }
    }
}

impl TokenIssuer for SingleUseIdp {
    fn password<'a>(
        &'a self,
        _user: &'a str,
        password: &'a Secret,
    ) -> BoxFuture<'a, Result<TokenGrant, IdpError>> {
        Box::pin(async move {
            if password.expose() != PASSWORD {
                return Err(IdpError::Rejected {
                    code: "invalid_grant".into(),
                });
            }
            Ok(self.grant())
        })
    }
    fn client_credentials<'a>(
        &'a self,
        _client_id: &'a str,
        _secret: &'a Secret,
    ) -> BoxFuture<'a, Result<TokenGrant, IdpError>> {
        Box::pin(async move {
            Err(IdpError::Rejected {
                code: "unauthorized_client".into(),
            })
        })
    }
    fn refresh<'a>(&'a self, rt: &'a Secret) -> BoxFuture<'a, Result<TokenGrant, IdpError>> {
        Box::pin(async move {
            self.refreshes.fetch_add(1, Ordering::SeqCst);
            let delay = *self.delay.lock().unwrap();
            tokio::time::sleep(delay).await;
            if !self.spent.lock().unwrap().insert(rt.expose().to_string()) {
                self.reused.fetch_add(1, Ordering::SeqCst);
                return Err(IdpError::Rejected {
                    code: "invalid_grant".into(),
                });
            }
            Ok(self.grant())
        })
    }
}

fn policy(idle: Duration) -> SessionPolicy {
    SessionPolicy {
        refresh_buffer: Duration::from_secs(60),
        idle_timeout: idle,
        max_lifetime: Duration::from_secs(8 * 3600),
        max_sessions: 10,
        max_sessions_per_user: 10,
        modes: vec![AuthMode::Password],
        username_claim: "preferred_username".into(),
        roles_claim: "realm_access.roles".into(),
        engine_client_id: "sqe".into(),
    }
}

fn keys(ids: &[u8]) -> ClusterKeys {
    ClusterKeys::new(ids.iter().map(|b| [*b; 32]).collect()).unwrap()
}

/// One replica: its own sessions, the shared store. No scheduler runs, so every refresh in
/// these tests is one the test asked for.
fn replica_with(
    idp: &Arc<SingleUseIdp>,
    store: &Redis,
    key_ids: &[u8],
    idle: Duration,
) -> SessionManager {
    let shared = SharedSessions::open(&store.url, None, None, keys(key_ids)).unwrap();
    SessionManager::new(
        policy(idle),
        Arc::new(InMemorySessionStore::new()),
        idp.clone(),
        None,
        Arc::new(Metrics::new()),
        Arc::new(LocalContextFactory::new(64 << 20, 1)),
    )
    .with_shared(shared)
}

fn replica(idp: &Arc<SingleUseIdp>, store: &Redis) -> SessionManager {
    replica_with(idp, store, &[1], Duration::from_secs(900))
}

async fn login(m: &SessionManager) -> Result<(String, Arc<Session>), EngineError> {
    let (h, s) = m
        .login_basic(
            "alice",
            &Secret::new(PASSWORD),
            None,
            AuthMode::Password,
            false,
        )
        .await?;
    Ok((h.secret().expose().to_string(), s))
}

async fn token(m: &SessionManager, s: &Arc<Session>) -> String {
    m.token_for(s)
        .await
        .unwrap()
        .access_token
        .expose()
        .to_string()
}

async fn generation(s: &Session) -> u64 {
    s.tokens.read().await.generation
}

async fn store_bytes(store: &Redis) -> Vec<u8> {
    let client = redis::Client::open(store.url.as_str()).unwrap();
    let mut conn = client.get_multiplexed_async_connection().await.unwrap();
    let names: Vec<Vec<u8>> = redis::cmd("KEYS")
        .arg("*")
        .query_async(&mut conn)
        .await
        .unwrap();
    let mut all = Vec::new();
    for name in names {
        let value: Vec<u8> = redis::cmd("GET")
            .arg(&name)
            .query_async(&mut conn)
            .await
            .unwrap();
        all.extend(name);
        all.extend(value);
    }
    all
}

fn contains(haystack: &[u8], needle: &str) -> bool {
    haystack
        .windows(needle.len())
        .any(|w| w == needle.as_bytes())
}

#[tokio::test]
async fn a_session_opened_on_one_replica_is_served_by_another_and_the_store_holds_no_token() {
    let store = redis();
    let idp = Arc::new(SingleUseIdp::default());
    let (a, b) = (replica(&idp, &store), replica(&idp, &store));
    let (handle, on_a) = login(&a).await.unwrap();
    let on_b = b.resolve(&handle).await.unwrap();
    assert_eq!(on_b.identity.user, "alice");
    assert_eq!(
        on_b.id, on_a.id,
        "one session, one id in every replica's logs"
    );
    assert_eq!(token(&b, &on_b).await, token(&a, &on_a).await);
    assert!(Arc::ptr_eq(&on_b, &b.resolve(&handle).await.unwrap()));
    let dump = store_bytes(&store).await;
    assert!(!dump.is_empty());
    for secret in ["eyJ", "SECRET-", PASSWORD, "alice", &handle[4..]] {
        assert!(!contains(&dump, secret), "the store shows {secret}");
    }
    // A handle that is not this engine's, or a forged one, finds nothing.
    assert!(matches!(
        b.resolve("sqe_not-a-handle").await,
        Err(EngineError::SessionInvalid)
    ));
    let mut forged = handle.clone().into_bytes();
    let last = forged.len() - 2;
    forged[last] = if forged[last] == b'A' { b'B' } else { b'A' };
    let forged = String::from_utf8(forged).unwrap();
    assert!(matches!(
        b.resolve(&forged).await,
        Err(EngineError::SessionInvalid)
    ));
}

#[tokio::test]
async fn a_refresh_on_one_replica_is_taken_by_the_other_on_its_next_call() {
    let store = redis();
    let idp = Arc::new(SingleUseIdp::default());
    let (a, b) = (replica(&idp, &store), replica(&idp, &store));
    let (handle, on_a) = login(&a).await.unwrap();
    let on_b = b.resolve(&handle).await.unwrap();
    assert_eq!(
        b.refresh(&on_b, generation(&on_b).await).await,
        RefreshOutcome::Refreshed
    );
    assert!(token(&b, &on_b).await.ends_with("SECRET-ACCESS-1"));
    a.resolve(&handle).await.unwrap();
    assert!(token(&a, &on_a).await.ends_with("SECRET-ACCESS-1"));
    // A's next refresh spends the token B was given, not the one B spent.
    assert_eq!(
        a.refresh(&on_a, generation(&on_a).await).await,
        RefreshOutcome::Refreshed
    );
    b.resolve(&handle).await.unwrap();
    assert!(token(&b, &on_b).await.ends_with("SECRET-ACCESS-2"));
    assert_eq!(idp.refreshes.load(Ordering::SeqCst), 2);
    assert_eq!(idp.reused.load(Ordering::SeqCst), 0);
}

#[tokio::test]
async fn replicas_racing_to_refresh_spend_the_refresh_token_once() {
    let store = redis();
    let idp = Arc::new(SingleUseIdp::default());
    *idp.delay.lock().unwrap() = Duration::from_millis(300);
    let (a, b) = (
        Arc::new(replica(&idp, &store)),
        Arc::new(replica(&idp, &store)),
    );
    let (handle, on_a) = login(&a).await.unwrap();
    let on_b = b.resolve(&handle).await.unwrap();
    let mut racers = Vec::new();
    for i in 0..10 {
        let (m, s) = if i % 2 == 0 {
            (a.clone(), on_a.clone())
        } else {
            (b.clone(), on_b.clone())
        };
        racers.push(tokio::spawn(async move { m.refresh(&s, 0).await }));
    }
    let mut outcomes = Vec::new();
    for r in racers {
        outcomes.push(r.await.unwrap());
    }
    let refreshed = outcomes
        .iter()
        .filter(|o| **o == RefreshOutcome::Refreshed)
        .count();
    assert_eq!(refreshed, 1, "{outcomes:?}");
    assert!(
        outcomes
            .iter()
            .all(|o| matches!(o, RefreshOutcome::Refreshed | RefreshOutcome::AlreadyFresh)),
        "{outcomes:?}"
    );
    assert_eq!(idp.refreshes.load(Ordering::SeqCst), 1);
    assert_eq!(idp.reused.load(Ordering::SeqCst), 0);
    assert_eq!(token(&a, &on_a).await, token(&b, &on_b).await);
}

#[tokio::test]
async fn a_logout_on_one_replica_ends_the_session_on_every_replica() {
    let store = redis();
    let idp = Arc::new(SingleUseIdp::default());
    let (a, b) = (replica(&idp, &store), replica(&idp, &store));
    let (handle, on_a) = login(&a).await.unwrap();
    let on_b = b.resolve(&handle).await.unwrap();
    a.close(&on_a).await.unwrap();
    assert!(matches!(
        b.resolve(&handle).await,
        Err(EngineError::SessionInvalid)
    ));
    assert!(b.token_for(&on_b).await.is_err());
    assert!(matches!(
        a.resolve(&handle).await,
        Err(EngineError::SessionInvalid)
    ));
    assert_eq!(b.active_sessions(), 0);
    assert!(store_bytes(&store).await.is_empty());
}

#[tokio::test]
async fn a_refresh_the_idp_refuses_ends_the_session_everywhere() {
    let store = redis();
    let idp = Arc::new(SingleUseIdp::default());
    let (a, b) = (replica(&idp, &store), replica(&idp, &store));
    let (handle, on_a) = login(&a).await.unwrap();
    b.resolve(&handle).await.unwrap();
    // The IdP revoked it: its refresh token was spent outside this cluster.
    idp.spent.lock().unwrap().insert("SECRET-REFRESH-0".into());
    assert_eq!(a.refresh(&on_a, 0).await, RefreshOutcome::Ended);
    assert!(matches!(
        b.resolve(&handle).await,
        Err(EngineError::SessionInvalid)
    ));
}

#[tokio::test]
async fn a_replica_shutting_down_leaves_its_sessions_to_the_others() {
    let store = redis();
    let idp = Arc::new(SingleUseIdp::default());
    let (a, b) = (replica(&idp, &store), replica(&idp, &store));
    let (handle, _) = login(&a).await.unwrap();
    a.end_all(EndReason::Shutdown).await;
    assert_eq!(a.active_sessions(), 0);
    let on_b = b.resolve(&handle).await.unwrap();
    assert!(token(&b, &on_b).await.ends_with("SECRET-ACCESS-0"));
    assert_eq!(idp.issued.load(Ordering::SeqCst), 1, "no new login");
}

#[tokio::test]
async fn idle_time_counts_across_replicas() {
    let store = redis();
    let idp = Arc::new(SingleUseIdp::default());
    let idle = Duration::from_millis(1500);
    let a = replica_with(&idp, &store, &[1], idle);
    let b = replica_with(&idp, &store, &[1], idle);
    let (handle, _) = login(&a).await.unwrap();
    // Used on B only, for longer than the idle timeout: A's own copy lapses, the session
    // does not.
    for _ in 0..5 {
        tokio::time::sleep(Duration::from_millis(500)).await;
        b.resolve(&handle).await.unwrap();
    }
    a.resolve(&handle).await.unwrap();
    // Used nowhere: ended on every replica.
    tokio::time::sleep(Duration::from_millis(2000)).await;
    assert!(matches!(
        b.resolve(&handle).await,
        Err(EngineError::SessionInvalid)
    ));
    let c = replica_with(&idp, &store, &[1], idle);
    assert!(matches!(
        c.resolve(&handle).await,
        Err(EngineError::SessionInvalid)
    ));
}

#[tokio::test]
async fn a_rotated_key_list_reseals_old_records_and_a_retired_key_is_named() {
    let store = redis();
    let idp = Arc::new(SingleUseIdp::default());
    let old = replica_with(&idp, &store, &[1], Duration::from_secs(900));
    let rolled = replica_with(&idp, &store, &[2, 1], Duration::from_secs(900));
    let retired = replica_with(&idp, &store, &[2], Duration::from_secs(900));
    let (used, _) = login(&old).await.unwrap();
    let (untouched, _) = login(&old).await.unwrap();
    // During the grace period: read with the old key, sealed again with the new one.
    rolled.resolve(&used).await.unwrap();
    let after = retired.resolve(&used).await.unwrap();
    assert!(token(&retired, &after).await.ends_with("SECRET-ACCESS-0"));
    // A record nobody used while both keys were configured: refused, and the client is told why.
    let refused = retired.resolve(&untouched).await.unwrap_err();
    assert!(
        matches!(refused, EngineError::SessionKeyRetired),
        "{refused:?}"
    );
    assert!(refused.to_string().contains("retired cluster key"));
}

#[tokio::test]
async fn while_the_store_is_down_held_sessions_serve_and_everything_else_is_unavailable() {
    let mut store = redis();
    let idp = Arc::new(SingleUseIdp::default());
    let (a, b) = (replica(&idp, &store), replica(&idp, &store));
    let (handle, on_a) = login(&a).await.unwrap();
    store.stop();
    // The replica that holds it keeps serving it while its token lasts.
    a.resolve(&handle).await.unwrap();
    assert!(token(&a, &on_a).await.ends_with("SECRET-ACCESS-0"));
    // Another replica cannot open it, and nobody can log in: retry, not log in again.
    let unknown = b.resolve(&handle).await.unwrap_err();
    assert!(matches!(unknown, EngineError::SessionStoreUnavailable));
    assert_eq!(unknown.code(), tonic::Code::Unavailable);
    assert!(matches!(
        login(&a).await,
        Err(EngineError::SessionStoreUnavailable)
    ));
    assert_eq!(
        a.active_sessions(),
        1,
        "the refused login left nothing behind"
    );
    // No refresh while the store cannot record it: nothing is spent at the IdP.
    assert_eq!(a.refresh(&on_a, 0).await, RefreshOutcome::StoreUnavailable);
    assert_eq!(idp.refreshes.load(Ordering::SeqCst), 0);
    // Back (empty: the store keeps nothing on disk): logins work again.
    store.start();
    let (again, _) = login(&b).await.unwrap();
    a.resolve(&again).await.unwrap();
}

#[tokio::test]
async fn a_replica_that_cannot_open_a_record_lets_the_session_go_and_leaves_it_to_the_others() {
    let store = redis();
    let idp = Arc::new(SingleUseIdp::default());
    let old = replica_with(&idp, &store, &[1], Duration::from_secs(900));
    let rolled = replica_with(&idp, &store, &[2, 1], Duration::from_secs(900));
    let (handle, on_old) = login(&old).await.unwrap();
    // A replica with the new key first reseals the record: the old key no longer opens it.
    rolled.resolve(&handle).await.unwrap();
    let refused = old.resolve(&handle).await.unwrap_err();
    assert!(
        matches!(refused, EngineError::SessionKeyRetired),
        "{refused:?}"
    );
    // Its refresh would not open the record either: it lets go, deletes nothing, spends nothing.
    assert_eq!(old.refresh(&on_old, 0).await, RefreshOutcome::Ended);
    assert_eq!(idp.refreshes.load(Ordering::SeqCst), 0);
    let on_rolled = rolled.resolve(&handle).await.unwrap();
    assert!(
        token(&rolled, &on_rolled)
            .await
            .ends_with("SECRET-ACCESS-0")
    );
}
