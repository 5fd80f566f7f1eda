//! Walks over the sqlparser AST inside a DataFusion statement (DataFusion's own statements wrap
//! sqlparser's and add a few: `COPY`, `CREATE EXTERNAL TABLE`, `EXPLAIN` of those).

use std::ops::ControlFlow;

use datafusion::sql::parser::{CopyToSource, Statement as DFStatement};
use datafusion::sql::sqlparser::ast::{VisitMut, VisitorMut};

/// Visits every sqlparser AST inside a DataFusion statement.
pub fn visit<V: VisitorMut>(statement: &mut DFStatement, visitor: &mut V) {
    let _ = match statement {
        DFStatement::Statement(s) => s.visit(visitor),
        DFStatement::Explain(e) => {
            visit(&mut e.statement, visitor);
            ControlFlow::Continue(())
        }
        DFStatement::CopyTo(c) => match &mut c.source {
            CopyToSource::Query(q) => q.visit(visitor),
            CopyToSource::Relation(_) => ControlFlow::Continue(()),
        },
        DFStatement::CreateExternalTable(_) | DFStatement::Reset(_) => ControlFlow::Continue(()),
    };
}
