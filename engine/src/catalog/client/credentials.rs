//! Vended storage credentials over the life of one scan.
//!
//! The catalog vends short-lived keys with each loadTable (STS: 15 minutes and up). A scan that
//! outlives them would fail half-way, so every read of a scan takes its FileIO from one
//! `VendedIo`, which asks the catalog again — as the user, with the session's token as it is
//! now — shortly before the keys run out, and once more if the object store refuses them anyway
//! (a catalog that caches STS sessions can hand out keys older than they look; an administrator
//! can revoke them).

use std::collections::HashMap;
use std::fmt;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use futures::future::BoxFuture;
use iceberg::io::FileIO;
use sqe_engine_config::VendedCredentialsConfig;

use crate::error::EngineError;

/// When the catalog reports the expiry of what it vended (Iceberg's property for S3).
pub const EXPIRES_AT_MS: &str = "s3.session-token-expires-at-ms";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CredentialPolicy {
    /// Lifetime assumed when the catalog reports none.
    pub assumed_lifetime: Duration,
    /// Renew when less than this is left.
    pub refresh_margin: Duration,
}

impl From<&VendedCredentialsConfig> for CredentialPolicy {
    fn from(c: &VendedCredentialsConfig) -> Self {
        Self {
            assumed_lifetime: c.assumed_lifetime(),
            refresh_margin: c.refresh_margin(),
        }
    }
}

impl Default for CredentialPolicy {
    fn default() -> Self {
        (&VendedCredentialsConfig::default()).into()
    }
}

impl CredentialPolicy {
    /// When keys vended at `vended_at` with these storage properties stop working: the
    /// catalog's word if it gave one, else the assumed lifetime.
    pub fn expires_at(&self, props: &HashMap<String, String>, vended_at: SystemTime) -> SystemTime {
        props
            .get(EXPIRES_AT_MS)
            .and_then(|ms| ms.trim().parse::<u64>().ok())
            .map(|ms| UNIX_EPOCH + Duration::from_millis(ms))
            .unwrap_or(vended_at + self.assumed_lifetime)
    }

    /// Whether keys expiring at `expires_at` must be renewed before the next read at `now`.
    pub fn renewal_due(&self, expires_at: SystemTime, now: SystemTime) -> bool {
        now + self.refresh_margin >= expires_at
    }
}

/// S3 error codes (and MinIO's wording) for keys the store no longer accepts: asking the catalog
/// for new ones may help. `AccessDenied` is among them because MinIO, while it revokes keys,
/// answers it (not `InvalidAccessKeyId`) to some of the requests that arrive meanwhile. A denial
/// that is real costs one more loadTable: the renewed keys are refused too and the query fails
/// with PERMISSION_DENIED.
const REFUSAL_MARKERS: [&str; 6] = [
    "ExpiredToken",
    "TokenRefreshRequired",
    "InvalidToken",
    "InvalidAccessKeyId",
    "The provided token has expired",
    "AccessDenied",
];

/// If a read failed because the store refused the keys, the marker it carries (anywhere in its
/// chain): the reason the refusal is logged with.
pub fn store_refusal(e: &(dyn std::error::Error + 'static)) -> Option<&'static str> {
    refusal_marker(&render_chain(e))
}

fn refusal_marker(rendered: &str) -> Option<&'static str> {
    REFUSAL_MARKERS.into_iter().find(|m| rendered.contains(m))
}

/// An error and everything it wraps, as one string.
fn render_chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut out = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        out.push_str(": ");
        out.push_str(&s.to_string());
        source = s.source();
    }
    out
}

/// Keys as vended by one loadTable, in a FileIO that can use nothing else.
pub struct Vended {
    pub file_io: FileIO,
    pub expires_at: SystemTime,
}

/// One more loadTable for the same table, as the user (the session's current token).
pub type Renew = Arc<dyn Fn() -> BoxFuture<'static, Result<Vended, EngineError>> + Send + Sync>;

