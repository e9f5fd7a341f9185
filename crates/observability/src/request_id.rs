//! Correlation ids: accept a caller's id when it is safe to log, otherwise make one.

use std::fmt;
use std::sync::Arc;

/// Longest id accepted from a caller.
pub const MAX_LEN: usize = 64;

/// A request's correlation id: 1–64 characters of `[A-Za-z0-9._-]`, cheap to clone.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct RequestId(Arc<str>);

impl RequestId {
    /// Accepts `s` if it is 1–64 characters of `[A-Za-z0-9._-]` (so it can go into logs and
    /// headers unescaped), else `None`.
    pub fn parse(s: &str) -> Option<RequestId> {
        let ok = !s.is_empty()
            && s.len() <= MAX_LEN
            && s.bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'));
        ok.then(|| RequestId(Arc::from(s)))
    }

    /// A new random id (UUID v4, 32 hex digits).
    pub fn generate() -> RequestId {
        RequestId(Arc::from(uuid::Uuid::new_v4().simple().to_string()))
    }

    /// The caller's id when valid, else a generated one.
    pub fn from_caller(s: Option<&str>) -> RequestId {
        s.and_then(RequestId::parse)
            .unwrap_or_else(RequestId::generate)
    }

    /// The id as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for RequestId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for RequestId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "RequestId({})", self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_only_safe_ids() {
        assert_eq!(
            RequestId::parse("abc-DEF_1.2").unwrap().as_str(),
            "abc-DEF_1.2"
        );
        for bad in [
            "",
            " ",
            "a b",
            "a\nb",
            "ü",
            "a/b",
            "<script>",
            &"a".repeat(65),
        ] {
            assert!(RequestId::parse(bad).is_none(), "{bad:?}");
        }
        assert!(RequestId::parse(&"a".repeat(64)).is_some());
    }

    #[test]
    fn generated_ids_are_valid_and_distinct() {
        let a = RequestId::generate();
        let b = RequestId::generate();
        assert_ne!(a, b);
        assert!(RequestId::parse(a.as_str()).is_some());
        assert_eq!(RequestId::from_caller(Some("bad id")).as_str().len(), 32);
        assert_eq!(RequestId::from_caller(Some("mine")).as_str(), "mine");
    }
}
