//! Dependencies installed by `nimbus deploy` and `nimbus up` (`crates/nimbus-cli/src/build/deps.rs`):
//! a Python function with a `requirements.txt` naming a package with a compiled extension
//! (orjson, from PyPI) and a Node function with `package.json` + `package-lock.json`
//! (uuid, from the npm registry) deploy and use them; a code-only change reuses the cached
//! build; a requirement that does not exist is refused with pip's error and deploys
//! nothing; `--no-build` deploys the directory as it is. These need pip and npm (and the
//! registries, or a wheelhouse / npm cache as the README says) and fail without them.
//!
//! Every test has its own `NIMBUS_BUILD_CACHE`, so its first deploy is a miss.

use nimbus_tests::*;
use serde_json::{json, Value};
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

/// A copy of `tests/fixtures/deps/NAME` in a temporary directory, and a build cache of its own.
struct Project {
    dir: PathBuf,
    cache: PathBuf,
    _tmp: tempfile::TempDir,
}

impl Project {
    fn fixture(name: &str) -> Project {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join(name);
        copy_dir(&repo_root().join("tests/fixtures/deps").join(name), &dir);
        Project {
            dir,
            cache: tmp.path().join("build-cache"),
            _tmp: tmp,
        }
    }

    fn path(&self) -> &str {
        self.dir.to_str().unwrap()
    }

    /// Replaces `from` by `to` in the file `name` of the project (a code-only change).
    fn edit(&self, name: &str, from: &str, to: &str) {
        let p = self.dir.join(name);
        let text = std::fs::read_to_string(&p).unwrap();
        assert!(text.contains(from), "{from} not in {name}");
        std::fs::write(&p, text.replace(from, to)).unwrap();
    }
}

