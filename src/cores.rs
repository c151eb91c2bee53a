//! Running two pieces of work at once on two cores, for `inspect`.
//!
//! A thread that is spawned for a few milliseconds of work is only useful if it starts
//! at once on another core. Linux places a new thread where it sees fit, and some
//! kernels (virtual machines that pack threads onto few vCPUs, for one) queue it behind
//! the thread that spawned it until the load balancer moves it, which can take longer
//! than the work itself: on a 2-vCPU VM, one parallel pass in two started about 3 ms
//! late, and took as long as doing it all on one thread. [`join`] therefore sends its
//! helper to any allowed core but the caller's, and lets it run long enough to leave.

/// Runs `here` on the calling thread and `there` on a helper thread on another core,
/// and returns both results once both are done. A panic in either is passed on. Where
/// the process may use only one core, both run on the calling thread, in turn.
pub fn join<A, B>(here: impl FnOnce() -> A, there: impl FnOnce() -> B + Send) -> (A, B)
where
    B: Send,
{
    if !two_or_more() {
        let a = here();
        return (a, there());
    }
    let caller = current_core();
    std::thread::scope(|scope| {
        let helper = scope.spawn(move || {
            leave_core(caller);
            there()
        });
        // If the helper was queued on this core, this lets it run the few
        // instructions it needs to move away.
        std::thread::yield_now();
        let a = here();
        let b = helper
            .join()
            .unwrap_or_else(|e| std::panic::resume_unwind(e));
        (a, b)
    })
}

/// Whether the calling thread may use two cores or more. The answer is kept per thread,
/// for finding it reads the CPU mask and, on Linux, three cgroup files each time. A
/// thread's mask is set before its first call ([`join`]'s helper leaves its core first),
/// so a kept answer does not go stale in this program.
pub fn two_or_more() -> bool {
    thread_local! {
        static TWO: std::cell::OnceCell<bool> = const { std::cell::OnceCell::new() };
    }
    TWO.with(|two| {
        *two.get_or_init(|| std::thread::available_parallelism().is_ok_and(|n| n.get() >= 2))
    })
}

/// The core the calling thread runs on, where the platform says.
#[cfg(target_os = "linux")]
fn current_core() -> Option<usize> {
    nix::sched::sched_getcpu().ok()
}

#[cfg(not(target_os = "linux"))]
fn current_core() -> Option<usize> {
    None
}

/// Moves the calling thread off `core` when it is running there and the thread may run
/// elsewhere; anything that fails leaves the thread where it is.
#[cfg(target_os = "linux")]
fn leave_core(core: Option<usize>) {
    use nix::sched::{CpuSet, sched_getaffinity, sched_setaffinity};
    use nix::unistd::Pid;
    let Some(core) = core else { return };
    if current_core() != Some(core) {
        return;
    }
    let Ok(mut allowed) = sched_getaffinity(Pid::from_raw(0)) else {
        return;
    };
    if allowed.unset(core).is_err() {
        return;
    }
    let elsewhere = (0..CpuSet::count()).any(|c| allowed.is_set(c).unwrap_or(false));
    if elsewhere {
        let _ = sched_setaffinity(Pid::from_raw(0), &allowed);
    }
}

#[cfg(not(target_os = "linux"))]
fn leave_core(_core: Option<usize>) {}

/// Runs `f` on a fresh thread allowed only the core it starts on, so that the test's
/// own thread keeps its mask.
#[cfg(all(test, target_os = "linux"))]
pub(crate) fn on_one_core<R: Send>(f: impl FnOnce() -> R + Send) -> R {
    use nix::sched::{CpuSet, sched_setaffinity};
    use nix::unistd::Pid;
    std::thread::scope(|scope| {
        scope
            .spawn(|| {
                let mut one = CpuSet::new();
                one.set(current_core().unwrap()).unwrap();
                sched_setaffinity(Pid::from_raw(0), &one).unwrap();
                assert!(!two_or_more());
                f()
            })
            .join()
            .unwrap()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn both_sides_run_and_return_their_results() {
        let data = [1u64, 2, 3, 4];
        let (a, b) = join(
            || data[..2].iter().sum::<u64>(),
            || data[2..].iter().sum::<u64>(),
        );
        assert_eq!((a, b), (3, 7));
    }

    #[test]
    fn a_panic_on_the_helper_reaches_the_caller() {
        let caught = std::panic::catch_unwind(|| join(|| 1, || -> u32 { panic!("helper") }));
        let payload = caught.unwrap_err();
        assert_eq!(payload.downcast_ref::<&str>(), Some(&"helper"));
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn with_one_core_allowed_both_run_on_the_calling_thread() {
        let (caller, here, there) = on_one_core(|| {
            let me = std::thread::current().id();
            let (here, there) = join(
                || std::thread::current().id(),
                || std::thread::current().id(),
            );
            (me, here, there)
        });
        assert_eq!((here, there), (caller, caller));
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn a_thread_leaves_the_core_it_is_told_to_leave_when_another_is_allowed() {
        use nix::sched::{CpuSet, sched_getaffinity};
        use nix::unistd::Pid;
        let allowed_cores = |mask: &CpuSet| -> Vec<usize> {
            (0..CpuSet::count())
                .filter(|&c| mask.is_set(c).unwrap())
                .collect()
        };
        // A fresh thread, so that the test's own mask is left alone.
        let (before, core, after, now) = std::thread::spawn(move || {
            let before = allowed_cores(&sched_getaffinity(Pid::from_raw(0)).unwrap());
            let core = current_core().unwrap();
            leave_core(Some(core));
            let after = allowed_cores(&sched_getaffinity(Pid::from_raw(0)).unwrap());
            (before, core, after, current_core().unwrap())
        })
        .join()
        .unwrap();
        if before.len() > 1 {
            let want: Vec<usize> = before.iter().copied().filter(|&c| c != core).collect();
            assert_eq!(after, want);
            assert_ne!(now, core);
        } else {
            assert_eq!(after, before);
        }
    }
}
