//! The languages benchmarked: their hello function, floor server and interpreter.

use anyhow::{bail, Context, Result};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Lang {
    Node,
    Python,
}

impl Lang {
    pub const ALL: [Lang; 2] = [Lang::Node, Lang::Python];

    pub fn name(self) -> &'static str {
        match self {
            Lang::Node => "node",
            Lang::Python => "python",
        }
    }

    /// The Lambda runtime identifier the function is deployed with.
    pub fn runtime(self) -> &'static str {
        match self {
            Lang::Node => "nodejs20.x",
            Lang::Python => "python3.11",
        }
    }

    pub fn handler(self) -> &'static str {
        match self {
            Lang::Node => "index.handler",
            Lang::Python => "app.handler",
        }
    }

    /// The hello function (a copy of `examples/hello-*`): file name and contents.
    pub fn function_file(self) -> (&'static str, &'static str) {
        match self {
            Lang::Node => ("index.js", include_str!("../functions/hello-node/index.js")),
            Lang::Python => ("app.py", include_str!("../functions/hello-python/app.py")),
        }
    }

    /// The bare HTTP server calling the same handler: file name and contents.
    pub fn floor_server(self) -> (&'static str, &'static str) {
        match self {
            Lang::Node => ("floor_server.js", include_str!("../floor/node_server.js")),
            Lang::Python => ("floor_server.py", include_str!("../floor/python_server.py")),
        }
    }

    /// Interpreter arguments that load the handler module, print and exit (the
    /// "interpreter loading the handler" floor).
    pub fn load_and_exit_args(self) -> [&'static str; 2] {
        match self {
            Lang::Node => ["-e", "require('./index.js'); console.log('ready')"],
            Lang::Python => ["-c", "import app; print('ready')"],
        }
    }

    /// Interpreter arguments that do nothing and exit (the plain fork+exec cold-start floor).
    pub fn noop_args(self) -> [&'static str; 2] {
        match self {
            Lang::Node => ["-e", "0"],
            Lang::Python => ["-c", "pass"],
        }
    }

    /// The plain fork+exec floor as a command line, for tables.
    pub fn noop_command(self) -> &'static str {
        match self {
            Lang::Node => "node -e 0",
            Lang::Python => "python3 -c pass",
        }
    }

    /// Interpreter arguments that print `ready` and then sleep `ms` milliseconds (the
    /// scale-out floor) or, with `None`, idle until killed (the density floor).
    pub fn sleep_args(self, ms: Option<u64>) -> [String; 2] {
        match (self, ms) {
            (Lang::Node, Some(ms)) => [
                "-e".into(),
                format!("console.log('ready'); setTimeout(() => {{}}, {ms})"),
            ],
            (Lang::Node, None) => [
                "-e".into(),
                "console.log('ready'); setInterval(() => {}, 1 << 30)".into(),
            ],
            (Lang::Python, Some(ms)) => [
                "-c".into(),
                format!("import time; print('ready', flush=True); time.sleep({ms} / 1000)"),
            ],
            (Lang::Python, None) => [
                "-c".into(),
                "import time; print('ready', flush=True); time.sleep(1e6)".into(),
            ],
        }
    }

    /// A hello function that also answers its instance's identity
    /// (`AWS_LAMBDA_LOG_STREAM_NAME`, one per execution environment) and sleeps for the
    /// `sleep` query parameter (milliseconds) first: the burst, scale-out and density
    /// function.
    pub fn ident_file(self) -> (&'static str, &'static str) {
        match self {
            Lang::Node => ("index.js", IDENT_NODE),
            Lang::Python => ("app.py", IDENT_PYTHON),
        }
    }

    /// The hello function with a ~1 MB dependency (`dep.js` / `dep.py`, generated, see
    /// [`generate_dependency`]) that its module loads first: file names and contents.
    pub fn dep_files(self) -> Vec<(String, String)> {
        let (name, hello) = self.function_file();
        let (dep_name, import) = match self {
            Lang::Node => (
                "dep.js",
                "const dep = require('./dep.js'); // ~1 MB, generated\n",
            ),
            Lang::Python => ("dep.py", "import dep  # noqa: F401  (~1 MB, generated)\n"),
        };
        vec![
            (name.to_string(), format!("{import}{hello}")),
            (dep_name.to_string(), generate_dependency(self, DEP_BYTES)),
        ]
    }

    /// The interpreter Nimbus runs for this language, resolved the way Nimbus does it
    /// (`NIMBUS_NODE`/`NIMBUS_PYTHON`, else `node`/`python3` on `PATH`, python through
    /// `sys.executable` so pyenv-style shims are skipped).
    pub fn interpreter(self) -> Result<PathBuf> {
        let (var, default) = match self {
            Lang::Node => ("NIMBUS_NODE", "node"),
            Lang::Python => ("NIMBUS_PYTHON", "python3"),
        };
        let program = std::env::var_os(var)
            .map(PathBuf::from)
            .unwrap_or_else(|| default.into());
        let program =
            which(&program).with_context(|| format!("{} not found", program.display()))?;
        if self == Lang::Python {
            let real = capture(&program, &["-c", "import sys; print(sys.executable)"])?;
            let real = PathBuf::from(real);
            if real.is_file() {
                return Ok(real);
            }
        }
        Ok(program)
    }

    /// The interpreter's version, e.g. `v20.20.2` or `3.11.7`.
    pub fn version(self, interpreter: &Path) -> Result<String> {
        match self {
            Lang::Node => capture(interpreter, &["--version"]),
            Lang::Python => capture(
                interpreter,
                &["-c", "import platform; print(platform.python_version())"],
            ),
        }
    }

    /// Writes the function file and the floor server into `dir`, and the 1 MB-dependency
    /// function into `dir/dep`.
    pub fn write_files(self, dir: &Path) -> Result<()> {
        for (name, contents) in [self.function_file(), self.floor_server()] {
            std::fs::write(dir.join(name), contents)
                .with_context(|| format!("cannot write {}", dir.join(name).display()))?;
        }
        let dep = self.dep_dir(dir);
        std::fs::create_dir_all(&dep)?;
        for (name, contents) in self.dep_files() {
            std::fs::write(dep.join(&name), contents)
                .with_context(|| format!("cannot write {}", dep.join(&name).display()))?;
        }
        Ok(())
    }

    /// Where [`Lang::write_files`] puts the 1 MB-dependency function.
    pub fn dep_dir(self, dir: &Path) -> PathBuf {
        dir.join("dep")
    }

    /// The hello function's code package.
    pub fn code_zip(self) -> Result<Vec<u8>> {
        let (name, contents) = self.function_file();
        zip_files(&[(name.to_string(), contents.to_string())])
    }

    /// The identity function's code package (see [`Lang::ident_file`]).
    pub fn ident_zip(self) -> Result<Vec<u8>> {
        let (name, contents) = self.ident_file();
        zip_files(&[(name.to_string(), contents.to_string())])
    }

    /// The 1 MB-dependency function's code package.
    pub fn dep_zip(self) -> Result<Vec<u8>> {
        zip_files(&self.dep_files())
    }
}

