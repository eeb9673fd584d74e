//! Sandboxed instances: each instance runs inside bubblewrap (`bwrap`) with its own mount,
//! PID, IPC and UTS namespaces, a minimal read-only view of the host, a private size-limited
//! `/tmp`, a seccomp filter (`seccomp/default.json`), an unprivileged uid of its own with no
//! capabilities and `no_new_privs` (`setpriv`, when the server runs as root; a user
//! namespace otherwise) and rlimits. The network namespace is deliberately not unshared
//! here: a `pre_exec` hook may `setns` into one before `bwrap` runs.
//!
//! The code (`/var/task`) and Nimbus's bootstraps (`/var/runtime`) are mounted as private
//! read-only overlayfs mounts whose layers are named `/proc/self/fd/N` ([`mount_trees`],
//! [`bind_task_root`]): a bind mount of a host directory shows the directory's host path in
//! `/proc/self/mountinfo` (the mount's root inside its filesystem), an overlay has a
//! superblock of its own, rooted at `/`, so the instance learns neither where the data dir
//! is nor the code's content hash. Where the host refuses overlays (not root, no overlayfs)
//! they are bind mounts, as the `paths` layer reports.
//!
//! What the host allows is probed once, at start ([`probe`]); the result is an
//! [`IsolationReport`] (printed, served by `/v1/health`) and, unless isolation is off or
//! impossible, a [`Sandbox`] that builds every instance's command line.

use crate::cgroup::MemoryLimits;
use crate::RuntimeError;
use serde::Serialize;
use std::ffi::{CString, OsStr, OsString};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::str::FromStr;
use std::sync::{Arc, Mutex};

/// The seccomp policy: named filters in seccompiler's JSON format, each compiled and handed
/// to bwrap with `--add-seccomp-fd`.
const SECCOMP_JSON: &str = include_str!("../seccomp/default.json");

/// Instances run as `UID_BASE + block × UID_BLOCK + slot`: the block is the server's
/// ([`UidPool::for_server`], from its pid), so two servers on one host do not share
/// instance uids — `RLIMIT_NPROC` counts a uid's processes host-wide, and a thread bomb in
/// one server's instance would otherwise stop another server's instance of the same uid
/// from starting a thread. A slot is reused once its instance has stopped.
pub const UID_BASE: u32 = 200_000;
const UID_SLOTS: u32 = 60_000;
const UID_BLOCK: u32 = 65_536;
const UID_BLOCKS: u32 = 4096;
/// Open files per process (Lambda's limit).
pub const NOFILE_LIMIT: u64 = 1024;
/// Processes/threads of an instance's uid.
pub const NPROC_LIMIT: u64 = 1024;

/// Where the code, the bootstraps and the scratch space appear inside a sandbox.
pub const TASK_ROOT: &str = "/var/task";
pub const RUNTIME_DIR: &str = "/var/runtime";
/// Where a function's layers appear (Lambda's `/opt`), read-only.
pub const OPT_DIR: &str = "/opt";
/// Where they appear instead when the host's interpreters live under `/opt` (bound at their
/// host paths, which a mount on `/opt` would hide).
pub const OPT_DIR_ALT: &str = "/var/opt";

/// `nimbus serve --isolation`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum Isolation {
    /// Use every layer the host allows; report the missing ones.
    #[default]
    Auto,
    /// Refuse to start unless every layer is available.
    Strict,
    /// No sandbox: instances are plain child processes (warned at every start).
    None,
}

impl Isolation {
    pub fn as_str(self) -> &'static str {
        match self {
            Isolation::Auto => "auto",
            Isolation::Strict => "strict",
            Isolation::None => "none",
        }
    }
}

impl FromStr for Isolation {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "auto" => Ok(Isolation::Auto),
            "strict" => Ok(Isolation::Strict),
            "none" => Ok(Isolation::None),
            other => Err(format!(
                "unknown isolation {other:?}: use auto, strict or none"
            )),
        }
    }
}

/// One protection layer and whether this host provides it.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct Layer {
    pub name: &'static str,
    pub ok: bool,
    /// What it does, or why it is missing and how to get it.
    pub detail: String,
}

impl Layer {
    pub fn ok(name: &'static str, detail: impl Into<String>) -> Self {
        Self {
            name,
            ok: true,
            detail: detail.into(),
        }
    }
    pub fn missing(name: &'static str, detail: impl Into<String>) -> Self {
        Self {
            name,
            ok: false,
            detail: detail.into(),
        }
    }
}

/// What isolation instances get on this server.
#[derive(Debug, Clone, Serialize)]
pub struct IsolationReport {
    pub mode: Isolation,
    /// `full` (every layer), `partial` or `none`.
    pub level: &'static str,
    pub layers: Vec<Layer>,
}

impl IsolationReport {
    fn new(mode: Isolation, layers: Vec<Layer>) -> Self {
        let level = if mode == Isolation::None || layers.iter().all(|l| !l.ok) {
            "none"
        } else if layers.iter().all(|l| l.ok) {
            "full"
        } else {
            "partial"
        };
        Self {
            mode,
            level,
            layers,
        }
    }

    pub fn missing(&self) -> impl Iterator<Item = &Layer> {
        self.layers.iter().filter(|l| !l.ok)
    }

    /// The one line printed at start.
    pub fn summary(&self) -> String {
        if self.mode == Isolation::None {
            return "isolation: none (--isolation none): functions are NOT isolated from the host or each other".into();
        }
        let have: Vec<&str> = self
            .layers
            .iter()
            .filter(|l| l.ok)
            .map(|l| l.name)
            .collect();
        let mut line = format!("isolation: {} [{}]", self.level, have.join(", "));
        let missing: Vec<String> = self
            .missing()
            .map(|l| format!("{} ({})", l.name, l.detail))
            .collect();
        if !missing.is_empty() {
            line.push_str(&format!("; MISSING: {}", missing.join("; ")));
        }
        line
    }
}

/// Builds sandboxed command lines. Cheap to share: one per executor.
#[derive(Debug)]
pub struct Sandbox {
    bwrap: PathBuf,
    /// `Some` when the server is root: bwrap builds the sandbox, `setpriv` drops to the
    /// instance's uid. `None`: bwrap maps the uid in a user namespace.
    setpriv: Option<PathBuf>,
    /// Compiled seccomp programs (raw `sock_filter` arrays); empty when seccomp is missing.
    filters: Vec<Vec<u8>>,
    /// Host directories bound read-only at the same path (interpreters outside `/usr`).
    host_dirs: Vec<PathBuf>,
    /// Files and directories of `/etc` an instance sees (read-only).
    etc: Vec<PathBuf>,
    uids: Arc<UidPool>,
    /// `Some` when the code and the bootstraps are mounted as overlays (the host allows
    /// them); `None`: bind mounts, which show their host paths in `/proc/self/mountinfo`.
    overlay: Option<EmptyLayer>,
}

/// The empty directory every overlay of the sandboxes has as its second lower layer
/// (overlayfs without an upper layer needs two), open as an `O_PATH` descriptor.
#[derive(Debug)]
struct EmptyLayer {
    fd: OwnedFd,
}

impl EmptyLayer {
    /// Opens `dir`, creating it, or emptying it should anything be in it (it is merged into
    /// every instance's `/var/task`).
    fn open(dir: &Path) -> std::io::Result<Self> {
        use std::os::unix::fs::PermissionsExt;
        if std::fs::read_dir(dir).is_ok_and(|mut d| d.next().is_some()) {
            std::fs::remove_dir_all(dir)?;
        }
        std::fs::create_dir_all(dir)?;
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o555))?;
        Ok(Self {
            fd: open_path(dir)?,
        })
    }
}

