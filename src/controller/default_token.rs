//! The operator's own Altostrat token: fixed, or read from a file (a mounted Secret) and read
//! again whenever the file changes, so a rotated token is used without a restart; and usable
//! only in the namespaces it is limited to.

use std::path::PathBuf;
use std::sync::Mutex;
use std::time::SystemTime;

use crate::altostrat::ApiToken;

#[derive(Debug, Default)]
enum Source {
    #[default]
    None,
    Fixed(ApiToken),
    /// The file, and the token last read from it with the file's modification time then.
    File {
        path: PathBuf,
        last: Mutex<Option<(SystemTime, Option<ApiToken>)>>,
    },
}

/// The token resources use when they name no `credentialsSecretRef`.
#[derive(Debug, Default)]
pub struct DefaultToken {
    source: Source,
    /// Namespaces whose resources may use it; empty: every namespace.
    namespaces: Vec<String>,
}

impl DefaultToken {
    pub fn none() -> Self {
        Self::default()
    }

    pub fn fixed(token: ApiToken) -> Self {
        let source = if token.is_empty() {
            Source::None
        } else {
            Source::Fixed(token)
        };
        Self {
            source,
            namespaces: Vec::new(),
        }
    }

    /// A token read from `path`, which must be readable now.
    pub fn file(path: PathBuf) -> std::io::Result<Self> {
        let token = DefaultToken {
            source: Source::File {
                path,
                last: Mutex::new(None),
            },
            namespaces: Vec::new(),
        };
        token.read_file()?;
        Ok(token)
    }

    /// Limits the token to resources in `namespaces` (none: every namespace).
    pub fn limited_to(mut self, namespaces: Vec<String>) -> Self {
        self.namespaces = namespaces.into_iter().filter(|n| !n.trim().is_empty()).collect();
        self
    }

    /// Whether any token is configured, in any namespace.
    pub fn is_configured(&self) -> bool {
        match &self.source {
            Source::None => false,
            Source::Fixed(_) => true,
            Source::File { .. } => self.read_file().ok().flatten().is_some(),
        }
    }

    /// The token for a resource in `namespace`, or why there is none.
    pub fn for_namespace(&self, namespace: &str) -> Result<ApiToken, String> {
        if !self.namespaces.is_empty() && !self.namespaces.iter().any(|n| n == namespace) {
            return Err(format!(
                "the operator's default API token is not available in namespace {namespace}; \
                 set credentialsSecretRef"
            ));
        }
        let token = match &self.source {
            Source::None => None,
            Source::Fixed(token) => Some(token.clone()),
            Source::File { path, .. } => self
                .read_file()
                .map_err(|e| format!("reading the default API token file {}: {e}", path.display()))?,
        };
        token
            .ok_or_else(|| "no credentialsSecretRef set and the operator has no default API token".to_owned())
    }

    /// The file's token, read again only when the file's modification time changed.
    fn read_file(&self) -> std::io::Result<Option<ApiToken>> {
        let Source::File { path, last } = &self.source else {
            return Ok(None);
        };
        let modified = std::fs::metadata(path)?.modified()?;
        let mut last = last.lock().expect("default token lock");
        if let Some((seen, token)) = last.as_ref()
            && *seen == modified
        {
            return Ok(token.clone());
        }
        let token = Some(ApiToken::new(std::fs::read_to_string(path)?)).filter(|t| !t.is_empty());
        *last = Some((modified, token.clone()));
        Ok(token)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn write(path: &std::path::Path, token: &str, modified: SystemTime) {
        std::fs::write(path, token).unwrap();
        std::fs::File::options()
            .write(true)
            .open(path)
            .unwrap()
            .set_modified(modified)
            .unwrap();
    }

    #[test]
    fn a_rotated_token_file_is_read_again() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("token");
        let start = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000);
        write(&path, "first\n", start);
        let token = DefaultToken::file(path.clone()).unwrap();
        assert_eq!(token.for_namespace("a").unwrap().expose(), "first");
        write(&path, "second", start + Duration::from_secs(60));
        assert_eq!(token.for_namespace("a").unwrap().expose(), "second");
    }

    #[test]
    fn an_unreadable_file_is_refused_at_start() {
        assert!(DefaultToken::file(PathBuf::from("/nonexistent/token")).is_err());
    }

    #[test]
    fn a_limited_token_serves_only_its_namespaces() {
        let token = DefaultToken::fixed(ApiToken::new("t")).limited_to(vec!["team-a".into(), " ".into()]);
        assert!(token.for_namespace("team-a").is_ok());
        let refused = token.for_namespace("team-b").unwrap_err();
        assert!(
            refused.contains("team-b") && refused.contains("credentialsSecretRef"),
            "{refused}"
        );
        assert!(
            DefaultToken::fixed(ApiToken::new("t"))
                .for_namespace("any")
                .is_ok()
        );
        assert!(DefaultToken::none().for_namespace("any").is_err());
    }
}
