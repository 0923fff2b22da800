//! What the appliance's platform gives the engine, for the bench and the
//! profiling example: real prefetch instructions and transparent huge
//! pages on the table's memory (ctcore itself has no unsafe code).

/// Real prefetch instructions, as the appliance issues them (ctcore itself
/// has no unsafe code, so the platform supplies them).
pub struct HwPrefetch;

impl ctcore::table::Prefetch for HwPrefetch {
    #[inline(always)]
    fn read(p: *const u8) {
        #[cfg(target_arch = "x86_64")]
        // SAFETY: a prefetch is a hint; it never faults nor reads into the
        // program, whatever the address.
        unsafe {
            std::arch::x86_64::_mm_prefetch::<{ std::arch::x86_64::_MM_HINT_T0 }>(p as *const i8)
        };
        #[cfg(not(target_arch = "x86_64"))]
        let _ = p;
    }
}

/// Asks for transparent huge pages on the table's memory, as the appliance does.
pub fn advise_huge(addr: usize, len: usize) {
    const HUGE: usize = 2 << 20;
    let start = addr.next_multiple_of(HUGE);
    let end = (addr + len) & !(HUGE - 1);
    if end > start {
        // SAFETY: madvise on whole pages inside an allocation we own; it
        // changes how the pages are backed, not their contents.
        unsafe { libc::madvise(start as *mut libc::c_void, end - start, libc::MADV_HUGEPAGE) };
    }
}