struct Current {
    vended: Vended,
    /// Bumped on every renewal, so many readers that saw the same refusal renew once.
    generation: u64,
}

/// The FileIO every read of one table in one scan uses.
pub struct VendedIo {
    subject: String,
    policy: CredentialPolicy,
    renew: Renew,
    state: tokio::sync::Mutex<Current>,
}

/// No FileIO: it holds the keys.
impl fmt::Debug for VendedIo {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("VendedIo")
            .field("subject", &self.subject)
            .finish_non_exhaustive()
    }
}

#[derive(Debug, Clone, Copy)]
enum Why {
    Expiring,
    Refused,
}

impl VendedIo {
    /// `table lake.demo.a`: what the keys are for, in errors.
    pub fn subject(&self) -> &str {
        &self.subject
    }

    pub fn new(subject: String, policy: CredentialPolicy, first: Vended, renew: Renew) -> Self {
        Self {
            subject,
            policy,
            renew,
            state: tokio::sync::Mutex::new(Current {
                vended: first,
                generation: 0,
            }),
        }
    }

    /// The FileIO to read with now (renewed first if its keys are about to run out), and its
    /// generation to name when reporting a refusal.
    pub async fn current(&self) -> Result<(FileIO, u64), EngineError> {
        let mut st = self.state.lock().await;
        if self
            .policy
            .renewal_due(st.vended.expires_at, SystemTime::now())
        {
            self.renew_locked(&mut st, Why::Expiring).await?;
        }
        Ok((st.vended.file_io.clone(), st.generation))
    }

    /// The object store refused `generation`'s keys (`marker` says how): renew
    /// unless another reader already did, and hand back what to retry with.
    pub async fn renew_after_refusal(
        &self,
        generation: u64,
        marker: &str,
    ) -> Result<(FileIO, u64), EngineError> {
        let mut st = self.state.lock().await;
        let renewing = st.generation == generation;
        tracing::info!(
            event = "storage_credentials_refused",
            subject = self.subject.as_str(),
            generation,
            marker,
            renewing,
        );
        if renewing {
            self.renew_locked(&mut st, Why::Refused).await?;
        }
        Ok((st.vended.file_io.clone(), st.generation))
    }

    #[cfg(test)]
    async fn generation(&self) -> u64 {
        self.state.lock().await.generation
    }