/// An `O_PATH` descriptor of the directory `dir`.
fn open_path(dir: &Path) -> std::io::Result<OwnedFd> {
    use std::os::unix::ffi::OsStrExt;
    let c = CString::new(dir.as_os_str().as_bytes())?;
    // SAFETY: open on a NUL-terminated path; the descriptor is owned from here on.
    let fd = unsafe {
        libc::open(
            c.as_ptr(),
            libc::O_PATH | libc::O_DIRECTORY | libc::O_CLOEXEC,
        )
    };
    if fd < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: just opened, owned here only.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// The overlays a fresh instance's child mounts (see [`mount_trees`]), each over the host
/// directory it shows: bwrap then binds them (`--ro-bind DIR /var/task`) as it binds the
/// directories without overlays. Raw descriptors of [`Prepared::trees`], for `pre_exec`.
#[derive(Debug, Clone, Default)]
pub struct MountPlan {
    /// (a detached overlay, the host directory it is mounted on).
    trees: Vec<(i32, CString)>,
}

/// The per-spawn pieces of a sandboxed command: file descriptors bwrap reads (their
/// close-on-exec flag is cleared in the child), the instance's uid, and the overlays the
/// child mounts before bwrap runs.
#[derive(Debug)]
pub struct Prepared {
    pub fds: Vec<OwnedFd>,
    pub uid: UidLease,
    /// Detached overlays of the code and the bootstraps and the host directories they go
    /// on (close-on-exec: bwrap never has them); empty without overlays.
    trees: Vec<(OwnedFd, CString)>,
}

impl Prepared {
    /// The raw descriptors, for the `pre_exec` hook.
    pub fn raw_fds(&self) -> Vec<i32> {
        self.fds.iter().map(|f| f.as_raw_fd()).collect()
    }

    /// What the `pre_exec` hook mounts ([`mount_trees`]).
    pub fn plan(&self) -> MountPlan {
        MountPlan {
            trees: self
                .trees
                .iter()
                .map(|(fd, dir)| (fd.as_raw_fd(), dir.clone()))
                .collect(),
        }
    }
}

/// What [`bind_task_root`] mounts on a stem cell's `/var/task` (or its layers on `/opt`),
/// prepared before it forks.
#[derive(Debug)]
pub struct TaskRoot {
    code: CString,
    /// A detached overlay of the code, when the host allows overlays.
    tree: Option<OwnedFd>,
    /// Where in the sandbox it goes.
    target: CString,
}

/// Where the instance's code and bootstraps are on the host.
pub struct Mounts<'a> {
    /// `None` for a stem cell: `/var/task` is an empty directory until
    /// [`bind_task_root`] mounts a function's code on it.
    pub code_dir: Option<&'a Path>,
    /// The function's merged layers, mounted on [`Sandbox::opt_dir`]; `None`: an empty
    /// directory there (where a stem cell's specialisation mounts them).
    pub opt_dir: Option<&'a Path>,
    pub runtimes_dir: &'a Path,
    pub tmp_bytes: u64,
}

impl Sandbox {
    /// `bwrap [sandbox flags] -- [setpriv …] program args`.
    pub fn command(
        &self,
        m: &Mounts<'_>,
        program: &OsStr,
        args: &[OsString],
    ) -> Result<(tokio::process::Command, Prepared), RuntimeError> {
        let uid = self
            .uids
            .lease()
            .ok_or_else(|| RuntimeError::Spawn(std::io::Error::other("no free sandbox uid")))?;
        let (argv, fds) = self.argv(m, uid.uid(), program, args)?;
        let trees = self.trees(m).map_err(RuntimeError::Spawn)?;
        let mut cmd = tokio::process::Command::new(&self.bwrap);
        cmd.args(argv);
        Ok((cmd, Prepared { fds, uid, trees }))
    }

    /// Detached overlays of the code (unless a stem cell) and of the bootstraps, each with
    /// the host directory it is to be mounted on, when the host allows overlays.
    fn trees(&self, m: &Mounts<'_>) -> std::io::Result<Vec<(OwnedFd, CString)>> {
        use std::os::unix::ffi::OsStrExt;
        let Some(empty) = &self.overlay else {
            return Ok(Vec::new());
        };
        m.code_dir
            .into_iter()
            .chain(m.opt_dir)
            .chain([m.runtimes_dir])
            .map(|dir| {
                let tree = overlay(dir, empty)?;
                Ok((tree, CString::new(dir.as_os_str().as_bytes())?))
            })
            .collect()
    }

    /// What a stem cell's specialisation mounts on its `/var/task` (see [`bind_task_root`]).
    pub fn task_root(&self, code_dir: &Path) -> std::io::Result<TaskRoot> {
        self.mount_at(code_dir, TASK_ROOT)
    }

    /// What a stem cell's specialisation mounts on its layer directory ([`Sandbox::opt_dir`]).
    pub fn opt_root(&self, opt_dir: &Path) -> std::io::Result<TaskRoot> {
        self.mount_at(opt_dir, self.opt_dir())
    }

    fn mount_at(&self, dir: &Path, target: &str) -> std::io::Result<TaskRoot> {
        use std::os::unix::ffi::OsStrExt;
        Ok(TaskRoot {
            code: CString::new(dir.as_os_str().as_bytes())?,
            tree: match &self.overlay {
                Some(empty) => Some(overlay(dir, empty)?),
                None => None,
            },
            target: CString::new(target)?,
        })
    }

