//! The Java runtime (`java17`, `java21`): Nimbus's bootstrap from `runtimes/java`, embedded
//! in the binary, compiled once with the host `javac` into `runtimes_dir/java/bootstrap-<hash>/`
//! (the hash covers the sources, so a new binary recompiles), and the `java` command line of
//! an instance.
//!
//! Compilation is lazy: the first Java cold start pays for it (a few seconds), server start
//! and non-Java functions never do. A mutex makes concurrent cold starts compile once.

use crate::RuntimeError;
use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Mutex;
use tracing::{info, warn};

macro_rules! sources {
    ($($path:literal),* $(,)?) => {
        &[$(($path, include_str!(concat!("../../../runtimes/java/src/", $path)))),*]
    };
}

/// The bootstrap and the `com.amazonaws.services.lambda.runtime` API it implements, as
/// (path under `runtimes/java/src`, contents).
pub(crate) const SOURCES: &[(&str, &str)] = sources![
    "com/amazonaws/services/lambda/runtime/Client.java",
    "com/amazonaws/services/lambda/runtime/ClientContext.java",
    "com/amazonaws/services/lambda/runtime/CognitoIdentity.java",
    "com/amazonaws/services/lambda/runtime/Context.java",
    "com/amazonaws/services/lambda/runtime/LambdaLogger.java",
    "com/amazonaws/services/lambda/runtime/LambdaRuntime.java",
    "com/amazonaws/services/lambda/runtime/RequestHandler.java",
    "com/amazonaws/services/lambda/runtime/RequestStreamHandler.java",
    "com/amazonaws/services/lambda/runtime/logging/LogLevel.java",
    "dev/nimbus/runtime/Bootstrap.java",
    "dev/nimbus/runtime/HandlerLoader.java",
    "dev/nimbus/runtime/InvocationContext.java",
    "dev/nimbus/runtime/Json.java",
    "dev/nimbus/runtime/Output.java",
    "dev/nimbus/runtime/RuntimeApi.java",
];

/// The class the JVM starts.
const MAIN_CLASS: &str = "dev.nimbus.runtime.Bootstrap";
/// The bytecode level of the bootstrap (the oldest JDK Nimbus supports).
const RELEASE: &str = "17";
/// Marker written last into a complete build.
const COMPLETE: &str = ".complete";

/// Finds, builds and launches the Java bootstrap.
#[derive(Debug)]
pub(crate) struct JavaRuntime {
    java: PathBuf,
    javac: Option<PathBuf>,
    /// `runtimes_dir/java`.
    dir: PathBuf,
    /// The compiled classes, once built.
    classes: Mutex<Option<PathBuf>>,
}

impl JavaRuntime {
    /// `java` is already resolved; `javac` is looked for next to the real `java` (so both
    /// come from one JDK), then on `PATH`.
    pub(crate) fn new(java: PathBuf, dir: PathBuf, path_env: &str) -> Self {
        let javac = find_javac(&java, path_env);
        Self {
            java,
            javac,
            dir,
            classes: Mutex::new(None),
        }
    }

    pub(crate) fn java(&self) -> &Path {
        &self.java
    }

    /// The directory of the compiled bootstrap, compiling it on first use.
    pub(crate) fn bootstrap_classes(&self) -> Result<PathBuf, RuntimeError> {
        let mut ready = self.classes.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(dir) = ready.as_ref() {
            return Ok(dir.clone());
        }
        let out = self.dir.join(format!("bootstrap-{}", sources_hash()));
        if !out.join(COMPLETE).is_file() {
            let javac = self.javac.as_ref().ok_or_else(|| {
                RuntimeError::InvalidEntrypoint(format!(
                    "the Java runtime needs a JDK, but javac was not found next to {} or on PATH: \
                     install one (Debian: apt-get install openjdk-17-jdk-headless) or point \
                     NIMBUS_JAVA at a JDK's bin/java",
                    self.java.display()
                ))
            })?;
            let t0 = std::time::Instant::now();
            blocking(|| compile(javac, &self.dir, &out))?;
            info!(
                dir = %out.display(),
                ms = t0.elapsed().as_millis() as u64,
                "compiled the Java bootstrap"
            );
        }
        *ready = Some(out.clone());
        Ok(out)
    }
}

