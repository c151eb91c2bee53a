//! The target's process: its PID (found by the port it listens on) and its memory.
//!
//! The Go heap profile only knows what the Go runtime allocated; to explain the rest of
//! the resident set the exporter reads the kernel's view of the target from `/proc`.
//! Nothing needs configuring: the PID is found from the TCP port the target serves
//! pprof on (the same port the exporter scrapes), by matching the listening socket's
//! inode in `/proc/net/tcp{,6}` against the `socket:[INODE]` links in `/proc/*/fd`.
//! A fixed PID or a pid file can override that ([`PidSource`]).
//!
//! Reading is kept apart from parsing: [`parse_status`], [`parse_smaps_rollup`],
//! [`parse_start_ticks`], [`listening_inodes`], [`socket_inode`] and [`parse_pid`]
//! are pure and table-tested; [`resolve_pid`], [`read_stats`] and [`ProcessWatcher`]
//! do the file I/O. Every function takes the proc root (normally `/proc`) so that
//! tests can point it at a fake tree.
//!
//! In Kubernetes the sidecar sees the target's process only when the pod sets
//! `shareProcessNamespace: true`, and sees its open files only when both run as the
//! same user or the exporter has `CAP_SYS_PTRACE`. `/proc/net/tcp` shows the sockets of
//! the reader's network namespace, which a sidecar shares with the target anyway.

use std::collections::HashSet;
use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use thiserror::Error;

use crate::aggregate::{Family, Kind};

/// Where the target's PID comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PidSource {
    /// The process holding the socket that listens on this TCP port (any address,
    /// IPv4 or IPv6).
    Port(u16),
    /// A fixed PID.
    Pid(u32),
    /// A file holding the PID as decimal text, re-read whenever the PID is resolved.
    PidFile(PathBuf),
}

/// Why the target's process could not be found or read.
#[derive(Debug, Error)]
pub enum ProcessError {
    /// No socket in the LISTEN state uses the port.
    #[error("no socket is listening on TCP port {port}")]
    NoListener {
        /// The port looked for.
        port: u16,
    },
    /// A socket listens on the port, but no process in our view of `/proc` holds it:
    /// the target runs in another PID namespace, or `/proc` hides other users'
    /// processes (`hidepid`).
    #[error(
        "a socket listens on TCP port {port} but no visible process holds it; \
         share the process namespace with the target (shareProcessNamespace: true)"
    )]
    ListenerHidden {
        /// The port looked for.
        port: u16,
    },
    /// A socket listens on the port, it was not found among the processes whose open
    /// files could be read, and some processes' open files could not be read.
    #[error(
        "a socket listens on TCP port {port} but the open files of {denied} process(es) \
         could not be read; run as the target's user or grant CAP_SYS_PTRACE"
    )]
    FdsDenied {
        /// The port looked for.
        port: u16,
        /// How many processes refused the listing of their open files.
        denied: usize,
    },
    /// The process does not exist, or has exited and waits to be reaped.
    #[error("process {pid} does not exist or has exited")]
    NoProcess {
        /// The PID looked for.
        pid: u32,
    },
    /// The pid file does not exist (yet).
    #[error("pid file {} does not exist", path.display())]
    PidFileMissing {
        /// The pid file.
        path: PathBuf,
    },
    /// The pid file holds something other than one positive decimal number.
    #[error("pid file {} does not hold a process id", path.display())]
    BadPidFile {
        /// The pid file.
        path: PathBuf,
    },
    /// Any other failure to read a file or list a directory.
    #[error("reading {}: {source}", path.display())]
    Io {
        /// What was being read.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: io::Error,
    },
}

impl ProcessError {
    /// A short, stable label value for an error counter: `not_found` (no listener, no
    /// such process, no pid file), `not_visible` (the listener's process is outside our
    /// view of `/proc`), `permission` (open files or a `/proc` file not readable),
    /// `pid_file` (bad pid file contents) or `io`.
    pub fn reason(&self) -> &'static str {
        match self {
            ProcessError::NoListener { .. }
            | ProcessError::NoProcess { .. }
            | ProcessError::PidFileMissing { .. } => "not_found",
            ProcessError::ListenerHidden { .. } => "not_visible",
            ProcessError::FdsDenied { .. } => "permission",
            ProcessError::BadPidFile { .. } => "pid_file",
            ProcessError::Io { source, .. } if source.kind() == io::ErrorKind::PermissionDenied => {
                "permission"
            }
            ProcessError::Io { .. } => "io",
        }
    }
}

/// The fields of `/proc/<pid>/status` the exporter uses; `None` when absent or
/// malformed. Sizes are in bytes (the kernel writes KiB and calls them `kB`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ProcStatus {
    /// First letter of `State` (`R`, `S`, `Z`, ...).
    pub state: Option<char>,
    /// `VmRSS`: resident set size.
    pub vm_rss: Option<u64>,
    /// `RssAnon`: resident anonymous memory (the Go heap, stacks, cgo allocations).
    pub rss_anon: Option<u64>,
    /// `RssFile`: resident file-backed memory (mostly the mapped executable).
    pub rss_file: Option<u64>,
    /// `RssShmem`: resident shared memory.
    pub rss_shmem: Option<u64>,
    /// `VmHWM`: the highest resident set size seen.
    pub vm_hwm: Option<u64>,
    /// `VmSize`: virtual memory size.
    pub vm_size: Option<u64>,
    /// `Threads`: number of OS threads.
    pub threads: Option<u64>,
}

