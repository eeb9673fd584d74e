//! Pure text formatting for the CLI's human output.

use crate::client::LogEntry;
use serde::Deserialize;
use std::collections::BTreeMap;

/// The parts of a function view (`docs/api.md`) the CLI displays. Lenient: unknown fields are
/// ignored and missing ones default, so a newer server does not break an older CLI.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct FunctionView {
    pub name: String,
    pub version: String,
    pub config: ConfigView,
    pub code_size: u64,
    pub last_modified: String,
    pub function_url: Option<String>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct ConfigView {
    pub runtime: String,
    pub handler: String,
    pub memory_mb: u32,
    pub timeout_s: u32,
    pub env: BTreeMap<String, String>,
    pub url: bool,
    pub routes: Vec<String>,
}

/// `PUT /v1/functions/{name}` reply.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct DeployReply {
    pub function: FunctionView,
    pub version: String,
    /// The alias the deploy pointed at `version` (the manifest's `alias`).
    #[serde(default)]
    pub alias: Option<String>,
    #[serde(default)]
    pub provisioned_concurrency: Option<u32>,
    /// Added by the CLI (not the server): how the build used the dependency cache.
    #[serde(default)]
    pub build: Option<BuildView>,
}

/// `build` in `nimbus deploy --json`: `{"cache": "hit" | "miss" | "none"}`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct BuildView {
    pub cache: String,
}

/// `, deps cached` / `, deps installed` for a deploy whose dependencies came from the
/// build cache or were installed; empty otherwise.
pub fn build_note(reply: &DeployReply) -> &'static str {
    match reply.build.as_ref().map(|b| b.cache.as_str()) {
        Some("hit") => ", deps cached",
        Some("miss") => ", deps installed",
        _ => "",
    }
}

/// `1023 B`, `1.2 KB`, `3.4 MB`.
pub fn human_size(bytes: u64) -> String {
    const KB: f64 = 1024.0;
    let b = bytes as f64;
    if bytes < 1024 {
        format!("{bytes} B")
    } else if b < KB * KB {
        format!("{:.1} KB", b / KB)
    } else if b < KB * KB * KB {
        format!("{:.1} MB", b / (KB * KB))
    } else {
        format!("{:.1} GB", b / (KB * KB * KB))
    }
}

/// `deployed hello (version 3, 1.2 KB) → http://…/fn/hello/`, with
/// `, alias live, 2 provisioned` after the size when the deploy moved an alias.
pub fn deployed_line(reply: &DeployReply) -> String {
    let f = &reply.function;
    let mut line = format!(
        "deployed {} (version {}, {}",
        f.name,
        reply.version,
        human_size(f.code_size)
    );
    line.push_str(build_note(reply));
    if let Some(a) = &reply.alias {
        line.push_str(&format!(", alias {a}"));
    }
    if let Some(n) = reply.provisioned_concurrency {
        line.push_str(&format!(", {n} provisioned"));
    }
    line.push(')');
    if let Some(url) = &f.function_url {
        line.push_str(" → ");
        line.push_str(url);
    }
    line
}

/// Left-aligned columns separated by two spaces; the last column is not padded.
pub fn table(header: &[&str], rows: &[Vec<String>]) -> String {
    let mut widths: Vec<usize> = header.iter().map(|h| h.chars().count()).collect();
    for row in rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let mut out = String::new();
    let mut push_row = |cells: Vec<&str>| {
        let last = cells.len().saturating_sub(1);
        let mut line = String::new();
        for (i, cell) in cells.iter().enumerate() {
            line.push_str(cell);
            if i < last {
                let pad = widths[i] - cell.chars().count() + 2;
                line.extend(std::iter::repeat_n(' ', pad));
            }
        }
        out.push_str(line.trim_end());
        out.push('\n');
    };
    push_row(header.to_vec());
    for row in rows {
        push_row(row.iter().map(String::as_str).collect());
    }
    out
}

/// The `nimbus ls` table.
pub fn functions_table(functions: &[FunctionView]) -> String {
    let rows: Vec<Vec<String>> = functions
        .iter()
        .map(|f| {
            vec![
                f.name.clone(),
                f.config.runtime.clone(),
                format!("{}MB", f.config.memory_mb),
                format!("{}s", f.config.timeout_s),
                short_timestamp(&f.last_modified),
                f.function_url.clone().unwrap_or_else(|| "-".into()),
            ]
        })
        .collect();
    table(
        &["NAME", "RUNTIME", "MEMORY", "TIMEOUT", "MODIFIED", "URL"],
        &rows,
    )
}

