//! The `process` module against real processes (the leaky Go program, found by its
//! port) and against fake `/proc` trees built from captured files, for the cases a
//! real system will not produce on demand (pid files, sharers, a vanished target).

mod common;

use std::fs;
use std::net::TcpListener;
use std::path::{Path, PathBuf};

use common::*;
use pprof_exporter::process::{
    PidSource, ProcessError, ProcessWatcher, find_listener, listening_inodes, process_families,
    read_stats, resolve_pid,
};

const PROC: &str = "/proc";

/// VmRSS of `pid` in bytes, read straight from `/proc` without the module under test.
fn vm_rss_bytes(pid: u32) -> u64 {
    let status = fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let line = status.lines().find(|l| l.starts_with("VmRSS:")).unwrap();
    let kib: u64 = line.split_whitespace().nth(1).unwrap().parse().unwrap();
    kib * 1024
}

fn reason<T: std::fmt::Debug>(r: Result<T, ProcessError>) -> &'static str {
    match r {
        Ok(v) => panic!("expected an error, got {v:?}"),
        Err(e) => e.reason(),
    }
}

#[test]
fn finds_go_program_by_port_and_reads_its_memory() {
    let Some(t) = Leaky::start(Go::V127, &[]) else {
        return;
    };
    let pid = t.proc.pid();
    let root = Path::new(PROC);
    assert_eq!(resolve_pid(root, &PidSource::Port(t.port())).unwrap(), pid);

    let stats = read_stats(root, pid).unwrap();
    let ours = stats.status.vm_rss.unwrap();
    let theirs = vm_rss_bytes(pid);
    let diff = ours.abs_diff(theirs) as f64 / theirs as f64;
    eprintln!(
        "VmRSS via read_stats {ours} B, via /proc/{pid}/status {theirs} B ({:.2}%)",
        diff * 100.0
    );
    assert!(diff <= 0.10, "read_stats VmRSS {ours} vs {theirs}");

    // A Go program runs several OS threads and holds at least its listener open.
    assert!(stats.status.threads.unwrap() >= 2, "{stats:?}");
    assert!(stats.open_fds.unwrap() >= 4, "{stats:?}");
    assert!(stats.status.rss_anon.unwrap() > 0, "{stats:?}");
    // Running as root here, so smaps_rollup is readable.
    assert!(stats.rollup.pss.is_some(), "{stats:?}");

    let families = process_families(&stats);
    let value = |name: &str| {
        families
            .iter()
            .find(|f| f.name == name)
            .map(|f| f.series[0].value)
    };
    assert_eq!(
        value("pprof_process_resident_memory_bytes"),
        Some(ours as f64)
    );
    assert_eq!(value("pprof_process_id"), Some(f64::from(pid)));
    assert!(value("pprof_process_proportional_memory_bytes").is_some());
}

#[test]
fn finds_go_program_on_ipv6_loopback() {
    let Some(t) = Leaky::start(Go::V127, &["-addr", "[::1]:0"]) else {
        return;
    };
    let found = find_listener(Path::new(PROC), t.port()).unwrap();
    assert_eq!(found.pid, t.proc.pid());
    assert!(found.sharers.is_empty(), "{found:?}");
}

#[test]
fn watcher_follows_a_restart_on_the_same_port() {
    let Some(first) = Leaky::start(Go::V127, &[]) else {
        return;
    };
    let port = first.port();
    let mut w = ProcessWatcher::new(PathBuf::from(PROC), PidSource::Port(port));
    assert_eq!(w.pid(), None);
    w.sample().unwrap();
    assert_eq!(w.pid(), Some(first.proc.pid()));
    w.sample().unwrap();
    assert_eq!(w.pid(), Some(first.proc.pid()));

    // Killed but not yet reaped: the PID is a zombie with no listener. The main
    // thread turns into a zombie before the last of the others has closed the
    // socket, so both are waited for.
    let mut first = first;
    first.proc.child.kill().unwrap();
    wait_until(|| {
        let zombie = fs::read_to_string(format!("/proc/{}/stat", first.proc.pid()))
            .is_ok_and(|s| s.contains(") Z "));
        let listening = ["/proc/net/tcp", "/proc/net/tcp6"].iter().any(|table| {
            fs::read_to_string(table).is_ok_and(|t| !listening_inodes(&t, port).is_empty())
        });
        zombie && !listening
    });
    assert_eq!(reason(w.sample()), "not_found");
    assert_eq!(w.pid(), None);
    drop(first);

    let addr = format!("127.0.0.1:{port}");
    let Some(second) = Leaky::start(Go::V127, &["-addr", &addr]) else {
        return;
    };
    w.sample().unwrap();
    assert_eq!(w.pid(), Some(second.proc.pid()));
}

