//! Reading the process's figures from `/proc` and the cgroup filesystem.
//!
//! Every parser takes the file's text and returns `None` on anything unexpected, so fixtures can
//! test them and odd kernels cannot make us panic. [`Procfs`] ties them to real paths; its roots
//! can point at a fixture tree.

use std::{
    fs,
    path::{Path, PathBuf},
};

use crate::Error;

/// Kernel's "no limit" for cgroup v1 is `PAGE_COUNTER_MAX * page size` (about 2^63); anything
/// this large is no limit in practice.
const V1_UNLIMITED_FROM: u64 = 1 << 62;

/// Figures from `/proc/self/statm`, in bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Statm {
    /// Resident set size: every page of the process in RAM.
    pub resident_bytes: u64,
    /// Resident pages backed by files or shared memory (memory-mapped index files count here).
    pub shared_bytes: u64,
}

impl Statm {
    /// Resident anonymous memory (heap, stacks): resident minus shared. Unlike file-backed pages,
    /// the kernel cannot drop these under pressure, so this is what a budget should watch.
    pub fn anon_bytes(&self) -> u64 {
        self.resident_bytes.saturating_sub(self.shared_bytes)
    }
}

/// Parses `/proc/<pid>/statm` (`size resident shared text lib data dt`, in pages).
pub fn parse_statm(text: &str, page_size: u64) -> Option<Statm> {
    let mut fields = text.split_ascii_whitespace().skip(1);
    let resident: u64 = fields.next()?.parse().ok()?;
    let shared: u64 = fields.next()?.parse().ok()?;
    Some(Statm {
        resident_bytes: resident.checked_mul(page_size)?,
        shared_bytes: shared.checked_mul(page_size)?,
    })
}

/// Figures from `/proc/meminfo`, in bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MemInfo {
    /// `MemTotal`.
    pub total_bytes: u64,
    /// `MemAvailable` (absent before Linux 3.14).
    pub available_bytes: Option<u64>,
}

/// Parses `/proc/meminfo`; `None` when `MemTotal` is missing or malformed.
pub fn parse_meminfo(text: &str) -> Option<MemInfo> {
    Some(MemInfo {
        total_bytes: kib_field(text, "MemTotal")?,
        available_bytes: kib_field(text, "MemAvailable"),
    })
}

/// A `Name:   123 kB` line of `/proc/meminfo` or `/proc/<pid>/status`, in bytes.
pub fn kib_field(text: &str, name: &str) -> Option<u64> {
    let value = field(text, name)?;
    let number = value.strip_suffix("kB").unwrap_or(value).trim();
    number.parse::<u64>().ok()?.checked_mul(1024)
}

/// A plain numeric `Name:  123` line, such as `Threads:` in `/proc/<pid>/status`.
pub fn number_field(text: &str, name: &str) -> Option<u64> {
    field(text, name)?.parse().ok()
}

fn field<'t>(text: &'t str, name: &str) -> Option<&'t str> {
    text.lines().find_map(|line| {
        let (key, value) = line.split_once(':')?;
        (key.trim() == name).then(|| value.trim())
    })
}

/// Where the process sits in the cgroup hierarchies, from `/proc/self/cgroup`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CgroupMembership {
    /// The cgroup v2 (unified) path, from the `0::<path>` line.
    pub v2: Option<String>,
    /// The cgroup v1 path of the `memory` controller, from a `N:...memory...:<path>` line.
    pub v1_memory: Option<String>,
}

/// Parses `/proc/self/cgroup`. Lines that do not fit the `id:controllers:path` shape are skipped.
pub fn parse_cgroup(text: &str) -> CgroupMembership {
    let mut membership = CgroupMembership::default();
    for line in text.lines() {
        let mut parts = line.splitn(3, ':');
        let (Some(id), Some(controllers), Some(path)) = (parts.next(), parts.next(), parts.next())
        else {
            continue;
        };
        if id == "0" && controllers.is_empty() {
            membership.v2 = Some(path.to_string());
        } else if controllers.split(',').any(|c| c == "memory") {
            membership.v1_memory = Some(path.to_string());
        }
    }
    membership
}