/// `2026-11-27T10:49:22.524+0000` → `2026-11-27T10:49:22` (unknown shapes pass through).
pub fn short_timestamp(ts: &str) -> String {
    match ts.get(..19) {
        Some(s) if ts.as_bytes().get(10) == Some(&b'T') => s.to_string(),
        _ if ts.is_empty() => "-".into(),
        _ => ts.to_string(),
    }
}

/// Milliseconds since the Unix epoch → `2026-11-27T10:49:22.524Z` (UTC).
pub fn format_ts_ms(ts_ms: i64) -> String {
    let secs = ts_ms.div_euclid(1000);
    let ms = ts_ms.rem_euclid(1000);
    let days = secs.div_euclid(86_400);
    let sod = secs.rem_euclid(86_400);
    let (y, m, d) = civil_from_days(days);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}.{ms:03}Z",
        sod / 3600,
        sod % 3600 / 60,
        sod % 60
    )
}

/// Howard Hinnant's days-since-epoch → (year, month, day) for the proleptic Gregorian calendar.
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d)
}

/// One log line: `ts  [request id prefix]  line`; platform lines (START/END/REPORT) as they are.
pub fn log_line(e: &LogEntry) -> String {
    let ts = format_ts_ms(e.ts_ms);
    let line = e.line.trim_end_matches(['\r', '\n']);
    match e.request_id.as_deref() {
        Some(id) if e.stream != "platform" && !id.is_empty() => {
            let prefix: String = id.chars().take(8).collect();
            format!("{ts}  [{prefix}]  {line}")
        }
        _ => format!("{ts}  {line}"),
    }
}

/// The stderr message for a function error reply (`X-Amz-Function-Error`).
pub fn function_error_message(body: &[u8], header: &str) -> String {
    #[derive(Deserialize)]
    #[serde(rename_all = "camelCase")]
    struct Err {
        error_type: Option<String>,
        error_message: Option<String>,
    }
    let parsed: Option<Err> = serde_json::from_slice(body).ok();
    let kind = parsed
        .as_ref()
        .and_then(|e| e.error_type.clone())
        .unwrap_or_else(|| header.to_string());
    let message = parsed.and_then(|e| e.error_message).unwrap_or_else(|| {
        String::from_utf8_lossy(body)
            .trim()
            .chars()
            .take(500)
            .collect()
    });
    format!("function error: {kind}: {message}")
}

