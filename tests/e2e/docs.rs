//! Docs that match the code. Every `nimbus …` command line shown in README.md and docs/
//! names commands and flags that the real binary's `--help` has; every flag written on
//! its own (`--max-pids`) is a flag of `nimbus` or `nimbus-bench` (or of a listed
//! external tool); every API endpoint written as `METHOD /path` is routed by a real
//! server. A renamed flag, a removed command or route fails here with the file and line.

use nimbus_tests::*;
use std::collections::{BTreeSet, HashMap};
use std::path::{Path, PathBuf};
use std::process::Command;

/// Flags of other programs the docs quote on their own (bwrap, slirp4netns, pasta, pip,
/// npm, curl, cargo …). A flag of Nimbus never belongs here.
const EXTERNAL_FLAGS: &[&str] = &[
    // bwrap
    "--add-seccomp-fd",
    "--die-with-parent",
    "--unshare-user",
    "--new-session",
    "--args",
    // slirp4netns
    "--netns-type",
    "--enable-ipv6",
    "--disable-host-loopback",
    "--configure",
    "--exit-fd",
    "--ready-fd",
    // pasta
    "--no-map-gw",
    "--runas",
    // cargo / nextest
    "--release",
    "--workspace",
    "--bin",
    "--locked",
    // pip / npm
    "--target",
    "--omit",
    "--offline",
    "--prefer-offline",
    "--find-links",
    "--no-index",
    // curl
    "--data",
];

/// Words after `nimbus` in code that are not a command: log lines and benchmark reports
/// quoted in the docs.
const NOT_COMMANDS: &[&str] = &["listening", "added"];

/// Tokens after which a word is in command position.
const BEFORE_COMMAND: &[&str] = &["&&", "||", ";", "|", "(", "$(", "sudo", "exec", "time"];

fn doc_files() -> Vec<PathBuf> {
    let root = repo_root();
    let mut files = vec![root.join("README.md")];
    let mut docs: Vec<PathBuf> = std::fs::read_dir(root.join("docs"))
        .expect("docs/")
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "md"))
        .collect();
    docs.sort();
    files.extend(docs);
    files
}

/// A place in the docs, for messages.
struct At<'a> {
    file: &'a Path,
    line: usize,
}

impl std::fmt::Display for At<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let rel = self.file.strip_prefix(repo_root()).unwrap_or(self.file);
        write!(f, "{}:{}", rel.display(), self.line)
    }
}

/// The code of a Markdown file: each fenced block's lines and each inline code span, with
/// its line number.
fn code_texts(text: &str) -> Vec<(usize, String)> {
    let mut out = Vec::new();
    let mut fenced = false;
    for (i, line) in text.lines().enumerate() {
        if line.trim_start().starts_with("```") {
            fenced = !fenced;
            continue;
        }
        if fenced {
            out.push((i + 1, line.to_string()));
            continue;
        }
        let mut parts = line.split('`');
        parts.next();
        while let (Some(code), Some(_)) = (parts.next(), parts.next()) {
            out.push((i + 1, code.to_string()));
        }
    }
    out
}

/// One command of a CLI: its subcommands and its flags, read from `--help`.
#[derive(Default)]
struct Cli {
    bin: PathBuf,
    help: HashMap<Vec<String>, (BTreeSet<String>, BTreeSet<String>)>,
}

impl Cli {
    fn read(bin: PathBuf) -> Cli {
        let mut cli = Cli {
            bin,
            help: HashMap::new(),
        };
        cli.walk(Vec::new());
        cli
    }

    fn walk(&mut self, path: Vec<String>) {
        let out = Command::new(&self.bin)
            .args(&path)
            .arg("--help")
            .output()
            .expect("run --help");
        assert!(
            out.status.success(),
            "{:?} {path:?} --help failed",
            self.bin
        );
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        let mut subs = BTreeSet::new();
        let mut in_commands = false;
        for line in text.lines() {
            if line.starts_with("Commands:") {
                in_commands = true;
                continue;
            }
            if in_commands {
                match line.split_whitespace().next() {
                    Some(cmd) if line.starts_with("  ") => {
                        if cmd != "help" {
                            subs.insert(cmd.to_string());
                        }
                    }
                    _ => in_commands = false,
                }
            }
        }
        let flags = flags_in(&text);
        self.help.insert(path.clone(), (subs.clone(), flags));
        for sub in subs {
            let mut p = path.clone();
            p.push(sub);
            self.walk(p);
        }
    }