/// A cgroup memory limit file's value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CgroupLimit {
    /// `max` (v2) or the huge v1 sentinel: no limit.
    Unlimited,
    /// A limit in bytes.
    Bytes(u64),
}

/// Parses `memory.max` (v2) or `memory.limit_in_bytes` (v1).
pub fn parse_cgroup_limit(text: &str) -> Option<CgroupLimit> {
    let text = text.trim();
    if text == "max" {
        return Some(CgroupLimit::Unlimited);
    }
    let bytes: u64 = text.parse().ok()?;
    Some(if bytes >= V1_UNLIMITED_FROM {
        CgroupLimit::Unlimited
    } else {
        CgroupLimit::Bytes(bytes)
    })
}

/// Memory limit and usage of the process's cgroup, where one applies.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CgroupMemory {
    /// The tightest limit on the way from the process's cgroup to the root.
    pub limit: Option<u64>,
    /// `memory.current` (v2) or `memory.usage_in_bytes` (v1) of the nearest cgroup that has it.
    /// It includes page cache, so it is reported, not budgeted.
    pub usage: Option<u64>,
}

/// Reads `/proc` and the cgroup filesystem under configurable roots.
#[derive(Debug, Clone)]
pub struct Procfs {
    proc_root: PathBuf,
    cgroup_root: PathBuf,
}

impl Default for Procfs {
    fn default() -> Self {
        Procfs::system()
    }
}

impl Procfs {
    /// The real system: `/proc` and `/sys/fs/cgroup`.
    pub fn system() -> Self {
        Procfs::at("/proc", "/sys/fs/cgroup")
    }

    /// A fixture tree: `proc_root` holds `meminfo` and `self/{statm,status,cgroup,fd/}`;
    /// `cgroup_root` is where the cgroup filesystem would be mounted.
    pub fn at(proc_root: impl Into<PathBuf>, cgroup_root: impl Into<PathBuf>) -> Self {
        Procfs {
            proc_root: proc_root.into(),
            cgroup_root: cgroup_root.into(),
        }
    }

    fn read(&self, path: PathBuf) -> Result<String, Error> {
        fs::read_to_string(&path).map_err(|e| Error::read(path, e))
    }

    /// `/proc/self/statm`.
    pub fn statm(&self) -> Result<Statm, Error> {
        let path = self.proc_root.join("self/statm");
        let text = self.read(path.clone())?;
        parse_statm(&text, rustix::param::page_size() as u64).ok_or(Error::Parse {
            path,
            what: "expected `size resident shared ...` in pages",
        })
    }

    /// `/proc/meminfo`.
    pub fn meminfo(&self) -> Result<MemInfo, Error> {
        let path = self.proc_root.join("meminfo");
        let text = self.read(path.clone())?;
        parse_meminfo(&text).ok_or(Error::Parse {
            path,
            what: "no MemTotal line",
        })
    }

    /// Threads of the process (`Threads:` in `/proc/self/status`), `None` if unreadable.
    pub fn threads(&self) -> Option<u64> {
        let text = fs::read_to_string(self.proc_root.join("self/status")).ok()?;
        number_field(&text, "Threads")
    }

    /// Open file descriptors of the process (entries of `/proc/self/fd`), `None` if unreadable.
    ///
    /// The descriptor used to list the directory is not counted when listing the real
    /// `/proc/self/fd` (it shows up in its own listing).
    pub fn open_fds(&self) -> Option<u64> {
        let dir = self.proc_root.join("self/fd");
        let count = fs::read_dir(&dir).ok()?.filter(|e| e.is_ok()).count() as u64;
        let listing_fd = u64::from(dir == Path::new("/proc/self/fd"));
        Some(count.saturating_sub(listing_fd))
    }