/// The response body for stdout: pretty JSON when it parses and `pretty`, else the raw bytes.
pub fn render_body(body: &[u8], pretty: bool) -> Vec<u8> {
    if pretty {
        if let Ok(v) = serde_json::from_slice::<serde_json::Value>(body) {
            let mut out = serde_json::to_vec_pretty(&v).expect("a Value always serialises");
            out.push(b'\n');
            return out;
        }
    }
    body.to_vec()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn sizes() {
        assert_eq!(human_size(0), "0 B");
        assert_eq!(human_size(1023), "1023 B");
        assert_eq!(human_size(1229), "1.2 KB");
        assert_eq!(human_size(5 * 1024 * 1024 + 400 * 1024), "5.4 MB");
        assert_eq!(human_size(3 * 1024 * 1024 * 1024), "3.0 GB");
    }

    fn view(url: bool) -> serde_json::Value {
        let mut v = json!({"name": "hello", "version": "$LATEST",
            "config": {"runtime": "nodejs20.x", "handler": "index.handler", "memory_mb": 128, "timeout_s": 3,
                       "env": {"K": "V"}, "description": "", "concurrency": 10, "url": url, "routes": []},
            "code_sha256": "ab", "code_size": 1229, "last_modified": "2026-11-27T10:49:22.524+0000",
            "revision_id": "r", "some_future_field": 1});
        if url {
            v["function_url"] = json!("http://127.0.0.1:8080/fn/hello/");
        }
        v
    }

    #[test]
    fn deploy_line() {
        let r: DeployReply =
            serde_json::from_value(json!({"function": view(true), "version": "3"})).unwrap();
        assert_eq!(
            deployed_line(&r),
            "deployed hello (version 3, 1.2 KB) → http://127.0.0.1:8080/fn/hello/"
        );
        let r: DeployReply =
            serde_json::from_value(json!({"function": view(false), "version": "1"})).unwrap();
        assert_eq!(deployed_line(&r), "deployed hello (version 1, 1.2 KB)");
        let r: DeployReply = serde_json::from_value(
            json!({"function": view(false), "version": "4", "alias": "live", "provisioned_concurrency": 2}),
        )
        .unwrap();
        assert_eq!(
            deployed_line(&r),
            "deployed hello (version 4, 1.2 KB, alias live, 2 provisioned)"
        );
        for (cache, line) in [
            ("hit", "deployed hello (version 5, 1.2 KB, deps cached)"),
            ("miss", "deployed hello (version 5, 1.2 KB, deps installed)"),
            ("none", "deployed hello (version 5, 1.2 KB)"),
        ] {
            let r: DeployReply = serde_json::from_value(
                json!({"function": view(false), "version": "5", "build": {"cache": cache}}),
            )
            .unwrap();
            assert_eq!(deployed_line(&r), line);
        }
    }

    #[test]
    fn ls_table() {
        let mut b: FunctionView = serde_json::from_value(view(false)).unwrap();
        b.name = "a-much-longer-name".into();
        let a: FunctionView = serde_json::from_value(view(true)).unwrap();
        let t = functions_table(&[a, b]);
        let lines: Vec<&str> = t.lines().collect();
        assert_eq!(
            lines[0],
            "NAME                RUNTIME     MEMORY  TIMEOUT  MODIFIED             URL"
        );
        assert_eq!(
            lines[1],
            "hello               nodejs20.x  128MB   3s       2026-11-27T10:49:22  http://127.0.0.1:8080/fn/hello/"
        );
        assert_eq!(
            lines[2],
            "a-much-longer-name  nodejs20.x  128MB   3s       2026-11-27T10:49:22  -"
        );
    }

    #[test]
    fn timestamps() {
        assert_eq!(format_ts_ms(0), "1970-01-01T00:00:00.000Z");
        assert_eq!(format_ts_ms(1_795_776_562_524), "2026-11-27T10:49:22.524Z");
        assert_eq!(format_ts_ms(951_782_400_000), "2000-02-29T00:00:00.000Z");
        assert_eq!(
            short_timestamp("2026-11-27T10:49:22.524+0000"),
            "2026-11-27T10:49:22"
        );
        assert_eq!(short_timestamp(""), "-");
        assert_eq!(short_timestamp("yesterday"), "yesterday");
    }

    #[test]
    fn log_lines() {
        let mut e = LogEntry {
            seq: 1,
            function: None,
            ts_ms: 0,
            request_id: Some("8f3c2a1b-0000-4000-8000-000000000000".into()),
            stream: "stdout".into(),
            line: "hello world\n".into(),
            level: None,
            trace_id: None,
        };
        assert_eq!(
            log_line(&e),
            "1970-01-01T00:00:00.000Z  [8f3c2a1b]  hello world"
        );
        e.stream = "platform".into();
        e.line = "START RequestId: 8f3c2a1b-0000-4000-8000-000000000000 Version: $LATEST".into();
        assert_eq!(
            log_line(&e),
            "1970-01-01T00:00:00.000Z  START RequestId: 8f3c2a1b-0000-4000-8000-000000000000 Version: $LATEST"
        );
        e.stream = "stderr".into();
        e.request_id = None;
        e.line = "init".into();
        assert_eq!(log_line(&e), "1970-01-01T00:00:00.000Z  init");
    }

    #[test]
    fn function_errors() {
        let body = br#"{"errorType":"TypeError","errorMessage":"x is undefined","trace":[]}"#;
        assert_eq!(
            function_error_message(body, "Unhandled"),
            "function error: TypeError: x is undefined"
        );
        assert_eq!(
            function_error_message(b"Segfault", "Unhandled"),
            "function error: Unhandled: Segfault"
        );
    }

    #[test]
    fn bodies() {
        assert_eq!(render_body(br#"{"a":1}"#, true), b"{\n  \"a\": 1\n}\n");
        assert_eq!(render_body(br#"{"a":1}"#, false), br#"{"a":1}"#);
        assert_eq!(render_body(b"not json", true), b"not json");
    }
}
