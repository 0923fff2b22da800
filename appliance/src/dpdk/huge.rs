//! The connection table on reserved huge pages.
//!
//! Transparent huge pages (`madvise(MADV_HUGEPAGE)`) are a request, not a
//! reservation: the kernel backs what it can, when it can, and a table of
//! gigabytes ends up partly on 4 KiB pages, where each random access also
//! walks page tables (on a VM, nested ones). So the table's large regions
//! are mapped from the hugetlb pool instead, as DPDK's memory is: 1 GiB
//! pages for each whole GiB of a region when the pool has them, 2 MiB pages
//! for the rest, transparent huge pages only when neither pool has room.
//!
//! ctcore cannot map memory (it has no unsafe code) and reserves its
//! regions with the global allocator; [`TablePages`] is told of each
//! region right before it is reserved ([`ctcore::table::Memory`]) and
//! plans where it goes, and [`HugeAlloc`], the global allocator's wrapper,
//! serves that one allocation from a hugetlb mapping. Everything else goes
//! to the wrapped allocator.
//!
//! This file uses only std and libc: ctcore's bench and examples include
//! it, so that they measure the table on the memory the appliance gives it.

use std::alloc::{GlobalAlloc, Layout};
use std::cell::Cell;
use std::sync::atomic::{AtomicUsize, Ordering};

const GIB: usize = 1 << 30;
const PAGE_2M: usize = 2 << 20;
/// Smaller regions stay with the allocator (and transparent huge pages):
/// a table of a few hundred thousand connections does not take pages from
/// the pool DPDK's buffers come from.
pub const MIN_REGION: usize = 32 << 20;
/// 2 MiB pages left in the pool for DPDK's later allocations.
const KEEP_FREE_2M: usize = 64;

thread_local! {
    /// The next allocation this thread makes, if planned: its size and how
    /// many GiB of it go on 1 GiB pages (the rest on 2 MiB pages).
    static PLAN: Cell<(usize, usize)> = const { Cell::new((0, 0)) };
}

/// The hugetlb mappings made, for `dealloc`: their addresses, lengths and
/// GiB on 1 GiB pages (0: free slot). A table has a handful of regions
/// per stripe; a mapping that finds no slot is not made.
const SLOTS: usize = 512;
static STARTS: [AtomicUsize; SLOTS] = [const { AtomicUsize::new(0) }; SLOTS];
static LENS: [AtomicUsize; SLOTS] = [const { AtomicUsize::new(0) }; SLOTS];
static GIBS: [AtomicUsize; SLOTS] = [const { AtomicUsize::new(0) }; SLOTS];
/// Bytes mapped now on 1 GiB and on 2 MiB pages.
static ON_1G: AtomicUsize = AtomicUsize::new(0);
static ON_2M: AtomicUsize = AtomicUsize::new(0);

/// A global allocator that serves the table's planned regions from hugetlb
/// mappings and everything else from `A`.
pub struct HugeAlloc<A>(pub A);

// SAFETY: every pointer handed out is either `A`'s (with `A`'s contract)
// or the start of a fresh private mapping at least `l.size()` long and
// 2 MiB aligned (any layout's alignment that `MIN_REGION` allocations
// have), owned by the caller until `dealloc`/`realloc` unmaps it.
unsafe impl<A: GlobalAlloc> GlobalAlloc for HugeAlloc<A> {
    unsafe fn alloc(&self, l: Layout) -> *mut u8 {
        if let Some(p) = planned(l) {
            return p;
        }
        // SAFETY: the caller's layout, forwarded.
        unsafe { self.0.alloc(l) }
    }

    unsafe fn alloc_zeroed(&self, l: Layout) -> *mut u8 {
        // Fresh hugetlb pages read as zero.
        if let Some(p) = planned(l) {
            return p;
        }
        // SAFETY: as above.
        unsafe { self.0.alloc_zeroed(l) }
    }