    /// The cgroup memory limit and usage; all `None` outside a cgroup or when unreadable.
    ///
    /// Prefers cgroup v2 and falls back to the v1 `memory` controller (hybrid hosts). Limits of
    /// ancestors apply too, so the tightest limit on the way up is taken; cgroups that are not
    /// visible (another namespace) are skipped.
    pub fn cgroup_memory(&self) -> CgroupMemory {
        let Ok(text) = fs::read_to_string(self.proc_root.join("self/cgroup")) else {
            return CgroupMemory::default();
        };
        let membership = parse_cgroup(&text);
        let mut found = CgroupMemory::default();
        if let Some(path) = &membership.v2 {
            found = self.walk(&self.cgroup_root, path, "memory.max", "memory.current");
            if found.limit.is_none() && found.usage.is_none() {
                // Hybrid layout: the unified hierarchy is mounted below `unified/`.
                found = self.walk(
                    &self.cgroup_root.join("unified"),
                    path,
                    "memory.max",
                    "memory.current",
                );
            }
        }
        if found.limit.is_none()
            && found.usage.is_none()
            && let Some(path) = &membership.v1_memory
        {
            found = self.walk(
                &self.cgroup_root.join("memory"),
                path,
                "memory.limit_in_bytes",
                "memory.usage_in_bytes",
            );
        }
        found
    }

