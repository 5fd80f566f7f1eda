//! Scrubs credentials out of text that came from elsewhere (catalog answers, object-store
//! errors, library error chains) before it reaches a client's status or a log line.
//!
//! iceberg-catalog-rest puts the whole body of an answer it cannot parse into its error, and a
//! `loadTable` body carries the vended keys (`s3.secret-access-key`, `s3.session-token`); other
//! libraries echo URLs or headers. Everything the engine passes on from them goes through
//! `scrub`, which removes: the values of credential-named properties (JSON, `key=value`,
//! `key: value`), JWTs, session handles and `Bearer`/`Basic` credentials.

use std::borrow::Cow;
use std::sync::LazyLock;

use regex::Regex;

pub const REDACTED: &str = "<redacted>";

/// Words that make a property name a credential's, wherever they stand in it: `s3.secret-access-key`,
/// `client_secret`, `X-Amz-Security-Token`, `SessionToken`, `adls.sas-token.account`.
const SECRET_WORDS: &[&str] = &[
    "secret",
    "token",
    "tokens",
    "password",
    "passwd",
    "credential",
    "credentials",
    "sas",
    "authorization",
    "apikey",
    "signature",
];

/// Pairs of words that together name a credential (`private_key`, `AccessKeyId`, `api-key`).
const SECRET_PAIRS: &[[&str; 2]] = &[
    ["private", "key"],
    ["session", "key"],
    ["access", "key"],
    ["api", "key"],
];

/// A property name's words: split at punctuation and at camel-case humps, lower-cased.
fn words(key: &str) -> Vec<String> {
    let mut words = Vec::new();
    let mut current = String::new();
    let mut previous_lower = false;
    for c in key.chars() {
        if !c.is_ascii_alphanumeric() {
            previous_lower = false;
            if !current.is_empty() {
                words.push(std::mem::take(&mut current));
            }
            continue;
        }
        if c.is_ascii_uppercase() && previous_lower && !current.is_empty() {
            words.push(std::mem::take(&mut current));
        }
        previous_lower = c.is_ascii_lowercase() || c.is_ascii_digit();
        current.push(c.to_ascii_lowercase());
    }
    if !current.is_empty() {
        words.push(current);
    }
    words
}

/// Whether a property named `key` may hold a credential: the one rule both `scrub` and
/// everything that shows properties (`SHOW CREATE TABLE`) go by. Whole words, so `Kansas`,
/// `passage` or `TokenizerMode` name nothing secret.
pub fn is_secret_key(key: &str) -> bool {
    names_a_secret(&words(key))
}

fn names_a_secret(words: &[String]) -> bool {
    words.iter().any(|w| SECRET_WORDS.contains(&w.as_str()))
        || words.windows(2).any(|pair| {
            SECRET_PAIRS
                .iter()
                .any(|[a, b]| pair[0] == *a && pair[1] == *b)
        })
}

static KEY_VALUE: LazyLock<Regex> = LazyLock::new(|| {
    // A key (optionally quoted, optionally escaped-quoted inside a JSON string), then `:` or `=`,
    // then a value: a quoted string (escapes allowed) or a bare run up to a delimiter; then what
    // follows it, to tell a value from code (`Signature {`, `Native(`).
    Regex::new(
        r#"(\\?["']?([A-Za-z0-9_.\-]+)\\?["']?\s*[:=]\s*)(\\?"(?:[^"\\]|\\[^"])*\\?"|'[^']*'|[^\s,;&}\])"':][^\s,;&}\])"']*)(\s*[({\[]?)"#,
    )
    .expect("static regex")
});

static JWT: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(r"eyJ[A-Za-z0-9_\-]{4,}\.[A-Za-z0-9_\-]{4,}\.[A-Za-z0-9_\-]*").expect("static regex")
});

static HANDLE: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(r"sqe_[A-Za-z0-9_\-]{20,}").expect("static regex"));

static SCHEME: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(r"(?i)\b(bearer|basic)\s+[A-Za-z0-9_\-.~+/=]{8,}").expect("static regex")
});

