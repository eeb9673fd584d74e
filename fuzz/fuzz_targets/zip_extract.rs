//! Arbitrary bytes as an uploaded code package: storing it must never panic, and whatever the
//! archive holds (absolute paths, `..`, symlinks, huge or duplicate entries) nothing may be
//! written outside the code store's own directory.
#![no_main]

use std::path::PathBuf;
use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use nimbus_store::CodeStore;

struct Dirs {
    _tmp: tempfile::TempDir,
    /// A sibling of the store's root that must stay empty.
    canary: PathBuf,
    parent: PathBuf,
    store: CodeStore,
}

fn dirs() -> &'static Dirs {
    static DIRS: OnceLock<Dirs> = OnceLock::new();
    DIRS.get_or_init(|| {
        let tmp = tempfile::tempdir().expect("tempdir");
        let parent = tmp.path().join("data");
        let canary = tmp.path().join("data/canary");
        std::fs::create_dir_all(&canary).expect("canary dir");
        let store = CodeStore::open(&parent.join("code")).expect("open store");
        Dirs {
            _tmp: tmp,
            canary,
            parent,
            store,
        }
    })
}

fuzz_target!(|data: &[u8]| {
    let d = dirs();
    if let Ok(info) = d.store.put_zip(data) {
        // A stored package can be read back and its directory exists inside the store.
        let dir = d.store.dir(&info.sha256).expect("stored package has a directory");
        assert!(dir.starts_with(d.store.root()), "{dir:?} outside the store");
        assert_eq!(d.store.zip_bytes(&info.sha256).expect("blob"), data);
    }
    assert_eq!(
        std::fs::read_dir(&d.canary).expect("canary").count(),
        0,
        "an archive wrote into a sibling directory"
    );
    for entry in std::fs::read_dir(&d.parent).expect("parent") {
        let name = entry.expect("entry").file_name();
        assert!(
            name == "code" || name == "canary",
            "an archive created {name:?} next to the store"
        );
    }
});