/// Runs `f`, telling tokio that this worker blocks (compiling takes seconds).
fn blocking<T>(f: impl FnOnce() -> T) -> T {
    match tokio::runtime::Handle::try_current() {
        Ok(h) if h.runtime_flavor() == tokio::runtime::RuntimeFlavor::MultiThread => {
            tokio::task::block_in_place(f)
        }
        _ => f(),
    }
}

pub(crate) fn find_javac(java: &Path, path_env: &str) -> Option<PathBuf> {
    let real = std::fs::canonicalize(java).unwrap_or_else(|_| java.to_path_buf());
    for j in [real.as_path(), java] {
        if let Some(dir) = j.parent() {
            let javac = dir.join("javac");
            if javac.is_file() {
                return Some(javac);
            }
        }
    }
    std::env::split_paths(path_env)
        .map(|d| d.join("javac"))
        .find(|p| p.is_file())
}

/// FNV-1a over the sources and the compiler settings: names the build directory.
pub(crate) fn sources_hash() -> String {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    let mut eat = |bytes: &[u8]| {
        for b in bytes {
            h ^= u64::from(*b);
            h = h.wrapping_mul(0x0100_0000_01b3);
        }
        // A separator, so ("ab","c") and ("a","bc") differ.
        h ^= 0xff;
        h = h.wrapping_mul(0x0100_0000_01b3);
    };
    eat(RELEASE.as_bytes());
    for (path, text) in SOURCES {
        eat(path.as_bytes());
        eat(text.as_bytes());
    }
    format!("{h:016x}")
}

/// Writes the sources to a scratch directory, compiles them and renames the classes into
/// place (atomically, so a crash never leaves a half-built runtime that looks complete).
fn compile(javac: &Path, dir: &Path, out: &Path) -> Result<(), RuntimeError> {
    let fail = |what: String| RuntimeError::InvalidEntrypoint(what);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    let tmp = dir.join(format!(".build-{}-{nanos}", std::process::id()));
    let result = (|| {
        let src = tmp.join("src");
        let classes = tmp.join("classes");
        let mut files = Vec::with_capacity(SOURCES.len());
        for (path, text) in SOURCES {
            let p = src.join(path);
            std::fs::create_dir_all(p.parent().expect("has parent"))?;
            std::fs::write(&p, text)?;
            files.push(p);
        }
        std::fs::create_dir_all(&classes)?;
        let output = Command::new(javac)
            // Plain StringBuilder concatenation: invokedynamic string concatenation costs a JVM
            // about 10 ms at its first use, which would be every cold start.
            .args(["--release", RELEASE, "-encoding", "UTF-8", "-nowarn"])
            .arg("-XDstringConcat=inline")
            .arg("-d")
            .arg(&classes)
            .args(&files)
            .env("LC_ALL", "C.UTF-8")
            .output()?;
        if !output.status.success() {
            return Ok(Err(format!(
                "cannot compile the Java runtime with {} ({}): {}{}",
                javac.display(),
                output.status,
                String::from_utf8_lossy(&output.stderr),
                String::from_utf8_lossy(&output.stdout)
            )));
        }
        std::fs::write(classes.join(COMPLETE), sources_hash())?;
        match std::fs::rename(&classes, out) {
            Ok(()) => {}
            // Another server process sharing this data dir finished first.
            Err(_) if out.join(COMPLETE).is_file() => {}
            Err(e) => return Err(e),
        }
        Ok(Ok(()))
    })();
    let _ = std::fs::remove_dir_all(&tmp);
    match result {
        Ok(Ok(())) => {
            remove_stale_builds(dir, out);
            Ok(())
        }
        Ok(Err(msg)) => Err(fail(msg)),
        Err(e) => Err(fail(format!(
            "cannot build the Java runtime in {}: {e}",
            dir.display()
        ))),
    }
}

/// Deletes the builds of older binaries.
fn remove_stale_builds(dir: &Path, keep: &Path) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for e in entries.flatten() {
        let p = e.path();
        let name = e.file_name();
        if p != keep && name.to_string_lossy().starts_with("bootstrap-") {
            if let Err(err) = std::fs::remove_dir_all(&p) {
                warn!("cannot remove the old Java runtime {}: {err}", p.display());
            }
        }
    }
}

