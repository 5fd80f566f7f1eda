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

/// Property names whose values are secrets, in any of the catalog, storage or OAuth spellings
/// (matched case-insensitively, as a part of a longer key too: `s3.session-token`,
/// `adls.sas-token.account`, `gcs.oauth2.token`, `client_secret`, `X-Amz-Security-Token`).
const SECRET_KEY: &str = r"[A-Za-z0-9_.\-]*(?:secret|token|password|passwd|credential|signature|sas|private[_-]?key|session[_-]?key|access[_-]?key(?:[_-]?id)?|authorization|api[_-]?key)[A-Za-z0-9_.\-]*";

static KEY_VALUE: LazyLock<Regex> = LazyLock::new(|| {
    // A key (optionally quoted, optionally escaped-quoted inside a JSON string), then `:` or `=`,
    // then a value: a quoted string (escapes allowed) or a bare run up to a delimiter.
    Regex::new(&format!(
        r#"(?i)(\\?["']?{SECRET_KEY}\\?["']?\s*[:=]\s*)(\\?"(?:[^"\\]|\\[^"])*\\?"|'[^']*'|[^\s,;&}}\])"']+)"#
    ))
    .expect("static regex")
});

static WHOLE_SECRET_KEY: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(&format!("(?i)^{SECRET_KEY}$")).expect("static regex"));

/// Whether a property named `key` may hold a credential: the one list both `scrub` and
/// everything that shows properties (`SHOW CREATE TABLE`) go by.
pub fn is_secret_key(key: &str) -> bool {
    WHOLE_SECRET_KEY.is_match(key)
}

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
        out = Cow::Owned(
            KEY_VALUE
                .replace_all(&out, |c: &regex::Captures| format!("{}{REDACTED}", &c[1]))
                .into_owned(),
        );
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
        ] {
            assert!(is_secret_key(key), "{key}");
        }
        for key in [
            "s3.endpoint",
            "write.format.default",
            "owner",
            "format-version",
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
        ] {
            assert!(matches!(scrub(text), Cow::Borrowed(_)), "{text}");
        }
    }
}