    unsafe fn dealloc(&self, p: *mut u8, l: Layout) {
        if l.size() >= MIN_REGION && unmap(p as usize) {
            return;
        }
        // SAFETY: not one of ours, so `A` allocated it with this layout.
        unsafe { self.0.dealloc(p, l) }
    }

    unsafe fn realloc(&self, p: *mut u8, l: Layout, new: usize) -> *mut u8 {
        if l.size() >= MIN_REGION && mapping(p as usize).is_some() {
            // A region is not resized; should it be, it moves to `A`.
            // SAFETY: `new` with `l`'s alignment is a valid layout (the
            // caller's contract for realloc).
            let q = unsafe {
                self.0
                    .alloc(Layout::from_size_align_unchecked(new, l.align()))
            };
            if !q.is_null() {
                // SAFETY: both are valid for the shorter length and are
                // distinct allocations.
                unsafe { std::ptr::copy_nonoverlapping(p, q, l.size().min(new)) };
                unmap(p as usize);
            }
            return q;
        }
        // SAFETY: not one of ours: `A`'s, with this layout.
        unsafe { self.0.realloc(p, l, new) }
    }
}

/// Serves `l` from a hugetlb mapping if it is the allocation this thread
/// planned (the plan is used up either way).
fn planned(l: Layout) -> Option<*mut u8> {
    if l.size() < MIN_REGION || l.align() > PAGE_2M {
        return None;
    }
    let (len, gib) = PLAN.try_with(|p| p.get()).ok()?;
    if len != l.size() {
        return None;
    }
    let _ = PLAN.try_with(|p| p.set((0, 0)));
    // Should another process have taken the 1 GiB pages meanwhile, the
    // region goes on 2 MiB pages.
    map(len, gib)
        .or_else(|| if gib > 0 { map(len, 0) } else { None })
        .map(|a| a as *mut u8)
}

/// Maps `len` bytes: `gib` GiB on 1 GiB pages, the rest on 2 MiB pages,
/// one range of addresses. None (nothing left mapped) if a pool refuses.
fn map(len: usize, gib: usize) -> Option<usize> {
    let on_1g = gib * GIB;
    let rest = (len - on_1g.min(len)).next_multiple_of(PAGE_2M);
    let total = on_1g + rest;
    let align = if gib > 0 { GIB } else { PAGE_2M };
    let slot = STARTS.iter().position(|s| s.load(Ordering::Relaxed) == 0)?;
    // SAFETY: a new private anonymous mapping that reserves addresses only
    // (no access, no memory); nothing else refers to it.
    let room = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            total + align,
            libc::PROT_NONE,
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_NORESERVE,
            -1,
            0,
        )
    };
    if room == libc::MAP_FAILED {
        return None;
    }
    let room = room as usize;
    let base = room.next_multiple_of(align);
    let parts = [(base, on_1g, 30), (base + on_1g, rest, 21)];
    for &(at, n, shift) in &parts {
        if n == 0 {
            continue;
        }
        // SAFETY: `at .. at + n` lies inside the reservation above, which
        // this function owns: MAP_FIXED replaces only those addresses.
        let p = unsafe {
            libc::mmap(
                at as *mut libc::c_void,
                n,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE
                    | libc::MAP_ANONYMOUS
                    | libc::MAP_FIXED
                    | libc::MAP_HUGETLB
                    | (shift << libc::MAP_HUGE_SHIFT),
                -1,
                0,
            )
        };
        if p == libc::MAP_FAILED {
            // SAFETY: the whole reservation (and what replaced parts of
            // it) is this function's; nothing points into it.
            unsafe { libc::munmap(room as *mut libc::c_void, total + align) };
            return None;
        }
    }
    // The reservation's unused ends go back.
    let (head, tail) = (base - room, room + total + align - (base + total));
    // SAFETY: the unused ends of this function's own reservation.
    unsafe {
        if head > 0 {
            libc::munmap(room as *mut libc::c_void, head);
        }
        if tail > 0 {
            libc::munmap((base + total) as *mut libc::c_void, tail);
        }
    }
    STARTS[slot].store(base, Ordering::Relaxed);
    LENS[slot].store(total, Ordering::Relaxed);
    GIBS[slot].store(gib, Ordering::Relaxed);
    ON_1G.fetch_add(on_1g, Ordering::Relaxed);
    ON_2M.fetch_add(rest, Ordering::Relaxed);
    Some(base)
}

