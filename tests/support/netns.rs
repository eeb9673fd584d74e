//! A network namespace joined to the host by a veth pair, for partition tests: a process
//! started in it (`ip netns exec`) reaches the host, and the host it, through
//! `host_ip` ↔ `ns_ip`; [`NetNs::cut`] takes the host's end down (every connection
//! in or out stalls, as in a real partition) and [`NetNs::restore`] brings it back.
//! Needs root and iproute2; fails (never skips) without them.

use std::process::Command;

pub struct NetNs {
    pub name: String,
    /// The host's end of the veth pair (`10.251.X.Y+1`).
    pub host_ip: String,
    /// The namespace's end (`10.251.X.Y+2`).
    pub ns_ip: String,
    host_if: String,
}

fn ip(args: &[&str]) {
    let out = Command::new("ip")
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("cannot run `ip` (iproute2) for a partition test: {e}"));
    assert!(
        out.status.success(),
        "ip {}: {} (partition tests need root and iproute2)",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr)
    );
}

impl NetNs {
    /// Makes the namespace and the veth pair (addresses picked at random in 10.251.0.0/16).
    pub fn create() -> NetNs {
        let mut r = [0u8; 2];
        use std::io::Read;
        std::fs::File::open("/dev/urandom")
            .and_then(|mut f| f.read_exact(&mut r))
            .unwrap();
        let tag = format!("{:02x}{:02x}", r[0], r[1]);
        let name = format!("nimbus-t{tag}");
        let (host_if, ns_if) = (format!("nbh{tag}"), format!("nbn{tag}"));
        let base = (r[1] & 0xfc) as u32;
        let host_ip = format!("10.251.{}.{}", r[0], base + 1);
        let ns_ip = format!("10.251.{}.{}", r[0], base + 2);
        ip(&["netns", "add", &name]);
        let me = NetNs {
            name: name.clone(),
            host_ip: host_ip.clone(),
            ns_ip: ns_ip.clone(),
            host_if: host_if.clone(),
        };
        ip(&[
            "link", "add", &host_if, "type", "veth", "peer", "name", &ns_if,
        ]);
        ip(&["link", "set", &ns_if, "netns", &name]);
        ip(&["addr", "add", &format!("{host_ip}/30"), "dev", &host_if]);
        ip(&["link", "set", &host_if, "up"]);
        let exec = |args: &[&str]| {
            let mut all = vec!["netns", "exec", &name, "ip"];
            all.extend_from_slice(args);
            ip(&all);
        };
        exec(&["addr", "add", &format!("{ns_ip}/30"), "dev", &ns_if]);
        exec(&["link", "set", &ns_if, "up"]);
        exec(&["link", "set", "lo", "up"]);
        me
    }

    /// The partition: the host's end of the link goes down.
    pub fn cut(&self) {
        ip(&["link", "set", &self.host_if, "down"]);
    }

    pub fn restore(&self) {
        ip(&["link", "set", &self.host_if, "up"]);
    }
}

impl Drop for NetNs {
    fn drop(&mut self) {
        // Deleting the namespace deletes its end of the pair, and with it the host's.
        let _ = Command::new("ip")
            .args(["netns", "del", &self.name])
            .status();
        let _ = Command::new("ip")
            .args(["link", "del", &self.host_if])
            .stderr(std::process::Stdio::null())
            .status();
    }
}