    /// Whether `flag` is a flag of the command at `path` that `--help` does not show (a
    /// hidden, test-only flag): clap accepts it, with or without a value, before `--help`.
    fn hidden(&self, path: &[String], flag: &str) -> bool {
        [vec![flag], vec![flag, "1"]].iter().any(|args| {
            Command::new(&self.bin)
                .args(path)
                .args(args)
                .arg("--help")
                .output()
                .is_ok_and(|o| o.status.success())
        })
    }

    /// Whether any command has `flag`, hidden or not.
    fn has_flag_anywhere(&self, flag: &str) -> bool {
        self.help.values().any(|(_, f)| f.contains(flag))
            || self.help.keys().any(|p| self.hidden(p, flag))
    }

    fn all_flags(&self) -> BTreeSet<String> {
        self.help.values().flat_map(|(_, f)| f.clone()).collect()
    }
}

/// Every `--flag` in `text`.
fn flags_in(text: &str) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    let mut rest = text;
    while let Some(i) = rest.find("--") {
        let after = &rest[i + 2..];
        let len = after
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '-'))
            .unwrap_or(after.len());
        let name = &after[..len];
        let at_word_start = i == 0 || !rest.as_bytes()[i - 1].is_ascii_alphanumeric();
        if at_word_start && name.starts_with(|c: char| c.is_ascii_lowercase()) {
            out.insert(format!("--{name}"));
        }
        rest = &after[len..];
    }
    out
}

/// The flag a token starts with (`--listen=…` → `--listen`), if it is one.
fn flag_of(token: &str) -> Option<String> {
    let name = token.strip_prefix("--")?;
    let len = name
        .find(|c: char| !(c.is_ascii_alphanumeric() || c == '-'))
        .unwrap_or(name.len());
    let name = &name[..len];
    (!name.is_empty() && name.starts_with(|c: char| c.is_ascii_lowercase()))
        .then(|| format!("--{name}"))
}

/// Checks each `NAME …` command line in `code` (NAME in command position: first, after
/// a shell separator, an environment assignment, or `cargo run --bin NAME -- …`) against the CLI;
/// problems are pushed.
fn check_command_lines(name: &str, cli: &Cli, at: &At, code: &str, problems: &mut Vec<String>) {
    let tokens: Vec<&str> = code.split_whitespace().collect();
    let global = &cli.help[&Vec::new()].1;
    for (i, t) in tokens.iter().enumerate() {
        if !(*t == name || t.ends_with(&format!("/{name}"))) {
            continue;
        }
        let in_command_position = i == 0
            || BEFORE_COMMAND.contains(&tokens[i - 1])
            || (tokens[i - 1] == "--bin" && tokens.get(i + 1) == Some(&"--"))
            || (tokens[i - 1].contains('=') && !tokens[i - 1].starts_with('-'));
        if !in_command_position {
            continue;
        }
        let mut j = i + 1;
        if tokens.get(j) == Some(&"--") {
            j += 1; // `cargo run --bin nimbus -- up …`
        }
        let mut path: Vec<String> = Vec::new();
        while let Some(word) = tokens.get(j) {
            let (subs, _) = &cli.help[&path];
            if subs.contains(*word) {
                path.push(word.to_string());
                j += 1;
            } else {
                break;
            }
        }
        let has_commands = !cli.help[&Vec::new()].0.is_empty();
        if path.is_empty() && has_commands {
            // A word that is not a command: a stale doc when it looks like one, else
            // quoted output (`nimbus doctor: …`) whose flags are not checked.
            match tokens.get(j) {
                Some(word) if word.starts_with('-') => {}
                Some(word) => {
                    let looks_like_command =
                        word.chars().all(|c| c.is_ascii_lowercase() || c == '-');
                    if looks_like_command && !NOT_COMMANDS.contains(word) {
                        problems.push(format!("{at}: `{name} {word}`: no such command"));
                    }
                    continue;
                }
                None => continue,
            }
        }
        let own = &cli.help[&path].1;
        for word in &tokens[j..] {
            if ["|", "&&", ";", "#", ">", "2>", "&"].contains(word) || word.starts_with('#') {
                break;
            }
            if let Some(flag) = flag_of(word) {
                if !own.contains(&flag) && !global.contains(&flag) && !cli.hidden(&path, &flag) {
                    problems.push(format!(
                        "{at}: `{name} {}` has no flag {flag}",
                        path.join(" ")
                    ));
                }
            }
        }
    }
}