    async fn renew_locked(&self, st: &mut Current, why: Why) -> Result<(), EngineError> {
        // Holding the lock makes this single-flight: other readers wait for the new keys.
        st.vended = (self.renew)().await?;
        st.generation += 1;
        tracing::info!(
            event = "storage_credentials_renewed",
            subject = self.subject.as_str(),
            reason = ?why,
            generation = st.generation,
        );
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    use futures::FutureExt;

    fn policy(lifetime: u64, margin: u64) -> CredentialPolicy {
        CredentialPolicy {
            assumed_lifetime: Duration::from_secs(lifetime),
            refresh_margin: Duration::from_secs(margin),
        }
    }

    fn file_io() -> FileIO {
        FileIO::new_with_memory()
    }

    #[test]
    fn the_catalogs_expiry_wins_over_the_assumed_lifetime() {
        let p = policy(900, 120);
        let t0 = UNIX_EPOCH + Duration::from_secs(1_800_000_000);
        assert_eq!(
            p.expires_at(&HashMap::new(), t0),
            t0 + Duration::from_secs(900)
        );
        let said = HashMap::from([(EXPIRES_AT_MS.to_owned(), "1800000300000".to_owned())]);
        assert_eq!(p.expires_at(&said, t0), t0 + Duration::from_secs(300));
        // Garbage is not trusted as an expiry.
        let bad = HashMap::from([(EXPIRES_AT_MS.to_owned(), "soon".to_owned())]);
        assert_eq!(p.expires_at(&bad, t0), t0 + Duration::from_secs(900));
    }

    #[test]
    fn renewal_is_due_within_the_margin_of_expiry() {
        let p = policy(900, 120);
        let expiry = UNIX_EPOCH + Duration::from_secs(10_000);
        assert!(!p.renewal_due(expiry, expiry - Duration::from_secs(121)));
        assert!(p.renewal_due(expiry, expiry - Duration::from_secs(120)));
        assert!(p.renewal_due(expiry, expiry + Duration::from_secs(5)));
    }

    #[test]
    fn refused_keys_are_told_apart_from_other_failures() {
        let minio = "Unexpected (persistent) at read => S3Error { code: \"ExpiredToken\", \
                     message: \"The provided token has expired.\" }";
        assert_eq!(refusal_marker(minio), Some("ExpiredToken"));
        assert_eq!(
            refusal_marker("<Code>InvalidAccessKeyId</Code>"),
            Some("InvalidAccessKeyId")
        );
        // What MinIO answers while it revokes the keys.
        assert_eq!(
            refusal_marker("S3Error { code: \"AccessDenied\", message: \"Access Denied.\" }"),
            Some("AccessDenied")
        );
        assert_eq!(refusal_marker("S3Error { code: \"NoSuchKey\" }"), None);
        assert_eq!(refusal_marker("SlowDown: reduce your request rate"), None);
    }

    fn lasting(secs: u64) -> Vended {
        Vended {
            file_io: file_io(),
            expires_at: SystemTime::now() + Duration::from_secs(secs),
        }
    }

    /// Keys `first`, renewed (counted in `calls`) with keys lasting 900 s; renewal 120 s ahead.
    fn vended_io(first: Vended, calls: &Arc<AtomicUsize>) -> VendedIo {
        let calls = calls.clone();
        let renew: Renew = Arc::new(move || {
            calls.fetch_add(1, Ordering::SeqCst);
            async { Ok(lasting(900)) }.boxed()
        });
        VendedIo::new("table lake.demo.a".into(), policy(900, 120), first, renew)
    }

    #[tokio::test]
    async fn fresh_keys_are_used_as_they_are_and_expiring_keys_are_renewed_first() {
        let calls = Arc::new(AtomicUsize::new(0));
        let io = vended_io(lasting(900), &calls);
        assert_eq!(io.current().await.unwrap().1, 0);
        assert_eq!(calls.load(Ordering::SeqCst), 0);

        let io = vended_io(lasting(60), &calls);
        assert_eq!(io.current().await.unwrap().1, 1);
        assert_eq!(io.current().await.unwrap().1, 1, "renewed keys are kept");
        assert_eq!(calls.load(Ordering::SeqCst), 1);
    }

    #[tokio::test]
    async fn many_readers_refused_with_the_same_keys_renew_once() {
        let calls = Arc::new(AtomicUsize::new(0));
        let io = Arc::new(vended_io(lasting(900), &calls));
        let (_, seen) = io.current().await.unwrap();
        let readers: Vec<_> = (0..8)
            .map(|_| {
                let io = io.clone();
                tokio::spawn(async move {
                    io.renew_after_refusal(seen, "ExpiredToken")
                        .await
                        .unwrap()
                        .1
                })
            })
            .collect();
        for r in readers {
            assert_eq!(r.await.unwrap(), 1);
        }
        assert_eq!(calls.load(Ordering::SeqCst), 1);
        // A later refusal of the renewed keys renews again.
        assert_eq!(
            io.renew_after_refusal(1, "ExpiredToken").await.unwrap().1,
            2
        );
    }

    #[tokio::test]
    async fn a_failed_renewal_fails_the_read_with_the_catalogs_answer() {
        let io = VendedIo::new(
            "table lake.demo.c".into(),
            policy(900, 120),
            lasting(0),
            Arc::new(|| {
                async {
                    Err(EngineError::PermissionDenied(
                        "table lake.demo.c: revoked".into(),
                    ))
                }
                .boxed()
            }),
        );
        let e = io.current().await.unwrap_err();
        assert!(matches!(e, EngineError::PermissionDenied(_)), "{e:?}");
        assert_eq!(io.generation().await, 0);
    }
}
