//! The Flight SQL service as a client meets it, in-process: login, statements, prepared
//! statements, updates, cancellation and error codes, and the result contract (what a FlightInfo
//! announces is exactly what its DoGet streams).

mod common;

use arrow::array::{Array, Int32Array, Int64Array, RecordBatch};
use arrow::datatypes::{DataType, Field, Schema};
use arrow_flight::HandshakeRequest;
use arrow_flight::flight_service_client::FlightServiceClient;
use arrow_flight::{Action, CancelFlightInfoRequest, CancelFlightInfoResult, CancelStatus};
use base64::Engine as _;
use common::{Engine, query, status};
use prost::Message;
use std::sync::Arc;
use tonic::Code;

/// Statements whose executed plan reshapes the logical plan's result: nullability, dictionaries,
/// unions of different widths, large lists, views.
const RESHAPED: &[&str] = &[
    "SELECT CASE WHEN 1 > 0 THEN 'a' END AS y",
    "SELECT NULLIF(1, 3) AS n",
    "SELECT arrow_cast('x', 'Dictionary(Int32, Utf8)') AS d",
    "SELECT arrow_cast(column1, 'Dictionary(Int8, Utf8)') AS d FROM (VALUES ('a'), ('b'), (NULL))",
    "SELECT CAST(1 AS INT) AS u UNION ALL SELECT CAST(2 AS BIGINT)",
    "SELECT CASE WHEN true THEN arrow_cast(make_array(1, 2), 'LargeList(Int64)') ELSE make_array(3) END AS l",
    "SELECT arrow_cast('v', 'Utf8View') AS v, arrow_cast(NULL, 'Utf8View') AS w",
    "SELECT named_struct('k', arrow_cast('x', 'Dictionary(Int32, Utf8)')) AS s",
    "SELECT * FROM (VALUES (1, 'a'), (2, NULL)) AS t(a, b) WHERE a IS NOT NULL",
    "SELECT count(*) AS c, max(x) AS m FROM (VALUES (1), (2)) AS t(x) WHERE x > 5",
];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_result_streams_exactly_the_schema_it_announced() {
    let engine = Engine::start().await;
    let mut client = engine.login("alice").await;
    for sql in RESHAPED {
        let answer = query(&mut client, sql)
            .await
            .unwrap_or_else(|e| panic!("{sql}: {e}"));
        assert!(
            answer.kept_the_contract(),
            "{sql}\n announced {:?}\n streamed  {:?}\n batches   {:?}",
            answer.announced,
            answer.streamed,
            answer.batches.first().map(|b| b.schema())
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn values_survive_the_reshaping() {
    let engine = Engine::start().await;
    let mut client = engine.login("alice").await;
    let union = query(
        &mut client,
        "SELECT CAST(1 AS INT) AS u UNION ALL SELECT CAST(2 AS BIGINT) ORDER BY u",
    )
    .await
    .unwrap();
    let column = union.batches.iter().flat_map(|b| {
        let c = b.column(0).clone();
        (0..c.len()).map(move |i| arrow::util::display::array_value_to_string(&c, i).unwrap())
    });
    assert_eq!(column.collect::<Vec<_>>(), ["1", "2"]);
    let nullif = query(&mut client, "SELECT NULLIF(1, 1) AS n, NULLIF(1, 3) AS m")
        .await
        .unwrap();
    let b = &nullif.batches[0];
    assert!(b.column(0).is_null(0));
    assert_eq!(
        arrow::util::display::array_value_to_string(b.column(1), 0).unwrap(),
        "1"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_prepared_statement_announces_what_it_streams_and_binds_values() {
    let engine = Engine::start().await;
    let mut client = engine.login("alice").await;
    let mut prepared = client
        .prepare("SELECT $1 + 1 AS n, NULLIF($1, 0) AS z".into(), None)
        .await
        .unwrap();
    let params = RecordBatch::try_new(
        Arc::new(Schema::new(vec![Field::new("$1", DataType::Int64, false)])),
        vec![Arc::new(Int64Array::from(vec![41]))],
    )
    .unwrap();
    prepared.set_parameters(params).unwrap();
    let info = prepared.execute().await.unwrap();
    let answer = common::fetch(&mut client, info).await.unwrap();
    assert!(answer.kept_the_contract(), "{:?}", answer.announced);
    assert_eq!(
        answer.batches[0]
            .column(0)
            .as_any()
            .downcast_ref::<Int64Array>()
            .unwrap()
            .value(0),
        42
    );
    prepared.close().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn updates_and_ddl_through_do_put_and_get_flight_info() {
    let engine = Engine::start().await;
    let mut client = engine.login("alice").await;
    query(&mut client, "CREATE TABLE t (a INT, b VARCHAR)")
        .await
        .unwrap();
    let inserted = client
        .execute_update("INSERT INTO t VALUES (1, 'x'), (2, 'y')".into(), None)
        .await
        .unwrap();
    assert_eq!(inserted, 2);
    let answer = query(&mut client, "SELECT sum(a) AS s FROM t")
        .await
        .unwrap();
    assert!(answer.kept_the_contract());
    assert_eq!(
        arrow::util::display::array_value_to_string(answer.batches[0].column(0), 0).unwrap(),
        "3"
    );
    // Session tables are the session's: another user does not see them.
    let mut bob = engine.login("bob").await;
    let e = query(&mut bob, "SELECT * FROM t").await.err().unwrap();
    assert_ne!(e.code(), Code::Ok);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_mistake_has_its_code() {
    let engine = Engine::start().await;
    for credentials in ["alice:nope", "alice:", "nobody:pw-alice"] {
        let mut raw = FlightServiceClient::new(engine.channel().await);
        let mut request = tonic::Request::new(futures::stream::iter([HandshakeRequest::default()]));
        let basic = base64::engine::general_purpose::STANDARD.encode(credentials);
        request
            .metadata_mut()
            .insert("authorization", format!("Basic {basic}").parse().unwrap());
        let e = raw.handshake(request).await.expect_err("refused");
        assert_eq!(e.code(), Code::Unauthenticated, "{credentials}");
        assert_eq!(e.message(), "authentication failed");
    }

    let mut client = engine.login("alice").await;
    let cases: &[(&str, Code)] = &[
        ("SELEC 1", Code::InvalidArgument),
        (
            "SELECT nope FROM (VALUES (1)) AS t(a)",
            Code::InvalidArgument,
        ),
        ("SELECT CAST('x' AS INT)", Code::InvalidArgument),
        ("SELECT 1 / 0", Code::InvalidArgument),
        ("SELECT CAST('2024-13-45' AS DATE)", Code::InvalidArgument),
        (
            "SELECT abs(-9223372036854775807 - 1)",
            Code::InvalidArgument,
        ),
        ("SELECT CAST(300 AS TINYINT)", Code::InvalidArgument),
        (
            "SET datafusion.runtime.memory_limit = '1T'",
            Code::InvalidArgument,
        ),
        ("SELECT * FROM no_such_table", Code::NotFound),
    ];
    for (sql, code) in cases {
        let e = query(&mut client, sql)
            .await
            .err()
            .unwrap_or_else(|| panic!("{sql} passed"));
        assert_eq!(e.code(), *code, "{sql}: {}", e.message());
        assert!(
            !e.message().starts_with("internal error"),
            "{sql}: {}",
            e.message()
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_running_query_is_cancelled_by_its_flight_info() {
    let engine = Engine::start().await;
    let mut client = engine.login("alice").await;
    let info = client
        .execute(
            "SELECT count(*) FROM generate_series(1, 2000000000) a".into(),
            None,
        )
        .await
        .unwrap();
    let ticket = info.endpoint[0].ticket.clone().unwrap();
    let mut running = client.clone();
    let fetch = tokio::spawn(async move {
        use futures::TryStreamExt;
        let mut stream = running.do_get(ticket).await.map_err(status)?;
        while stream.try_next().await.map_err(status)?.is_some() {}
        Ok::<_, tonic::Status>(())
    });
    let mut outcome = CancelStatus::Unspecified;
    for _ in 0..100 {
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        let request = CancelFlightInfoRequest::new(info.clone()).encode_to_vec();
        let mut answers = client
            .do_action(Action::new("CancelFlightInfo", request))
            .await
            .unwrap();
        let answer = answers.message().await.unwrap().expect("an answer");
        outcome = CancelFlightInfoResult::decode(answer.body)
            .unwrap()
            .status();
        if outcome == CancelStatus::Cancelled {
            break;
        }
    }
    assert_eq!(outcome, CancelStatus::Cancelled);
    let ended = fetch
        .await
        .unwrap()
        .expect_err("the stream ends in an error");
    assert_eq!(ended.code(), Code::Cancelled, "{}", ended.message());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn int32_results_stay_int32() {
    let engine = Engine::start().await;
    let mut client = engine.login("alice").await;
    let answer = query(&mut client, "SELECT CAST(7 AS INT) AS i")
        .await
        .unwrap();
    assert_eq!(answer.announced.field(0).data_type(), &DataType::Int32);
    let got = answer.batches[0]
        .column(0)
        .as_any()
        .downcast_ref::<Int32Array>()
        .unwrap()
        .value(0);
    assert_eq!(got, 7);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn get_schema_announces_what_get_flight_info_does_and_runs_nothing() {
    use arrow_flight::sql::{CommandStatementQuery, ProstMessageExt};
    use arrow_flight::{FlightDescriptor, IpcMessage};
    let engine = Engine::start().await;
    let mut client = engine.login("alice").await;
    let token = client.token().cloned().expect("a session");
    let mut raw = FlightServiceClient::new(engine.channel().await);
    let schema_of = |sql: &str| {
        let command = CommandStatementQuery {
            query: sql.into(),
            transaction_id: None,
        };
        let mut request =
            tonic::Request::new(FlightDescriptor::new_cmd(command.as_any().encode_to_vec()));
        request
            .metadata_mut()
            .insert("authorization", format!("Bearer {token}").parse().unwrap());
        request
    };
    for sql in RESHAPED {
        let result = raw.get_schema(schema_of(sql)).await.unwrap().into_inner();
        let got = Schema::try_from(IpcMessage(result.schema)).unwrap();
        let announced = query(&mut client, sql).await.unwrap().announced;
        assert_eq!(&got, announced.as_ref(), "{sql}");
    }
    let ddl = raw
        .get_schema(schema_of("CREATE TABLE made_by_get_schema (a INT)"))
        .await
        .unwrap()
        .into_inner();
    assert!(
        Schema::try_from(IpcMessage(ddl.schema))
            .unwrap()
            .fields()
            .is_empty()
    );
    let e = query(&mut client, "SELECT * FROM made_by_get_schema")
        .await
        .err()
        .expect("GetSchema created nothing");
    assert_eq!(e.code(), Code::NotFound, "{}", e.message());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_result_whose_columns_changed_after_its_flight_info_is_refused() {
    let engine = Engine::start().await;
    let mut client = engine.login("alice").await;
    query(&mut client, "CREATE TABLE t (a INT)").await.unwrap();
    let info = client
        .execute("SELECT * FROM t".into(), None)
        .await
        .unwrap();
    query(&mut client, "DROP TABLE t").await.unwrap();
    query(&mut client, "CREATE TABLE t (a VARCHAR)")
        .await
        .unwrap();
    let e = common::fetch(&mut client, info)
        .await
        .err()
        .expect("the announced schema no longer holds");
    assert_eq!(e.code(), Code::FailedPrecondition, "{}", e.message());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_result_too_big_to_make_is_resource_exhausted() {
    let engine = Engine::start().await;
    let mut client = engine.login("alice").await;
    let e = query(&mut client, "SELECT length(repeat('x', 1000000000))")
        .await
        .err()
        .expect("refused");
    assert_eq!(e.code(), Code::ResourceExhausted, "{}", e.message());
}