/// A flag quoted on its own (an inline code span starting with `--`): a flag of Nimbus,
/// of nimbus-bench, or of a listed external tool. `--max-queue-{messages,bytes}`-like
/// spans are prefixes.
fn check_lone_flag(clis: &[&Cli], at: &At, code: &str, problems: &mut Vec<String>) {
    let Some(flag) = flag_of(code) else { return };
    if code.starts_with("---") {
        return;
    }
    if EXTERNAL_FLAGS.contains(&flag.as_str()) {
        return;
    }
    let ok = if flag.ends_with('-') {
        clis.iter()
            .any(|c| c.all_flags().iter().any(|k| k.starts_with(&flag)))
    } else {
        clis.iter().any(|c| c.has_flag_anywhere(&flag))
    };
    if !ok {
        problems.push(format!(
            "{at}: `{code}`: {flag} is not a flag of nimbus or nimbus-bench (another program's? add it to EXTERNAL_FLAGS in tests/e2e/docs.rs)"
        ));
    }
}

const METHODS: &[&str] = &["GET", "POST", "PUT", "DELETE", "PATCH", "HEAD"];

/// Every `METHOD[|METHOD…] /path` in `line` whose path is one of the API's (`/v1/…`,
/// Lambda's dated paths, `/fn/…`): the methods and the path with `{…}` filled in and
/// query strings and `[…]` optional parts removed.
fn endpoints_in(line: &str) -> Vec<(Vec<String>, String, String)> {
    let mut out = Vec::new();
    let bytes = line.as_bytes();
    let mut i = 0;
    while i < line.len() {
        let starts_word = i == 0 || !bytes[i - 1].is_ascii_alphanumeric();
        let rest = &line[i..];
        let Some(m) = METHODS.iter().find(|m| rest.starts_with(**m)) else {
            i += rest.chars().next().map_or(1, char::len_utf8);
            continue;
        };
        if !starts_word {
            i += m.len();
            continue;
        }
        let methods_len = rest
            .find(|c: char| !(c.is_ascii_uppercase() || c == '|'))
            .unwrap_or(rest.len());
        let methods: Vec<String> = rest[..methods_len]
            .split('|')
            .filter(|m| METHODS.contains(m))
            .map(str::to_string)
            .collect();
        let after = &rest[methods_len..];
        i += methods_len;
        let Some(path) = after.strip_prefix(' ') else {
            continue;
        };
        let len = path
            .find(|c: char| c.is_whitespace() || "`'\"),;<".contains(c))
            .unwrap_or(path.len());
        let raw = path[..len].trim_end_matches(['.', ':']);
        // Not `/2018-06-01/runtime/…`: each instance's own Runtime API, not the server's.
        let is_api = (raw.starts_with("/v1/")
            || raw.starts_with("/fn/")
            || raw.starts_with("/20")
            || raw == "/metrics")
            && !raw.starts_with("/2018-06-01/");
        if methods.is_empty() || !is_api || raw.contains('…') || raw.contains("...") {
            continue;
        }
        out.push((methods, raw.to_string(), concrete(raw)));
    }
    out
}

