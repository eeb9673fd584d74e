//! Embeds every file under `assets/` in the binary: writes `$OUT_DIR/assets.rs`, a sorted
//! table of `(path relative to assets/, include_bytes!(file), gzip)`, where `gzip` is the
//! file compressed once here (best level) when that saves at least an eighth of a file of
//! 1 KiB or more, else `None`. No Node step: the assets are plain files, committed as they
//! are served.

use flate2::{write::GzEncoder, Compression};
use std::io::Write;
use std::path::{Path, PathBuf};

/// The gzip form of `body`, when worth serving.
fn gzip(body: &[u8]) -> Option<Vec<u8>> {
    if body.len() < 1024 {
        return None;
    }
    let mut enc = GzEncoder::new(Vec::new(), Compression::best());
    enc.write_all(body).expect("gzip into memory");
    let gz = enc.finish().expect("gzip into memory");
    (gz.len() <= body.len() - body.len() / 8).then_some(gz)
}

fn walk(dir: &Path, out: &mut Vec<PathBuf>) {
    let entries = std::fs::read_dir(dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display()));
    for entry in entries {
        let path = entry.expect("a readable assets directory").path();
        if path.is_dir() {
            println!("cargo:rerun-if-changed={}", path.display());
            walk(&path, out);
        } else {
            out.push(path);
        }
    }
}

fn main() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("assets");
    println!("cargo:rerun-if-changed={}", root.display());
    let mut files = Vec::new();
    walk(&root, &mut files);
    files.sort();
    let out_dir = PathBuf::from(std::env::var("OUT_DIR").expect("OUT_DIR"));
    let mut table = String::from(
        "/// Path, bytes, gzip-compressed bytes.\n\
         pub(crate) type File = (&'static str, &'static [u8], Option<&'static [u8]>);\n\
         pub(crate) static FILES: &[File] = &[\n",
    );
    for (i, f) in files.iter().enumerate() {
        println!("cargo:rerun-if-changed={}", f.display());
        let rel = f.strip_prefix(&root).expect("under assets/");
        let rel = rel.to_str().expect("UTF-8 asset names").replace('\\', "/");
        let body = std::fs::read(f).unwrap_or_else(|e| panic!("{}: {e}", f.display()));
        let gz = match gzip(&body) {
            Some(gz) => {
                let path = out_dir.join(format!("asset-{i}.gz"));
                std::fs::write(&path, gz).expect("write a compressed asset");
                format!("Some(include_bytes!({:?}))", path.display().to_string())
            }
            None => "None".to_string(),
        };
        table.push_str(&format!(
            "    ({rel:?}, include_bytes!({:?}), {gz}),\n",
            f.display().to_string()
        ));
    }
    table.push_str("];\n");
    std::fs::write(out_dir.join("assets.rs"), table).expect("write assets.rs");
}
