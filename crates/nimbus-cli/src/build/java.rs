//! Java functions from source: for `java17`/`java21`, a directory with `.java` sources and
//! no jar at its root is compiled with the host `javac` (no Maven or Gradle) into a
//! temporary package holding `classes/` (classes and resources) and `lib/` (the jars of the
//! code directory's `lib/`, which are also javac's class path).
//!
//! Sources are taken from `src/main/java` (Maven layout; resources from
//! `src/main/resources`), else `src/` (its other files are resources), else the directory
//! itself. The handler API (`com.amazonaws.services.lambda.runtime`: `Context`,
//! `RequestHandler`, …) is Nimbus's copy from `runtimes/java`, embedded here and handed to
//! javac as a source path with `-implicit:none`: code written for aws-lambda-java-core
//! compiles unchanged, and the API is not packaged (the runtime provides it).
//!
//! javac's output depends only on the sources, so redeploying unchanged sources publishes
//! no new version.

use super::failure_message;
use super::Prepared;
use crate::errors::Hinted;
use anyhow::{Context, Result};
use nimbus_core::{FunctionConfig, RuntimeFamily};
use std::ffi::OsString;
use std::path::{Path, PathBuf};

macro_rules! api_sources {
    ($($path:literal),* $(,)?) => {
        &[$(($path, include_str!(concat!("../../../../runtimes/java/src/", $path)))),*]
    };
}

/// The handler API functions compile against: (path under `runtimes/java/src`, contents).
const API_SOURCES: &[(&str, &str)] = api_sources![
    "com/amazonaws/services/lambda/runtime/Client.java",
    "com/amazonaws/services/lambda/runtime/ClientContext.java",
    "com/amazonaws/services/lambda/runtime/CognitoIdentity.java",
    "com/amazonaws/services/lambda/runtime/Context.java",
    "com/amazonaws/services/lambda/runtime/LambdaLogger.java",
    "com/amazonaws/services/lambda/runtime/LambdaRuntime.java",
    "com/amazonaws/services/lambda/runtime/RequestHandler.java",
    "com/amazonaws/services/lambda/runtime/RequestStreamHandler.java",
    "com/amazonaws/services/lambda/runtime/logging/LogLevel.java",
];

const INSTALL_HINT: &str =
    "install a JDK (Debian: apt-get install openjdk-17-jdk-headless) or set JAVA_HOME to one";
const BUILD_HINT: &str = "nimbus compiles with plain javac: put the jars your code needs in lib/, or deploy the jar your build tool makes";
/// Directories never searched for sources at the root of a code directory.
const SKIP_AT_ROOT: &[&str] = &[
    "target",
    "build",
    "out",
    "classes",
    "lib",
    "bin",
    "node_modules",
];

/// Where the sources and resources of a code directory are.
#[derive(Debug, PartialEq)]
struct Layout {
    /// The source root (package directories below it).
    sources: PathBuf,
    /// Copied into `classes/` as they are.
    resources: Option<PathBuf>,
    /// The source root is the code directory: skip [`SKIP_AT_ROOT`] and non-Java files.
    at_root: bool,
}

fn layout(dir: &Path) -> Option<Layout> {
    let maven = dir.join("src/main/java");
    if has_java(&maven, false) {
        let res = dir.join("src/main/resources");
        return Some(Layout {
            sources: maven,
            resources: res.is_dir().then_some(res),
            at_root: false,
        });
    }
    let src = dir.join("src");
    if has_java(&src, false) {
        return Some(Layout {
            resources: Some(src.clone()),
            sources: src,
            at_root: false,
        });
    }
    has_java(dir, true).then(|| Layout {
        sources: dir.to_path_buf(),
        resources: None,
        at_root: true,
    })
}

fn has_java(dir: &Path, at_root: bool) -> bool {
    dir.is_dir() && !java_files(dir, at_root).is_empty()
}

