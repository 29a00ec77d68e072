//! Transparent huge pages are off while a plan is read and checked and while
//! a run's report is built, and as they were while steps run.
//!
//! mimalloc asks for huge pages on its arenas (`MADV_HUGEPAGE`), and on a
//! machine whose memory is fragmented (a rebuild's restores have just churned
//! through the page cache) each huge-page fault can stall on compaction. Reading
//! a 10,000-step plan touches about 40 MB: on this project's benchmark machine,
//! after the ninja run of the same graph, the first step started 107 ms after
//! `phoenix run` with huge pages and 51 ms without (`benches/slots.sh`, medians
//! of 4 rounds); on a quiet machine the two were within noise. The setting
//! (`PR_SET_THP_DISABLE`) is the process's and passes to its children through
//! exec, so it is put back before the first step runs: the steps' programs
//! (a database, a JVM) get the machine's policy, not Phoenix's. Building the
//! report at the end allocates afresh too, so they are off again for that.

use std::sync::atomic::{AtomicBool, Ordering};

use nix::sys::prctl::{get_thp_disable, set_thp_disable};

/// Whether [`suspend`] turned huge pages off (and [`restore`] has not yet
/// turned them back on).
static SUSPENDED: AtomicBool = AtomicBool::new(false);

/// Turns transparent huge pages off for this process, unless they already are.
pub fn suspend() {
    if get_thp_disable() == Ok(false) && set_thp_disable(true).is_ok() {
        SUSPENDED.store(true, Ordering::SeqCst);
    }
}

/// Undoes [`suspend`]; does nothing when it did nothing.
pub fn restore() {
    if SUSPENDED.swap(false, Ordering::SeqCst) {
        let _ = set_thp_disable(false);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn suspend_then_restore_leaves_the_setting_as_it_was() {
        let before = get_thp_disable().unwrap();
        suspend();
        assert!(get_thp_disable().unwrap(), "off while suspended");
        restore();
        assert_eq!(get_thp_disable().unwrap(), before);
        // Started with huge pages off, it leaves them off.
        set_thp_disable(true).unwrap();
        suspend();
        restore();
        assert!(get_thp_disable().unwrap());
        set_thp_disable(before).unwrap();
    }
}