/// The fields of `/proc/<pid>/smaps_rollup` the exporter uses, in bytes; `None` when
/// absent, malformed or not readable.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SmapsRollup {
    /// `Rss`: resident set size summed over all mappings.
    pub rss: Option<u64>,
    /// `Pss`: resident memory with each shared page divided among its sharers.
    pub pss: Option<u64>,
    /// `Anonymous`: resident anonymous memory.
    pub anonymous: Option<u64>,
    /// `Swap`: memory swapped out.
    pub swap: Option<u64>,
}

/// One reading of the target's process.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProcessStats {
    /// The PID read.
    pub pid: u32,
    /// Start time in clock ticks after boot (`/proc/<pid>/stat` field 22); with the
    /// PID it identifies a process, since PIDs are reused.
    pub start_ticks: Option<u64>,
    /// From `/proc/<pid>/status`.
    pub status: ProcStatus,
    /// From `/proc/<pid>/smaps_rollup`; all `None` when that file was not readable
    /// (it needs the same access as the open-file listing, and Linux 4.14 or later).
    pub rollup: SmapsRollup,
    /// Entries in `/proc/<pid>/fd`; `None` when not readable.
    pub open_fds: Option<u64>,
}

/// The process found behind a listening port.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Listener {
    /// The lowest PID holding the socket.
    pub pid: u32,
    /// Other processes holding the same listening socket (inherited across `fork`, or
    /// several sockets on the port with `SO_REUSEPORT`), ascending. Non-empty means
    /// the choice of [`Listener::pid`] was a guess worth logging.
    pub sharers: Vec<u32>,
}

/// Parses `/proc/<pid>/status`. Unknown, missing and malformed fields are skipped, so
/// a kernel that adds or drops a field costs only that field.
pub fn parse_status(text: &str) -> ProcStatus {
    let mut s = ProcStatus::default();
    for (key, value) in fields(text) {
        match key {
            "State" => s.state = value.trim().chars().next(),
            "VmRSS" => s.vm_rss = kib(value),
            "RssAnon" => s.rss_anon = kib(value),
            "RssFile" => s.rss_file = kib(value),
            "RssShmem" => s.rss_shmem = kib(value),
            "VmHWM" => s.vm_hwm = kib(value),
            "VmSize" => s.vm_size = kib(value),
            "Threads" => s.threads = value.trim().parse().ok(),
            _ => {}
        }
    }
    s
}

/// Parses `/proc/<pid>/smaps_rollup`. Its first line names the address range and has
/// no colon-separated value, so it is skipped like any other malformed line.
pub fn parse_smaps_rollup(text: &str) -> SmapsRollup {
    let mut r = SmapsRollup::default();
    for (key, value) in fields(text) {
        match key {
            "Rss" => r.rss = kib(value),
            "Pss" => r.pss = kib(value),
            "Anonymous" => r.anonymous = kib(value),
            "Swap" => r.swap = kib(value),
            _ => {}
        }
    }
    r
}

/// `Key: value` pairs of a `/proc` key-value file.
fn fields(text: &str) -> impl Iterator<Item = (&str, &str)> {
    text.lines().filter_map(|line| {
        let (key, value) = line.split_once(':')?;
        // A key never contains spaces; this rejects the rollup's address-range line,
        // whose first colon sits inside "00:00".
        (!key.is_empty() && !key.contains(char::is_whitespace)).then_some((key, value))
    })
}

/// `"   8136 kB"` as bytes. Any other unit or shape is refused rather than guessed.
fn kib(value: &str) -> Option<u64> {
    let mut words = value.split_whitespace();
    let n: u64 = words.next()?.parse().ok()?;
    match (words.next(), words.next()) {
        (Some("kB"), None) => n.checked_mul(1024),
        _ => None,
    }
}

/// The process start time (field 22 of `/proc/<pid>/stat`, in clock ticks after
/// boot). The command name in field 2 may hold spaces and parentheses, so fields are
/// counted from the last `)`.
pub fn parse_start_ticks(stat: &str) -> Option<u64> {
    let (_, rest) = stat.rsplit_once(')')?;
    // After the name come field 3 (state) onwards, so field 22 is the 20th word.
    rest.split_whitespace().nth(19)?.parse().ok()
}

