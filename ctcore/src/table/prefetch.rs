//! Prefetch hints, supplied by the platform.
//!
//! A prefetch instruction needs `unsafe` in Rust (`_mm_prefetch` is a
//! target-feature intrinsic) and ctcore forbids unsafe code, so the engine is
//! generic over a `Prefetch` implementation: the appliance passes one that
//! issues real prefetches (`appliance::dpdk::HwPrefetch`); tests and tools
//! that do not care use [`NoPrefetch`]. Monomorphised, the hint costs one
//! instruction and no call.

/// Hints that a cache line will soon be read, and the platform's cycle
/// counter for timing the burst's stages ([`crate::engine::StageCycles`]).
pub trait Prefetch: Send + Sync + 'static {
    /// Starts loading the cache line holding `p`. Must not fault whatever `p`
    /// is (a prefetch never does), and has no effect on results.
    fn read(p: *const u8);

    /// A cycle count (the TSC), read only when stage timing is on; 0 where
    /// the platform gives none.
    #[inline(always)]
    fn cycles() -> u64 {
        0
    }
}

/// No hint: the engine works the same, without the overlap of misses.
#[derive(Debug, Clone, Copy, Default)]
pub struct NoPrefetch;

impl Prefetch for NoPrefetch {
    #[inline(always)]
    fn read(_: *const u8) {}
}