    /// Where layers appear in this host's sandboxes: [`OPT_DIR`], or [`OPT_DIR_ALT`] when
    /// an interpreter installation bound into the sandbox lives under `/opt`.
    pub fn opt_dir(&self) -> &'static str {
        if self.host_dirs.iter().any(|d| d.starts_with(OPT_DIR)) {
            OPT_DIR_ALT
        } else {
            OPT_DIR
        }
    }

    fn argv(
        &self,
        m: &Mounts<'_>,
        uid: u32,
        program: &OsStr,
        args: &[OsString],
    ) -> Result<(Vec<OsString>, Vec<OwnedFd>), RuntimeError> {
        let mut a: Vec<OsString> = Vec::with_capacity(128);
        let mut fds = Vec::new();
        // bwrap creates missing parents of a mount point with mode 0700, which the
        // instance's uid could not enter: create them first, 0755.
        let mut made: Vec<PathBuf> = Vec::new();
        let mut parents = |v: &mut Vec<OsString>, dest: &Path| {
            let mut anc: Vec<&Path> = dest.ancestors().skip(1).collect();
            anc.reverse();
            for p in anc {
                if p == Path::new("/") || p == Path::new("/usr") || made.iter().any(|m| m == p) {
                    continue;
                }
                v.push("--dir".into());
                v.push(p.into());
                made.push(p.to_path_buf());
            }
        };
        let push = |v: &mut Vec<OsString>, items: &[&OsStr]| {
            v.extend(items.iter().map(|s| s.to_os_string()));
        };
        push(
            &mut a,
            &[
                "--unshare-pid".as_ref(),
                "--unshare-ipc".as_ref(),
                "--unshare-uts".as_ref(),
                "--unshare-cgroup-try".as_ref(),
                "--hostname".as_ref(),
                "nimbus".as_ref(),
                "--die-with-parent".as_ref(),
                "--new-session".as_ref(),
            ],
        );
        if self.setpriv.is_none() {
            let u = uid.to_string();
            push(
                &mut a,
                &[
                    "--unshare-user".as_ref(),
                    "--uid".as_ref(),
                    u.as_ref(),
                    "--gid".as_ref(),
                    u.as_ref(),
                    "--cap-drop".as_ref(),
                    "ALL".as_ref(),
                ],
            );
        }
        push(
            &mut a,
            &["--ro-bind".as_ref(), "/usr".as_ref(), "/usr".as_ref()],
        );
        for top in ["bin", "sbin", "lib", "lib32", "lib64", "libx32"] {
            let host = Path::new("/").join(top);
            match std::fs::symlink_metadata(&host) {
                Ok(md) if md.file_type().is_symlink() => {
                    if let Ok(target) = std::fs::read_link(&host) {
                        push(
                            &mut a,
                            &["--symlink".as_ref(), target.as_os_str(), host.as_os_str()],
                        );
                    }
                }
                Ok(md) if md.is_dir() => push(
                    &mut a,
                    &["--ro-bind".as_ref(), host.as_os_str(), host.as_os_str()],
                ),
                _ => {}
            }
        }
        for e in &self.etc {
            parents(&mut a, e);
            push(
                &mut a,
                &["--ro-bind-try".as_ref(), e.as_os_str(), e.as_os_str()],
            );
        }
        for d in &self.host_dirs {
            parents(&mut a, d);
            push(
                &mut a,
                &["--ro-bind".as_ref(), d.as_os_str(), d.as_os_str()],
            );
        }
        let passwd = format!(
            "root:x:0:0:root:/root:/usr/sbin/nologin\nsbx_user{uid}:x:{uid}:{uid}::/tmp:/usr/sbin/nologin\nnobody:x:65534:65534:nobody:/nonexistent:/usr/sbin/nologin\n"
        );
        let group = format!("root:x:0:\nsbx_user{uid}:x:{uid}:\nnogroup:x:65534:\n");
        for (data, dest) in [(passwd, "/etc/passwd"), (group, "/etc/group")] {
            let fd = data_fd(data.as_bytes())?;
            let n = fd.as_raw_fd().to_string();
            // Readable by the instance's user (bwrap creates them 0600 by default): libc's
            // getpwuid (Node's os.homedir(), Python's pwd, the AWS SDKs' config lookup).
            push(
                &mut a,
                &[
                    "--perms".as_ref(),
                    "0644".as_ref(),
                    "--ro-bind-data".as_ref(),
                    n.as_ref(),
                    dest.as_ref(),
                ],
            );
            fds.push(fd);
        }
        parents(&mut a, Path::new(TASK_ROOT));
        let size = m.tmp_bytes.to_string();
        push(
            &mut a,
            &[
                "--proc".as_ref(),
                "/proc".as_ref(),
                "--dev".as_ref(),
                "/dev".as_ref(),
                "--perms".as_ref(),
                "1777".as_ref(),
                "--size".as_ref(),
                size.as_ref(),
                "--tmpfs".as_ref(),
                "/tmp".as_ref(),
            ],
        );
        match m.code_dir {
            Some(code) => push(
                &mut a,
                &["--ro-bind".as_ref(), code.as_os_str(), TASK_ROOT.as_ref()],
            ),
            None => push(&mut a, &["--dir".as_ref(), TASK_ROOT.as_ref()]),
        }
        let opt = Path::new(self.opt_dir());
        parents(&mut a, opt);
        match m.opt_dir {
            Some(dir) => push(
                &mut a,
                &["--ro-bind".as_ref(), dir.as_os_str(), opt.as_os_str()],
            ),
            None => push(&mut a, &["--dir".as_ref(), opt.as_os_str()]),
        }
        push(
            &mut a,
            &[
                "--ro-bind".as_ref(),
                m.runtimes_dir.as_os_str(),
                RUNTIME_DIR.as_ref(),
                "--chdir".as_ref(),
                TASK_ROOT.as_ref(),
            ],
        );
        for f in &self.filters {
            let fd = data_fd(f)?;
            let n = fd.as_raw_fd().to_string();
            push(&mut a, &["--add-seccomp-fd".as_ref(), n.as_ref()]);
            fds.push(fd);
        }
        // The options reach bwrap through a file descriptor (`--args`), so the instance,
        // which sees bwrap's command line as its pid 1, learns no host paths.
        let mut blob = Vec::new();
        for arg in &a {
            blob.extend_from_slice(arg.as_encoded_bytes());
            blob.push(0);
        }
        let fd = data_fd(&blob)?;
        a = vec![
            "--args".into(),
            fd.as_raw_fd().to_string().into(),
            "--".into(),
        ];
        fds.push(fd);
        if let Some(setpriv) = &self.setpriv {
            let u = uid.to_string();
            push(
                &mut a,
                &[
                    setpriv.as_os_str(),
                    "--reuid".as_ref(),
                    u.as_ref(),
                    "--regid".as_ref(),
                    u.as_ref(),
                    "--clear-groups".as_ref(),
                    "--no-new-privs".as_ref(),
                    "--inh-caps=-all".as_ref(),
                    "--bounding-set=-all".as_ref(),
                    "--".as_ref(),
                ],
            );
        }
        a.push(program.to_os_string());
        a.extend(args.iter().cloned());
        Ok((a, fds))
    }

    /// Whether instances drop to their own uid (root) or use a user namespace.
    pub fn privileged(&self) -> bool {
        self.setpriv.is_some()
    }
}

/// The process inside a running sandbox: the first child of the outer `bwrap` process,
/// which stays in the host's namespaces (but for the mount namespace [`mount_trees`]
/// makes).
fn sandbox_child(bwrap_pid: u32) -> std::io::Result<u32> {
    let list = std::fs::read_to_string(format!("/proc/{bwrap_pid}/task/{bwrap_pid}/children"))?;
    list.split_whitespace()
        .next()
        .and_then(|p| p.parse().ok())
        .ok_or_else(|| std::io::Error::other("the sandbox has no process (yet)"))
}

// Not in libc for every target: the values of linux/mount.h.
const OPEN_TREE_CLONE: libc::c_uint = 1;
const AT_RECURSIVE: libc::c_uint = 0x8000;
const MOVE_MOUNT_F_EMPTY_PATH: libc::c_uint = 0x4;
const FSOPEN_CLOEXEC: libc::c_uint = 0x1;
const FSCONFIG_SET_STRING: libc::c_uint = 1;
const FSCONFIG_CMD_CREATE: libc::c_uint = 6;
const FSMOUNT_CLOEXEC: libc::c_uint = 0x1;
const MOUNT_ATTR_RDONLY: u64 = 0x1;
const MOUNT_ATTR_NOSUID: u64 = 0x2;
const MOUNT_ATTR_NODEV: u64 = 0x4;

/// The steps of [`bind_task_root`]'s child, as reported when one fails.
const STEPS: [&str; 5] = ["", "open_tree", "mount_setattr", "setns", "move_mount"];