/// The maximum heap: 85% of the function's memory, leaving room for the JVM's own memory
/// (metaspace, code cache, thread stacks) inside the instance's memory limit.
pub(crate) fn heap_mb(memory_mb: u32) -> u32 {
    (u64::from(memory_mb) * 85 / 100).max(16) as u32
}

/// The function's class path, relative to its code directory (the working directory):
/// the directory itself (an unpacked jar, or loose classes), `classes/`, the jars at the
/// root, then `lib/*.jar`, as Lambda's Java runtime loads them. Sorted for stable order.
pub(crate) fn function_classpath(code_dir: &Path) -> Vec<String> {
    let mut cp = vec![".".to_string()];
    if code_dir.join("classes").is_dir() {
        cp.push("classes".into());
    }
    let jars = |dir: &Path, prefix: &str| -> Vec<String> {
        let mut v: Vec<String> = std::fs::read_dir(dir)
            .into_iter()
            .flatten()
            .flatten()
            .filter(|e| e.path().is_file())
            .filter_map(|e| e.file_name().into_string().ok())
            .filter(|n| n.to_ascii_lowercase().ends_with(".jar"))
            .filter(|n| {
                // ':' separates class path entries; such a name cannot be on it.
                let ok = !n.contains(':');
                if !ok {
                    warn!("skipping {n}: a class path entry cannot contain ':'");
                }
                ok
            })
            .map(|n| format!("{prefix}{n}"))
            .collect();
        v.sort();
        v
    };
    cp.extend(jars(code_dir, ""));
    cp.extend(jars(&code_dir.join("lib"), "lib/"));
    cp
}

