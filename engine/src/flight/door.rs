//! The door: every Flight RPC passes here before arrow-flight's Flight SQL dispatch.
//!
//! - arrow-flight decodes the command inside a descriptor or ticket itself and answers INTERNAL
//!   when the bytes do not decode (a garbage `value` under a known type URL, a string field that
//!   is not UTF-8): that is the client's mistake. The door decodes them first and answers
//!   INVALID_ARGUMENT (to a caller it has authenticated: strangers learn nothing but
//!   UNAUTHENTICATED).
//! - RPCs the engine does not serve (ListFlights, PollFlightInfo, GetSchema, DoExchange, path
//!   descriptors) are UNIMPLEMENTED, also only once the caller is authenticated.

use arrow_flight::flight_service_server::FlightService;
use arrow_flight::sql::{
    ActionCancelQueryRequest, ActionClosePreparedStatementRequest,
    ActionCreatePreparedStatementRequest, Any, Command, ProstMessageExt,
};
use arrow_flight::{
    Action, Criteria, Empty, FlightData, FlightDescriptor, FlightInfo, HandshakeRequest, PollInfo,
    SchemaResult, Ticket, flight_descriptor::DescriptorType,
};
use prost::Message;
use tonic::{Request, Response, Status, Streaming};
use tracing::Instrument;

use super::service::SqeFlightSqlService;
use crate::error::EngineError;

/// Whether `bytes` are a Flight SQL command the engine can read (known or not; unknown ones are
/// refused later, by name).
pub fn readable_command(bytes: &[u8], what: &str) -> Result<(), EngineError> {
    let any = Any::decode(bytes).map_err(|_| {
        EngineError::InvalidArgument(format!("the {what} is not a Flight SQL command"))
    })?;
    let type_url = any.type_url.clone();
    Command::try_from(any).map(|_| ()).map_err(|_| {
        EngineError::InvalidArgument(format!(
            "the {what} does not decode as `{}`",
            type_url.chars().take(200).collect::<String>()
        ))
    })
}

/// Whether the body of a Flight SQL action the engine serves decodes as that action's message
/// (arrow-flight answers INTERNAL when it does not). Other actions pass through.
pub fn readable_action(action: &Action) -> Result<(), EngineError> {
    fn unpacks<T: ProstMessageExt>(body: &[u8]) -> bool {
        Any::decode(body).is_ok_and(|any| any.unpack::<T>().is_ok())
    }
    let ok = match action.r#type.as_str() {
        "CreatePreparedStatement" => unpacks::<ActionCreatePreparedStatementRequest>(&action.body),
        "ClosePreparedStatement" => unpacks::<ActionClosePreparedStatementRequest>(&action.body),
        "CancelQuery" => unpacks::<ActionCancelQueryRequest>(&action.body),
        _ => true,
    };
    if ok {
        Ok(())
    } else {
        Err(EngineError::InvalidArgument(format!(
            "the body of action `{}` does not decode",
            action.r#type
        )))
    }
}

/// The span every line logged for one call carries: the RPC, and once the caller is known
/// (`super::caller`), who they are and which session (its handle's fingerprint, never the
/// handle), and the statement, once there is one.
fn rpc_span(rpc: &'static str) -> tracing::Span {
    tracing::info_span!(
        "rpc",
        rpc,
        user = tracing::field::Empty,
        session = tracing::field::Empty,
        fp = tracing::field::Empty,
        statement = tracing::field::Empty,
    )
}

pub struct Door(pub SqeFlightSqlService);

type Inner = SqeFlightSqlService;

#[tonic::async_trait]
impl FlightService for Door {
    type HandshakeStream = <Inner as FlightService>::HandshakeStream;
    type ListFlightsStream = <Inner as FlightService>::ListFlightsStream;
    type DoGetStream = <Inner as FlightService>::DoGetStream;
    type DoPutStream = <Inner as FlightService>::DoPutStream;
    type DoExchangeStream = <Inner as FlightService>::DoExchangeStream;
    type DoActionStream = <Inner as FlightService>::DoActionStream;
    type ListActionsStream = <Inner as FlightService>::ListActionsStream;

    async fn handshake(
        &self,
        request: Request<Streaming<HandshakeRequest>>,
    ) -> Result<Response<Self::HandshakeStream>, Status> {
        async { self.0.handshake(request).await }
            .instrument(rpc_span("Handshake"))
            .await
    }

    async fn list_flights(
        &self,
        request: Request<Criteria>,
    ) -> Result<Response<Self::ListFlightsStream>, Status> {
        async {
            self.0.authenticated(&request).await?;
            self.0.list_flights(request).await
        }
        .instrument(rpc_span("ListFlights"))
        .await
    }