/// A detached read-only (nosuid, nodev) overlayfs mount showing `dir`: a superblock of its
/// own (its root in `/proc/self/mountinfo` is `/`) whose layers are `dir` and the empty
/// layer, named by descriptor (`lowerdir=/proc/self/fd/N:/proc/self/fd/M`: the kernel
/// resolves the paths when the overlay is created and shows the string as given). Created
/// in the server's mount namespace (overlayfs takes layers of the caller's namespace
/// only), attached elsewhere with `move_mount`.
fn overlay(dir: &Path, empty: &EmptyLayer) -> std::io::Result<OwnedFd> {
    let layer = open_path(dir)?;
    let lowerdir = CString::new(format!(
        "/proc/self/fd/{}:/proc/self/fd/{}",
        layer.as_raw_fd(),
        empty.fd.as_raw_fd()
    ))
    .expect("no NUL");
    let err = |step: &str| {
        let e = std::io::Error::last_os_error();
        std::io::Error::new(e.kind(), format!("overlayfs {step}: {e}"))
    };
    // SAFETY: system calls on NUL-terminated strings and descriptors owned here; each
    // descriptor returned is owned from then on.
    unsafe {
        let fs = libc::syscall(libc::SYS_fsopen, c"overlay".as_ptr(), FSOPEN_CLOEXEC);
        if fs < 0 {
            return Err(err("fsopen"));
        }
        let fs = OwnedFd::from_raw_fd(fs as libc::c_int);
        for (key, value) in [(c"source", c"overlay"), (c"lowerdir", lowerdir.as_c_str())] {
            if libc::syscall(
                libc::SYS_fsconfig,
                fs.as_raw_fd(),
                FSCONFIG_SET_STRING,
                key.as_ptr(),
                value.as_ptr(),
                0,
            ) != 0
            {
                return Err(err("fsconfig"));
            }
        }
        if libc::syscall(
            libc::SYS_fsconfig,
            fs.as_raw_fd(),
            FSCONFIG_CMD_CREATE,
            std::ptr::null::<libc::c_char>(),
            std::ptr::null::<libc::c_void>(),
            0,
        ) != 0
        {
            return Err(err("create"));
        }
        let tree = libc::syscall(
            libc::SYS_fsmount,
            fs.as_raw_fd(),
            FSMOUNT_CLOEXEC,
            MOUNT_ATTR_RDONLY | MOUNT_ATTR_NOSUID | MOUNT_ATTR_NODEV,
        );
        if tree < 0 {
            return Err(err("fsmount"));
        }
        Ok(OwnedFd::from_raw_fd(tree as libc::c_int))
    }
}

/// Mounts the detached overlays of `plan`, each on the host directory it shows, in a new
/// mount namespace of this process (a slave of the host's: nothing propagates back):
/// called between fork and exec of bwrap, which then binds them into the sandbox as it
/// would bind the directories. Only system calls on memory prepared before the fork
/// (async-signal-safe). Needs `CAP_SYS_ADMIN`.
pub(crate) fn mount_trees(plan: &MountPlan) -> std::io::Result<()> {
    if plan.trees.is_empty() {
        return Ok(());
    }
    // SAFETY: system calls on NUL-terminated strings prepared before the fork and on
    // descriptors the parent keeps open until the child has exec'd.
    unsafe {
        if libc::unshare(libc::CLONE_NEWNS) != 0
            || libc::mount(
                std::ptr::null(),
                c"/".as_ptr(),
                std::ptr::null(),
                libc::MS_REC | libc::MS_SLAVE,
                std::ptr::null(),
            ) != 0
        {
            return Err(std::io::Error::last_os_error());
        }
        for (tree, target) in &plan.trees {
            if !attach_tree(*tree, target) {
                return Err(std::io::Error::last_os_error());
            }
        }
    }
    Ok(())
}

/// Mounts a function's code read-only (nosuid, nodev) at `/var/task` and its layers at
/// `/opt` (each of `roots` at its target, in one child process) inside the running sandbox
/// of `bwrap_pid` — how a stem cell, started with an empty `/var/task` and `/opt`, receives
/// a function's code and layers. Each mount is built detached in the host's mount
/// namespace — an overlay ([`Sandbox::task_root`], made before this is called), or, when
/// the host refuses overlays, a bind mount of the directory (`open_tree` +
/// `mount_setattr`, which shows its host path in the sandbox's `/proc/self/mountinfo`) —
/// then the child joins the sandbox's mount namespace and attaches them (`move_mount`). Needs root
/// (`CAP_SYS_ADMIN`) and Linux ≥ 5.12.
pub(crate) fn bind_task_root(bwrap_pid: u32, roots: &[&TaskRoot]) -> std::io::Result<()> {
    let inner = sandbox_child(bwrap_pid)?;
    let ns = std::fs::File::open(format!("/proc/{inner}/ns/mnt"))?;
    // Never attach into our own namespace: that would mount over the host's /var/task.
    use std::os::unix::fs::MetadataExt;
    let (theirs, ours) = (
        ns.metadata()?.ino(),
        std::fs::metadata("/proc/self/ns/mnt")?.ino(),
    );
    if theirs == ours {
        return Err(std::io::Error::other(
            "the sandbox shares the server's mount namespace",
        ));
    }
    // Everything the child uses, prepared before the fork: the trees it mounts are filled
    // into `trees` (one slot per root) before it joins the sandbox's namespace.
    let sources: Vec<(&std::ffi::CStr, Option<i32>, &std::ffi::CStr)> = roots
        .iter()
        .map(|r| {
            (
                r.code.as_c_str(),
                r.tree.as_ref().map(|t| t.as_raw_fd()),
                r.target.as_c_str(),
            )
        })
        .collect();
    let mut trees: Vec<i32> = vec![-1; roots.len()];
    let attr = MountAttr {
        attr_set: MOUNT_ATTR_RDONLY | MOUNT_ATTR_NOSUID | MOUNT_ATTR_NODEV,
        attr_clr: 0,
        propagation: libc::MS_PRIVATE,
        userns_fd: 0,
    };
    let mut fds = [0i32; 2];
    // SAFETY: pipe2 fills the array with two descriptors we then own.
    if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: both descriptors were just created and are owned here only.
    let (rd, wr) = unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) };
    let mut child = MountChild {
        sources: &sources,
        trees: &mut trees,
        attr: &attr,
        ns_fd: ns.as_raw_fd(),
        report_fd: wr.as_raw_fd(),
    };
    // The child shares the server's memory (CLONE_VM) and the server's thread waits until
    // it has exited (CLONE_VFORK): unlike fork(), nothing of the server's address space is
    // copied — with many wasm components loaded, fork's page-table copy was the larger
    // part of a stem cell's specialisation. It has its own descriptor table and file
    // system attributes (no CLONE_FILES, no CLONE_FS), so its mount trees stay its own and
    // setns(CLONE_NEWNS) is allowed.
    let mut stack = vec![0u8; MOUNT_CHILD_STACK];
    // SAFETY: the stack grows down from its end, 16-byte aligned, and outlives the child
    // (the caller is suspended until the child exits); `mount_child` makes only
    // async-signal-safe system calls on memory prepared before the clone (no allocation,
    // no locks) and leaves with _exit.
    let pid = unsafe {
        let top = stack.as_mut_ptr().add(stack.len());
        let top = top.sub(top as usize % 16);
        libc::clone(
            mount_child,
            top.cast(),
            libc::CLONE_VM | libc::CLONE_VFORK | libc::SIGCHLD,
            (&mut child as *mut MountChild).cast(),
        )
    };
    if pid < 0 {
        return Err(std::io::Error::last_os_error());
    }
    drop(wr);
    let mut report = [0i32; 2];
    // SAFETY: reads at most 8 bytes into the array; EOF (0 bytes) means success.
    let n = unsafe { libc::read(rd.as_raw_fd(), report.as_mut_ptr().cast(), 8) };
    let mut status = 0;
    // SAFETY: waits for the child cloned above.
    unsafe { libc::waitpid(pid, &mut status, 0) };
    if n == 8 {
        let step = STEPS.get(report[0] as usize).copied().unwrap_or("?");
        return Err(std::io::Error::new(
            std::io::Error::from_raw_os_error(report[1]).kind(),
            format!(
                "mounting the code into the sandbox failed at {step}: {}",
                std::io::Error::from_raw_os_error(report[1])
            ),
        ));
    }
    if !libc::WIFEXITED(status) || libc::WEXITSTATUS(status) != 0 {
        return Err(std::io::Error::other(format!(
            "mounting the code into the sandbox failed (status {status})"
        )));
    }
    Ok(())
}