/// The slot of the mapping starting at `addr`, if it is one of ours.
fn mapping(addr: usize) -> Option<usize> {
    STARTS
        .iter()
        .position(|s| s.load(Ordering::Relaxed) == addr)
        .filter(|_| addr != 0)
}

/// Unmaps the mapping starting at `addr`; false if it is not one of ours.
fn unmap(addr: usize) -> bool {
    let Some(slot) = mapping(addr) else {
        return false;
    };
    let (len, gib) = (
        LENS[slot].load(Ordering::Relaxed),
        GIBS[slot].load(Ordering::Relaxed),
    );
    // SAFETY: our own mapping, given back by its owner.
    unsafe { libc::munmap(addr as *mut libc::c_void, len) };
    STARTS[slot].store(0, Ordering::Relaxed);
    ON_1G.fetch_sub(gib * GIB, Ordering::Relaxed);
    ON_2M.fetch_sub(len - gib * GIB, Ordering::Relaxed);
    true
}

/// Bytes mapped now on 1 GiB and on 2 MiB pages (all tables' regions).
pub fn mapped() -> (usize, usize) {
    (ON_1G.load(Ordering::Relaxed), ON_2M.load(Ordering::Relaxed))
}

/// Asks for transparent huge pages on `addr .. addr + len` (whole 2 MiB
/// pages inside it), so that random accesses to it walk fewer page tables
/// where it is not on reserved pages. True if the kernel took the advice.
pub fn advise_transparent(addr: usize, len: usize) -> bool {
    let start = addr.next_multiple_of(PAGE_2M);
    let end = (addr + len) & !(PAGE_2M - 1);
    if end <= start {
        return false;
    }
    // SAFETY: madvise over whole pages inside an allocation the caller owns
    // and has not handed out; MADV_HUGEPAGE changes how the pages are backed,
    // not their contents.
    unsafe { libc::madvise(start as *mut libc::c_void, end - start, libc::MADV_HUGEPAGE) == 0 }
}

/// Free pages of a hugetlb pool (`size_kb`: 2048 or 1048576), less those
/// mappings have reserved and not touched yet; 0 if there is no such pool.
fn pool_free(size_kb: usize) -> usize {
    let read = |f: &str| -> usize {
        std::fs::read_to_string(format!(
            "/sys/kernel/mm/hugepages/hugepages-{size_kb}kB/{f}"
        ))
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(0)
    };
    read("free_hugepages").saturating_sub(read("resv_hugepages"))
}

/// Places the table's regions ([`ctcore::table::Memory`]): on reserved
/// huge pages when `reserved` is set (the process has [`HugeAlloc`] as its
/// global allocator and uses the hugetlb pool), else, and when the pools
/// have no room, on transparent huge pages. Counts where they went.
#[derive(Debug, Default)]
pub struct TablePages {
    pub reserved: bool,
    /// Bytes of regions on 1 GiB pages, on 2 MiB pages, and left to the
    /// allocator with transparent huge pages advised (the kernel took the
    /// advice).
    pub on_1g: usize,
    pub on_2m: usize,
    pub transparent: usize,
    /// Regions of at least `MIN_REGION` the pools had no room for.
    pub refused: usize,
    before: (usize, usize),
}

impl TablePages {
    /// Reserved huge pages if `reserved`, else transparent ones.
    pub fn new(reserved: bool) -> TablePages {
        TablePages {
            reserved,
            ..TablePages::default()
        }
    }
}