    fn walk(&self, root: &Path, cgroup: &str, limit_file: &str, usage_file: &str) -> CgroupMemory {
        let components: Vec<&str> = cgroup.split('/').filter(|c| !c.is_empty()).collect();
        if components.iter().any(|c| *c == ".." || *c == ".") {
            return CgroupMemory::default();
        }
        let mut found = CgroupMemory::default();
        for depth in (0..=components.len()).rev() {
            let mut dir = root.to_path_buf();
            dir.extend(&components[..depth]);
            if let Some(CgroupLimit::Bytes(limit)) = fs::read_to_string(dir.join(limit_file))
                .ok()
                .and_then(|t| parse_cgroup_limit(&t))
            {
                found.limit = Some(found.limit.map_or(limit, |l| l.min(limit)));
            }
            if found.usage.is_none() {
                found.usage = fs::read_to_string(dir.join(usage_file))
                    .ok()
                    .and_then(|t| t.trim().parse().ok());
            }
        }
        found
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statm() {
        let s = parse_statm("765 446 418 5 0 123 0\n", 4096).unwrap();
        assert_eq!(s.resident_bytes, 446 * 4096);
        assert_eq!(s.anon_bytes(), 28 * 4096);
        assert_eq!(parse_statm("", 4096), None);
        assert_eq!(parse_statm("1 x 2", 4096), None);
        assert_eq!(parse_statm("1 2", 4096), None);
        assert_eq!(parse_statm("1 18446744073709551615 0", 4096), None);
    }

    #[test]
    fn meminfo() {
        let text = "MemTotal:       24684084 kB\nMemFree:        16828108 kB\nMemAvailable:   24163428 kB\n";
        let m = parse_meminfo(text).unwrap();
        assert_eq!(m.total_bytes, 24684084 * 1024);
        assert_eq!(m.available_bytes, Some(24163428 * 1024));
        let old = parse_meminfo("MemTotal: 100 kB\n").unwrap();
        assert_eq!(old.available_bytes, None);
        assert_eq!(parse_meminfo("MemTotal: lots kB"), None);
        assert_eq!(parse_meminfo("garbage"), None);
    }

    #[test]
    fn status_fields() {
        let text = "Name:\tx\nVmRSS:\t    2188 kB\nThreads:\t7\n";
        assert_eq!(kib_field(text, "VmRSS"), Some(2188 * 1024));
        assert_eq!(number_field(text, "Threads"), Some(7));
        assert_eq!(number_field(text, "Missing"), None);
    }

    #[test]
    fn cgroup_lines() {
        let v2 = parse_cgroup("0::/system.slice/ironsift.service\n");
        assert_eq!(v2.v2.as_deref(), Some("/system.slice/ironsift.service"));
        assert_eq!(v2.v1_memory, None);
        let hybrid =
            parse_cgroup("9:name=systemd:/\n4:memory:/process_api/f83\n1:cpu,cpuacct:/\n0::/\n");
        assert_eq!(hybrid.v2.as_deref(), Some("/"));
        assert_eq!(hybrid.v1_memory.as_deref(), Some("/process_api/f83"));
        assert_eq!(parse_cgroup("junk\n\n::\n"), CgroupMembership::default());
    }

    #[test]
    fn cgroup_limits() {
        assert_eq!(parse_cgroup_limit("max\n"), Some(CgroupLimit::Unlimited));
        assert_eq!(
            parse_cgroup_limit("1073741824\n"),
            Some(CgroupLimit::Bytes(1 << 30))
        );
        assert_eq!(
            parse_cgroup_limit("9223372036854771712"),
            Some(CgroupLimit::Unlimited)
        );
        assert_eq!(parse_cgroup_limit("-1"), None);
        assert_eq!(parse_cgroup_limit(""), None);
    }

    fn write(path: &Path, text: &str) {
        fs::create_dir_all(path.parent().unwrap()).unwrap();
        fs::write(path, text).unwrap();
    }

    #[test]
    fn cgroup_v2_takes_the_tightest_ancestor_limit() {
        let dir = tempfile::tempdir().unwrap();
        let (proc, cg) = (dir.path().join("proc"), dir.path().join("cg"));
        write(&proc.join("self/cgroup"), "0::/a/b\n");
        write(&cg.join("a/memory.max"), "1000\n");
        write(&cg.join("a/b/memory.max"), "max\n");
        write(&cg.join("a/b/memory.current"), "600\n");
        let m = Procfs::at(&proc, &cg).cgroup_memory();
        assert_eq!(
            m,
            CgroupMemory {
                limit: Some(1000),
                usage: Some(600)
            }
        );
    }

    #[test]
    fn cgroup_v1_fallback_and_missing_files() {
        let dir = tempfile::tempdir().unwrap();
        let (proc, cg) = (dir.path().join("proc"), dir.path().join("cg"));
        write(&proc.join("self/cgroup"), "4:memory:/x\n0::/\n");
        write(&cg.join("memory/x/memory.limit_in_bytes"), "2048\n");
        write(&cg.join("memory/x/memory.usage_in_bytes"), "garbage\n");
        write(&cg.join("memory/memory.usage_in_bytes"), "77\n");
        let m = Procfs::at(&proc, &cg).cgroup_memory();
        assert_eq!(
            m,
            CgroupMemory {
                limit: Some(2048),
                usage: Some(77)
            }
        );

        // Path escapes and an absent cgroup file mean "no cgroup", never a panic.
        write(&proc.join("self/cgroup"), "0::/../../etc\n");
        assert_eq!(
            Procfs::at(&proc, &cg).cgroup_memory(),
            CgroupMemory::default()
        );
        let empty = dir.path().join("nothing");
        assert_eq!(
            Procfs::at(&empty, &empty).cgroup_memory(),
            CgroupMemory::default()
        );
    }

    #[test]
    fn real_process() {
        let procfs = Procfs::system();
        let statm = procfs.statm().unwrap();
        assert!(statm.resident_bytes > 0);
        assert!(procfs.meminfo().unwrap().total_bytes > 0);
        assert!(procfs.threads().unwrap() >= 1);
        assert!(procfs.open_fds().unwrap() >= 3);
        let _ = procfs.cgroup_memory();
    }

    #[test]
    fn missing_files_are_errors_not_panics() {
        let dir = tempfile::tempdir().unwrap();
        let procfs = Procfs::at(dir.path(), dir.path());
        assert!(matches!(procfs.statm(), Err(Error::Read { .. })));
        assert!(matches!(procfs.meminfo(), Err(Error::Read { .. })));
        assert_eq!(procfs.threads(), None);
        assert_eq!(procfs.open_fds(), None);
        write(&dir.path().join("meminfo"), "nonsense");
        assert!(matches!(procfs.meminfo(), Err(Error::Parse { .. })));
    }
}