/// Attaches the detached mount tree `tree` at `target` (move_mount(2); async-signal-safe,
/// for children between fork or clone and exec). False with errno set when it failed.
///
/// # Safety
/// `tree` is a mount tree descriptor from open_tree(2) or fsmount(2).
unsafe fn attach_tree(tree: i32, target: &std::ffi::CStr) -> bool {
    // SAFETY: plain system call on a descriptor and a NUL-terminated path.
    unsafe {
        libc::syscall(
            libc::SYS_move_mount,
            tree,
            c"".as_ptr(),
            libc::AT_FDCWD,
            target.as_ptr(),
            MOVE_MOUNT_F_EMPTY_PATH,
        ) == 0
    }
}

/// The stack of [`bind_task_root`]'s child (a few system calls: far more than enough).
const MOUNT_CHILD_STACK: usize = 256 << 10;

/// What [`bind_task_root`]'s child works on, all prepared before the clone.
struct MountChild<'a> {
    /// Per root: the code's host path, its detached overlay if one was made, the target.
    sources: &'a [(&'a std::ffi::CStr, Option<i32>, &'a std::ffi::CStr)],
    /// Filled by the child: the tree it attaches per root.
    trees: &'a mut [i32],
    attr: &'a MountAttr,
    ns_fd: i32,
    /// Where a failure is reported: the step and errno, 8 bytes.
    report_fd: i32,
}

#[repr(C)]
struct MountAttr {
    attr_set: u64,
    attr_clr: u64,
    propagation: u64,
    userns_fd: u64,
}

/// [`bind_task_root`]'s child: detached trees of the code (bind mounts where no overlay
/// was made), then into the sandbox's mount namespace, where it attaches them.
extern "C" fn mount_child(arg: *mut libc::c_void) -> libc::c_int {
    /// Reports the failed step and errno to the parent, then leaves.
    unsafe fn fail_at(fd: i32, step: i32) -> ! {
        let report = [step, *libc::__errno_location()];
        libc::write(fd, report.as_ptr().cast(), 8);
        libc::_exit(1)
    }
    // SAFETY: `arg` is the parent's `MountChild`, alive while the parent is suspended.
    let c = unsafe { &mut *arg.cast::<MountChild>() };
    unsafe {
        let fail = |step: i32| fail_at(c.report_fd, step);
        for (slot, (code, overlay, _)) in c.trees.iter_mut().zip(c.sources) {
            *slot = match overlay {
                Some(tree) => *tree,
                None => {
                    let tree = libc::syscall(
                        libc::SYS_open_tree,
                        libc::AT_FDCWD,
                        code.as_ptr(),
                        OPEN_TREE_CLONE | libc::O_CLOEXEC as libc::c_uint | AT_RECURSIVE,
                    );
                    if tree < 0 {
                        fail(1);
                    }
                    let tree = tree as libc::c_int;
                    if libc::syscall(
                        libc::SYS_mount_setattr,
                        tree,
                        c"".as_ptr(),
                        libc::AT_EMPTY_PATH as libc::c_uint | AT_RECURSIVE,
                        c.attr as *const MountAttr,
                        std::mem::size_of::<MountAttr>(),
                    ) != 0
                    {
                        fail(2);
                    }
                    tree
                }
            };
        }
        if libc::setns(c.ns_fd, libc::CLONE_NEWNS) != 0 {
            fail(3);
        }
        for (tree, (_, _, target)) in c.trees.iter().zip(c.sources) {
            if !attach_tree(*tree, target) {
                fail(4);
            }
        }
        libc::_exit(0)
    }
}

/// A memory file holding `data`, positioned at its start (close-on-exec
/// in this process; the child clears the flag so bwrap can read it).
fn data_fd(data: &[u8]) -> Result<OwnedFd, RuntimeError> {
    let name = CString::new("nimbus-sandbox").expect("no NUL");
    // SAFETY: plain system calls on a descriptor we own.
    unsafe {
        let fd = libc::memfd_create(name.as_ptr(), libc::MFD_CLOEXEC);
        if fd < 0 {
            return Err(RuntimeError::Spawn(std::io::Error::last_os_error()));
        }
        let owned = OwnedFd::from_raw_fd(fd);
        let mut off = 0;
        while off < data.len() {
            let n = libc::write(fd, data[off..].as_ptr().cast(), data.len() - off);
            if n <= 0 {
                return Err(RuntimeError::Spawn(std::io::Error::last_os_error()));
            }
            off += n as usize;
        }
        if libc::lseek(fd, 0, libc::SEEK_SET) != 0 {
            return Err(RuntimeError::Spawn(std::io::Error::last_os_error()));
        }
        Ok(owned)
    }
}

/// Instance uids: `base + slot`, the lowest free slot first.
#[derive(Debug)]
pub struct UidPool {
    base: u32,
    used: Mutex<std::collections::BTreeSet<u32>>,
}

impl Default for UidPool {
    fn default() -> Self {
        Self::new(UID_BASE)
    }
}

impl UidPool {
    fn new(base: u32) -> Self {
        Self {
            base,
            used: Mutex::default(),
        }
    }

    /// The uids of the server whose pid is `pid`: its own block of [`UID_BLOCK`] uids
    /// from [`UID_BASE`] (servers whose pids differ by a multiple of 4096 share one).
    pub fn for_server(pid: u32) -> Self {
        Self::new(UID_BASE + (pid % UID_BLOCKS) * UID_BLOCK)
    }

    fn lease(self: &Arc<Self>) -> Option<UidLease> {
        let mut used = self.used.lock().unwrap_or_else(|e| e.into_inner());
        let slot = (0..UID_SLOTS).find(|s| !used.contains(s))?;
        used.insert(slot);
        Some(UidLease {
            pool: self.clone(),
            slot,
        })
    }
}

/// An instance's uid; returned to the pool when dropped (after the instance stopped).
#[derive(Debug)]
pub struct UidLease {
    pool: Arc<UidPool>,
    slot: u32,
}

impl UidLease {
    pub fn uid(&self) -> u32 {
        self.pool.base + self.slot
    }
}

impl Drop for UidLease {
    fn drop(&mut self) {
        self.pool
            .used
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&self.slot);
    }
}

/// Compiles the seccomp policy for this machine's architecture.
fn compile_filters() -> Result<Vec<Vec<u8>>, String> {
    let arch: seccompiler::TargetArch = std::env::consts::ARCH
        .try_into()
        .map_err(|e| format!("unsupported architecture: {e:?}"))?;
    let map = seccompiler::compile_from_json(SECCOMP_JSON.as_bytes(), arch)
        .map_err(|e| format!("seccomp/default.json: {e}"))?;
    let mut names: Vec<&String> = map.keys().collect();
    names.sort();
    let mut out: Vec<Vec<u8>> = names
        .into_iter()
        .map(|n| {
            map[n]
                .iter()
                .flat_map(|f| {
                    let mut b = Vec::with_capacity(8);
                    b.extend_from_slice(&f.code.to_ne_bytes());
                    b.push(f.jt);
                    b.push(f.jf);
                    b.extend_from_slice(&f.k.to_ne_bytes());
                    b
                })
                .collect()
        })
        .collect();
    if let Some(x32) = x32_filter() {
        out.push(x32);
    }
    Ok(out)
}

