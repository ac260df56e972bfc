//! Gives back the stack pages a reader thread touched deep in packet handling (CONNECT,
//! routing) once it is back at its shallow wait for the next read.
//!
//! A thread's stack pages stay resident once touched, so each connection would keep the memory
//! of its deepest excursion for its whole life; with thousands of mostly idle clients that is
//! most of the broker's footprint. Before it blocks, the reader tells the kernel
//! (`madvise(MADV_DONTNEED)`) that the pages below its current frame are unused: they are
//! dropped and come back zero-filled if touched again. At most [`PER_WINDOW`] times per
//! [`WINDOW`]: enough for a client's first few packets (CONNECT, SUBSCRIBE) before it goes
//! quiet, while a busy connection pays a few page faults a second, not one per packet.

use std::time::{Duration, Instant};

/// Trims allowed per window.
const PER_WINDOW: u32 = 4;
const WINDOW: Duration = Duration::from_secs(1);

/// Bytes below the trimming frame left alone: the `madvise` call's own frame lives there (a
/// return address: the syscall itself runs on the kernel's stack). Kept small on purpose: the
/// page boundary below `here - MARGIN` is where the trim stops, and an idle reader's `recv`
/// sits a few hundred bytes below the trimming frame; a margin of a kilobyte pushed that
/// boundary one page lower and kept a third stack page resident for every idle client.
const MARGIN: usize = 256;

pub struct StackTrim {
    /// The lowest usable address of this thread's stack (above its guard page); 0 when unknown.
    low: usize,
    window_start: Option<Instant>,
    in_window: u32,
}

impl StackTrim {
    /// For the calling thread.
    pub fn new() -> StackTrim {
        StackTrim {
            low: stack_low(),
            window_start: None,
            in_window: 0,
        }
    }

    /// Drops the pages below the caller's frame, unless this window's trims are used up.
    pub fn trim(&mut self) {
        if self.low == 0 {
            return;
        }
        let now = Instant::now();
        if self
            .window_start
            .is_none_or(|t| now.duration_since(t) >= WINDOW)
        {
            self.window_start = Some(now);
            self.in_window = 0;
        }
        if self.in_window < PER_WINDOW {
            self.in_window += 1;
            trim_below_here(self.low);
        }
    }
}

/// Drops the pages below the caller's frame now, whatever the window says: for a thread about
/// to wait long (a reader thread parked without a socket).
pub fn trim_now() {
    let low = stack_low();
    if low != 0 {
        trim_below_here(low);
    }
}

#[cfg(target_os = "linux")]
fn page_size() -> usize {
    // SAFETY: sysconf has no preconditions.
    let n = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    usize::try_from(n).unwrap_or(4096)
}

/// The low end of the calling thread's stack, read once per thread: a reader thread serves
/// many connections in turn, and `pthread_getattr_np` costs a `sched_getaffinity` call each
/// time (glibc fills in the attributes' CPU set).
#[cfg(target_os = "linux")]
fn stack_low() -> usize {
    thread_local! {
        static LOW: std::cell::Cell<Option<usize>> = const { std::cell::Cell::new(None) };
    }
    LOW.with(|low| {
        low.get().unwrap_or_else(|| {
            let found = read_stack_low();
            low.set(Some(found));
            found
        })
    })
}

/// The low end of the calling thread's stack, from its pthread attributes; 0 when unknown.
#[cfg(target_os = "linux")]
fn read_stack_low() -> usize {
    // SAFETY: `attr` is initialised by pthread_getattr_np before it is read and destroyed once;
    // `addr` and `size` are plain out-parameters.
    unsafe {
        let mut attr: libc::pthread_attr_t = std::mem::zeroed();
        if libc::pthread_getattr_np(libc::pthread_self(), &mut attr) != 0 {
            return 0;
        }
        let mut addr: *mut libc::c_void = std::ptr::null_mut();
        let mut size: libc::size_t = 0;
        let ok = libc::pthread_attr_getstack(&attr, &mut addr, &mut size) == 0;
        libc::pthread_attr_destroy(&mut attr);
        if ok {
            addr as usize
        } else {
            0
        }
    }
}

#[cfg(not(target_os = "linux"))]
fn stack_low() -> usize {
    0
}

/// Not inlined, so that "here" is a small frame just below the caller's.
#[inline(never)]
#[cfg(target_os = "linux")]
fn trim_below_here(low: usize) {
    let marker = 0u8;
    let here = std::hint::black_box(&marker) as *const u8 as usize;
    let page = page_size();
    let low = low.next_multiple_of(page);
    let high = here.saturating_sub(MARGIN) & !(page - 1);
    if high > low {
        // SAFETY: [low, high) lies within this thread's own stack, entirely below the live
        // frames (the stack grows down and `high` is under this frame, less a margin for the
        // call itself); MADV_DONTNEED on private anonymous memory only makes those pages read
        // as zero if they are ever touched again, which no live data depends on.
        unsafe {
            libc::madvise(low as *mut libc::c_void, high - low, libc::MADV_DONTNEED);
        }
    }
}

#[cfg(not(target_os = "linux"))]
fn trim_below_here(_low: usize) {}
