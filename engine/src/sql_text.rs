//! Rewriting SQL text without changing what it says.
//!
//! The engine rewrites a few tokens of a statement before planning (`?` placeholders become
//! `$n`, a `FOR VERSION AS OF` clause is folded into a table name). Printing every token back
//! with `Token::to_string` is not faithful: a literal `'it''s'` prints as `'it's'`, which ends the
//! string early and changes the statement. So rewrites splice the original text instead: each
//! token is located by the byte range it covers, only rewritten ranges are replaced, and every
//! other byte is copied verbatim.

use std::ops::Range;

use datafusion::sql::sqlparser::dialect::GenericDialect;
use datafusion::sql::sqlparser::tokenizer::{Location, Token, TokenWithSpan, Tokenizer};

/// A statement's tokens and, where they tile the text, the byte range each one covers.
pub struct Tokens {
    pub tokens: Vec<Token>,
    /// `None` when the tokens do not tile the text: the tokenizer replaces a MySQL-style
    /// `/*! … */` comment hint by the tokens inside it, whose positions are only approximate.
    /// Callers must not splice such a statement.
    pub ranges: Option<Vec<Range<usize>>>,
}

/// Tokenizes `sql` as DataFusion's parser does; `None` if it does not tokenize (the planner
/// then reports the syntax error with its own position information).
pub fn tokenize(sql: &str) -> Option<Tokens> {
    let dialect = GenericDialect {};
    let located = Tokenizer::new(&dialect, sql)
        .tokenize_with_location()
        .ok()?;
    let ranges = byte_ranges(sql, &located);
    Some(Tokens {
        tokens: located.into_iter().map(|t| t.token).collect(),
        ranges,
    })
}

/// Converts the tokens' line/column spans into byte ranges, checking that the tokens cover
/// `sql` exactly, one after the other. Lines count from 1 and advance only at `\n`; columns
/// count characters (not bytes) from 1, as the tokenizer does.
fn byte_ranges(sql: &str, tokens: &[TokenWithSpan]) -> Option<Vec<Range<usize>>> {
    let mut at = TextCursor::new(sql);
    let mut ranges = Vec::with_capacity(tokens.len());
    for t in tokens {
        if t.span.start != at.location() {
            return None;
        }
        let start = at.byte;
        at.advance_to(t.span.end)?;
        ranges.push(start..at.byte);
    }
    (at.byte == sql.len()).then_some(ranges)
}

/// A position in the text, moving forwards only.
struct TextCursor<'a> {
    rest: std::str::Chars<'a>,
    byte: usize,
    line: u64,
    column: u64,
}

impl<'a> TextCursor<'a> {
    fn new(sql: &'a str) -> Self {
        Self {
            rest: sql.chars(),
            byte: 0,
            line: 1,
            column: 1,
        }
    }

    fn location(&self) -> Location {
        Location::new(self.line, self.column)
    }

    /// Moves to `to`; `None` if it lies behind the cursor or past the end of the text.
    fn advance_to(&mut self, to: Location) -> Option<()> {
        while (self.line, self.column) < (to.line, to.column) {
            let c = self.rest.next()?;
            self.byte += c.len_utf8();
            if c == '\n' {
                self.line += 1;
                self.column = 1;
            } else {
                self.column += 1;
            }
        }
        (self.location() == to).then_some(())
    }
}

/// `sql` with each range replaced by its text. Ranges must be in order and must not overlap.
pub fn splice(sql: &str, edits: &[(Range<usize>, String)]) -> String {
    let mut out =
        String::with_capacity(sql.len() + edits.iter().map(|(_, s)| s.len()).sum::<usize>());
    let mut copied = 0;
    for (range, text) in edits {
        out.push_str(&sql[copied..range.start]);
        out.push_str(text);
        copied = range.end;
    }
    out.push_str(&sql[copied..]);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn texts(sql: &str) -> Vec<&str> {
        let t = tokenize(sql).unwrap();
        t.ranges.unwrap().into_iter().map(|r| &sql[r]).collect()
    }

    #[test]
    fn every_token_is_located_by_the_bytes_it_came_from() {
        assert_eq!(
            texts("SELECT 'it''s', x"),
            ["SELECT", " ", "'it''s'", ",", " ", "x"]
        );
        // Columns count characters: 'é' is two bytes, one column.
        assert_eq!(
            texts("SELECT 'é',\r\n  ?\n-- ñ?\n"),
            [
                "SELECT", " ", "'é'", ",", "\r\n", " ", " ", "?", "\n", "-- ñ?\n"
            ]
        );
        assert_eq!(texts(""), Vec::<&str>::new());
    }

    #[test]
    fn comment_hints_have_no_reliable_location() {
        // The tokenizer replaces `/*! … */` by the tokens inside it.
        let t = tokenize("SELECT 1 /*! , ? */").unwrap();
        assert!(t.ranges.is_none());
        assert!(tokenize("SELECT 'unterminated").is_none());
    }

    #[test]
    fn splicing_replaces_only_the_given_ranges() {
        assert_eq!(
            splice("a ? b ? c", &[(2..3, "$1".into()), (6..7, "$2".into())]),
            "a $1 b $2 c"
        );
        assert_eq!(splice("abc", &[]), "abc");
    }
}