    async fn get_flight_info(
        &self,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        async {
            if request.get_ref().r#type != DescriptorType::Cmd as i32 {
                self.0.authenticated(&request).await?;
                return Err(EngineError::Unimplemented(
                    "only command descriptors (Flight SQL) are served, not paths".into(),
                )
                .into());
            }
            if let Err(e) = readable_command(&request.get_ref().cmd, "descriptor") {
                self.0.authenticated(&request).await?;
                return Err(e.into());
            }
            self.0.get_flight_info(request).await
        }
        .instrument(rpc_span("GetFlightInfo"))
        .await
    }

    async fn poll_flight_info(
        &self,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<PollInfo>, Status> {
        async {
            self.0.authenticated(&request).await?;
            self.0.poll_flight_info(request).await
        }
        .instrument(rpc_span("PollFlightInfo"))
        .await
    }

    async fn get_schema(
        &self,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<SchemaResult>, Status> {
        async {
            self.0.authenticated(&request).await?;
            self.0.statement_schema(request).await
        }
        .instrument(rpc_span("GetSchema"))
        .await
    }

    async fn do_get(
        &self,
        request: Request<Ticket>,
    ) -> Result<Response<Self::DoGetStream>, Status> {
        async {
            if let Err(e) = readable_command(&request.get_ref().ticket, "ticket") {
                self.0.authenticated(&request).await?;
                return Err(e.into());
            }
            self.0.do_get(request).await
        }
        .instrument(rpc_span("DoGet"))
        .await
    }

    async fn do_put(
        &self,
        request: Request<Streaming<FlightData>>,
    ) -> Result<Response<Self::DoPutStream>, Status> {
        async { self.0.do_put(request).await }
            .instrument(rpc_span("DoPut"))
            .await
    }

    async fn do_exchange(
        &self,
        request: Request<Streaming<FlightData>>,
    ) -> Result<Response<Self::DoExchangeStream>, Status> {
        async {
            self.0.authenticated(&request).await?;
            self.0.do_exchange(request).await
        }
        .instrument(rpc_span("DoExchange"))
        .await
    }

    async fn do_action(
        &self,
        request: Request<Action>,
    ) -> Result<Response<Self::DoActionStream>, Status> {
        async {
            if let Err(e) = readable_action(request.get_ref()) {
                self.0.authenticated(&request).await?;
                return Err(e.into());
            }
            self.0.do_action(request).await
        }
        .instrument(rpc_span("DoAction"))
        .await
    }

    async fn list_actions(
        &self,
        request: Request<Empty>,
    ) -> Result<Response<Self::ListActionsStream>, Status> {
        async { self.0.list_actions(request).await }
            .instrument(rpc_span("ListActions"))
            .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow_flight::sql::{CommandStatementQuery, ProstMessageExt};
    use tonic::Code;

    #[test]
    fn a_command_that_does_not_decode_is_the_clients_mistake() {
        let good = CommandStatementQuery {
            query: "SELECT 1".into(),
            transaction_id: None,
        }
        .as_any()
        .encode_to_vec();
        assert!(readable_command(&good, "descriptor").is_ok());

        // Known type URL, value that is not that message (field 1 with invalid UTF-8).
        let bad_utf8 = Any {
            type_url: "type.googleapis.com/arrow.flight.protocol.sql.CommandStatementQuery".into(),
            value: vec![0x0a, 0x02, 0xff, 0xfe].into(),
        }
        .encode_to_vec();
        for bytes in [bad_utf8, vec![0xff, 0xff, 0xff]] {
            let e = readable_command(&bytes, "ticket").unwrap_err();
            assert_eq!(e.code(), Code::InvalidArgument, "{e}");
        }
        // Unknown types decode (and are refused by name later).
        let unknown = Any {
            type_url: "type.example/what".into(),
            value: vec![1, 2, 3].into(),
        }
        .encode_to_vec();
        assert!(readable_command(&unknown, "ticket").is_ok());
    }

    #[test]
    fn an_action_body_that_does_not_decode_is_the_clients_mistake() {
        let action = |kind: &str, body: Vec<u8>| Action {
            r#type: kind.into(),
            body: body.into(),
        };
        let good = ActionCreatePreparedStatementRequest {
            query: "SELECT 1".into(),
            transaction_id: None,
        }
        .as_any()
        .encode_to_vec();
        assert!(readable_action(&action("CreatePreparedStatement", good)).is_ok());
        let garbage = Any {
            type_url:
                "type.googleapis.com/arrow.flight.protocol.sql.ActionCreatePreparedStatementRequest"
                    .into(),
            value: vec![0x0a, 0x02, 0xff, 0xfe].into(),
        }
        .encode_to_vec();
        let e = readable_action(&action("CreatePreparedStatement", garbage)).unwrap_err();
        assert_eq!(e.code(), Code::InvalidArgument);
        assert!(readable_action(&action("CloseSession", vec![])).is_ok());
    }
}