/// Socket inodes of the rows of a `/proc/net/tcp` or `/proc/net/tcp6` table that are
/// in the LISTEN state (`0A`) on `port`, whatever their local address (a wildcard, a
/// specific address, or an IPv4-mapped IPv6 address). Rows of other states on the same
/// port (accepted connections, TIME_WAIT) are left out, as are the header and
/// malformed rows. Inode 0 (a socket no longer owned by any file) is left out too.
pub fn listening_inodes(text: &str, port: u16) -> Vec<u64> {
    let mut inodes = Vec::new();
    for line in text.lines() {
        let cols: Vec<&str> = line.split_whitespace().collect();
        // sl, local_address, rem_address, st, tx:rx queue, tr:when, retrnsmt, uid,
        // timeout, inode, ...
        let [_, local, _, state, _, _, _, _, _, inode, ..] = cols[..] else {
            continue;
        };
        if state != "0A" {
            continue;
        }
        let Some((addr, hex_port)) = local.split_once(':') else {
            continue;
        };
        // 8 hex digits for IPv4, 32 for IPv6; anything else is not a socket row.
        if !matches!(addr.len(), 8 | 32) || !addr.bytes().all(|b| b.is_ascii_hexdigit()) {
            continue;
        }
        if u16::from_str_radix(hex_port, 16).ok() != Some(port) {
            continue;
        }
        match inode.parse::<u64>() {
            Ok(0) | Err(_) => {}
            Ok(n) if !inodes.contains(&n) => inodes.push(n),
            Ok(_) => {}
        }
    }
    inodes
}

/// The inode of an `fd` link target such as `socket:[24987]`; `None` for files,
/// pipes and anything else.
pub fn socket_inode(link: &str) -> Option<u64> {
    link.strip_prefix("socket:[")?
        .strip_suffix(']')?
        .parse()
        .ok()
}

/// A pid file's contents: one positive decimal number, optionally surrounded by
/// whitespace (usually a trailing newline).
pub fn parse_pid(text: &str) -> Option<u32> {
    let pid: u32 = text.trim().parse().ok()?;
    (pid > 0).then_some(pid)
}

/// Resolves `source` to a PID that exists under `proc_root`. For a port, when several
/// processes hold the listening socket, the lowest PID wins (see [`find_listener`]).
pub fn resolve_pid(proc_root: &Path, source: &PidSource) -> Result<u32, ProcessError> {
    resolve(proc_root, source).map(|l| l.pid)
}

/// Like [`resolve_pid`], keeping the other candidates of a port lookup.
fn resolve(proc_root: &Path, source: &PidSource) -> Result<Listener, ProcessError> {
    let pid = match source {
        PidSource::Port(port) => return find_listener(proc_root, *port),
        PidSource::Pid(pid) => *pid,
        PidSource::PidFile(path) => read_pid_file(path)?,
    };
    if !proc_root.join(pid.to_string()).is_dir() {
        return Err(ProcessError::NoProcess { pid });
    }
    Ok(Listener {
        pid,
        sharers: Vec::new(),
    })
}

fn read_pid_file(path: &Path) -> Result<u32, ProcessError> {
    let text = fs::read_to_string(path).map_err(|source| match source.kind() {
        io::ErrorKind::NotFound => ProcessError::PidFileMissing {
            path: path.to_owned(),
        },
        _ => ProcessError::Io {
            path: path.to_owned(),
            source,
        },
    })?;
    parse_pid(&text).ok_or_else(|| ProcessError::BadPidFile {
        path: path.to_owned(),
    })
}

/// Finds the process listening on TCP `port`: reads the LISTEN rows of
/// `net/tcp` and `net/tcp6` under `proc_root`, then looks for their inodes among the
/// open files of every process, except the reader itself (`proc_root/self`).
///
/// Several holders are not an error: a socket inherited across `fork` is held by
/// parent and child alike, and the lowest PID is usually the parent that opened it
/// (not always, since PIDs wrap around). The others are returned in [`Listener::sharers`] for the caller to report.
///
/// Errors: [`ProcessError::NoListener`] when no socket listens on the port, or when
/// the only processes that might hold it are exiting (a killed target's socket
/// outlives its main thread by a moment);
/// [`ProcessError::FdsDenied`] when one does, no readable process holds it and some
/// processes' open files were unreadable; [`ProcessError::ListenerHidden`] when one
/// does and every visible process was checked; [`ProcessError::Io`] when neither
/// table nor the process list can be read.
pub fn find_listener(proc_root: &Path, port: u16) -> Result<Listener, ProcessError> {
    let mut inodes = Vec::new();
    let mut tables_read = 0;
    let mut first_error = None;
    for table in ["net/tcp", "net/tcp6"] {
        let path = proc_root.join(table);
        match fs::read_to_string(&path) {
            Ok(text) => {
                tables_read += 1;
                inodes.extend(listening_inodes(&text, port));
            }
            // A kernel without IPv6 has no tcp6 table; that alone is not a failure.
            Err(source) if source.kind() == io::ErrorKind::NotFound => {
                first_error.get_or_insert(ProcessError::Io { path, source });
            }
            Err(source) => return Err(ProcessError::Io { path, source }),
        }
    }
    if tables_read == 0 {
        if let Some(e) = first_error {
            return Err(e);
        }
    }
    if inodes.is_empty() {
        return Err(ProcessError::NoListener { port });
    }
    let scan = scan_holders(proc_root, &inodes)?;
    choose_holder(port, scan)
}

/// What a walk over `/proc/*/fd` found.
#[derive(Debug, Default)]
struct Scan {
    /// Processes holding one of the wanted sockets.
    holders: Vec<u32>,
    /// Live processes whose open files could not be read.
    denied: usize,
    /// Processes whose open files could not be read because they are exiting.
    exiting: usize,
}