/// Runs the CLI against `s` with the project's build cache.
fn cli(s: &Server, p: &Project, args: &[&str]) -> Output {
    Command::new(nimbus_bin())
        .args(args)
        .env("NIMBUS_ENDPOINT", s.base())
        .env("NIMBUS_BUILD_CACHE", &p.cache)
        .stdin(Stdio::null())
        .output()
        .expect("run nimbus cli")
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// `nimbus --json deploy DIR --name NAME …` that must succeed: the reply, and how long it took.
fn deploy_json(s: &Server, p: &Project, args: &[&str]) -> (Value, Duration, String) {
    let mut all = vec!["--json", "deploy", p.path()];
    all.extend_from_slice(args);
    let started = Instant::now();
    let out = cli(s, p, &all);
    let took = started.elapsed();
    let reply = serde_json::from_str(&cli_ok(&out).unwrap()).unwrap();
    (reply, took, stderr(&out))
}

fn python_args(name: &str) -> Vec<&str> {
    vec![
        "--name",
        name,
        "--runtime",
        "python3.11",
        "--handler",
        "app.handler",
    ]
}

fn node_args(name: &str) -> Vec<&str> {
    vec![
        "--name",
        name,
        "--runtime",
        "nodejs20.x",
        "--handler",
        "index.handler",
    ]
}

#[test]
fn python_requirements_are_installed_and_cached() {
    let s = Server::start(&[]);
    let p = Project::fixture("python-orjson");
    let (reply, took, err) = deploy_json(&s, &p, &python_args("py-deps"));
    assert_eq!(reply["build"]["cache"], "miss", "{reply}");
    assert!(
        err.contains(
            "installing Python dependencies of python-orjson (requirements.txt: orjson>=3.10)"
        ),
        "{err}"
    );
    eprintln!("first deploy (pip install): {took:?}");
    let v = s.invoke("py-deps", r#"{"name":"ada"}"#).ok();
    assert_eq!(
        v,
        json!({"greeting": "hello", "dumped": "{\"name\":\"ada\"}", "compiled": true})
    );
    // The build happened in a copy: the code directory holds only what it held.
    let mut names: Vec<String> = std::fs::read_dir(&p.dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    assert_eq!(names, ["app.py", "requirements.txt"]);

    // A code-only change: the dependencies come from the cache.
    p.edit("app.py", "GREETING = \"hello\"", "GREETING = \"hi\"");
    let (reply, took, err) = deploy_json(&s, &p, &python_args("py-deps"));
    assert_eq!(reply["build"]["cache"], "hit", "{reply}");
    assert_eq!(reply["version"], "2", "{reply}");
    assert!(!err.contains("installing"), "{err}");
    eprintln!("second deploy (cache hit): {took:?}");
    let v = s.invoke("py-deps", "{}").ok();
    assert_eq!(v["greeting"], "hi");
    assert_eq!(v["compiled"], true);
}

#[test]
fn node_package_lock_is_installed_without_dev_dependencies_and_cached() {
    let s = Server::start(&[]);
    let p = Project::fixture("node-uuid");
    let (reply, took, err) = deploy_json(&s, &p, &node_args("node-deps"));
    assert_eq!(reply["build"]["cache"], "miss", "{reply}");
    assert!(
        err.contains(
            "installing Node dependencies of node-uuid (package.json: uuid) with npm ci --omit=dev"
        ),
        "{err}"
    );
    eprintln!("first deploy (npm ci): {took:?}");
    let v = s.invoke("node-deps", r#"{"name":"ada"}"#).ok();
    assert_eq!(
        v,
        json!({
            "greeting": "hello",
            "id": "21495524-a02f-5695-82e2-b117addc0b1e",
            "valid": true,
            "devDependencyPresent": false
        })
    );
    assert!(
        !p.dir.join("node_modules").exists(),
        "the code directory is not written to"
    );

    p.edit(
        "index.js",
        "const GREETING = \"hello\"",
        "const GREETING = \"hi\"",
    );
    let (reply, took, _) = deploy_json(&s, &p, &node_args("node-deps"));
    assert_eq!(reply["build"]["cache"], "hit", "{reply}");
    eprintln!("second deploy (cache hit): {took:?}");
    assert_eq!(s.invoke("node-deps", "{}").ok()["greeting"], "hi");

    // The human output says so, briefly.
    p.edit(
        "index.js",
        "const GREETING = \"hi\"",
        "const GREETING = \"hey\"",
    );
    let mut args = vec!["deploy", p.path()];
    args.extend(node_args("node-deps"));
    let out = cli(&s, &p, &args);
    let line = cli_ok(&out).unwrap();
    assert!(
        line.starts_with("deployed node-deps (version 3, ") && line.contains(", deps cached)"),
        "{line}"
    );
}

#[test]
fn a_missing_requirement_is_refused_with_pips_error_and_deploys_nothing() {
    let s = Server::start(&[]);
    let p = Project::fixture("python-orjson");
    // version 1: no dependencies
    std::fs::remove_file(p.dir.join("requirements.txt")).unwrap();
    std::fs::write(
        p.dir.join("app.py"),
        "GREETING = \"hello\"\n\n\ndef handler(event, context):\n    return {\"greeting\": GREETING}\n",
    )
    .unwrap();
    let (reply, _, _) = deploy_json(&s, &p, &python_args("py-bad"));
    assert_eq!(reply["build"]["cache"], "none", "{reply}");
    assert_eq!(s.invoke("py-bad", "{}").ok(), json!({"greeting": "hello"}));

    // version 2 would need a package that does not exist
    std::fs::write(
        p.dir.join("requirements.txt"),
        "nimbus-no-such-package-e2e==1.0\n",
    )
    .unwrap();
    p.edit("app.py", "GREETING = \"hello\"", "GREETING = \"broken\"");
    let mut args = vec!["deploy", p.path()];
    args.extend(python_args("py-bad"));
    let out = cli(&s, &p, &args);
    let err = stderr(&out);
    assert!(!out.status.success(), "{err}");
    assert!(
        err.contains("error: nothing was deployed for py-bad: installing the dependencies of python-orjson failed (pip install -r requirements.txt"),
        "{err}"
    );
    assert!(
        err.contains("ERROR: Could not find a version that satisfies the requirement nimbus-no-such-package-e2e==1.0"),
        "pip's own error line: {err}"
    );
    assert!(
        err.contains("hint: fix requirements.txt and deploy again"),
        "{err}"
    );
    assert!(
        out.stdout.is_empty(),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    // Nothing was deployed: version 1 keeps serving.
    let (_, f) = s.get_json("/v1/functions/py-bad");
    assert_eq!(
        f["code_sha256"], reply["function"]["code_sha256"],
        "{f}\n{reply}"
    );
    assert_eq!(f["revision_id"], reply["function"]["revision_id"], "{f}");
    assert_eq!(s.invoke("py-bad", "{}").ok(), json!({"greeting": "hello"}));
    assert!(s.healthy());
}

#[test]
fn no_build_deploys_the_directory_as_it_is() {
    let s = Server::start(&[]);
    let p = Project::fixture("node-uuid");
    let mut args = node_args("node-raw");
    args.push("--no-build");
    let (reply, _, err) = deploy_json(&s, &p, &args);
    assert_eq!(reply["build"]["cache"], "none", "{reply}");
    assert!(!err.contains("installing"), "{err}");
    // No node_modules in the package: the function cannot load uuid.
    let r = s.invoke("node-raw", "{}");
    assert!(r.function_error(), "{}", r.body);
    assert!(r.body.contains("uuid"), "{}", r.body);
    assert!(
        !std::fs::read_dir(&p.cache).is_ok_and(|mut d| d.next().is_some()),
        "nothing was installed"
    );
}

#[test]
fn up_redeploys_a_code_change_from_the_cached_build() {
    let p = Project::fixture("node-uuid");
    std::fs::write(
        p.dir.join("nimbus.toml"),
        "[functions.uuid-up]\nruntime = \"nodejs20.x\"\nhandler = \"index.handler\"\nurl = true\n",
    )
    .unwrap();
    let port = free_port();
    let mut child = Command::new(nimbus_bin())
        .arg("up")
        .arg(&p.dir)
        .args(["--listen", &format!("127.0.0.1:{port}")])
        .env("NIMBUS_BUILD_CACHE", &p.cache)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let (tx, rx) = std::sync::mpsc::channel::<String>();
    for pipe in [
        Box::new(child.stdout.take().unwrap()) as Box<dyn std::io::Read + Send>,
        Box::new(child.stderr.take().unwrap()),
    ] {
        let tx = tx.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(pipe).lines().map_while(Result::ok) {
                let _ = tx.send(line);
            }
        });
    }
    let mut printed = String::new();
    let mut wait_for = |wanted: &str| {
        while !printed.contains(wanted) {
            match rx.recv_timeout(Duration::from_secs(120)) {
                Ok(line) => {
                    printed.push_str(&line);
                    printed.push('\n');
                }
                Err(_) => {
                    let _ = child.kill();
                    panic!("nimbus up printed:\n{printed}");
                }
            }
        }
        printed.clone()
    };
    wait_for("watching ");
    let get = || {
        reqwest::blocking::get(format!("http://127.0.0.1:{port}/fn/uuid-up/"))
            .unwrap()
            .text()
            .unwrap()
    };
    assert!(get().contains("\"greeting\":\"hello\""), "{}", get());

    p.edit(
        "index.js",
        "const GREETING = \"hello\"",
        "const GREETING = \"hi\"",
    );
    let out = wait_for("redeployed uuid-up");
    let line = out
        .lines()
        .find(|l| l.starts_with("redeployed uuid-up"))
        .unwrap()
        .to_string();
    eprintln!("{line}");
    assert!(line.contains(", deps cached)"), "{out}");
    assert!(get().contains("\"greeting\":\"hi\""), "{}", get());
    let _ = child.kill();
    let _ = child.wait();
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        let (src, dst) = (e.path(), to.join(e.file_name()));
        if e.file_type().unwrap().is_dir() {
            copy_dir(&src, &dst);
        } else {
            std::fs::copy(&src, &dst).unwrap();
        }
    }
}

/// A manifest layer (`[layers.NAME]`) is built like a function: its `requirements.txt`
/// is installed into `python/` (on the function's path as `/opt/python`), cached, and an
/// unchanged layer with cached dependencies zips to the same content (nothing republished).
#[test]
fn a_manifest_layer_installs_its_requirements_into_python() {
    let s = Server::start(&[]);
    let p = Project::fixture("python-orjson");
    let root = p.dir.join("project");
    write_files(
        &root,
        &[
            (
                "nimbus.toml",
                "[layers.fast-json]\npath = \"layer\"\ncompatible_runtimes = [\"python3.11\"]\n\n\
                 [functions.layer-user]\nruntime = \"python3.11\"\nhandler = \"app.handler\"\n\
                 code = \"fn\"\nlayers = [\"fast-json\"]\n",
            ),
            (
                "layer/requirements.txt",
                &std::fs::read_to_string(p.dir.join("requirements.txt")).unwrap(),
            ),
            (
                "fn/app.py",
                "import orjson\n\ndef handler(event, context):\n    \
                 return {\"from\": orjson.__file__, \"dumped\": orjson.dumps(event).decode()}\n",
            ),
        ],
    );
    let project = root.to_str().unwrap();
    let out = cli(&s, &p, &["deploy", project]);
    let text = cli_ok(&out).unwrap();
    let arn = "arn:aws:lambda:us-east-1:000000000000:layer:fast-json:1";
    assert!(text.contains(&format!("published layer {arn}")), "{text}");
    assert!(
        stderr(&out).contains("installing Python dependencies"),
        "{}",
        stderr(&out)
    );
    let v = s.invoke("layer-user", r#"{"a":1}"#).ok();
    assert_eq!(v["dumped"], r#"{"a":1}"#, "{v}");
    assert!(
        v["from"]
            .as_str()
            .unwrap()
            .starts_with("/opt/python/orjson/"),
        "{v}"
    );
    // Again, unchanged: the dependencies come from the cache and the zip is the same.
    let out = cli(&s, &p, &["deploy", project]);
    let text = cli_ok(&out).unwrap();
    assert!(text.contains("layer fast-json unchanged"), "{text}");
    assert!(!stderr(&out).contains("installing"), "{}", stderr(&out));
}