/// `text` with every credential replaced by `<redacted>`; borrowed when there was none.
pub fn scrub(text: &str) -> Cow<'_, str> {
    let mut out = Cow::Borrowed(text);
    // Schemes first: `authorization: Bearer <token>` must lose the token, not just "Bearer".
    if SCHEME.is_match(&out) {
        out = Cow::Owned(
            SCHEME
                .replace_all(&out, |c: &regex::Captures| format!("{} {REDACTED}", &c[1]))
                .into_owned(),
        );
    }
    if KEY_VALUE.is_match(&out) {
        let replaced = KEY_VALUE.replace_all(&out, |c: &regex::Captures| {
            let key = words(&c[2]);
            let code = c[3].contains(['(', '{', '[']) || !c[4].trim().is_empty();
            // `unknown token: x` is prose; `token=x`, `"token": x`, `s3.session-token: x` are
            // properties.
            let quoted = c[3].starts_with(['"', '\'', '\\']);
            let prose = !quoted
                && c[1].trim_end().ends_with(':')
                && !c[1].starts_with(['"', '\'', '\\'])
                && key.len() == 1;
            if names_a_secret(&key) && !code && !prose {
                format!("{}{REDACTED}{}", &c[1], &c[4])
            } else {
                c[0].to_string()
            }
        });
        if let Cow::Owned(text) = replaced
            && text != *out
        {
            out = Cow::Owned(text);
        }
    }
    if JWT.is_match(&out) {
        out = Cow::Owned(JWT.replace_all(&out, REDACTED).into_owned());
    }
    if HANDLE.is_match(&out) {
        out = Cow::Owned(HANDLE.replace_all(&out, REDACTED).into_owned());
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secret_keys_are_named_by_one_list() {
        for key in [
            "s3.secret-access-key",
            "s3.session-token",
            "S3.ACCESS-KEY-ID",
            "client_secret",
            "adls.sas-token.account",
            "gcs.oauth2.token",
            "password",
            "x.credential",
            "private_key",
            "x.session-key",
            "SecretAccessKey",
            "AccessKeyId",
            "SessionToken",
            "X-Amz-Security-Token",
            "api_key",
        ] {
            assert!(is_secret_key(key), "{key}");
        }
        for key in [
            "s3.endpoint",
            "write.format.default",
            "owner",
            "format-version",
            "Kansas",
            "passage",
            "tokenizer",
            "keyboard",
        ] {
            assert!(!is_secret_key(key), "{key}");
        }
    }

    const SECRET: &str = "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY";
    const SESSION: &str = "FwoGZXIvYXdzEJr//////////wEaDM3x+y5/abc==";

    fn assert_clean(text: &str) {
        let s = scrub(text);
        for secret in [SECRET, SESSION, "ASIAEXAMPLEKEY123"] {
            assert!(!s.contains(secret), "{secret} survived in {s}");
        }
    }

    #[test]
    fn a_load_table_body_loses_its_vended_keys_but_keeps_the_rest() {
        // What iceberg-catalog-rest 0.10.1 puts in an error when it cannot parse the answer.
        let body = format!(
            r#"Unexpected => Failed to parse response from rest catalog server!, context: {{ json: {{"metadata-location":"s3://warehouse/demo/a/metadata/1.json","config":{{"s3.access-key-id":"ASIAEXAMPLEKEY123","s3.secret-access-key":"{SECRET}","s3.session-token":"{SESSION}","s3.endpoint":"http://127.0.0.1:19000"}}}} }}"#
        );
        assert_clean(&body);
        let s = scrub(&body);
        assert!(s.contains("s3://warehouse/demo/a/metadata/1.json"), "{s}");
        assert!(s.contains("http://127.0.0.1:19000"), "{s}");
        assert!(s.contains(r#""s3.secret-access-key":<redacted>"#), "{s}");
    }

    #[test]
    fn escaped_json_debug_output_and_key_value_forms_are_scrubbed() {
        for text in [
            format!(r#"json: "{{\"s3.secret-access-key\":\"{SECRET}\",\"x\":1}}""#),
            format!("s3.secret-access-key={SECRET}&s3.session-token={SESSION}"),
            format!("{{ s3.session-token: {SESSION}, s3.access-key-id: ASIAEXAMPLEKEY123 }}"),
            format!("Properties {{ \"S3.Secret-Access-Key\": '{SECRET}' }}"),
            format!("X-Amz-Security-Token={SESSION}; X-Amz-Signature={SECRET}"),
            format!("client_secret={SECRET}"),
        ] {
            assert_clean(&text);
        }
    }

    #[test]
    fn tokens_handles_and_authorization_values_are_scrubbed() {
        let jwt = "eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJhbGljZSJ9.c2lnbmF0dXJlLXNpZ25hdHVyZQ";
        let handle = "sqe_Zm9vYmFyYmF6cXV4cXV1eHF1dXhxdXV4cXV1eHF1dXg";
        let text = format!("got {jwt} and {handle}; header authorization: Bearer abcdefgh12345678");
        let s = scrub(&text);
        assert!(
            !s.contains("eyJzdWIi") && !s.contains("Zm9vYmFy") && !s.contains("abcdefgh1234"),
            "{s}"
        );
    }

    #[test]
    fn ordinary_messages_are_left_alone() {
        for text in [
            "catalog answered 404 for table lake.demo.x: Table does not exist",
            "object store answered PermissionDenied for the query: S3Error { code: \"AccessDenied\", resource: \"/warehouse/a.parquet\" }",
            "the statement has 2 parameter(s) but 1 value(s) were bound",
            "Coercion from [Int64] to the signature TypeSignatureClass::Native(LogicalType(Native(String), String)) failed",
            "signature: Signature { type_signature: Exact([Int64]), volatility: Immutable }",
            "table kansas: 3 rows",
            "Unsupported type 'unknown'. Error unknown token: unknown",
        ] {
            assert!(matches!(scrub(text), Cow::Borrowed(_)), "{text}");
        }
    }
}