fn scan_holders(proc_root: &Path, inodes: &[u64]) -> Result<Scan, ProcessError> {
    let wanted: HashSet<u64> = inodes.iter().copied().collect();
    // `self` is the reader as this proc mount numbers it, which is what matters when
    // the exporter runs in its own PID namespace.
    let own = fs::read_link(proc_root.join("self"))
        .ok()
        .and_then(|p| p.to_str().and_then(|s| s.parse::<u32>().ok()));
    let entries = fs::read_dir(proc_root).map_err(|source| ProcessError::Io {
        path: proc_root.to_owned(),
        source,
    })?;
    let mut scan = Scan::default();
    for entry in entries.flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|n| n.parse::<u32>().ok())
        else {
            continue;
        };
        if Some(pid) == own {
            continue;
        }
        match holds_socket(&entry.path().join("fd"), &wanted) {
            Ok(true) => scan.holders.push(pid),
            Ok(false) => {}
            // A process whose main thread has exited refuses its `fd` listing while
            // its other threads still hold the descriptors, and so the listening
            // socket: a target being killed, not one we may not see.
            Err(e) if e.kind() == io::ErrorKind::PermissionDenied => {
                if is_exiting(&entry.path()) {
                    scan.exiting += 1;
                } else {
                    scan.denied += 1;
                }
            }
            // Processes come and go during the walk; one that vanished holds nothing.
            Err(_) => {}
        }
    }
    Ok(scan)
}

/// True when one of the links in the `fd` directory points at a wanted socket.
fn holds_socket(fd_dir: &Path, wanted: &HashSet<u64>) -> io::Result<bool> {
    for entry in fs::read_dir(fd_dir)? {
        let Ok(entry) = entry else { continue };
        // A descriptor closed since the listing fails with NotFound; skip it.
        let link = match fs::read_link(entry.path()) {
            Ok(link) => link,
            Err(e) if e.kind() == io::ErrorKind::PermissionDenied => return Err(e),
            Err(_) => continue,
        };
        if link
            .to_str()
            .and_then(socket_inode)
            .is_some_and(|i| wanted.contains(&i))
        {
            return Ok(true);
        }
    }
    Ok(false)
}

/// True when the process in `dir` is a zombie or already gone.
fn is_exiting(dir: &Path) -> bool {
    match fs::read_to_string(dir.join("status")) {
        Ok(text) => matches!(parse_status(&text).state, Some('Z' | 'X')),
        Err(_) => true,
    }
}

/// Turns the result of a walk into a PID or the error that best explains its absence.
/// A listener whose only candidate holders are exiting is reported as not found: its
/// socket goes with them.
fn choose_holder(port: u16, scan: Scan) -> Result<Listener, ProcessError> {
    let mut holders = scan.holders;
    holders.sort_unstable();
    holders.dedup();
    match holders.split_first() {
        Some((&pid, rest)) => Ok(Listener {
            pid,
            sharers: rest.to_vec(),
        }),
        None if scan.denied > 0 => Err(ProcessError::FdsDenied {
            port,
            denied: scan.denied,
        }),
        None if scan.exiting > 0 => Err(ProcessError::NoListener { port }),
        None => Err(ProcessError::ListenerHidden { port }),
    }
}

/// Reads one sample of process `pid` under `proc_root`. Only `status` is required;
/// `stat`, `smaps_rollup` and the `fd` listing fill in what they can.
///
/// A zombie (exited, not yet reaped) counts as gone: its `status` has no memory
/// fields, and the target it stood for will not come back under that PID.
pub fn read_stats(proc_root: &Path, pid: u32) -> Result<ProcessStats, ProcessError> {
    let mut stats = read_without_rollup(proc_root, pid)?;
    stats.rollup = read_rollup(proc_root, pid);
    Ok(stats)
}

/// [`read_stats`] without `smaps_rollup`, whose fields are left `None`.
fn read_without_rollup(proc_root: &Path, pid: u32) -> Result<ProcessStats, ProcessError> {
    let dir = proc_root.join(pid.to_string());
    let path = dir.join("status");
    let text = fs::read_to_string(&path).map_err(|source| {
        // ESRCH: the process exited between opening and reading its file.
        const ESRCH: i32 = 3;
        if source.kind() == io::ErrorKind::NotFound || source.raw_os_error() == Some(ESRCH) {
            ProcessError::NoProcess { pid }
        } else {
            ProcessError::Io { path, source }
        }
    })?;
    let status = parse_status(&text);
    if matches!(status.state, Some('Z' | 'X')) {
        return Err(ProcessError::NoProcess { pid });
    }
    let start_ticks = fs::read_to_string(dir.join("stat"))
        .ok()
        .and_then(|t| parse_start_ticks(&t));
    let open_fds = fs::read_dir(dir.join("fd"))
        .ok()
        .map(|d| d.filter(Result::is_ok).count() as u64);
    Ok(ProcessStats {
        pid,
        start_ticks,
        status,
        rollup: SmapsRollup::default(),
        open_fds,
    })
}

