//! Tests of `bearer`, in a file of their own so the source reads as source.

use super::*;
use jsonwebtoken::{EncodingKey, Header, encode};
use serde_json::json;
use std::sync::atomic::{AtomicUsize, Ordering};

const KEY1: &str = include_str!("testdata/test-rsa-1.pem");
const KEY2: &str = include_str!("testdata/test-rsa-2.pem");
const ISS: &str = "https://idp.test/realms/sqe";

fn jwk(pem: &str, kid: &str) -> Jwk {
    let ek = EncodingKey::from_rsa_pem(pem.as_bytes()).unwrap();
    let mut j = Jwk::from_encoding_key(&ek, Algorithm::RS256).unwrap();
    j.common.key_id = Some(kid.into());
    j
}

/// A JWKS endpoint whose keys the test can rotate, counting fetches.
struct Keys {
    keys: Mutex<Vec<Jwk>>,
    fetches: Arc<AtomicUsize>,
}
impl JwksSource for Keys {
    fn fetch(&self) -> BoxFuture<'_, Result<Vec<Jwk>, IdpError>> {
        self.fetches.fetch_add(1, Ordering::SeqCst);
        let keys = self.keys.lock().unwrap().clone();
        Box::pin(async move { Ok(keys) })
    }
}

fn validator(keys: Vec<Jwk>) -> (BearerValidator, Arc<AtomicUsize>) {
    let fetches = Arc::new(AtomicUsize::new(0));
    let source = Keys {
        keys: Mutex::new(keys),
        fetches: fetches.clone(),
    };
    let policy = BearerPolicy {
        issuer: ISS.into(),
        audience: "sqe".into(),
        algorithms: vec![Algorithm::RS256],
        allowed_clients: vec!["sqe".into(), "sqe-cli".into()],
    };
    (BearerValidator::new(policy, Box::new(source)), fetches)
}

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

fn token(pem: &str, kid: &str, claims: Value) -> String {
    let mut h = Header::new(Algorithm::RS256);
    h.kid = Some(kid.into());
    encode(
        &h,
        &claims,
        &EncodingKey::from_rsa_pem(pem.as_bytes()).unwrap(),
    )
    .unwrap()
}

fn good_claims() -> Value {
    json!({"iss": ISS, "aud": ["sqe", "account"], "exp": now() + 300, "nbf": now() - 1,
           "typ": "Bearer", "azp": "sqe", "preferred_username": "alice"})
}

#[tokio::test]
async fn a_valid_token_is_accepted_with_its_claims_and_expiry() {
    let (v, _) = validator(vec![jwk(KEY1, "k1")]);
    let ok = v.validate(&token(KEY1, "k1", good_claims())).await.unwrap();
    assert_eq!(ok.claims["preferred_username"], "alice");
    assert!(remaining(ok.expires_at) > Duration::from_secs(290));
}

#[tokio::test]
async fn expired_wrong_audience_wrong_issuer_and_future_tokens_are_refused() {
    let (v, _) = validator(vec![jwk(KEY1, "k1")]);
    let cases = [
        (json!({"exp": now() - 60}), "expired"),
        (json!({"aud": "other-client"}), "wrong audience"),
        (
            json!({"iss": "https://evil.test/realms/sqe"}),
            "wrong issuer",
        ),
        (json!({"nbf": now() + 600}), "not yet valid"),
    ];
    for (patch, why) in cases {
        let mut claims = good_claims();
        for (k, val) in patch.as_object().unwrap() {
            claims[k] = val.clone();
        }
        let err = v.validate(&token(KEY1, "k1", claims)).await.unwrap_err();
        assert_eq!(err, BearerError::Invalid(why));
    }
}

fn with(patch: Value) -> Value {
    let mut claims = good_claims();
    for (k, val) in patch.as_object().unwrap() {
        if val.is_null() {
            claims.as_object_mut().unwrap().remove(k);
        } else {
            claims[k] = val.clone();
        }
    }
    claims
}

#[tokio::test]
async fn only_access_tokens_are_accepted_not_id_or_refresh_tokens() {
    let (v, _) = validator(vec![jwk(KEY1, "k1")]);
    for typ in ["ID", "Refresh", "Logout"] {
        let err = v
            .validate(&token(KEY1, "k1", with(json!({"typ": typ}))))
            .await
            .unwrap_err();
        assert_eq!(err, BearerError::Invalid("not an access token"), "{typ}");
    }
    assert!(
        v.validate(&token(KEY1, "k1", with(json!({"typ": null}))))
            .await
            .is_ok()
    );
    let mut h = Header::new(Algorithm::RS256);
    h.kid = Some("k1".into());
    for (typ, ok) in [
        ("at+jwt", true),
        ("application/at+jwt", true),
        ("JWT", true),
        ("id+jwt", false),
    ] {
        h.typ = Some(typ.into());
        let t = encode(
            &h,
            &with(json!({"typ": null})),
            &EncodingKey::from_rsa_pem(KEY1.as_bytes()).unwrap(),
        )
        .unwrap();
        assert_eq!(v.validate(&t).await.is_ok(), ok, "header typ {typ}");
    }
}