#[test]
fn watcher_follows_a_pid_file() {
    let Some(first) = Leaky::start(Go::V127, &[]) else {
        return;
    };
    let Some(second) = Leaky::start(Go::V127, &[]) else {
        return;
    };
    let dir = scratch("pidfile");
    let pid_file = dir.join("target.pid");
    fs::write(&pid_file, format!("{}\n", first.proc.pid())).unwrap();
    let mut w = ProcessWatcher::new(PathBuf::from(PROC), PidSource::PidFile(pid_file.clone()));
    w.sample().unwrap();
    assert_eq!(w.pid(), Some(first.proc.pid()));

    let first_pid = first.proc.pid();
    drop(first);
    assert_eq!(
        reason(w.sample()),
        "not_found",
        "pid {first_pid} was reaped"
    );

    fs::write(&pid_file, format!("{}\n", second.proc.pid())).unwrap();
    let stats = w.sample().unwrap();
    assert_eq!(w.pid(), Some(second.proc.pid()));
    assert_eq!(stats.pid, second.proc.pid());
}

#[test]
fn port_without_listener_is_not_found() {
    let port = free_port();
    let err = resolve_pid(Path::new(PROC), &PidSource::Port(port)).unwrap_err();
    assert!(
        matches!(err, ProcessError::NoListener { port: p } if p == port),
        "{err}"
    );
    assert_eq!(err.reason(), "not_found");
}

#[test]
fn own_listener_is_skipped() {
    // The test process itself listens; the lookup must not answer with our own PID.
    let ours = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = ours.local_addr().unwrap().port();
    let r = resolve_pid(Path::new(PROC), &PidSource::Port(port));
    // Whether every other process could be ruled out decides which error explains the
    // miss. In a sandbox whose PID 1 holds more capabilities than we do, its fds are
    // unreadable even to root, and the holder could have been hiding there.
    let want = if some_fds_unreadable() {
        "permission"
    } else {
        "not_visible"
    };
    assert_eq!(reason(r), want);
}

/// True when some other process's open files cannot be listed or resolved.
fn some_fds_unreadable() -> bool {
    let me = std::process::id().to_string();
    let denied =
        |r: std::io::Result<()>| r.is_err_and(|e| e.kind() == std::io::ErrorKind::PermissionDenied);
    fs::read_dir(PROC).unwrap().flatten().any(|p| {
        let name = p.file_name().to_string_lossy().into_owned();
        if name == me || !name.bytes().all(|b| b.is_ascii_digit()) {
            return false;
        }
        match fs::read_dir(p.path().join("fd")) {
            Err(e) => denied(Err(e)),
            Ok(fds) => fds
                .flatten()
                .any(|fd| denied(fs::read_link(fd.path()).map(drop))),
        }
    })
}