/// The `.java` files below `root`, sorted; hidden directories are skipped, and at the
/// root of a code directory also build outputs and dependencies.
fn java_files(root: &Path, at_root: bool) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![(root.to_path_buf(), true)];
    while let Some((d, top)) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&d) else {
            continue;
        };
        for e in entries.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            let Ok(ft) = e.file_type() else { continue };
            if ft.is_dir() {
                let skip = name.starts_with('.')
                    || (top && at_root && SKIP_AT_ROOT.contains(&name.as_str()));
                if !skip {
                    stack.push((e.path(), false));
                }
            } else if ft.is_file() && name.ends_with(".java") {
                out.push(e.path());
            }
        }
    }
    out.sort();
    out
}

/// The jars at the root of `dir` (a jar means: already built).
fn root_jars(dir: &Path) -> bool {
    std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .any(|e| {
            e.file_name()
                .to_string_lossy()
                .to_ascii_lowercase()
                .ends_with(".jar")
                && e.path().is_file()
        })
}

/// Whether `dir` is Java source to build: a Java runtime, `.java` sources, no jar at the root.
pub fn wants_build(dir: &Path, config: &FunctionConfig) -> bool {
    config.runtime.family() == RuntimeFamily::Java && !root_jars(dir) && layout(dir).is_some()
}

/// `javac`: `$JAVA_HOME/bin/javac` when set, else from `PATH`.
fn javac_program(java_home: Option<OsString>) -> PathBuf {
    java_home
        .filter(|h| !h.is_empty())
        .map(|h| PathBuf::from(h).join("bin/javac"))
        .filter(|p| p.is_file())
        .unwrap_or_else(|| PathBuf::from("javac"))
}

/// The major version in `javac -version` output (`javac 17.0.15`, `javac 1.8.0_402`).
fn javac_major(version_output: &str) -> Option<u32> {
    let v = version_output
        .split_whitespace()
        .find(|w| w.starts_with(|c: char| c.is_ascii_digit()))?;
    let mut parts = v.split(['.', '_', '-', '+']);
    let first: u32 = parts.next()?.parse().ok()?;
    if first == 1 {
        parts.next()?.parse().ok()
    } else {
        Some(first)
    }
}

/// The `--release` for a runtime: its Java version, capped by the host compiler (Nimbus
/// runs Java functions on the host JDK, so newer bytecode could not run anyway).
fn release_for(runtime: &str, javac_major: Option<u32>) -> u32 {
    let wanted = runtime
        .strip_prefix("java")
        .and_then(|v| v.parse().ok())
        .unwrap_or(17);
    javac_major.map_or(wanted, |m| wanted.min(m))
}

/// One javac argument file line: quoted, with `\` and `"` escaped.
fn argfile_line(p: &Path) -> String {
    let s = p.to_string_lossy();
    format!("\"{}\"", s.replace('\\', "\\\\").replace('"', "\\\""))
}

/// The javac arguments (the sources come from the argument file).
fn javac_args(
    release: u32,
    api: &Path,
    classpath: &[PathBuf],
    out: &Path,
    argfile: &Path,
) -> Vec<OsString> {
    let mut args: Vec<OsString> = vec![
        "--release".into(),
        release.to_string().into(),
        "-encoding".into(),
        "UTF-8".into(),
        // The API is compiled against, not packaged.
        "-implicit:none".into(),
        "-sourcepath".into(),
        api.into(),
    ];
    if !classpath.is_empty() {
        args.push("-cp".into());
        args.push(std::env::join_paths(classpath).unwrap_or_default());
    }
    args.push("-d".into());
    args.push(out.into());
    let mut at = OsString::from("@");
    at.push(argfile);
    args.push(at);
    args
}

/// Builds `dir` into a temporary directory holding `classes/` and `lib/`.
pub async fn build(dir: &Path, config: &FunctionConfig) -> Result<Prepared> {
    build_with(&javac_program(std::env::var_os("JAVA_HOME")), dir, config).await
}

