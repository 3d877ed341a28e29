//! Reading the process's resident memory from `/proc/self/status` (Linux; `None` elsewhere).

/// A `kB` field of /proc/self/status, in bytes.
fn status_field(name: &str) -> Option<usize> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find_map(|l| l.strip_prefix(name)?.strip_prefix(':'))?;
    let kib: usize = line.trim().strip_suffix("kB")?.trim().parse().ok()?;
    Some(kib * 1024)
}

/// Current resident set size (`VmRSS`).
pub fn resident_bytes() -> Option<usize> {
    status_field("VmRSS")
}

/// Peak resident set size (`VmHWM`).
pub fn peak_resident_bytes() -> Option<usize> {
    status_field("VmHWM")
}

#[cfg(test)]
mod tests {
    #[test]
    fn reads_proc_status() {
        if cfg!(target_os = "linux") {
            let rss = super::resident_bytes().expect("VmRSS");
            let hwm = super::peak_resident_bytes().expect("VmHWM");
            assert!(rss > 0 && hwm >= rss / 2);
        }
    }
}
