//! A statement's text to the logical plan that runs it, in the caller's session context.

use datafusion::error::DataFusionError;
use datafusion::logical_expr::{LogicalPlan, Statement};
use datafusion::prelude::SessionContext;

use super::dialect::SqeDialect;
use super::parse::{Parsed, parse_in};
use super::show;
use crate::error::EngineError;
use crate::policy;

/// A planned statement, and its form (`SELECT`, `CREATE TABLE`) for logs.
pub struct Planned {
    pub plan: LogicalPlan,
    pub form: String,
}

/// Parses `sql` once, plans its AST (SHOW forms here, everything else by DataFusion with SQE's
/// relation planners), and checks the plan against the engine's policy. Nothing runs.
pub async fn plan(ctx: &SessionContext, sql: &str) -> Result<Planned, EngineError> {
    let state = ctx.state();
    let Parsed { statement, form } = {
        let chosen = &state.config().options().sql_parser.dialect;
        parse_in(sql, &SqeDialect::named(chosen.as_ref()).unwrap_or_default())?
    };
    let plan = match show::plan(ctx, &statement).await? {
        Some(plan) => plan,
        None => state
            .statement_to_plan(statement)
            .await
            .map_err(|e| unsupported(&form, e))?,
    };
    let plan = prepared(ctx, plan).await?;
    policy::check(&plan)?;
    Ok(Planned { plan, form })
}

/// SQL `EXECUTE name(…)` is the session's prepared statement bound to its values: a query like
/// any other from here on (announced, admitted, streamed), resolved the way DataFusion's own
/// `execute_logical_plan` resolves it, which runs nothing.
async fn prepared(ctx: &SessionContext, plan: LogicalPlan) -> Result<LogicalPlan, EngineError> {
    if !matches!(plan, LogicalPlan::Statement(Statement::Execute(_))) {
        return Ok(plan);
    }
    Ok(ctx.execute_logical_plan(plan).await?.logical_plan().clone())
}

/// DataFusion says "not implemented" for statements it parses but does not plan (`GRANT`,
/// `SHOW VIEWS`): to the client that is a statement this server does not accept, named by its
/// form. A feature missing inside a statement it does plan stays UNIMPLEMENTED.
fn unsupported(form: &str, e: DataFusionError) -> EngineError {
    match e.find_root() {
        DataFusionError::NotImplemented(detail)
            if detail.starts_with("Unsupported SQL statement") =>
        {
            EngineError::InvalidArgument(format!(
                "`{form}` statements are not supported here ({})",
                detail.chars().take(200).collect::<String>()
            ))
        }
        _ => e.into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_statement_datafusion_does_not_plan_is_invalid_and_named() {
        let ctx = SessionContext::new();
        ctx.sql("CREATE TABLE t (a INT)").await.unwrap();
        for (sql, form) in [
            ("GRANT SELECT ON t TO bob", "GRANT SELECT ON"),
            ("SHOW VIEWS", "SHOW VIEWS"),
        ] {
            let e = plan(&ctx, sql).await.err().expect(sql);
            assert_eq!(e.code(), tonic::Code::InvalidArgument, "{sql}: {e}");
            assert!(e.to_string().contains(&format!("`{form}`")), "{sql}: {e}");
        }
    }

    #[tokio::test]
    async fn plans_carry_their_form_and_policy_applies() {
        let ctx = SessionContext::new();
        let p = plan(&ctx, "select 1 as x").await.unwrap();
        assert_eq!(p.form, "SELECT");
        let e = plan(&ctx, "SET datafusion.runtime.memory_limit = '1T'")
            .await
            .err()
            .unwrap();
        assert_eq!(e.code(), tonic::Code::InvalidArgument);
    }
}
