//! The access key the CLI signs its requests with (SigV4, service `lambda`, region
//! `us-east-1`), from, in order: `NIMBUS_ACCESS_KEY_ID`/`NIMBUS_SECRET_ACCESS_KEY`,
//! `AWS_ACCESS_KEY_ID`/`AWS_SECRET_ACCESS_KEY`, the file `NIMBUS_CREDENTIALS_FILE`, and the
//! `credentials` file of the default data dir (`NIMBUS_DATA_DIR`, else `./.nimbus`), which
//! the server writes at its first start with auth on.

use anyhow::{Context, Result};
use std::path::{Path, PathBuf};

/// An access key pair. `Debug` never shows the secret.
#[derive(Clone, PartialEq, Eq)]
pub struct Credentials {
    pub access_key_id: String,
    pub secret_access_key: String,
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Credentials({})", self.access_key_id)
    }
}

fn env_pair(id: &str, secret: &str) -> Option<Credentials> {
    let id = std::env::var(id).ok().filter(|s| !s.trim().is_empty())?;
    let secret = std::env::var(secret)
        .ok()
        .filter(|s| !s.trim().is_empty())?;
    Some(Credentials {
        access_key_id: id.trim().to_string(),
        secret_access_key: secret.trim().to_string(),
    })
}

/// The credentials to sign with, if any.
pub fn load() -> Result<Option<Credentials>> {
    if let Some(c) = env_pair("NIMBUS_ACCESS_KEY_ID", "NIMBUS_SECRET_ACCESS_KEY") {
        return Ok(Some(c));
    }
    if let Some(c) = env_pair("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY") {
        return Ok(Some(c));
    }
    if let Some(file) = std::env::var_os("NIMBUS_CREDENTIALS_FILE").filter(|f| !f.is_empty()) {
        let file = PathBuf::from(file);
        return read_file(&file).map(Some);
    }
    let dir = std::env::var_os("NIMBUS_DATA_DIR")
        .filter(|d| !d.is_empty())
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(".nimbus"));
    let file = dir.join("credentials");
    if file.is_file() {
        return read_file(&file).map(Some);
    }
    Ok(None)
}

/// Reads an AWS shared-credentials file: the `[default]` profile (or the first one).
pub fn read_file(path: &Path) -> Result<Credentials> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("cannot read the credentials file {}", path.display()))?;
    parse(&text).with_context(|| {
        format!(
            "{}: no aws_access_key_id and aws_secret_access_key found",
            path.display()
        )
    })
}

fn parse(text: &str) -> Option<Credentials> {
    let mut profiles: Vec<(String, Option<String>, Option<String>)> = Vec::new();
    for line in text.lines() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') || line.starts_with(';') {
            continue;
        }
        if let Some(name) = line.strip_prefix('[').and_then(|l| l.strip_suffix(']')) {
            profiles.push((name.trim().to_string(), None, None));
            continue;
        }
        let Some((k, v)) = line.split_once('=') else {
            continue;
        };
        if profiles.is_empty() {
            profiles.push(("default".into(), None, None));
        }
        let p = profiles.last_mut()?;
        match k.trim() {
            "aws_access_key_id" => p.1 = Some(v.trim().to_string()),
            "aws_secret_access_key" => p.2 = Some(v.trim().to_string()),
            _ => {}
        }
    }
    let pick = profiles
        .iter()
        .find(|p| p.0 == "default")
        .or_else(|| profiles.first())?;
    Some(Credentials {
        access_key_id: pick.1.clone()?,
        secret_access_key: pick.2.clone()?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shared_credentials_format() {
        let c = parse(
            "# comment\n[other]\naws_access_key_id = A\naws_secret_access_key = B\n\
             [default]\naws_access_key_id = AKIAX\naws_secret_access_key = s/e+c\n",
        )
        .unwrap();
        assert_eq!(c.access_key_id, "AKIAX");
        assert_eq!(c.secret_access_key, "s/e+c");
        assert!(!format!("{c:?}").contains("s/e+c"));
        let c = parse("[p]\naws_access_key_id=1\naws_secret_access_key=2").unwrap();
        assert_eq!(c.access_key_id, "1");
        assert!(parse("[default]\naws_access_key_id = A\n").is_none());
        assert!(parse("").is_none());
    }
}