/// On x86_64, system call numbers with the x32 bit (0x40000000) pass an architecture check
/// for x86_64 but are not the numbers the policy names: refuse them all (ENOSYS). Not
/// expressible in seccompiler's JSON, so built here: five instructions.
fn x32_filter() -> Option<Vec<u8>> {
    if std::env::consts::ARCH != "x86_64" {
        return None;
    }
    const LD_W_ABS: u16 = 0x20; // BPF_LD (0) | BPF_W (0) | BPF_ABS (0x20)
    const JEQ_K: u16 = 0x05 | 0x10; // BPF_JMP | BPF_JEQ | BPF_K
    const JSET_K: u16 = 0x05 | 0x40; // BPF_JMP | BPF_JSET | BPF_K
    const RET_K: u16 = 0x06; // BPF_RET | BPF_K
    const AUDIT_ARCH_X86_64: u32 = 0xC000_003E;
    const X32_SYSCALL_BIT: u32 = 0x4000_0000;
    const RET_ERRNO_ENOSYS: u32 = 0x0005_0000 | libc::ENOSYS as u32;
    const RET_ALLOW: u32 = 0x7fff_0000;
    let prog: [(u16, u8, u8, u32); 6] = [
        (LD_W_ABS, 0, 0, 4),              // arch
        (JEQ_K, 0, 3, AUDIT_ARCH_X86_64), // other architectures: the policy decides
        (LD_W_ABS, 0, 0, 0),              // nr
        (JSET_K, 0, 1, X32_SYSCALL_BIT),  // an x32 number?
        (RET_K, 0, 0, RET_ERRNO_ENOSYS),
        (RET_K, 0, 0, RET_ALLOW),
    ];
    Some(
        prog.iter()
            .flat_map(|(code, jt, jf, k)| {
                let mut b = Vec::with_capacity(8);
                b.extend_from_slice(&code.to_ne_bytes());
                b.push(*jt);
                b.push(*jf);
                b.extend_from_slice(&k.to_ne_bytes());
                b
            })
            .collect(),
    )
}

/// `name` on `PATH` (a default one when unset), symlinks resolved: the sandbox sees the host
/// under `/usr`, not a directory of links. `PATH` alone decides, so a tool hidden from it is
/// missing for the server as for `nimbus doctor`.
fn find_on_path(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_else(|| "/usr/local/bin:/usr/bin:/bin".into());
    std::env::split_paths(&path)
        .map(|d| d.join(name))
        .find(|p| p.is_file())
        .map(|p| std::fs::canonicalize(&p).unwrap_or(p))
}

/// The `/etc` entries an instance sees: TLS roots, name resolution, the dynamic linker's
/// cache, time zones, `alternatives` (Debian's `java`, …) and the JDK's configuration.
fn etc_entries() -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = [
        "ssl",
        "ca-certificates",
        "ca-certificates.conf",
        "pki",
        "crypto-policies",
        "resolv.conf",
        "hosts",
        "host.conf",
        "nsswitch.conf",
        "gai.conf",
        "services",
        "protocols",
        "localtime",
        "ld.so.cache",
        "ld.so.conf",
        "ld.so.conf.d",
        "alternatives",
        "mime.types",
    ]
    .iter()
    .map(|e| Path::new("/etc").join(e))
    .collect();
    if let Ok(rd) = std::fs::read_dir("/etc") {
        let mut java: Vec<PathBuf> = rd
            .flatten()
            .filter(|e| e.file_name().to_string_lossy().starts_with("java-"))
            .map(|e| e.path())
            .collect();
        java.sort();
        v.extend(java);
    }
    v
}

/// Probes what this host allows and, unless `mode` is `none` or nothing works, returns the
/// sandbox. `host_dirs`: interpreter installations outside `/usr` to bind read-only.
/// `scratch`: an empty directory for trial runs; `empty`: the empty lower layer of the
/// overlays (created, or emptied). `strict` fails (with what is missing and how to fix it)
/// unless every layer works.
pub fn probe(
    mode: Isolation,
    cgroups: &MemoryLimits,
    host_dirs: Vec<PathBuf>,
    scratch: &Path,
    empty: &Path,
) -> Result<(Option<Sandbox>, IsolationReport), String> {
    if mode == Isolation::None {
        // Cgroup limits still apply to plain child processes.
        return Ok((None, IsolationReport::new(mode, cgroups.layers())));
    }
    // SAFETY: geteuid has no preconditions.
    let root = unsafe { libc::geteuid() } == 0;
    let mut layers = Vec::new();
    let mut sandbox = None;
    match find_on_path("bwrap") {
        None => {
            layers.push(Layer::missing(
                "namespaces",
                "bwrap not found: install bubblewrap (apt-get install bubblewrap)",
            ));
            layers.push(Layer::missing("filesystem", "needs bwrap"));
            layers.push(Layer::missing("user", "needs bwrap"));
            layers.push(Layer::missing("seccomp", "needs bwrap"));
            layers.push(Layer::missing("paths", "needs bwrap"));
        }
        Some(bwrap) => {
            let setpriv = if root { find_on_path("setpriv") } else { None };
            let mut sb = Sandbox {
                bwrap,
                setpriv: None,
                filters: Vec::new(),
                host_dirs,
                etc: etc_entries(),
                uids: Arc::new(UidPool::for_server(std::process::id())),
                overlay: None,
            };
            // Stage 1: namespaces and mounts (in a user namespace when not root).
            match sb.try_run(scratch) {
                Err(e) => {
                    let hint = if root {
                        "bwrap cannot create namespaces here (a container without CAP_SYS_ADMIN?)"
                    } else {
                        "bwrap cannot create a user namespace: run as root, or allow unprivileged user namespaces (sysctl kernel.unprivileged_userns_clone=1)"
                    };
                    layers.push(Layer::missing("namespaces", format!("{hint}: {e}")));
                    layers.push(Layer::missing("filesystem", "needs namespaces"));
                    layers.push(Layer::missing("user", "needs namespaces"));
                    layers.push(Layer::missing("seccomp", "needs namespaces"));
                    layers.push(Layer::missing("paths", "needs namespaces"));
                }
                Ok(()) => {
                    layers.push(Layer::ok("namespaces", "mount, pid, ipc, uts (bubblewrap)"));
                    layers.push(Layer::ok(
                        "filesystem",
                        "read-only code and runtimes, private size-limited /tmp, no host data",
                    ));
                    // Stage 2: the unprivileged uid.
                    if root {
                        match setpriv {
                            None => layers.push(Layer::missing(
                                "user",
                                "setpriv not found: install util-linux; instances would run as root",
                            )),
                            Some(sp) => {
                                sb.setpriv = Some(sp);
                                match sb.try_run(scratch) {
                                    Ok(()) => layers.push(Layer::ok(
                                        "user",
                                        format!("uid {}+slot per instance, no capabilities, no_new_privs", sb.uids.base),
                                    )),
                                    Err(e) => {
                                        sb.setpriv = None;
                                        layers.push(Layer::missing(
                                            "user",
                                            format!("setpriv fails: {e}"),
                                        ));
                                    }
                                }
                            }
                        }
                    } else {
                        layers.push(Layer::ok(
                            "user",
                            "user namespace: no capabilities, no_new_privs (host uid is the server's)",
                        ));
                    }
                    // Stage 3: seccomp.
                    match compile_filters() {
                        Err(e) => layers.push(Layer::missing("seccomp", e)),
                        Ok(f) => {
                            sb.filters = f;
                            match sb.try_run(scratch) {
                                Ok(()) => layers.push(Layer::ok(
                                    "seccomp",
                                    "seccomp/default.json: ptrace, mount, bpf, kexec, modules, keyring, new namespaces … denied",
                                )),
                                Err(e) => {
                                    sb.filters.clear();
                                    layers.push(Layer::missing(
                                        "seccomp",
                                        format!("the kernel refused the filter: {e}"),
                                    ));
                                }
                            }
                        }
                    }
                    // Stage 4: the code and the bootstraps as overlays.
                    layers.push(sb.probe_overlays(root, scratch, empty));
                    sandbox = Some(sb);
                }
            }
        }
    }
    layers.push(if sandbox.is_some() {
        Layer::ok(
            "rlimits",
            format!(
                "nofile {NOFILE_LIMIT}{}",
                if root {
                    format!(", nproc {NPROC_LIMIT}")
                } else {
                    String::new()
                }
            ),
        )
    } else {
        Layer::missing("rlimits", "applied inside the sandbox only")
    });
    layers.extend(cgroups.layers());
    layers.push(match crate::netns::probe() {
        Ok(()) => Layer::ok(
            "network",
            "a network namespace per instance: Runtime API at 127.0.0.1:9001, host loopback unreachable",
        ),
        Err(e) => Layer::missing(
            "network",
            format!("{e}: instances share the host network (run as root)"),
        ),
    });
    layers.push(match crate::egress::probe() {
        Ok(tool) => Layer::ok("egress", format!("{tool} for network = \"outbound\"")),
        Err(e) => Layer::missing(
            "egress",
            format!("{e}: functions with network = \"outbound\" run on the host network, without network isolation"),
        ),
    });
    let report = IsolationReport::new(mode, layers);
    if mode == Isolation::Strict && report.missing().next().is_some() {
        let missing: Vec<String> = report
            .missing()
            .map(|l| format!("  - {}: {}", l.name, l.detail))
            .collect();
        return Err(format!(
            "--isolation strict: these sandbox layers are not available on this host:\n{}\nfix them (run as root on a host with bubblewrap, util-linux and cgroups), or use --isolation auto to run with what is available",
            missing.join("\n")
        ));
    }
    Ok((sandbox, report))
}