/// Polls `cond` for up to ten seconds.
fn wait_until(cond: impl Fn() -> bool) {
    for _ in 0..1000 {
        if cond() {
            return;
        }
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    panic!("condition not met within 10 s");
}

/// A fake `/proc`: the captured tcp tables, `self` pointing at `own`, and one directory
/// per process with the captured status, stat and smaps_rollup and the given fd links.
fn fake_proc(name: &str, own: u32, processes: &[(u32, &[&str])]) -> PathBuf {
    let fixtures = root().join("tests/fixtures/proc");
    let dir = scratch(name);
    fs::create_dir_all(dir.join("net")).unwrap();
    for table in ["tcp", "tcp6"] {
        fs::copy(
            fixtures.join("net").join(table),
            dir.join("net").join(table),
        )
        .unwrap();
    }
    std::os::unix::fs::symlink(own.to_string(), dir.join("self")).unwrap();
    for (pid, links) in processes {
        add_process(&dir, *pid, links);
    }
    dir
}

fn add_process(proc_root: &Path, pid: u32, links: &[&str]) {
    let fixtures = root().join("tests/fixtures/proc/13839");
    let p = proc_root.join(pid.to_string());
    fs::create_dir_all(p.join("fd")).unwrap();
    for file in ["status", "stat", "smaps_rollup"] {
        fs::copy(fixtures.join(file), p.join(file)).unwrap();
    }
    for (fd, link) in links.iter().enumerate() {
        std::os::unix::fs::symlink(link, p.join("fd").join(fd.to_string())).unwrap();
    }
}

#[test]
fn fake_tree_lookup_cases() {
    let root = fake_proc(
        "lookup",
        300,
        &[
            (100, &["/dev/null", "pipe:[1]", "socket:[24987]"]),
            (200, &["/dev/null", "socket:[999]"]),
            // Ourselves, holding the v6 wildcard listener.
            (300, &["socket:[26361]"]),
            // Parent and child sharing the v6 loopback listener.
            (401, &["socket:[25002]"]),
            (400, &["socket:[25002]"]),
            // The IPv4-mapped listener.
            (500, &["anon_inode:[eventpoll]", "socket:[25001]"]),
        ],
    );
    // Non-numeric entries (like /proc/sys) are not processes.
    fs::create_dir_all(root.join("sys")).unwrap();

    let found = find_listener(&root, 35011).unwrap();
    assert_eq!((found.pid, found.sharers.as_slice()), (100, &[][..]));
    let found = find_listener(&root, 39409).unwrap();
    assert_eq!((found.pid, found.sharers.as_slice()), (400, &[401][..]));
    assert_eq!(find_listener(&root, 34277).unwrap().pid, 500);
    assert_eq!(reason(find_listener(&root, 36573)), "not_visible");
    assert_eq!(reason(find_listener(&root, 2024)), "not_visible");
    assert_eq!(reason(find_listener(&root, 80)), "not_found");

    assert_eq!(resolve_pid(&root, &PidSource::Pid(200)).unwrap(), 200);
    assert_eq!(
        reason(resolve_pid(&root, &PidSource::Pid(999))),
        "not_found"
    );

    let pid_file = root.join("target.pid");
    assert_eq!(
        reason(resolve_pid(&root, &PidSource::PidFile(pid_file.clone()))),
        "not_found"
    );
    fs::write(&pid_file, "not a pid\n").unwrap();
    assert_eq!(
        reason(resolve_pid(&root, &PidSource::PidFile(pid_file.clone()))),
        "pid_file"
    );
    fs::write(&pid_file, "500\n").unwrap();
    assert_eq!(
        resolve_pid(&root, &PidSource::PidFile(pid_file)).unwrap(),
        500
    );

    // Without a tcp6 table (IPv6 disabled) v4 lookups still work; without either
    // table the root is wrong, which is an I/O error rather than "no listener".
    fs::remove_file(root.join("net/tcp6")).unwrap();
    assert_eq!(find_listener(&root, 35011).unwrap().pid, 100);
    fs::remove_file(root.join("net/tcp")).unwrap();
    assert_eq!(reason(find_listener(&root, 35011)), "io");
}

#[test]
fn fake_tree_stats() {
    let root = fake_proc("stats", 1, &[(100, &["/dev/null", "socket:[24987]"])]);
    let stats = read_stats(&root, 100).unwrap();
    assert_eq!(stats.status.vm_rss, Some(8136 * 1024));
    assert_eq!(stats.rollup.pss, Some(4207 * 1024));
    assert_eq!(stats.start_ticks, Some(84152));
    assert_eq!(stats.open_fds, Some(2));

    // Optional files missing: the sample still succeeds, with those values unknown.
    for file in ["stat", "smaps_rollup"] {
        fs::remove_file(root.join("100").join(file)).unwrap();
    }
    fs::remove_dir_all(root.join("100/fd")).unwrap();
    let stats = read_stats(&root, 100).unwrap();
    assert_eq!(stats.status.vm_rss, Some(8136 * 1024));
    assert_eq!(
        (stats.start_ticks, stats.rollup.pss, stats.open_fds),
        (None, None, None)
    );
    let names: Vec<_> = process_families(&stats).iter().map(|f| f.name).collect();
    assert!(!names.contains(&"pprof_process_open_fds"), "{names:?}");
    assert!(
        !names.contains(&"pprof_process_proportional_memory_bytes"),
        "{names:?}"
    );

    // A zombie counts as gone.
    fs::write(
        root.join("100/status"),
        "Name:\tleaky\nState:\tZ (zombie)\nThreads:\t1\n",
    )
    .unwrap();
    assert_eq!(reason(read_stats(&root, 100)), "not_found");
    assert_eq!(reason(read_stats(&root, 12345)), "not_found");
}

#[test]
fn fake_tree_watcher_spaces_out_smaps_rollup() {
    let root = fake_proc("rollup", 1, &[(100, &["socket:[24987]"])]);
    let pid_file = root.join("target.pid");
    fs::write(&pid_file, "100\n").unwrap();
    let rollup = root.join("100/smaps_rollup");
    let original = fs::read_to_string(&rollup).unwrap();
    let pss = |w: &mut ProcessWatcher| w.sample().unwrap().rollup.pss;
    let hour = Some(std::time::Duration::from_secs(3600));

    let mut every = ProcessWatcher::new(root.clone(), PidSource::Port(35011));
    let mut hourly =
        ProcessWatcher::new(root.clone(), PidSource::Port(35011)).with_rollup_every(hour);
    let mut hourly_file = ProcessWatcher::new(root.clone(), PidSource::PidFile(pid_file.clone()))
        .with_rollup_every(hour);
    let mut off = ProcessWatcher::new(root.clone(), PidSource::Port(35011)).with_rollup_every(None);
    for w in [&mut every, &mut hourly, &mut hourly_file] {
        assert_eq!(pss(w), Some(4207 * 1024));
    }
    assert_eq!(pss(&mut off), None);

    // The kernel's figure changes; RSS from status is read on every sample regardless.
    fs::write(
        &rollup,
        original.replace("Pss:                4207 kB", "Pss:                5000 kB"),
    )
    .unwrap();
    let status = root.join("100/status");
    let status_text = fs::read_to_string(&status).unwrap();
    fs::write(
        &status,
        status_text.replace("VmRSS:\t    8136 kB", "VmRSS:\t    9000 kB"),
    )
    .unwrap();
    assert_eq!(pss(&mut every), Some(5000 * 1024));
    assert_eq!(
        pss(&mut hourly),
        Some(4207 * 1024),
        "read again within the hour"
    );
    assert_eq!(
        pss(&mut hourly_file),
        Some(4207 * 1024),
        "a pid file naming the same process"
    );
    assert_eq!(hourly.sample().unwrap().status.vm_rss, Some(9000 * 1024));
    assert_eq!(pss(&mut off), None);

    // Another process behind the PID (new start time): its own reading, at once.
    let stat = fs::read_to_string(root.join("100/stat")).unwrap();
    fs::write(root.join("100/stat"), stat.replace(" 84152 ", " 99999 ")).unwrap();
    assert_eq!(pss(&mut hourly), Some(5000 * 1024));
    assert_eq!(pss(&mut hourly_file), Some(5000 * 1024));
}

#[test]
fn fake_tree_watcher_keeps_and_drops_its_pid() {
    let root = fake_proc("watcher", 1, &[(100, &["socket:[24987]"])]);
    let mut w = ProcessWatcher::new(root.clone(), PidSource::Port(35011));
    w.sample().unwrap();
    assert_eq!(w.pid(), Some(100));

    // The cached PID is used as long as it is the same process: moving the socket to
    // another process is not noticed.
    add_process(&root, 50, &["socket:[24987]"]);
    w.sample().unwrap();
    assert_eq!(w.pid(), Some(100));

    // PID 100 reused by another process (new start time): look again, find 50.
    let stat = fs::read_to_string(root.join("100/stat")).unwrap();
    fs::write(root.join("100/stat"), stat.replace(" 84152 ", " 99999 ")).unwrap();
    w.sample().unwrap();
    assert_eq!(w.pid(), Some(50));

    // 50 exits: the socket's only holder is 100 now.
    fs::remove_dir_all(root.join("50")).unwrap();
    w.sample().unwrap();
    assert_eq!(w.pid(), Some(100));

    // Everything gone: an error, and no PID until the target is back.
    fs::remove_dir_all(root.join("100")).unwrap();
    assert_eq!(reason(w.sample()), "not_visible");
    assert_eq!(w.pid(), None);
    add_process(&root, 101, &["socket:[24987]"]);
    w.sample().unwrap();
    assert_eq!(w.pid(), Some(101));
}