#[tokio::test]
async fn a_token_issued_to_a_client_that_is_not_allowed_is_refused() {
    let (v, _) = validator(vec![jwk(KEY1, "k1")]);
    let err = v
        .validate(&token(KEY1, "k1", with(json!({"azp": "some-other-app"}))))
        .await
        .unwrap_err();
    assert_eq!(
        err,
        BearerError::Invalid("issued to a client that is not allowed")
    );
    for azp in [json!("sqe-cli"), Value::Null] {
        assert!(
            v.validate(&token(KEY1, "k1", with(json!({"azp": azp}))))
                .await
                .is_ok()
        );
    }
}

/// A JWKS endpoint the test can change or take down.
#[derive(Clone, Default)]
struct Endpoint(Arc<Mutex<Option<Vec<Jwk>>>>);
impl JwksSource for Endpoint {
    fn fetch(&self) -> BoxFuture<'_, Result<Vec<Jwk>, IdpError>> {
        let keys = self.0.lock().unwrap().clone();
        Box::pin(async move { keys.ok_or_else(|| IdpError::Unavailable("down".into())) })
    }
}

fn validator_at(endpoint: &Endpoint) -> BearerValidator {
    let policy = BearerPolicy {
        issuer: ISS.into(),
        audience: "sqe".into(),
        algorithms: vec![Algorithm::RS256],
        allowed_clients: vec!["sqe".into()],
    };
    BearerValidator::new(policy, Box::new(endpoint.clone()))
}

#[tokio::test(start_paused = true)]
async fn a_key_the_idp_withdrew_stops_being_trusted_after_the_refresh_interval() {
    let endpoint = Endpoint::default();
    *endpoint.0.lock().unwrap() = Some(vec![jwk(KEY1, "k1"), jwk(KEY2, "k2")]);
    let v = validator_at(&endpoint);
    let old = token(KEY1, "k1", good_claims());
    assert!(v.validate(&old).await.is_ok());
    // k1 is withdrawn: still trusted until the keys are due again, then refused.
    *endpoint.0.lock().unwrap() = Some(vec![jwk(KEY2, "k2")]);
    tokio::time::advance(KEYS_MAX_AGE - Duration::from_secs(1)).await;
    assert!(v.validate(&old).await.is_ok());
    tokio::time::advance(Duration::from_secs(2)).await;
    assert_eq!(
        v.validate(&old).await.unwrap_err(),
        BearerError::Invalid("unknown signing key")
    );
    assert!(v.validate(&token(KEY2, "k2", good_claims())).await.is_ok());
}

#[tokio::test(start_paused = true)]
async fn keys_in_hand_serve_while_the_idp_is_down_but_not_forever() {
    let endpoint = Endpoint::default();
    *endpoint.0.lock().unwrap() = Some(vec![jwk(KEY1, "k1")]);
    let v = validator_at(&endpoint);
    assert!(v.validate(&token(KEY1, "k1", good_claims())).await.is_ok());
    *endpoint.0.lock().unwrap() = None;
    tokio::time::advance(KEYS_MAX_AGE + Duration::from_secs(1)).await;
    assert!(v.validate(&token(KEY1, "k1", good_claims())).await.is_ok());
    tokio::time::advance(KEYS_MAX_STALE).await;
    assert!(matches!(
        v.validate(&token(KEY1, "k1", good_claims())).await,
        Err(BearerError::Unavailable(_))
    ));
}

#[tokio::test]
async fn a_tampered_token_fails_the_signature_check() {
    let (v, _) = validator(vec![jwk(KEY1, "k1")]);
    let t = token(KEY1, "k1", good_claims());
    let mut parts: Vec<String> = t.split('.').map(str::to_string).collect();
    let forged =
        json!({"iss": ISS, "aud": "sqe", "exp": now() + 300, "preferred_username": "admin"});
    parts[1] = base64::Engine::encode(
        &base64::engine::general_purpose::URL_SAFE_NO_PAD,
        forged.to_string(),
    );
    let err = v.validate(&parts.join(".")).await.unwrap_err();
    assert_eq!(err, BearerError::Invalid("bad signature"));
}