async fn build_with(javac: &Path, dir: &Path, config: &FunctionConfig) -> Result<Prepared> {
    let name = display_name(dir);
    // Absolute paths: javac runs in the code directory and reads an argument file.
    let dir = &dir
        .canonicalize()
        .with_context(|| format!("cannot read {}", dir.display()))?;
    let layout = layout(dir).context("no Java sources found")?;
    let sources = java_files(&layout.sources, layout.at_root);
    let started = std::time::Instant::now();

    let version = run(javac, &["-version".into()], dir, &name).await?;
    let release = release_for(config.runtime.as_str(), javac_major(&version));
    eprintln!(
        "building {name} with javac ({} source file{}, --release {release})…",
        sources.len(),
        if sources.len() == 1 { "" } else { "s" }
    );

    let tmp = tempfile::Builder::new()
        .prefix("nimbus-java-")
        .tempdir()
        .context("cannot create a temporary directory for the Java build")?;
    let api = tmp.path().join("api");
    for (path, text) in API_SOURCES {
        let p = api.join(path);
        std::fs::create_dir_all(p.parent().expect("has a parent"))?;
        std::fs::write(&p, text)?;
    }
    let pkg = tmp.path().join("pkg");
    let classes = pkg.join("classes");
    std::fs::create_dir_all(&classes)?;
    let lib = copy_lib(dir, &pkg.join("lib"))?;
    let argfile = tmp.path().join("sources.txt");
    let lines: Vec<String> = sources.iter().map(|p| argfile_line(p)).collect();
    std::fs::write(&argfile, lines.join("\n"))?;

    run(
        javac,
        &javac_args(release, &api, &lib, &classes, &argfile),
        dir,
        &name,
    )
    .await?;
    if let Some(res) = &layout.resources {
        copy_resources(res, &classes)
            .with_context(|| format!("cannot copy the resources in {}", res.display()))?;
    }
    tracing::debug!(function = %name, elapsed_ms = started.elapsed().as_millis() as u64, "javac done");
    Ok(Prepared::Built {
        dir: pkg,
        _tmp: tmp,
    })
}

/// Copies `dir/lib/*.jar` to `to`; returns the copies (javac's class path).
fn copy_lib(dir: &Path, to: &Path) -> Result<Vec<PathBuf>> {
    let mut jars: Vec<PathBuf> = std::fs::read_dir(dir.join("lib"))
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.is_file() && p.extension().is_some_and(|x| x.eq_ignore_ascii_case("jar")))
        .collect();
    jars.sort();
    let mut out = Vec::with_capacity(jars.len());
    for jar in jars {
        std::fs::create_dir_all(to)?;
        let dest = to.join(jar.file_name().expect("a file"));
        std::fs::copy(&jar, &dest).with_context(|| format!("cannot copy {}", jar.display()))?;
        out.push(dest);
    }
    Ok(out)
}

/// Copies every file below `from` that is not Java source into `to`, keeping the layout.
fn copy_resources(from: &Path, to: &Path) -> std::io::Result<()> {
    let mut stack = vec![from.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d)?.flatten() {
            let p = e.path();
            let name = e.file_name().to_string_lossy().into_owned();
            if name.starts_with('.') {
                continue;
            }
            let ft = e.file_type()?;
            if ft.is_dir() {
                stack.push(p);
            } else if ft.is_file() && !name.ends_with(".java") {
                let dest = to.join(p.strip_prefix(from).expect("below from"));
                std::fs::create_dir_all(dest.parent().expect("has a parent"))?;
                std::fs::copy(&p, &dest)?;
            }
        }
    }
    Ok(())
}

/// Runs javac; returns its output, or an error with the compiler's messages and a hint.
async fn run(javac: &Path, args: &[OsString], dir: &Path, name: &str) -> Result<String> {
    let mut cmd = tokio::process::Command::new(javac);
    cmd.args(args).current_dir(dir).env("LC_ALL", "C.UTF-8");
    let what = format!("javac ({})", javac.display());
    let out = super::run_tool(cmd, name, &what, INSTALL_HINT).await?;
    let text = super::tool_output(&out);
    if out.status.success() {
        return Ok(text);
    }
    Err(Hinted::error(
        failure_message(name, "javac", out.status, &text),
        BUILD_HINT,
    ))
}

