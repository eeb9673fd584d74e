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

    /// Interpreter arguments that load the handler module, print and exit (the cold floor).
    pub fn load_and_exit_args(self) -> [&'static str; 2] {
        match self {
            Lang::Node => ["-e", "require('./index.js'); console.log('ready')"],
            Lang::Python => ["-c", "import app; print('ready')"],
        }
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

    /// Writes the function file and the floor server into `dir`.
    pub fn write_files(self, dir: &Path) -> Result<()> {
        for (name, contents) in [self.function_file(), self.floor_server()] {
            std::fs::write(dir.join(name), contents)
                .with_context(|| format!("cannot write {}", dir.join(name).display()))?;
        }
        Ok(())
    }

    /// The function's code package.
    pub fn code_zip(self) -> Result<Vec<u8>> {
        let (name, contents) = self.function_file();
        let mut buf = std::io::Cursor::new(Vec::new());
        let mut w = zip::ZipWriter::new(&mut buf);
        let opts = zip::write::SimpleFileOptions::default().unix_permissions(0o644);
        w.start_file(name, opts)?;
        w.write_all(contents.as_bytes())?;
        w.finish()?;
        Ok(buf.into_inner())
    }
}

fn which(program: &Path) -> Option<PathBuf> {
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