#[tokio::test]
async fn a_token_signed_by_an_unpublished_key_is_refused() {
    let (v, _) = validator(vec![jwk(KEY1, "k1")]);
    let err = v
        .validate(&token(KEY2, "k1", good_claims()))
        .await
        .unwrap_err();
    assert_eq!(err, BearerError::Invalid("bad signature"));
    let err = v
        .validate(&token(KEY2, "k-unknown", good_claims()))
        .await
        .unwrap_err();
    assert_eq!(err, BearerError::Invalid("unknown signing key"));
}

#[tokio::test]
async fn symmetric_and_none_algorithms_are_refused_before_any_key_lookup() {
    let (v, fetches) = validator(vec![jwk(KEY1, "k1")]);
    let hs = encode(
        &Header::new(Algorithm::HS256),
        &good_claims(),
        &EncodingKey::from_secret(b"k"),
    )
    .unwrap();
    assert_eq!(
        v.validate(&hs).await.unwrap_err(),
        BearerError::Invalid("algorithm not allowed")
    );
    let b64 =
        |s: &str| base64::Engine::encode(&base64::engine::general_purpose::URL_SAFE_NO_PAD, s);
    let none = format!(
        "{}.{}.",
        b64(r#"{"alg":"none"}"#),
        b64(&good_claims().to_string())
    );
    assert!(v.validate(&none).await.is_err());
    assert_eq!(fetches.load(Ordering::SeqCst), 0);
}

#[tokio::test]
async fn keys_are_refetched_on_an_unknown_kid_but_not_on_every_bad_token() {
    let fetches = Arc::new(AtomicUsize::new(0));
    let source = Arc::new(Keys {
        keys: Mutex::new(vec![jwk(KEY1, "k1")]),
        fetches: fetches.clone(),
    });
    struct Shared(Arc<Keys>);
    impl JwksSource for Shared {
        fn fetch(&self) -> BoxFuture<'_, Result<Vec<Jwk>, IdpError>> {
            self.0.fetch()
        }
    }
    let policy = BearerPolicy {
        issuer: ISS.into(),
        audience: "sqe".into(),
        algorithms: vec![Algorithm::RS256],
        allowed_clients: vec!["sqe".into()],
    };
    let v = BearerValidator::new(policy, Box::new(Shared(source.clone())));
    v.validate(&token(KEY1, "k1", good_claims())).await.unwrap();
    assert_eq!(fetches.load(Ordering::SeqCst), 1);
    // Same key again: served from the cache.
    v.validate(&token(KEY1, "k1", good_claims())).await.unwrap();
    assert_eq!(fetches.load(Ordering::SeqCst), 1);
    // Unknown kids within MIN_REFETCH do not trigger more fetches.
    for _ in 0..5 {
        assert!(
            v.validate(&token(KEY2, "nope", good_claims()))
                .await
                .is_err()
        );
    }
    assert_eq!(fetches.load(Ordering::SeqCst), 1);
    // The IdP rotates to k2; once the refetch window passes, the new kid is picked up.
    *source.keys.lock().unwrap() = vec![jwk(KEY1, "k1"), jwk(KEY2, "k2")];
    if let Ok(mut t) = v.last_fetch.lock() {
        *t = Some(Instant::now() - MIN_REFETCH);
    }
    v.validate(&token(KEY2, "k2", good_claims())).await.unwrap();
    assert_eq!(fetches.load(Ordering::SeqCst), 2);
}

#[tokio::test]
async fn encryption_keys_are_never_used_to_verify_and_odd_keys_do_not_break_the_set() {
    // Keycloak publishes an RSA-OAEP key with `use: enc` next to its signing key.
    let mut enc = serde_json::to_value(jwk(KEY2, "enc")).unwrap();
    enc["use"] = json!("enc");
    enc["alg"] = json!("RSA-OAEP");
    let mut sig = serde_json::to_value(jwk(KEY1, "sig")).unwrap();
    sig["use"] = json!("sig");
    let body = json!({"keys": [enc, sig, {"kid": "broken"}]});
    let keys = parse_jwks(&body);
    assert!(
        keys.iter()
            .any(|k| k.common.key_id.as_deref() == Some("sig"))
    );
    let (v, _) = validator(keys);
    v.validate(&token(KEY1, "sig", good_claims()))
        .await
        .unwrap();
    let err = v
        .validate(&token(KEY2, "enc", good_claims()))
        .await
        .unwrap_err();
    assert_eq!(err, BearerError::Invalid("unknown signing key"));
}