/// The code directory's name, for messages.
fn display_name(dir: &Path) -> String {
    dir.canonicalize()
        .ok()
        .and_then(|d| d.file_name().map(|n| n.to_string_lossy().into_owned()))
        .unwrap_or_else(|| dir.display().to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use nimbus_core::Runtime;

    fn config(runtime: &str) -> FunctionConfig {
        FunctionConfig::new(
            Runtime::parse(runtime).unwrap(),
            "example.Hello::handleRequest",
        )
    }

    fn write(dir: &Path, files: &[&str]) {
        for f in files {
            let p = dir.join(f);
            std::fs::create_dir_all(p.parent().unwrap()).unwrap();
            std::fs::write(p, "x").unwrap();
        }
    }

    #[test]
    fn builds_java_sources_without_a_jar() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        assert!(!wants_build(d, &config("java17")), "no sources");
        write(d, &["src/example/Hello.java"]);
        assert!(wants_build(d, &config("java17")));
        assert!(wants_build(d, &config("java21")));
        assert!(!wants_build(
            d,
            &FunctionConfig::new(Runtime::parse("python3.12").unwrap(), "app.handler")
        ));
        write(d, &["lib/dep.jar"]);
        assert!(
            wants_build(d, &config("java17")),
            "lib/ jars are dependencies"
        );
        write(d, &["app.jar"]);
        assert!(!wants_build(d, &config("java17")), "a jar is used as it is");
    }

    #[test]
    fn finds_the_source_layout() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        // Sources only under build outputs or hidden directories do not count.
        write(d, &["target/gen/A.java", ".git/B.java", "lib/C.java"]);
        assert_eq!(layout(d), None);

        write(d, &["example/Hello.java"]);
        assert_eq!(
            layout(d),
            Some(Layout {
                sources: d.to_path_buf(),
                resources: None,
                at_root: true
            })
        );
        assert_eq!(java_files(d, true), [d.join("example/Hello.java")]);

        write(d, &["src/example/Hello.java", "src/app.properties"]);
        assert_eq!(
            layout(d),
            Some(Layout {
                sources: d.join("src"),
                resources: Some(d.join("src")),
                at_root: false
            })
        );

        write(
            d,
            &[
                "src/main/java/example/Hello.java",
                "src/main/resources/log.xml",
            ],
        );
        assert_eq!(
            layout(d),
            Some(Layout {
                sources: d.join("src/main/java"),
                resources: Some(d.join("src/main/resources")),
                at_root: false
            })
        );
    }

    #[test]
    fn javac_version_and_release() {
        assert_eq!(javac_major("javac 17.0.15\n"), Some(17));
        assert_eq!(javac_major("javac 21"), Some(21));
        assert_eq!(javac_major("javac 1.8.0_402"), Some(8));
        assert_eq!(
            javac_major("Picked up JAVA_TOOL_OPTIONS: -Xmx1g\njavac 22-ea"),
            Some(22)
        );
        assert_eq!(javac_major("garbage"), None);
        assert_eq!(release_for("java17", Some(17)), 17);
        assert_eq!(release_for("java21", Some(17)), 17);
        assert_eq!(release_for("java21", Some(21)), 21);
        assert_eq!(release_for("java17", Some(21)), 17);
        assert_eq!(release_for("java21", None), 21);
    }

    #[test]
    fn javac_command_line() {
        let args = javac_args(
            17,
            Path::new("/t/api"),
            &[
                PathBuf::from("/t/pkg/lib/a.jar"),
                PathBuf::from("/t/pkg/lib/b.jar"),
            ],
            Path::new("/t/pkg/classes"),
            Path::new("/t/sources.txt"),
        );
        let args: Vec<String> = args.into_iter().map(|a| a.into_string().unwrap()).collect();
        assert_eq!(
            args,
            [
                "--release",
                "17",
                "-encoding",
                "UTF-8",
                "-implicit:none",
                "-sourcepath",
                "/t/api",
                "-cp",
                "/t/pkg/lib/a.jar:/t/pkg/lib/b.jar",
                "-d",
                "/t/pkg/classes",
                "@/t/sources.txt"
            ]
        );
        let no_lib = javac_args(21, Path::new("/a"), &[], Path::new("/o"), Path::new("/s"));
        assert!(!no_lib.iter().any(|a| a == "-cp"));
        assert_eq!(argfile_line(Path::new("/a b/C.java")), "\"/a b/C.java\"");
        assert_eq!(argfile_line(Path::new("/a\"b\\c")), "\"/a\\\"b\\\\c\"");
    }

    #[test]
    fn javac_program_prefers_java_home() {
        let home = tempfile::tempdir().unwrap();
        assert_eq!(javac_program(None), PathBuf::from("javac"));
        assert_eq!(
            javac_program(Some(home.path().into())),
            PathBuf::from("javac"),
            "no bin/javac there"
        );
        write(home.path(), &["bin/javac"]);
        assert_eq!(
            javac_program(Some(home.path().into())),
            home.path().join("bin/javac")
        );
    }

    #[test]
    fn resources_are_copied_without_sources() {
        let from = tempfile::tempdir().unwrap();
        let to = tempfile::tempdir().unwrap();
        write(
            from.path(),
            &["a/B.java", "a/b.properties", "c.txt", ".hidden/x"],
        );
        copy_resources(from.path(), to.path()).unwrap();
        assert!(to.path().join("a/b.properties").is_file());
        assert!(to.path().join("c.txt").is_file());
        assert!(!to.path().join("a/B.java").exists());
        assert!(!to.path().join(".hidden").exists());
    }

    /// The embedded API is exactly runtimes/java's com.amazonaws sources.
    #[test]
    fn embedded_api_matches_runtimes_java() {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../runtimes/java/src");
        let mut on_disk: Vec<String> = java_files(&root.join("com"), false)
            .into_iter()
            .map(|p| {
                p.strip_prefix(&root)
                    .unwrap()
                    .to_string_lossy()
                    .into_owned()
            })
            .collect();
        on_disk.sort();
        let mut embedded: Vec<String> = API_SOURCES.iter().map(|(p, _)| p.to_string()).collect();
        embedded.sort();
        assert_eq!(embedded, on_disk, "update API_SOURCES in build/java.rs");
    }

    #[test]
    fn long_compiler_output_is_cut() {
        use std::os::unix::process::ExitStatusExt;
        let long = "é".repeat(crate::build::MAX_OUTPUT);
        let msg = failure_message("f", "javac", std::process::ExitStatus::from_raw(256), &long);
        assert!(
            msg.starts_with("building f failed (javac: exit status: 1):\n"),
            "{msg}"
        );
        assert!(msg.ends_with('…'));
        assert!(msg.len() < crate::build::MAX_OUTPUT + 100);
    }

    /// Compiles a small tree with the host javac (skipped, loudly, without one: the
    /// end-to-end tests require it).
    #[tokio::test]
    async fn compiles_with_the_host_javac() {
        let javac = javac_program(std::env::var_os("JAVA_HOME"));
        if std::process::Command::new(&javac)
            .arg("-version")
            .output()
            .is_err()
        {
            eprintln!("SKIPPED: no javac");
            return;
        }
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        std::fs::create_dir_all(d.join("src/main/java/example")).unwrap();
        std::fs::create_dir_all(d.join("src/main/resources")).unwrap();
        std::fs::write(
            d.join("src/main/java/example/Hello.java"),
            "package example;\nimport com.amazonaws.services.lambda.runtime.*;\n\
             public class Hello implements RequestHandler<String, String> {\n\
             public String handleRequest(String in, Context c) { return in + c.getAwsRequestId(); }\n}\n",
        )
        .unwrap();
        std::fs::write(d.join("src/main/resources/app.properties"), "a=b\n").unwrap();
        let built = build_with(&javac, d, &config("java17")).await.unwrap();
        let out = built.dir();
        assert!(out.join("classes/example/Hello.class").is_file());
        assert!(out.join("classes/app.properties").is_file());
        assert!(!out.join("classes/com").exists(), "the API is not packaged");

        std::fs::write(
            d.join("src/main/java/example/Hello.java"),
            "package example;\npublic class Hello { int x = \"no\"; }\n",
        )
        .unwrap();
        let err = build_with(&javac, d, &config("java17"))
            .await
            .err()
            .unwrap();
        let msg = err.to_string();
        assert!(
            msg.contains("Hello.java") && msg.contains("incompatible types"),
            "{msg}"
        );
        assert!(crate::errors::hint(&err).unwrap().contains("lib/"));
    }
}
