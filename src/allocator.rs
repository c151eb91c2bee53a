//! The binary's allocator: jemalloc for the daemon, the system's for `inspect`.
//!
//! The daemon runs for weeks and repeats the same cycle every interval: fetch, inflate,
//! aggregate, encode, free. With glibc's allocator its RSS rose by 2–7 % over every
//! 10-minute run while the memory in use stayed flat: the arenas' extent followed the
//! largest peak so far, and levelled off only after half an hour. jemalloc keeps blocks
//! of one size class together on their own pages; with one arena, no per-thread caches
//! and freed pages returned at once, the daemon's anonymous memory stays flat and its
//! RSS about 1 MB lower (docs/performance.md, step 42).
//!
//! `inspect` runs for milliseconds: with the daemon's options jemalloc made it 16 %
//! slower (every page it frees is returned and faulted in again), and 2.5 % slower
//! with jemalloc's defaults. So `inspect` keeps glibc's allocator. (jemalloc still
//! initialises itself in its own constructor, about 0.07 ms.)
//!
//! Which one serves the process is chosen once, from the command line, before the
//! first allocation (a constructor in `.init_array`, which glibc calls with `argc` and
//! `argv` before `main`), and never changes, so every block is freed by the allocator
//! that made it. If anything allocated before the choice, the system allocator serves
//! the whole run. Only on Linux with glibc, where `.init_array` gets `argv`.

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicU8, Ordering::Relaxed};

use tikv_jemallocator::Jemalloc;

const UNDECIDED: u8 = 0;
const SYSTEM: u8 = 1;
const JEMALLOC: u8 = 2;

/// Which allocator serves the process. Leaves [`UNDECIDED`] at most once.
static CHOICE: AtomicU8 = AtomicU8::new(UNDECIDED);

/// jemalloc's options, read when the daemon first allocates: one arena, no per-thread
/// caches (what one thread frees, another reuses at once), and freed pages returned to
/// the kernel at once instead of after 10 s. `_RJEM_MALLOC_CONF` is applied after these.
#[unsafe(export_name = "_rjem_malloc_conf")]
static JEMALLOC_OPTIONS: Option<&std::ffi::c_char> = Some(unsafe {
    // SAFETY: a pointer to the first byte of a static C string, never null.
    &*c"narenas:1,tcache:false,dirty_decay_ms:0,muzzy_decay_ms:0".as_ptr()
});

/// The global allocator of the binary; see the module documentation.
pub struct Allocator;

impl Allocator {
    #[inline(always)]
    fn jemalloc() -> bool {
        match CHOICE.load(Relaxed) {
            JEMALLOC => true,
            SYSTEM => false,
            _ => {
                // The first allocation came before the choice: the system serves all.
                CHOICE.store(SYSTEM, Relaxed);
                false
            }
        }
    }
}

// SAFETY: each call is passed on unchanged to one of two allocators that implement
// GlobalAlloc, and always the same one: the choice is made before the first allocation
// and never changes after it, so a block is freed or resized by the one that made it.
unsafe impl GlobalAlloc for Allocator {
    #[inline]
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        if Self::jemalloc() {
            unsafe { Jemalloc.alloc(layout) }
        } else {
            unsafe { System.alloc(layout) }
        }
    }

    #[inline]
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        if Self::jemalloc() {
            unsafe { Jemalloc.alloc_zeroed(layout) }
        } else {
            unsafe { System.alloc_zeroed(layout) }
        }
    }

    #[inline]
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        if Self::jemalloc() {
            unsafe { Jemalloc.dealloc(ptr, layout) }
        } else {
            unsafe { System.dealloc(ptr, layout) }
        }
    }

    #[inline]
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        if Self::jemalloc() {
            unsafe { Jemalloc.realloc(ptr, layout, new_size) }
        } else {
            unsafe { System.realloc(ptr, layout, new_size) }
        }
    }
}

/// Whether a process started with these arguments (without the program's name) is
/// the daemon: anything but the `inspect` subcommand. A wrong guess costs only speed
/// or memory, never correctness.
pub fn is_daemon(first_argument: Option<&[u8]>) -> bool {
    first_argument != Some(b"inspect".as_slice())
}

/// Makes the choice from `argv`, before `main` and before any allocation.
mod choose {
    use std::ffi::{CStr, c_char, c_int};

    #[used]
    #[unsafe(link_section = ".init_array")]
    static CHOOSE: extern "C" fn(c_int, *const *const c_char, *const *const c_char) = choose;

    extern "C" fn choose(argc: c_int, argv: *const *const c_char, _env: *const *const c_char) {
        let first = if argc >= 2 && !argv.is_null() {
            // SAFETY: glibc passes the process's argc and argv to .init_array
            // functions; argv holds argc pointers to NUL-terminated strings.
            let arg = unsafe { *argv.add(1) };
            (!arg.is_null()).then(|| unsafe { CStr::from_ptr(arg) }.to_bytes())
        } else {
            None
        };
        let choice = if super::is_daemon(first) {
            super::JEMALLOC
        } else {
            super::SYSTEM
        };
        // Only if nothing has allocated yet: otherwise the system already serves.
        let _ = super::CHOICE.compare_exchange(
            super::UNDECIDED,
            choice,
            super::Relaxed,
            super::Relaxed,
        );
    }
}

/// The allocator serving this process, as the daemon logs it at start.
pub fn name() -> &'static str {
    if CHOICE.load(Relaxed) == JEMALLOC {
        "jemalloc"
    } else {
        "system"
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_inspect_subcommand_keeps_the_system_allocator() {
        assert!(!is_daemon(Some(b"inspect")));
        assert!(is_daemon(None));
        assert!(is_daemon(Some(b"--target")));
        assert!(is_daemon(Some(b"inspectx")));
        assert!(is_daemon(Some(b"")));
    }
}