/// Size of the generated dependency module.
pub const DEP_BYTES: usize = 1 << 20;

const IDENT_NODE: &str = r#"// nimbus-bench: answers the instance's identity, after sleeping ?sleep=MS.
exports.handler = async (event) => {
  const ms = Number(event.queryStringParameters?.sleep || 0);
  if (ms > 0) await new Promise((r) => setTimeout(r, ms));
  return {
    statusCode: 200,
    headers: { 'content-type': 'application/json' },
    body: JSON.stringify({
      message: 'Hello, world from Node.js!',
      instance: process.env.AWS_LAMBDA_LOG_STREAM_NAME,
    }),
  };
};
"#;

const IDENT_PYTHON: &str = r#"# nimbus-bench: answers the instance's identity, after sleeping ?sleep=MS.
import json
import os
import time


def handler(event, context):
    ms = int((event.get("queryStringParameters") or {}).get("sleep") or 0)
    if ms > 0:
        time.sleep(ms / 1000)
    return {
        "statusCode": 200,
        "headers": {"content-type": "application/json"},
        "body": json.dumps({
            "message": "Hello, world from Python!",
            "instance": os.environ.get("AWS_LAMBDA_LOG_STREAM_NAME"),
        }),
    }
"#;

/// A module of at least `bytes` bytes of ordinary code (small functions with a string
/// constant each, and a table of them), the same on every run: what a dependency costs
/// to parse and load.
pub fn generate_dependency(lang: Lang, bytes: usize) -> String {
    let mut out = String::with_capacity(bytes + 4096);
    let text = "Lorem ipsum dolor sit amet, consectetur adipiscing elit, sed do eiusmod tempor";
    let mut i = 0usize;
    match lang {
        Lang::Node => {
            out += "'use strict';\n// Generated by nimbus-bench: a ~1 MB dependency.\n";
            while out.len() < bytes {
                out += &format!(
                    "exports.f{i} = function f{i}(x) {{ const s = '{text} {i}'; return x + s.length * {}; }};\n",
                    i % 97
                );
                i += 1;
            }
            out += &format!("exports.count = {i};\n");
        }
        Lang::Python => {
            out += "\"\"\"Generated by nimbus-bench: a ~1 MB dependency.\"\"\"\n\n";
            while out.len() < bytes {
                out += &format!(
                    "def f{i}(x):\n    s = \"{text} {i}\"\n    return x + len(s) * {}\n\n\n",
                    i % 97
                );
                i += 1;
            }
            out += &format!("COUNT = {i}\n");
        }
    }
    out
}

/// A zip of `files` (name, contents), each mode 0644.
pub fn zip_files(files: &[(String, String)]) -> Result<Vec<u8>> {
    let mut buf = std::io::Cursor::new(Vec::new());
    let mut w = zip::ZipWriter::new(&mut buf);
    let opts = zip::write::SimpleFileOptions::default().unix_permissions(0o644);
    for (name, contents) in files {
        w.start_file(name.as_str(), opts)?;
        w.write_all(contents.as_bytes())?;
    }
    w.finish()?;
    Ok(buf.into_inner())
}

pub fn which(program: &Path) -> Option<PathBuf> {
    if program.components().count() > 1 {
        return program.is_file().then(|| program.to_path_buf());
    }
    std::env::split_paths(&std::env::var_os("PATH")?)
        .map(|d| d.join(program))
        .find(|p| p.is_file())
}

/// Runs `program args` and returns its trimmed stdout.
pub fn capture(program: &Path, args: &[&str]) -> Result<String> {
    let out = Command::new(program)
        .args(args)
        .output()
        .with_context(|| format!("cannot run {}", program.display()))?;
    if !out.status.success() {
        bail!(
            "{} {args:?} failed ({}): {}",
            program.display(),
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_generated_dependency_is_one_megabyte_and_always_the_same() {
        for lang in Lang::ALL {
            let a = generate_dependency(lang, DEP_BYTES);
            assert!(
                a.len() >= DEP_BYTES && a.len() < DEP_BYTES + 4096,
                "{}",
                a.len()
            );
            assert_eq!(a, generate_dependency(lang, DEP_BYTES));
        }
        let files = Lang::Python.dep_files();
        assert!(files[0].1.starts_with("import dep"));
        assert_eq!(files[1].0, "dep.py");
    }
}