/// Reads `/proc/<pid>/smaps_rollup`; all fields `None` when it is not readable.
///
/// The kernel walks every page table entry of the process to produce it, so its cost
/// grows with the target's resident memory: about 0.8 ms for a Go program with 60 MB
/// resident on a 2-core VM, tens of milliseconds for gigabytes.
pub fn read_rollup(proc_root: &Path, pid: u32) -> SmapsRollup {
    fs::read_to_string(proc_root.join(pid.to_string()).join("smaps_rollup"))
        .map(|t| parse_smaps_rollup(&t))
        .unwrap_or_default()
}

/// Samples the target's process on every scrape, resolving its PID as seldom as
/// possible.
///
/// A port lookup walks every process's open files, so its result is kept and reused
/// while that process lives; it is looked up again when the process is gone, when a
/// read fails, or when the PID now belongs to a different process (its start time
/// changed), which covers a target restarted under a new PID. A process that stays
/// alive but stops listening is not noticed. A fixed PID costs nothing to resolve and
/// a pid file one small read, so those are resolved on every sample and a rewritten
/// pid file takes effect at once.
///
/// Callers that want to log a change compare [`ProcessWatcher::pid`] before and after
/// [`ProcessWatcher::sample`].
///
/// `/proc/<pid>/status` is read on every sample; `smaps_rollup` (PSS, swap), whose
/// cost grows with the target's memory (see [`read_rollup`]), only every
/// [`ProcessWatcher::with_rollup_every`], and in between the last reading of the same
/// process is repeated.
#[derive(Debug)]
pub struct ProcessWatcher {
    proc_root: PathBuf,
    source: PidSource,
    rollup_every: Option<Duration>,
    tracked: Option<Tracked>,
    rollup: Option<RollupReading>,
}

/// The process the last successful sample read.
#[derive(Debug)]
struct Tracked {
    pid: u32,
    start_ticks: Option<u64>,
    sharers: Vec<u32>,
}

/// The last `smaps_rollup` reading: of which process (PID and start time), and when.
#[derive(Debug)]
struct RollupReading {
    pid: u32,
    start_ticks: Option<u64>,
    at: Instant,
    rollup: SmapsRollup,
}

impl ProcessWatcher {
    /// A watcher that has not resolved anything yet and reads `smaps_rollup` on every
    /// sample.
    pub fn new(proc_root: PathBuf, source: PidSource) -> Self {
        Self {
            proc_root,
            source,
            rollup_every: Some(Duration::ZERO),
            tracked: None,
            rollup: None,
        }
    }

    /// Reads `smaps_rollup` at most once per `every` (`None`: never, so PSS and swap
    /// are not reported).
    pub fn with_rollup_every(mut self, every: Option<Duration>) -> Self {
        self.rollup_every = every;
        self
    }

    /// Where the PID comes from.
    pub fn source(&self) -> &PidSource {
        &self.source
    }

    /// The PID of the last successful sample; `None` before the first one and after a
    /// failed one.
    pub fn pid(&self) -> Option<u32> {
        self.tracked.as_ref().map(|t| t.pid)
    }

    /// Other processes that held the target's listening socket when the PID was last
    /// resolved (see [`Listener::sharers`]).
    pub fn sharers(&self) -> &[u32] {
        self.tracked.as_ref().map_or(&[], |t| &t.sharers)
    }

    /// Reads the target's process, resolving its PID first when needed.
    pub fn sample(&mut self) -> Result<ProcessStats, ProcessError> {
        let mut stats = match self.sample_tracked() {
            Some(stats) => stats,
            None => {
                self.tracked = None;
                let found = resolve(&self.proc_root, &self.source)?;
                let stats = read_without_rollup(&self.proc_root, found.pid)?;
                self.tracked = Some(Tracked {
                    pid: found.pid,
                    start_ticks: stats.start_ticks,
                    sharers: found.sharers,
                });
                stats
            }
        };
        stats.rollup = self.rollup_for(&stats);
        Ok(stats)
    }

    /// A sample of the remembered process, if there is one worth trusting.
    fn sample_tracked(&self) -> Option<ProcessStats> {
        if !matches!(self.source, PidSource::Port(_)) {
            return None;
        }
        let tracked = self.tracked.as_ref()?;
        let stats = read_without_rollup(&self.proc_root, tracked.pid).ok()?;
        (stats.start_ticks == tracked.start_ticks).then_some(stats)
    }

    /// The `smaps_rollup` of the process `stats` read: the last reading when it is of
    /// the same process (PID and start time) and younger than the rollup interval,
    /// else a new one.
    fn rollup_for(&mut self, stats: &ProcessStats) -> SmapsRollup {
        let Some(every) = self.rollup_every else {
            return SmapsRollup::default();
        };
        let now = Instant::now();
        if let Some(last) = &self.rollup {
            if last.pid == stats.pid
                && last.start_ticks == stats.start_ticks
                && now.duration_since(last.at) < every
            {
                return last.rollup.clone();
            }
        }
        let rollup = read_rollup(&self.proc_root, stats.pid);
        self.rollup = Some(RollupReading {
            pid: stats.pid,
            start_ticks: stats.start_ticks,
            at: now,
            rollup: rollup.clone(),
        });
        rollup
    }
}