/// What `/proc/self/mountinfo` shows an instance without overlays.
const BIND_LEAK: &str = "the code and the bootstraps are bind mounts: an instance's /proc/self/mountinfo shows the data dir's path and the code's content hash";

impl Sandbox {
    /// Whether the code and the bootstraps can be overlays here (root, overlayfs, Linux
    /// ≥ 5.2 for `fsopen`): tried once with `scratch` as code; the `paths` layer.
    fn probe_overlays(&mut self, root: bool, scratch: &Path, empty: &Path) -> Layer {
        if !root {
            return Layer::missing("paths", format!("needs root: {BIND_LEAK}"));
        }
        match EmptyLayer::open(empty) {
            Err(e) => Layer::missing(
                "paths",
                format!("cannot create {}: {e}: {BIND_LEAK}", empty.display()),
            ),
            Ok(layer) => {
                self.overlay = Some(layer);
                match self.try_run(scratch) {
                    Ok(()) => Layer::ok(
                        "paths",
                        "code and bootstraps on private read-only overlays: no host path or content hash in /proc/self/mountinfo",
                    ),
                    Err(e) => {
                        self.overlay = None;
                        Layer::missing(
                            "paths",
                            format!("the kernel refused an overlayfs mount ({e}): {BIND_LEAK}"),
                        )
                    }
                }
            }
        }
    }

    /// Runs `true` in the sandbox as configured so far.
    fn try_run(&self, scratch: &Path) -> Result<(), String> {
        let m = Mounts {
            code_dir: Some(scratch),
            opt_dir: None,
            runtimes_dir: scratch,
            tmp_bytes: 1 << 20,
        };
        let uid = self.uids.lease().ok_or("no uid")?;
        let (argv, fds) = self
            .argv(&m, uid.uid(), "true".as_ref(), &[])
            .map_err(|e| e.to_string())?;
        let trees = self.trees(&m).map_err(|e| e.to_string())?;
        let plan = MountPlan {
            trees: trees
                .iter()
                .map(|(fd, dir)| (fd.as_raw_fd(), dir.clone()))
                .collect(),
        };
        let raw: Vec<i32> = fds.iter().map(|f| f.as_raw_fd()).collect();
        let mut cmd = Command::new(&self.bwrap);
        cmd.args(argv)
            .env_clear()
            .env("PATH", "/usr/bin:/bin")
            .stdin(std::process::Stdio::null());
        // SAFETY: only system calls on memory prepared before the fork (fcntl, umask,
        // unshare, mount and the mount API), which are async-signal-safe.
        unsafe {
            std::os::unix::process::CommandExt::pre_exec(&mut cmd, move || {
                mount_trees(&plan)?;
                clear_cloexec(&raw)
            });
        }
        let out = cmd.output().map_err(|e| e.to_string())?;
        drop(fds);
        drop(trees);
        if out.status.success() {
            Ok(())
        } else {
            let err = String::from_utf8_lossy(&out.stderr);
            Err(format!(
                "{}{}",
                out.status,
                err.lines()
                    .next()
                    .map(|l| format!(": {l}"))
                    .unwrap_or_default()
            ))
        }
    }
}

/// Clears close-on-exec on `fds` (in the child, between fork and exec), and sets the umask
/// to 022: bwrap creates the mount points' parents (`/var`, …) with it, and they must be
/// readable by the instance's uid whatever the server's umask is.
pub(crate) fn clear_cloexec(fds: &[i32]) -> std::io::Result<()> {
    // SAFETY: umask is async-signal-safe.
    unsafe { libc::umask(0o022) };
    for &fd in fds {
        // SAFETY: fcntl on descriptors this process owns.
        if unsafe { libc::fcntl(fd, libc::F_SETFD, 0) } != 0 {
            return Err(std::io::Error::last_os_error());
        }
    }
    Ok(())
}