/// A documented path made requestable: `{x}` → `docs-check`, no query, no `[…]`.
fn concrete(raw: &str) -> String {
    let mut path = raw.to_string();
    while let (Some(a), Some(b)) = (path.find('['), path.find(']')) {
        if b < a {
            break;
        }
        path.replace_range(a..=b, "");
    }
    let path = path.split('?').next().unwrap_or_default();
    let mut out = String::new();
    let mut in_brace = false;
    for c in path.chars() {
        match c {
            '{' => {
                in_brace = true;
                out.push_str("docs-check");
            }
            '}' => in_brace = false,
            _ if in_brace => {}
            _ => out.push(c),
        }
    }
    out
}

#[test]
fn documented_commands_flags_and_endpoints_exist() {
    let nimbus = Cli::read(nimbus_bin());
    let bench = Cli::read(cargo_build("nimbus-bench", "nimbus-bench"));

    let s = Server::start(&[]);
    let http = reqwest::blocking::Client::new();
    let mut problems = Vec::new();
    let mut checked = (0, 0, 0);
    let mut asked: HashMap<(String, String), bool> = HashMap::new();
    for file in doc_files() {
        let text = std::fs::read_to_string(&file).unwrap();
        for (line, code) in code_texts(&text) {
            let at = At { file: &file, line };
            check_command_lines("nimbus", &nimbus, &at, &code, &mut problems);
            check_command_lines("nimbus-bench", &bench, &at, &code, &mut problems);
            if code.contains("nimbus ") || code.contains("nimbus-bench ") {
                checked.0 += 1;
            }
            if code.starts_with("--") {
                check_lone_flag(&[&nimbus, &bench], &at, &code, &mut problems);
                checked.1 += 1;
            }
        }
        for (i, line) in text.lines().enumerate() {
            let at = At {
                file: &file,
                line: i + 1,
            };
            for (methods, raw, path) in endpoints_in(line) {
                for method in methods {
                    checked.2 += 1;
                    let routed =
                        *asked
                            .entry((method.clone(), path.clone()))
                            .or_insert_with(|| {
                                let m = reqwest::Method::from_bytes(method.as_bytes()).unwrap();
                                let r = http
                                    .request(m, s.url(&path))
                                    .header("content-type", "application/json")
                                    .body("{}")
                                    .send()
                                    .unwrap();
                                let body = r.text().unwrap_or_default();
                                !(body.contains("no route for")
                                    || body.contains("method not allowed on this path"))
                            });
                    if !routed {
                        problems.push(format!(
                            "{at}: `{method} {raw}` is not routed by the server"
                        ));
                    }
                }
            }
        }
    }
    eprintln!(
        "checked {} nimbus command lines, {} lone flags, {} endpoints",
        checked.0, checked.1, checked.2
    );
    assert!(
        checked.0 > 20 && checked.1 > 50 && checked.2 > 50,
        "the scan found too little: {checked:?}"
    );
    assert!(s.healthy(), "{}", s.log());
    assert!(
        problems.is_empty(),
        "the docs name what does not exist:\n{}",
        problems.join("\n")
    );
}

#[test]
fn the_scanners_find_what_they_should() {
    let texts = code_texts(
        "a `nimbus up DIR --listen X` b `--max-pids`\n```sh\nnimbus doctor --json\n```\n",
    );
    let codes: Vec<&str> = texts.iter().map(|(_, c)| c.as_str()).collect();
    assert_eq!(
        codes,
        [
            "nimbus up DIR --listen X",
            "--max-pids",
            "nimbus doctor --json"
        ]
    );
    assert_eq!(
        endpoints_in("- `POST|GET /2021-10-31/functions/{FunctionName}/url[?Qualifier=ALIAS]` — x; `GET /v1/health`'s"),
        vec![
            (vec!["POST".into(), "GET".into()], "/2021-10-31/functions/{FunctionName}/url[?Qualifier=ALIAS]".into(), "/2021-10-31/functions/docs-check/url".into()),
            (vec!["GET".into()], "/v1/health".into(), "/v1/health".into()),
        ]
    );
    assert!(endpoints_in("route \"GET /hello/{name}\"").is_empty());
    assert_eq!(
        flags_in("  --max-log-bytes <B>  x --json"),
        BTreeSet::from(["--max-log-bytes".to_string(), "--json".to_string()])
    );
}