/// The `pprof_process_*` families for one sample, without the `target` label. A
/// family whose value was not read is left out rather than reported as 0.
///
/// The PID is the value of `pprof_process_id`, not a label: a label would start a new
/// series at every restart of the target, while a value keeps one series and still
/// shows restarts (`changes(pprof_process_id[1h])`).
pub fn process_families(stats: &ProcessStats) -> Vec<Family> {
    let s = &stats.status;
    let r = &stats.rollup;
    let rows: [(&'static str, &'static str, Option<u64>); 11] = [
        (
            "pprof_process_resident_memory_bytes",
            "Resident set size of the target process (VmRSS in /proc/<pid>/status).",
            s.vm_rss,
        ),
        (
            "pprof_process_resident_memory_anon_bytes",
            "Resident anonymous memory of the target process: Go heap, stacks and cgo allocations (RssAnon in /proc/<pid>/status).",
            s.rss_anon,
        ),
        (
            "pprof_process_resident_memory_file_bytes",
            "Resident file-backed memory of the target process, mostly its executable (RssFile in /proc/<pid>/status).",
            s.rss_file,
        ),
        (
            "pprof_process_resident_memory_shmem_bytes",
            "Resident shared memory of the target process (RssShmem in /proc/<pid>/status).",
            s.rss_shmem,
        ),
        (
            "pprof_process_resident_memory_max_bytes",
            "Highest resident set size of the target process since it started (VmHWM in /proc/<pid>/status).",
            s.vm_hwm,
        ),
        (
            "pprof_process_virtual_memory_bytes",
            "Virtual memory size of the target process; large for Go programs and rarely meaningful alone (VmSize in /proc/<pid>/status).",
            s.vm_size,
        ),
        (
            "pprof_process_proportional_memory_bytes",
            "Proportional set size of the target process: resident memory with shared pages split among their sharers (Pss in /proc/<pid>/smaps_rollup; absent when not readable).",
            r.pss,
        ),
        (
            "pprof_process_swap_bytes",
            "Memory of the target process swapped out (Swap in /proc/<pid>/smaps_rollup; absent when not readable).",
            r.swap,
        ),
        (
            "pprof_process_threads",
            "OS threads of the target process (Threads in /proc/<pid>/status).",
            s.threads,
        ),
        (
            "pprof_process_open_fds",
            "Open file descriptors of the target process (entries in /proc/<pid>/fd; absent when not readable).",
            stats.open_fds,
        ),
        (
            "pprof_process_id",
            "PID of the target process as found by the exporter; a change means the target restarted.",
            Some(u64::from(stats.pid)),
        ),
    ];
    rows.into_iter()
        .filter_map(|(name, help, value)| {
            let value = value?;
            let mut family = Family::new(name, Kind::Gauge, help);
            family.push(Vec::new(), value as f64);
            Some(family)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    const STATUS: &str = include_str!("../tests/fixtures/proc/13839/status");
    const ROLLUP: &str = include_str!("../tests/fixtures/proc/13839/smaps_rollup");
    const STAT: &str = include_str!("../tests/fixtures/proc/13839/stat");
    const TCP: &str = include_str!("../tests/fixtures/proc/net/tcp");
    const TCP6: &str = include_str!("../tests/fixtures/proc/net/tcp6");

    const KIB: u64 = 1024;

    #[test]
    fn status_fields() {
        let captured = ProcStatus {
            state: Some('S'),
            vm_rss: Some(8136 * KIB),
            rss_anon: Some(1584 * KIB),
            rss_file: Some(6552 * KIB),
            rss_shmem: Some(0),
            vm_hwm: Some(8136 * KIB),
            vm_size: Some(1_562_416 * KIB),
            threads: Some(5),
        };
        let cases: &[(&str, &str, ProcStatus)] = &[
            ("captured from a Go program", STATUS, captured),
            ("empty", "", ProcStatus::default()),
            (
                // A kernel thread: no memory fields at all.
                "kernel thread",
                "Name:\tkthreadd\nState:\tS (sleeping)\nThreads:\t1\n",
                ProcStatus {
                    state: Some('S'),
                    threads: Some(1),
                    ..ProcStatus::default()
                },
            ),
            (
                "zombie",
                "Name:\tleaky\nState:\tZ (zombie)\nThreads:\t1\n",
                ProcStatus {
                    state: Some('Z'),
                    threads: Some(1),
                    ..ProcStatus::default()
                },
            ),
            (
                "malformed values are skipped, good ones kept",
                "VmRSS:\tlots kB\nRssAnon:\t12 MB\nRssFile:\t7\nRssShmem:\t1 kB extra\n\
                 VmHWM 99 kB\nVmSize:\t  2048 kB\nThreads:\tfive\n",
                ProcStatus {
                    vm_size: Some(2048 * KIB),
                    ..ProcStatus::default()
                },
            ),
            (
                "overflowing kB value",
                "VmRSS:\t18446744073709551615 kB\n",
                ProcStatus::default(),
            ),
            (
                "no trailing newline",
                "VmRSS:\t4 kB",
                ProcStatus {
                    vm_rss: Some(4 * KIB),
                    ..ProcStatus::default()
                },
            ),
            (
                "CRLF and a name field with a colon in the value",
                "Name:\ta:b\r\nVmRSS:\t  10 kB\r\n",
                ProcStatus {
                    vm_rss: Some(10 * KIB),
                    ..ProcStatus::default()
                },
            ),
        ];
        for (name, text, want) in cases {
            assert_eq!(&parse_status(text), want, "{name}");
        }
    }

    #[test]
    fn smaps_rollup_fields() {
        let cases: &[(&str, &str, SmapsRollup)] = &[
            (
                "captured from a Go program",
                ROLLUP,
                SmapsRollup {
                    rss: Some(8136 * KIB),
                    pss: Some(4207 * KIB),
                    anonymous: Some(1584 * KIB),
                    swap: Some(0),
                },
            ),
            (
                // SwapPss and Pss_Anon must not be taken for Swap and Pss.
                "only the prefixed variants",
                "00400000-7ffd0000 ---p 00000000 00:00 0    [rollup]\nPss_Anon:  5 kB\nSwapPss:  6 kB\n",
                SmapsRollup::default(),
            ),
            (
                "swapped out",
                "Rss:  100 kB\nPss:  80 kB\nSwap:  2048 kB\n",
                SmapsRollup {
                    rss: Some(100 * KIB),
                    pss: Some(80 * KIB),
                    anonymous: None,
                    swap: Some(2048 * KIB),
                },
            ),
            ("empty (kernel thread)", "", SmapsRollup::default()),
        ];
        for (name, text, want) in cases {
            assert_eq!(&parse_smaps_rollup(text), want, "{name}");
        }
    }

    #[test]
    fn start_ticks() {
        let cases: &[(&str, &str, Option<u64>)] = &[
            ("captured", STAT, Some(84152)),
            (
                "name with spaces and parentheses",
                "77 (a) b (c)) S 1 77 77 0 -1 4194560 0 0 0 0 0 0 0 0 20 0 1 0 12345 0 0",
                Some(12345),
            ),
            ("truncated", "77 (x) S 1 77 77", None),
            ("no name", "77 x S 1", None),
            ("empty", "", None),
        ];
        for (name, text, want) in cases {
            assert_eq!(parse_start_ticks(text), *want, "{name}");
        }
    }

    #[test]
    fn listening_inode_rows() {
        let cases: &[(&str, &str, u16, &[u64])] = &[
            ("v4 loopback listener", TCP, 35011, &[24987]),
            ("v4 wildcard listener", TCP, 2024, &[1060]),
            // Port 0xB259 also appears as the remote port of TIME_WAIT rows.
            ("listener among TIME_WAIT rows", TCP, 45657, &[23107]),
            // Local port 0xBBC8 exists only as a TIME_WAIT row, with inode 0.
            ("TIME_WAIT only", TCP, 48072, &[]),
            ("no such port", TCP, 80, &[]),
            (
                "header only",
                "  sl  local_address rem_address   st\n",
                35011,
                &[],
            ),
            // The LISTEN row on 0x8EDD is kept, the TIME_WAIT row on it is not.
            ("v6 wildcard listener", TCP6, 36573, &[26361]),
            ("v6 loopback listener", TCP6, 39409, &[25002]),
            ("IPv4-mapped v6 listener", TCP6, 34277, &[25001]),
            (
                "established row on a listening port",
                "   0: 0100007F:1F90 00000000:0000 0A 00000000:00000000 00:00000000 00000000  1000        0 501 1 0 100 0 0 10 0\n\
                 1: 0100007F:1F90 0100007F:C350 01 00000000:00000000 00:00000000 00000000  1000        0 502 1 0 20 4 30 10 -1\n",
                8080,
                &[501],
            ),
            (
                "two sockets on one port (SO_REUSEPORT), one repeated",
                "   0: 00000000:1F90 00000000:0000 0A 0:0 00:0 0 0 0 601 1\n\
                 1: 00000000:1F90 00000000:0000 0A 0:0 00:0 0 0 0 602 1\n\
                 2: 00000000:1F90 00000000:0000 0A 0:0 00:0 0 0 0 601 1\n",
                8080,
                &[601, 602],
            ),
            (
                "malformed rows",
                "garbage\n\
                 0: 0100007F1F90 00000000:0000 0A 0:0 00:0 0 0 0 701 1\n\
                 1: 0100007F:1F90 00000000:0000 0A 0:0 00:0 0 0 0 x 1\n\
                 2: 0100007F:1F90 00000000:0000 0A 0:0 00:0 0 0\n\
                 3: 0100007F:XYZ0 00000000:0000 0A 0:0 00:0 0 0 0 702 1\n\
                 4: 7F:1F90 00000000:0000 0A 0:0 00:0 0 0 0 703 1\n\
                 5: 0100007G:1F90 00000000:0000 0A 0:0 00:0 0 0 0 704 1\n\
                 6: 0100007F:11F90 00000000:0000 0A 0:0 00:0 0 0 0 705 1\n\
                 7: 0100007F:1F90 00000000:0000 0A 0:0 00:0 0 0 0 706 1\n",
                8080,
                &[706],
            ),
        ];
        for (name, text, port, want) in cases {
            assert_eq!(listening_inodes(text, *port), *want, "{name}");
        }
    }

    #[test]
    fn socket_links() {
        let cases: &[(&str, Option<u64>)] = &[
            ("socket:[24987]", Some(24987)),
            ("socket:[]", None),
            ("socket:[12", None),
            ("pipe:[26308]", None),
            ("anon_inode:[eventpoll]", None),
            ("/tmp/socket:[1]", None),
            ("/dev/null", None),
        ];
        for (link, want) in cases {
            assert_eq!(socket_inode(link), *want, "{link}");
        }
    }

    #[test]
    fn pid_file_contents() {
        let cases: &[(&str, Option<u32>)] = &[
            ("4242\n", Some(4242)),
            ("  17  ", Some(17)),
            ("0\n", None),
            ("-5", None),
            ("", None),
            ("12 13", None),
            ("4294967296", None),
            ("pid=12", None),
        ];
        for (text, want) in cases {
            assert_eq!(parse_pid(text), *want, "{text:?}");
        }
    }

    #[test]
    fn holder_choice() {
        // The chosen PID and its sharers, or the error's reason.
        type Want = Result<(u32, &'static [u32]), &'static str>;
        // (name, holders, denied, exiting, want)
        let cases: &[(&str, &[u32], usize, usize, Want)] = &[
            ("one holder", &[300], 0, 0, Ok((300, &[]))),
            (
                "fork: parent and child, lowest wins",
                &[301, 300, 301],
                0,
                0,
                Ok((300, &[301])),
            ),
            (
                "found despite unreadable others",
                &[300],
                4,
                1,
                Ok((300, &[])),
            ),
            ("unreadable processes", &[], 2, 0, Err("permission")),
            ("unreadable and exiting", &[], 2, 1, Err("permission")),
            ("only an exiting process", &[], 0, 1, Err("not_found")),
            (
                "every process readable, none holds it",
                &[],
                0,
                0,
                Err("not_visible"),
            ),
        ];
        for (name, holders, denied, exiting, want) in cases {
            let scan = Scan {
                holders: holders.to_vec(),
                denied: *denied,
                exiting: *exiting,
            };
            let got = choose_holder(8080, scan);
            match (got, want) {
                (Ok(l), Ok((pid, sharers))) => {
                    assert_eq!((l.pid, l.sharers.as_slice()), (*pid, *sharers), "{name}")
                }
                (Err(e), Err(reason)) => assert_eq!(e.reason(), *reason, "{name}"),
                (got, want) => panic!("{name}: got {got:?}, want {want:?}"),
            }
        }
    }

    #[test]
    fn reasons() {
        let io = |kind| ProcessError::Io {
            path: PathBuf::from("/proc/1/status"),
            source: io::Error::from(kind),
        };
        let cases = [
            (ProcessError::NoListener { port: 1 }, "not_found"),
            (ProcessError::NoProcess { pid: 1 }, "not_found"),
            (
                ProcessError::PidFileMissing {
                    path: PathBuf::from("/run/x.pid"),
                },
                "not_found",
            ),
            (ProcessError::ListenerHidden { port: 1 }, "not_visible"),
            (ProcessError::FdsDenied { port: 1, denied: 1 }, "permission"),
            (io(io::ErrorKind::PermissionDenied), "permission"),
            (
                ProcessError::BadPidFile {
                    path: PathBuf::from("/run/x.pid"),
                },
                "pid_file",
            ),
            (io(io::ErrorKind::InvalidData), "io"),
        ];
        for (err, want) in cases {
            assert_eq!(err.reason(), want, "{err}");
        }
    }

    #[test]
    fn families_omit_unknown_values() {
        let full = ProcessStats {
            pid: 13839,
            start_ticks: Some(84152),
            status: parse_status(STATUS),
            rollup: parse_smaps_rollup(ROLLUP),
            open_fds: Some(8),
        };
        let names = |stats: &ProcessStats| -> Vec<(&'static str, f64)> {
            process_families(stats)
                .iter()
                .map(|f| {
                    assert_eq!(f.kind, Kind::Gauge, "{}", f.name);
                    assert_eq!(f.series.len(), 1, "{}", f.name);
                    assert!(f.series[0].labels.is_empty(), "{}", f.name);
                    (f.name, f.series[0].value)
                })
                .collect()
        };
        let got = names(&full);
        assert_eq!(got.len(), 11);
        assert!(got.contains(&("pprof_process_resident_memory_bytes", 8136.0 * 1024.0)));
        assert!(got.contains(&("pprof_process_proportional_memory_bytes", 4207.0 * 1024.0)));
        assert!(got.contains(&("pprof_process_threads", 5.0)));
        assert!(got.contains(&("pprof_process_open_fds", 8.0)));
        assert!(got.contains(&("pprof_process_id", 13839.0)));

        let sparse = ProcessStats {
            pid: 7,
            start_ticks: None,
            status: ProcStatus {
                vm_rss: Some(4096),
                ..ProcStatus::default()
            },
            rollup: SmapsRollup::default(),
            open_fds: None,
        };
        assert_eq!(
            names(&sparse),
            vec![
                ("pprof_process_resident_memory_bytes", 4096.0),
                ("pprof_process_id", 7.0)
            ]
        );
    }
}
