//! What the appliance's platform gives the engine, for the bench and the
//! profiling example: real prefetch instructions and huge pages for the
//! table's memory (ctcore itself has no unsafe code).

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

/// The table's memory as the appliance places it: regions of 32 MiB and
/// more on the hugetlb pool's 1 GiB / 2 MiB pages (when the process has
/// `huge::HugeAlloc` as its global allocator and the pools have room),
/// the rest on transparent huge pages. The appliance's own code.
#[path = "../../../appliance/src/dpdk/huge.rs"]
// Its unit tests are the appliance's (not run from here).
#[allow(dead_code, unused_imports)]
pub mod huge;
