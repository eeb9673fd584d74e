//! `nimbus invoke`: Lambda's Invoke (`POST /2015-03-31/functions/{name}/invocations`).

use crate::cli::InvokeArgs;
use crate::client::Client;
use crate::errors::FunctionFailed;
use crate::output::{function_error_message, render_body};
use anyhow::{Context, Result};
use base64::Engine;
use std::io::{IsTerminal, Read};
use std::path::Path;

pub async fn run(client: &Client, args: InvokeArgs) -> Result<()> {
    let payload = read_data(args.data.as_deref())?;
    if args.is_async {
        let (id, replay) = client
            .invoke_async(
                &args.name,
                args.qualifier.as_deref(),
                payload,
                args.idempotency_key.as_deref(),
            )
            .await?;
        let note = if replay {
            " (idempotency key seen before: not queued again)"
        } else {
            ""
        };
        super::print(format!("queued {id}{note}\n"))?;
        eprintln!("follow it with `nimbus events {}`", args.name);
        return Ok(());
    }
    let reply = client
        .invoke(&args.name, args.qualifier.as_deref(), payload, args.log)
        .await?;
    if let Some(log) = &reply.log_result {
        let mut text = match base64::engine::general_purpose::STANDARD.decode(log.trim()) {
            Ok(bytes) => String::from_utf8_lossy(&bytes).into_owned(),
            Err(_) => log.clone(),
        };
        if !text.is_empty() && !text.ends_with('\n') {
            text.push('\n');
        }
        eprint!("{text}");
    }
    let terminal = std::io::stdout().is_terminal();
    let mut out = render_body(&reply.body, terminal);
    if terminal && out.last().is_some_and(|b| *b != b'\n') {
        out.push(b'\n');
    }
    super::print(out)?;
    if let Some(kind) = &reply.function_error {
        let hint = (!args.log).then(|| {
            format!(
                "see its output with `nimbus logs {}` or invoke with --log",
                args.name
            )
        });
        return Err(FunctionFailed {
            message: function_error_message(&reply.body, kind),
            hint,
        }
        .into());
    }
    Ok(())
}

/// The event to send: `--data JSON`, `--data @FILE`, `--data @-` (stdin) or `{}`; must be JSON.
pub fn read_data(data: Option<&str>) -> Result<Vec<u8>> {
    let (bytes, source) = match data {
        None => return Ok(b"{}".to_vec()),
        Some("@-") => {
            let mut buf = Vec::new();
            std::io::stdin()
                .read_to_end(&mut buf)
                .context("cannot read the event from stdin")?;
            (buf, "stdin".to_string())
        }
        Some(d) if d.starts_with('@') => {
            let path = Path::new(&d[1..]);
            let buf = std::fs::read(path)
                .with_context(|| format!("cannot read event file {}", path.display()))?;
            (buf, path.display().to_string())
        }
        Some(d) => (d.as_bytes().to_vec(), "--data".to_string()),
    };
    serde_json::from_slice::<serde::de::IgnoredAny>(&bytes)
        .with_context(|| format!("{source} is not valid JSON"))?;
    Ok(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn inline_data() {
        assert_eq!(read_data(None).unwrap(), b"{}");
        assert_eq!(read_data(Some(r#"{"a":1}"#)).unwrap(), br#"{"a":1}"#);
        assert_eq!(read_data(Some("42")).unwrap(), b"42");
        let e = format!("{:#}", read_data(Some("{nope")).unwrap_err());
        assert!(e.starts_with("--data is not valid JSON"), "{e}");
    }

    #[test]
    fn file_data() {
        let dir = tempfile::tempdir().unwrap();
        let good = dir.path().join("event.json");
        std::fs::write(&good, b" {\"k\": [1, 2]}\n").unwrap();
        assert_eq!(
            read_data(Some(&format!("@{}", good.display()))).unwrap(),
            b" {\"k\": [1, 2]}\n"
        );
        let bad = dir.path().join("bad.json");
        std::fs::write(&bad, b"hello").unwrap();
        let e = format!(
            "{:#}",
            read_data(Some(&format!("@{}", bad.display()))).unwrap_err()
        );
        assert!(e.contains("bad.json is not valid JSON"), "{e}");
        let e = format!(
            "{:#}",
            read_data(Some(&format!("@{}", dir.path().join("missing").display()))).unwrap_err()
        );
        assert!(e.contains("cannot read event file"), "{e}");
    }
}