/// Sets the sandbox rlimits (in the child, between fork and exec).
pub(crate) fn set_rlimits(nproc: bool) -> std::io::Result<()> {
    let set = |res, n: u64| {
        let l = libc::rlimit {
            rlim_cur: n,
            rlim_max: n,
        };
        // SAFETY: setrlimit is async-signal-safe.
        if unsafe { libc::setrlimit(res, &l) } != 0 {
            return Err(std::io::Error::last_os_error());
        }
        Ok(())
    };
    set(libc::RLIMIT_NOFILE, NOFILE_LIMIT)?;
    if nproc {
        set(libc::RLIMIT_NPROC, NPROC_LIMIT)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_policy_compiles_for_this_machine() {
        let f = compile_filters().unwrap();
        let x32 = usize::from(std::env::consts::ARCH == "x86_64");
        assert_eq!(f.len(), 2 + x32);
        assert!(f.iter().all(|p| !p.is_empty() && p.len() % 8 == 0));
    }

    #[test]
    fn isolation_parses() {
        assert_eq!("auto".parse::<Isolation>().unwrap(), Isolation::Auto);
        assert_eq!("strict".parse::<Isolation>().unwrap(), Isolation::Strict);
        assert_eq!("none".parse::<Isolation>().unwrap(), Isolation::None);
        assert!("off".parse::<Isolation>().is_err());
    }

    #[test]
    fn levels() {
        let all = vec![Layer::ok("a", "x"), Layer::ok("b", "y")];
        assert_eq!(
            IsolationReport::new(Isolation::Auto, all.clone()).level,
            "full"
        );
        let some = vec![Layer::ok("a", "x"), Layer::missing("b", "why")];
        let r = IsolationReport::new(Isolation::Auto, some);
        assert_eq!(r.level, "partial");
        assert!(r.summary().contains("MISSING: b (why)"), "{}", r.summary());
        assert_eq!(IsolationReport::new(Isolation::None, all).level, "none");
    }

    #[test]
    fn the_command_line_hides_the_options_and_keeps_the_network() {
        let sb = Sandbox {
            bwrap: "/usr/bin/bwrap".into(),
            setpriv: Some("/usr/bin/setpriv".into()),
            filters: compile_filters().unwrap(),
            host_dirs: vec!["/opt/py/3.11".into()],
            etc: vec!["/etc/ssl".into()],
            uids: Arc::new(UidPool::default()),
            overlay: None,
        };
        let m = Mounts {
            code_dir: Some(Path::new("/data/code/unpacked/abc")),
            opt_dir: None,
            runtimes_dir: Path::new("/data/runtimes"),
            tmp_bytes: 512 << 20,
        };
        let (argv, fds) = sb
            .argv(
                &m,
                UID_BASE + 7,
                "python3".as_ref(),
                &["/var/runtime/b.py".into()],
            )
            .unwrap();
        let argv: Vec<String> = argv.into_iter().map(|a| a.into_string().unwrap()).collect();
        assert_eq!(argv[0], "--args");
        assert_eq!(argv[2], "--");
        assert!(!argv.iter().any(|a| a.contains("/data")), "{argv:?}");
        assert_eq!(
            &argv[3..],
            [
                "/usr/bin/setpriv",
                "--reuid",
                "200007",
                "--regid",
                "200007",
                "--clear-groups",
                "--no-new-privs",
                "--inh-caps=-all",
                "--bounding-set=-all",
                "--",
                "python3",
                "/var/runtime/b.py"
            ]
        );
        // passwd, group, the seccomp programs, the options.
        assert_eq!(fds.len(), 3 + sb.filters.len());
        let opts = std::fs::read(format!("/proc/self/fd/{}", argv[1])).unwrap();
        let opts: Vec<&str> = opts
            .split(|b| *b == 0)
            .map(|a| std::str::from_utf8(a).unwrap())
            .collect();
        for want in [
            "--unshare-pid",
            "--unshare-ipc",
            "--unshare-uts",
            "--die-with-parent",
            "--new-session",
        ] {
            assert!(opts.contains(&want), "{want}: {opts:?}");
        }
        assert!(!opts.iter().any(|o| o.contains("net")), "{opts:?}");
        let w = opts
            .windows(3)
            .any(|w| w == ["--ro-bind", "/data/code/unpacked/abc", TASK_ROOT]);
        assert!(w, "{opts:?}");
        let tmp = opts
            .windows(4)
            .any(|w| w == ["--size", "536870912", "--tmpfs", "/tmp"]);
        assert!(tmp, "{opts:?}");
        // Parents of mount points are created 0755 before the mounts.
        let dir = opts.iter().position(|o| *o == "/opt/py").unwrap();
        assert_eq!(opts[dir - 1], "--dir");
        // The interpreter lives under /opt: layers go elsewhere, so it stays visible.
        assert_eq!(sb.opt_dir(), OPT_DIR_ALT);
        assert!(
            opts.windows(2).any(|w| w == ["--dir", OPT_DIR_ALT]),
            "{opts:?}"
        );
        let with_layers = Mounts {
            opt_dir: Some(Path::new("/data/code/opt/k")),
            ..m
        };
        let (argv, _fds) = sb
            .argv(&with_layers, UID_BASE + 7, "python3".as_ref(), &[])
            .unwrap();
        let opts = std::fs::read(format!("/proc/self/fd/{}", argv[1].to_str().unwrap())).unwrap();
        let opts: Vec<&str> = opts
            .split(|b| *b == 0)
            .map(|a| std::str::from_utf8(a).unwrap())
            .collect();
        assert!(
            opts.windows(3)
                .any(|w| w == ["--ro-bind", "/data/code/opt/k", OPT_DIR_ALT]),
            "{opts:?}"
        );
    }

    /// As root (CI): an overlay of a directory is a read-only overlayfs superblock of its
    /// own showing the directory's files, and the empty layer is emptied at start.
    #[test]
    fn an_overlay_shows_the_directory_read_only() {
        let dir = tempfile::tempdir().unwrap();
        let code = dir.path().join("code");
        std::fs::create_dir(&code).unwrap();
        std::fs::write(code.join("app.py"), "x = 1\n").unwrap();
        let empty = dir.path().join("empty");
        std::fs::create_dir(&empty).unwrap();
        std::fs::write(empty.join("stray"), "merged into every /var/task").unwrap();
        let layer = EmptyLayer::open(&empty).unwrap();
        assert_eq!(std::fs::read_dir(&empty).unwrap().count(), 0);
        let tree = overlay(&code, &layer).unwrap();
        // SAFETY: fstatfs and openat on a descriptor owned by the test.
        unsafe {
            let mut st: libc::statfs = std::mem::zeroed();
            assert_eq!(libc::fstatfs(tree.as_raw_fd(), &mut st), 0);
            const OVERLAYFS_SUPER_MAGIC: i64 = 0x794c_7630;
            assert_eq!(st.f_type as i64, OVERLAYFS_SUPER_MAGIC);
            let fd = libc::openat(tree.as_raw_fd(), c"app.py".as_ptr(), libc::O_RDONLY);
            assert!(fd >= 0, "{}", std::io::Error::last_os_error());
            let f = std::fs::File::from(OwnedFd::from_raw_fd(fd));
            assert_eq!(std::io::read_to_string(f).unwrap(), "x = 1\n");
            let w = libc::openat(
                tree.as_raw_fd(),
                c"new".as_ptr(),
                libc::O_WRONLY | libc::O_CREAT,
                0o644,
            );
            assert_eq!(w, -1);
            assert_eq!(
                std::io::Error::last_os_error().raw_os_error(),
                Some(libc::EROFS)
            );
        }
    }

    #[test]
    fn uids_are_reused_after_release() {
        let pool = Arc::new(UidPool::default());
        let a = pool.lease().unwrap();
        let b = pool.lease().unwrap();
        assert_eq!((a.uid(), b.uid()), (UID_BASE, UID_BASE + 1));
        drop(a);
        assert_eq!(pool.lease().unwrap().uid(), UID_BASE);
        // Each server has its own block.
        let (p, q) = (UidPool::for_server(12_345), UidPool::for_server(12_346));
        assert_eq!(p.base, UID_BASE + (12_345 % 4096) * 65_536);
        assert!(q.base >= p.base + UID_SLOTS);
        assert!(UidPool::for_server(u32::MAX)
            .base
            .checked_add(UID_SLOTS)
            .is_some());
    }
}