/// `java` flags tuned for start-up: serial GC and C1 only (a function's JVM lives for
/// minutes, not hours), class data sharing for the JDK, no perf-data file, and a heap
/// bounded by the function's memory.
pub(crate) fn jvm_args(
    bootstrap: &Path,
    code_dir: &Path,
    memory_mb: u32,
) -> Result<Vec<OsString>, RuntimeError> {
    let boot = bootstrap.to_str().filter(|s| !s.contains(':')).ok_or_else(|| {
        RuntimeError::InvalidEntrypoint(format!(
            "the Java runtime directory {} cannot be on a class path (it contains ':' or is not UTF-8); use another --data-dir",
            bootstrap.display()
        ))
    })?;
    let mut cp = boot.to_string();
    for entry in function_classpath(code_dir) {
        cp.push(':');
        cp.push_str(&entry);
    }
    Ok([
        "-XX:+UseSerialGC".to_string(),
        "-XX:TieredStopAtLevel=1".into(),
        "-Xshare:auto".into(),
        "-XX:-UsePerfData".into(),
        format!("-Xmx{}m", heap_mb(memory_mb)),
        "-Dfile.encoding=UTF-8".into(),
        "-cp".into(),
        cp,
        MAIN_CLASS.into(),
    ]
    .into_iter()
    .map(OsString::from)
    .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_java_source_is_embedded() {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../runtimes/java/src");
        let mut found = Vec::new();
        let mut stack = vec![root.clone()];
        while let Some(d) = stack.pop() {
            for e in std::fs::read_dir(&d).unwrap().flatten() {
                let p = e.path();
                if p.is_dir() {
                    stack.push(p);
                } else if p.extension().is_some_and(|x| x == "java") {
                    found.push(
                        p.strip_prefix(&root)
                            .unwrap()
                            .to_string_lossy()
                            .into_owned(),
                    );
                }
            }
        }
        found.sort();
        let mut embedded: Vec<String> = SOURCES.iter().map(|(p, _)| p.to_string()).collect();
        embedded.sort();
        assert_eq!(found, embedded, "update SOURCES in java.rs");
    }

    #[test]
    fn hash_is_stable_and_hex() {
        let h = sources_hash();
        assert_eq!(h.len(), 16);
        assert!(h.chars().all(|c| c.is_ascii_hexdigit()));
        assert_eq!(h, sources_hash());
    }

    #[test]
    fn heap_is_85_percent_with_a_floor() {
        assert_eq!(heap_mb(128), 108);
        assert_eq!(heap_mb(1024), 870);
        assert_eq!(heap_mb(10240), 8704);
        assert_eq!(heap_mb(1), 16);
    }

    #[test]
    fn classpath_order() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path();
        std::fs::create_dir_all(p.join("lib")).unwrap();
        std::fs::create_dir_all(p.join("classes")).unwrap();
        for f in [
            "b.jar",
            "a.JAR",
            "notes.txt",
            "lib/z.jar",
            "lib/y.jar",
            "lib/x.txt",
        ] {
            std::fs::write(p.join(f), b"").unwrap();
        }
        std::fs::create_dir_all(p.join("dir.jar")).unwrap();
        assert_eq!(
            function_classpath(p),
            [".", "classes", "a.JAR", "b.jar", "lib/y.jar", "lib/z.jar"]
        );
        let empty = tempfile::tempdir().unwrap();
        assert_eq!(function_classpath(empty.path()), ["."]);
    }

    #[test]
    fn jvm_args_put_the_runtime_first() {
        let d = tempfile::tempdir().unwrap();
        std::fs::write(d.path().join("app.jar"), b"").unwrap();
        let args = jvm_args(Path::new("/rt/bootstrap-1"), d.path(), 256).unwrap();
        let args: Vec<String> = args.into_iter().map(|a| a.into_string().unwrap()).collect();
        assert!(args.contains(&"-Xmx217m".to_string()), "{args:?}");
        assert!(args.contains(&"-XX:+UseSerialGC".to_string()));
        assert!(args.contains(&"-XX:TieredStopAtLevel=1".to_string()));
        let cp = args.iter().position(|a| a == "-cp").unwrap();
        assert_eq!(args[cp + 1], "/rt/bootstrap-1:.:app.jar");
        assert_eq!(args.last().unwrap(), MAIN_CLASS);
        assert!(jvm_args(Path::new("/a:b"), d.path(), 128).is_err());
    }

    #[test]
    fn missing_javac_is_explained() {
        let d = tempfile::tempdir().unwrap();
        let rt = JavaRuntime {
            java: "/nonexistent/java".into(),
            javac: None,
            dir: d.path().to_path_buf(),
            classes: Mutex::new(None),
        };
        let err = rt.bootstrap_classes().unwrap_err().to_string();
        assert!(err.contains("javac"), "{err}");
    }

    /// Compiles the real bootstrap with the host JDK (skipped, loudly, without one: the
    /// end-to-end tests require it).
    #[test]
    fn compiles_with_the_host_jdk() {
        let path = std::env::var("PATH").unwrap_or_default();
        let java = std::env::split_paths(&path)
            .map(|d| d.join("java"))
            .find(|p| p.is_file());
        let Some(java) = java else {
            eprintln!("SKIPPED: no java on PATH");
            return;
        };
        let d = tempfile::tempdir().unwrap();
        let rt = JavaRuntime::new(java, d.path().join("java"), &path);
        if rt.javac.is_none() {
            eprintln!("SKIPPED: no javac");
            return;
        }
        let classes = rt.bootstrap_classes().unwrap();
        assert!(classes.join("dev/nimbus/runtime/Bootstrap.class").is_file());
        assert!(classes
            .join("com/amazonaws/services/lambda/runtime/Context.class")
            .is_file());
        // Cached: the second call neither compiles nor moves it.
        assert_eq!(rt.bootstrap_classes().unwrap(), classes);
        // A second runtime over the same directory reuses the build.
        let again = JavaRuntime::new(rt.java.clone(), d.path().join("java"), &path);
        let t0 = std::time::Instant::now();
        assert_eq!(again.bootstrap_classes().unwrap(), classes);
        assert!(t0.elapsed() < std::time::Duration::from_secs(1));
        // Only the build remains (no scratch directories).
        let names: Vec<String> = std::fs::read_dir(d.path().join("java"))
            .unwrap()
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .collect();
        assert_eq!(names, [format!("bootstrap-{}", sources_hash())]);
    }
}