impl ctcore::table::Memory for TablePages {
    fn placing(&mut self, len: usize) {
        if !self.reserved || len < MIN_REGION {
            return;
        }
        let gib = (len / GIB).min(pool_free(1_048_576));
        let rest = (len - gib * GIB).div_ceil(PAGE_2M);
        if rest + KEEP_FREE_2M > pool_free(2048) {
            self.refused += 1;
            return;
        }
        self.before = mapped();
        let _ = PLAN.try_with(|p| p.set((len, gib)));
    }

    fn reserved(&mut self, addr: usize, len: usize) {
        // A plan the allocator did not use (not `HugeAlloc`) ends here.
        let _ = PLAN.try_with(|p| p.set((0, 0)));
        if len >= MIN_REGION && mapping(addr).is_some() {
            let (g, m) = mapped();
            self.on_1g += g - self.before.0;
            self.on_2m += m - self.before.1;
        } else if advise_transparent(addr, len) {
            self.transparent += len;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ctcore::table::Memory;

    /// The kernel's page size for the mapping holding `addr`, in KiB
    /// (/proc/self/smaps).
    fn page_kib(addr: usize) -> Option<usize> {
        let smaps = std::fs::read_to_string("/proc/self/smaps").ok()?;
        let mut inside = false;
        for line in smaps.lines() {
            let first = line.split_whitespace().next().unwrap_or("");
            if let Some((a, b)) = first.split_once('-') {
                if let (Ok(a), Ok(b)) = (usize::from_str_radix(a, 16), usize::from_str_radix(b, 16))
                {
                    inside = (a..b).contains(&addr);
                    continue;
                }
            }
            if inside {
                if let Some(v) = line.strip_prefix("KernelPageSize:") {
                    return v.trim().trim_end_matches("kB").trim().parse().ok();
                }
            }
        }
        None
    }

    /// A region announced to `TablePages` comes from the 2 MiB pool when
    /// the pool has room (and goes back to it when freed), and from the
    /// wrapped allocator when it has not; anything not announced always
    /// comes from the wrapped allocator.
    #[test]
    fn an_announced_region_is_on_the_pool_when_it_has_room() {
        let a = HugeAlloc(std::alloc::System);
        let len = MIN_REGION + PAGE_2M / 2;
        let l = Layout::from_size_align(len, 64).unwrap();
        // Not announced: the system allocator's.
        // SAFETY: a valid layout; freed below with it.
        let p = unsafe { a.alloc(l) };
        assert!(mapping(p as usize).is_none());
        // SAFETY: allocated above with `l`.
        unsafe { a.dealloc(p, l) };

        let mut pages = TablePages::new(true);
        let room = pool_free(2048) >= len.div_ceil(PAGE_2M) + KEEP_FREE_2M;
        pages.placing(len);
        // SAFETY: as above.
        let p = unsafe { a.alloc(l) };
        assert!(!p.is_null());
        pages.reserved(p as usize, len);
        // SAFETY: `len` bytes at `p` are ours until the dealloc below.
        unsafe { std::ptr::write_bytes(p, 0xa5, len) };
        if room {
            assert_eq!(page_kib(p as usize), Some(2048), "on 2 MiB pages");
            assert_eq!(
                (pages.on_2m, pages.refused),
                (len.next_multiple_of(PAGE_2M), 0)
            );
            assert_eq!(pages.transparent, 0);
        } else {
            assert_eq!((pages.on_2m, pages.refused), (0, 1));
            assert!(mapping(p as usize).is_none());
        }
        // SAFETY: allocated above with `l`.
        unsafe { a.dealloc(p, l) };
        assert!(mapping(p as usize).is_none(), "unmapped");
        assert_ne!(page_kib(p as usize), Some(2048), "unmapped");
        // The plan was used: the next allocation of that size is the system's.
        // SAFETY: as above.
        let q = unsafe { a.alloc(l) };
        assert!(mapping(q as usize).is_none());
        // SAFETY: allocated above with `l`.
        unsafe { a.dealloc(q, l) };
    }
}
