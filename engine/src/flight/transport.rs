//! What the transport accepts before a request reaches the door: a bounded number of
//! connections, and only requests that present credentials, read up to a size that depends on
//! the RPC.
//!
//! A request without a well-formed `authorization` header is answered UNAUTHENTICATED from its
//! headers alone: its body is never read, so a stranger cannot make the engine receive and
//! decode megabytes. Only DoPut carries data (rows, parameters); every other RPC's message is a
//! command, a ticket or an action, and is refused past [`MAX_MESSAGE_BYTES`].

use std::convert::Infallible;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use arrow_flight::flight_service_server::FlightServiceServer;
use futures::future::BoxFuture;
use futures::{Stream, StreamExt};
use http::HeaderMap;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tonic::body::Body;
use tonic::codegen::Service;
use tonic::server::NamedService;
use tonic::transport::server::{Connected, TcpConnectInfo};

use super::door::Door;
use super::handshake::parse_authorization;
use crate::error::EngineError;
use crate::limits::{MAX_DO_PUT_MESSAGE_BYTES, MAX_MESSAGE_BYTES};

const DO_PUT_PATH: &str = "/arrow.flight.protocol.FlightService/DoPut";

/// Whether the headers present credentials the engine could read (not whether they are good:
/// that is the door's, once it resolves them).
pub fn presents_credentials(headers: &HeaderMap) -> Result<(), EngineError> {
    let value = headers
        .get(http::header::AUTHORIZATION)
        .ok_or(EngineError::MissingCredentials)?
        .to_str()
        .map_err(|_| EngineError::Unauthenticated)?;
    parse_authorization(value).map(|_| ())
}

/// The Flight service as the transport serves it: DoPut with the data limit, everything else
/// with the message limit, neither before the headers present credentials.
#[derive(Clone)]
pub struct Front {
    put: FlightServiceServer<Door>,
    rest: FlightServiceServer<Door>,
}

impl Front {
    pub fn new(door: Arc<Door>) -> Self {
        let server = |decode: usize| {
            FlightServiceServer::from_arc(door.clone())
                .max_decoding_message_size(decode)
                .max_encoding_message_size(MAX_DO_PUT_MESSAGE_BYTES)
        };
        Self {
            put: server(MAX_DO_PUT_MESSAGE_BYTES),
            rest: server(MAX_MESSAGE_BYTES),
        }
    }
}

impl NamedService for Front {
    const NAME: &'static str = <FlightServiceServer<Door> as NamedService>::NAME;
}

impl Service<http::Request<Body>> for Front {
    type Response = http::Response<Body>;
    type Error = Infallible;
    type Future = BoxFuture<'static, Result<Self::Response, Infallible>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        // Generated Flight servers are always ready.
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: http::Request<Body>) -> Self::Future {
        if let Err(e) = presents_credentials(request.headers()) {
            let status = tonic::Status::from(e);
            return Box::pin(async move { Ok(status.into_http()) });
        }
        let (mut server, limit) = if request.uri().path() == DO_PUT_PATH {
            (self.put.clone(), MAX_DO_PUT_MESSAGE_BYTES)
        } else {
            (self.rest.clone(), MAX_MESSAGE_BYTES)
        };
        Box::pin(async move {
            let response = server.call(request).await?;
            Ok(too_large(response.headers(), limit).map_or(response, |s| s.into_http()))
        })
    }
}

/// tonic answers a request message over the limit with OUT_OF_RANGE; gRPC's own servers (and
/// clients' retry logic) say RESOURCE_EXHAUSTED, with the limit.
fn too_large(headers: &HeaderMap, limit: usize) -> Option<tonic::Status> {
    let status = tonic::Status::from_header_map(headers)?;
    (status.code() == tonic::Code::OutOfRange
        && status
            .message()
            .starts_with("Error, decoded message length too large"))
    .then(|| {
        tonic::Status::resource_exhausted(format!(
            "the request message is larger than this call accepts ({limit} bytes; only DoPut \
             takes up to {MAX_DO_PUT_MESSAGE_BYTES})"
        ))
    })
}

/// Accepted connections, at most `cap` open at once: past it the engine stops accepting until
/// one closes, and new clients wait in the listen backlog.
pub fn capped(
    incoming: impl Stream<Item = io::Result<TcpStream>> + Send + 'static,
    cap: usize,
) -> Pin<Box<dyn Stream<Item = io::Result<CappedStream>> + Send>> {
    let slots = Arc::new(Semaphore::new(cap.max(1)));
    Box::pin(futures::stream::unfold(
        (Box::pin(incoming), slots),
        |(mut incoming, slots)| async move {
            let slot = slots.clone().acquire_owned().await.ok()?;
            let next = incoming.next().await?;
            let capped = next.map(|stream| CappedStream {
                stream,
                _slot: slot,
            });
            Some((capped, (incoming, slots)))
        },
    ))
}

/// A connection holding one of the slots of [`capped`] until it closes.
pub struct CappedStream {
    stream: TcpStream,
    _slot: OwnedSemaphorePermit,
}

impl Connected for CappedStream {
    type ConnectInfo = TcpConnectInfo;

    fn connect_info(&self) -> TcpConnectInfo {
        self.stream.connect_info()
    }
}

impl AsyncRead for CappedStream {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_read(cx, buf)
    }
}

impl AsyncWrite for CappedStream {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tonic::Code;

    fn headers(authorization: Option<&[u8]>) -> HeaderMap {
        let mut h = HeaderMap::new();
        if let Some(v) = authorization {
            h.insert(
                http::header::AUTHORIZATION,
                http::HeaderValue::from_bytes(v).unwrap(),
            );
        }
        h
    }

    #[test]
    fn only_requests_presenting_credentials_are_read() {
        for bad in [
            None,
            Some(&b"Basic"[..]),
            Some(b"Basic !!!"),
            Some(b"Bearer"),
            Some(b"Negotiate abc"),
            Some(b"\xff\xfe"),
        ] {
            let e = presents_credentials(&headers(bad)).unwrap_err();
            assert_eq!(e.code(), Code::Unauthenticated, "{bad:?}");
        }
        for good in [
            &b"Basic YWxpY2U6YWxpY2UtcHc="[..],
            b"Bearer sqe_abc",
            b"Bearer eyJ.eyJ.sig",
        ] {
            assert!(presents_credentials(&headers(Some(good))).is_ok());
        }
    }

    #[tokio::test]
    async fn connections_past_the_cap_wait_until_one_closes() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let incoming = tonic::transport::server::TcpIncoming::from(listener);
        let mut accepted = capped(incoming, 2);
        let _c1 = TcpStream::connect(addr).await.unwrap();
        let _c2 = TcpStream::connect(addr).await.unwrap();
        let _c3 = TcpStream::connect(addr).await.unwrap();
        let first = accepted.next().await.unwrap().unwrap();
        let _second = accepted.next().await.unwrap().unwrap();
        let third = tokio::time::timeout(std::time::Duration::from_millis(200), accepted.next());
        assert!(
            third.await.is_err(),
            "a third connection was accepted past the cap"
        );
        drop(first);
        let third = tokio::time::timeout(std::time::Duration::from_secs(5), accepted.next());
        assert!(third.await.unwrap().unwrap().is_ok());
    }
}
