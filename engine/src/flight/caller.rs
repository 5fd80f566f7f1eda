//! Authentication at the door: every call resolves to a session before anything else happens.
//!
//! Basic credentials log in (or find the session the same credentials opened before from the
//! same address), a session handle resolves, a JWT (bearer mode) is validated. A call that logged
//! in answers with the new handle in its `authorization` response header.

use std::net::IpAddr;
use std::pin::Pin;
use std::sync::Arc;

use arrow_flight::HandshakeResponse;
use futures::Stream;
use tonic::metadata::{MetadataMap, MetadataValue};
use tonic::{Request, Response, Status};

use super::handshake::{AUTH_MODE_HEADER, Presented, parse_authorization, parse_mode};
use crate::drain::{CallGuard, Drain};
use crate::error::EngineError;
use crate::session::{Session, SessionHandle, SessionManager};

pub type HandshakeStream = Pin<Box<dyn Stream<Item = Result<HandshakeResponse, Status>> + Send>>;

/// A caller resolved to a session; `issued` is set when this call logged in (Basic), so the
/// response can carry the new handle. Holds the drain guard for as long as the call runs.
pub struct Caller {
    pub session: Arc<Session>,
    pub issued: Option<SessionHandle>,
    pub guard: CallGuard,
}

impl Caller {
    /// `body` as the response, with the handle this call issued, if any.
    pub fn wrap<T>(&self, body: T) -> Response<T> {
        let mut response = Response::new(body);
        attach_handle(response.metadata_mut(), self.issued.as_ref());
        response
    }

    pub fn user(&self) -> &str {
        &self.session.identity.user
    }
}

pub fn attach_handle(metadata: &mut MetadataMap, handle: Option<&SessionHandle>) {
    if let Some(h) = handle
        && let Ok(v) = MetadataValue::try_from(format!("Bearer {}", h.secret().expose()))
    {
        metadata.insert("authorization", v);
    }
}

/// Resolves callers to sessions.
pub struct Gate {
    sessions: Arc<SessionManager>,
    drain: Arc<Drain>,
}

impl Gate {
    pub fn new(sessions: Arc<SessionManager>, drain: Arc<Drain>) -> Self {
        Self { sessions, drain }
    }

    pub fn sessions(&self) -> &Arc<SessionManager> {
        &self.sessions
    }

    /// Any call but the handshake.
    pub async fn caller<T>(&self, request: &Request<T>) -> Result<Caller, EngineError> {
        let guard = self.drain.enter()?;
        let (session, issued) = self
            .authenticate(request.metadata(), peer(request), true)
            .await?;
        in_span(&session);
        Ok(Caller {
            session,
            issued,
            guard,
        })
    }

    /// Logs in and answers with `authorization: Bearer <session handle>` in the response headers
    /// (where ADBC and JDBC read it) and in the payload. Does not wait for a request message:
    /// ADBC sends none. A handle or JWT presented to the handshake is echoed back: it is already
    /// the bearer.
    pub async fn handshake<T>(
        &self,
        request: &Request<T>,
    ) -> Result<Response<HandshakeStream>, EngineError> {
        let _guard = self.drain.enter()?;
        let (session, issued) = self
            .authenticate(request.metadata(), peer(request), false)
            .await?;
        in_span(&session);
        let bearer = match &issued {
            Some(h) => h.secret().expose().to_string(),
            None => match parse_authorization(authorization(request.metadata())?)? {
                Presented::Handle(s) | Presented::Jwt(s) => s.expose().to_string(),
                Presented::Basic { .. } => String::new(),
            },
        };
        tracing::debug!(
            event = "handshake",
            user = session.identity.user.as_str(),
            session = session.id.as_str()
        );
        let payload = HandshakeResponse {
            protocol_version: 0,
            payload: bearer.clone().into_bytes().into(),
        };
        let stream: HandshakeStream = Box::pin(futures::stream::iter(vec![Ok(payload)]));
        let mut response = Response::new(stream);
        if let Ok(v) = MetadataValue::try_from(format!("Bearer {bearer}")) {
            response.metadata_mut().insert("authorization", v);
        }
        Ok(response)
    }

    /// `reuse`: Basic credentials on an ordinary call find the session the same credentials
    /// opened before from this address; a handshake (a new connection) always opens its own.
    async fn authenticate(
        &self,
        metadata: &MetadataMap,
        peer: Option<IpAddr>,
        reuse: bool,
    ) -> Result<(Arc<Session>, Option<SessionHandle>), EngineError> {
        match parse_authorization(authorization(metadata)?)? {
            Presented::Basic { user, password } => {
                let requested = match metadata.get(AUTH_MODE_HEADER) {
                    Some(v) => Some(parse_mode(
                        v.to_str().map_err(|_| EngineError::Unauthenticated)?,
                    )?),
                    None => None,
                };
                let mode = self.sessions.basic_mode(requested)?;
                let (handle, session) = self
                    .sessions
                    .login_basic(&user, &password, peer, mode, reuse)
                    .await?;
                Ok((session, Some(handle)))
            }
            Presented::Handle(h) => Ok((self.sessions.resolve(h.expose()).await?, None)),
            Presented::Jwt(jwt) => {
                Ok((self.sessions.login_bearer(jwt.expose(), peer).await?, None))
            }
        }
    }
}

/// Names the caller in the call's span (`super::door`): every line logged for the call says
/// whose it is.
fn in_span(session: &Session) {
    let span = tracing::Span::current();
    span.record("user", session.identity.user.as_str());
    span.record("session", session.id.as_str());
    if let Some(fp) = session.fingerprint_now() {
        span.record("fp", fp.to_string().as_str());
    }
}

fn authorization(metadata: &MetadataMap) -> Result<&str, EngineError> {
    metadata
        .get("authorization")
        .ok_or(EngineError::MissingCredentials)?
        .to_str()
        .map_err(|_| EngineError::Unauthenticated)
}

/// Canonical: an IPv4 client of a dual-stack listener shows as ::ffff:a.b.c.d, and must count as
/// the same source as when it connects over IPv4.
fn peer<T>(request: &Request<T>) -> Option<IpAddr> {
    request.remote_addr().map(|a| a.ip().to_canonical())
}
