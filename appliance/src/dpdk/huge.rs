//! The connection table on reserved huge pages.
//!
//! Transparent huge pages (`madvise(MADV_HUGEPAGE)`) are a request, not a
//! reservation: the kernel backs what it can, when it can, and a table of
//! gigabytes ends up partly on 4 KiB pages, where each random access also
//! walks page tables (on a VM, nested ones). So the table's large regions
//! are mapped from the hugetlb pools instead, as DPDK's memory is: packed
//! into 1 GiB pages when that pool has free pages (a machine set up with
//! `hugepagesz=1G`), else each on 2 MiB pages, and on transparent huge
//! pages only when neither pool has room.
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
use std::sync::{Mutex, MutexGuard};

const GIB: usize = 1 << 30;
const PAGE_2M: usize = 2 << 20;
/// Smaller regions stay with the allocator (and transparent huge pages):
/// a table of a few hundred thousand connections does not take pages from
/// the pools DPDK's buffers come from.
pub const MIN_REGION: usize = 32 << 20;
/// 2 MiB pages left in the pool for DPDK's later allocations.
const KEEP_FREE_2M: usize = 64;

/// Where a planned region may go, tried in this order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Plan {
    len: usize,
    /// Into the run of 1 GiB pages being filled, or a new one.
    gib: bool,
    /// Onto a mapping of its own on 2 MiB pages (the pool had room for it
    /// and the pages left for DPDK when the plan was made).
    own_2m: bool,
}

thread_local! {
    /// The next allocation this thread makes, if planned.
    static PLAN: Cell<Option<Plan>> = const { Cell::new(None) };
}

/// One hugetlb mapping: a region's own on 2 MiB pages, or a run of 1 GiB
/// pages that regions are packed into (`users`: regions in it not freed).
#[derive(Debug, Clone, Copy)]
struct Mapping {
    start: usize,
    len: usize,
    gib_pages: bool,
    users: usize,
}

/// A table has a handful of regions per stripe (up to 64 stripes); a
/// region that needs a new mapping and finds no free slot is not placed.
const SLOTS: usize = 1024;

struct Mappings {
    slots: [Option<Mapping>; SLOTS],
    /// The 1 GiB run being filled: its slot and the offset of its free end.
    filling: Option<(usize, usize)>,
}

static MAPPINGS: Mutex<Mappings> = Mutex::new(Mappings {
    slots: [None; SLOTS],
    filling: None,
});

fn mappings() -> MutexGuard<'static, Mappings> {
    // A panic cannot leave the slots half-written (each is one store).
    MAPPINGS.lock().unwrap_or_else(|e| e.into_inner())
}

impl Mappings {
    /// The slot of the mapping holding `addr`.
    fn holding(&self, addr: usize) -> Option<usize> {
        self.slots
            .iter()
            .position(|m| m.is_some_and(|m| (m.start..m.start + m.len).contains(&addr)))
    }

    /// Room for `len` bytes aligned to `align` in the 1 GiB run being
    /// filled: the address.
    fn room(&self, len: usize, align: usize) -> Option<usize> {
        let (slot, used) = self.filling?;
        let m = self.slots[slot]?;
        let at = (m.start + used).next_multiple_of(align);
        (at + len <= m.start + m.len).then_some(at)
    }
}

/// A global allocator that serves the table's planned regions from hugetlb
/// mappings and everything else from `A`.
pub struct HugeAlloc<A>(pub A);

// SAFETY: every pointer handed out is either `A`'s (with `A`'s contract)
// or inside a private hugetlb mapping of this module, `l.size()` bytes at
// `l.align()` that no other allocation overlaps, the caller's until
// `dealloc`/`realloc` gives it back (a mapping is unmapped once none of
// its allocations is live).
unsafe impl<A: GlobalAlloc> GlobalAlloc for HugeAlloc<A> {
    unsafe fn alloc(&self, l: Layout) -> *mut u8 {
        if let Some(p) = planned(l) {
            return p;
        }
        // SAFETY: the caller's layout, forwarded.
        unsafe { self.0.alloc(l) }
    }

    unsafe fn alloc_zeroed(&self, l: Layout) -> *mut u8 {
        // Fresh hugetlb pages read as zero, and a region is placed once in
        // a run's unused part.
        if let Some(p) = planned(l) {
            return p;
        }
        // SAFETY: as above.
        unsafe { self.0.alloc_zeroed(l) }
    }

    unsafe fn dealloc(&self, p: *mut u8, l: Layout) {
        if l.size() >= MIN_REGION && release(p as usize) {
            return;
        }
        // SAFETY: not one of ours, so `A` allocated it with this layout.
        unsafe { self.0.dealloc(p, l) }
    }

    unsafe fn realloc(&self, p: *mut u8, l: Layout, new: usize) -> *mut u8 {
        if l.size() >= MIN_REGION && mappings().holding(p as usize).is_some() {
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
                release(p as usize);
            }
            return q;
        }
        // SAFETY: not one of ours: `A`'s, with this layout.
        unsafe { self.0.realloc(p, l, new) }
    }
}

/// Serves `l` from a hugetlb mapping if it is the allocation this thread
/// planned (the plan is used up either way). A 1 GiB run that cannot be
/// had falls back to 2 MiB pages, and those to the wrapped allocator.
fn planned(l: Layout) -> Option<*mut u8> {
    if l.size() < MIN_REGION || l.align() > PAGE_2M {
        return None;
    }
    let plan = PLAN.try_with(|p| p.get()).ok()??;
    if plan.len != l.size() {
        return None;
    }
    let _ = PLAN.try_with(|p| p.set(None));
    let len = plan.len;
    let mut ms = mappings();
    if plan.gib {
        let mut at = ms.room(len, l.align().max(64));
        if at.is_none() {
            let free = ms.slots.iter().position(Option::is_none);
            let run = len.next_multiple_of(GIB);
            if let (Some(free), Some(start)) = (free, free.and_then(|_| map(run, 30))) {
                ms.slots[free] = Some(Mapping {
                    start,
                    len: run,
                    gib_pages: true,
                    users: 0,
                });
                ms.filling = Some((free, 0));
                at = Some(start);
            }
        }
        if let (Some(at), Some((slot, _))) = (at, ms.filling) {
            let m = ms.slots[slot].as_mut()?;
            m.users += 1;
            let used = at + len - m.start;
            ms.filling = Some((slot, used));
            return Some(at as *mut u8);
        }
    }
    if !plan.own_2m {
        return None;
    }
    let free = ms.slots.iter().position(Option::is_none)?;
    let start = map(len.next_multiple_of(PAGE_2M), 21)?;
    ms.slots[free] = Some(Mapping {
        start,
        len: len.next_multiple_of(PAGE_2M),
        gib_pages: false,
        users: 1,
    });
    Some(start as *mut u8)
}

/// A new private mapping of `len` bytes on pages of `1 << shift` bytes
/// (the kernel aligns it to them); None if the pool has no room.
fn map(len: usize, shift: i32) -> Option<usize> {
    // SAFETY: a new private anonymous mapping; nothing else refers to it.
    let p = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            len,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_PRIVATE
                | libc::MAP_ANONYMOUS
                | libc::MAP_HUGETLB
                | (shift << libc::MAP_HUGE_SHIFT),
            -1,
            0,
        )
    };
    (p != libc::MAP_FAILED).then_some(p as usize)
}

/// Gives back the region at `addr`; its mapping is unmapped once none of
/// its regions is live. False if `addr` is not in one of ours.
fn release(addr: usize) -> bool {
    let mut ms = mappings();
    let Some(slot) = ms.holding(addr) else {
        return false;
    };
    let Some(m) = ms.slots[slot].as_mut() else {
        return false;
    };
    m.users -= 1;
    if m.users == 0 {
        let (start, len) = (m.start, m.len);
        ms.slots[slot] = None;
        if ms.filling.is_some_and(|(s, _)| s == slot) {
            ms.filling = None;
        }
        // SAFETY: our own mapping, none of whose regions is live.
        unsafe { libc::munmap(start as *mut libc::c_void, len) };
    }
    true
}

/// The size of the pages under `addr`, if it is in one of our mappings.
fn page_size(addr: usize) -> Option<usize> {
    let ms = mappings();
    let m = ms.slots[ms.holding(addr)?]?;
    Some(if m.gib_pages { GIB } else { PAGE_2M })
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
/// global allocator and uses the hugetlb pools), else, and when the pools
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
    /// The size of the region planned and not reserved yet.
    pending: Option<usize>,
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
        // Read apart from the lock (the pools' files are read below).
        let fits = mappings().room(len, 64).is_some();
        let plan = Plan {
            len,
            gib: fits || pool_free(1_048_576) >= len.div_ceil(GIB),
            own_2m: pool_free(2048) >= len.div_ceil(PAGE_2M) + KEEP_FREE_2M,
        };
        self.pending = Some(len);
        if plan.gib || plan.own_2m {
            let _ = PLAN.try_with(|p| p.set(Some(plan)));
        }
    }

    fn reserved(&mut self, addr: usize, len: usize) {
        // A plan the allocator did not use (not `HugeAlloc`) ends here.
        let _ = PLAN.try_with(|p| p.set(None));
        let planned = self.pending.take() == Some(len);
        match page_size(addr) {
            Some(GIB) => self.on_1g += len,
            Some(_) => self.on_2m += len,
            None => {
                // No room in the pools, when planned or since.
                self.refused += usize::from(planned);
                if advise_transparent(addr, len) {
                    self.transparent += len;
                }
            }
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

    const LEN: usize = MIN_REGION + PAGE_2M / 2;

    fn layout() -> Layout {
        Layout::from_size_align(LEN, 64).unwrap()
    }

    /// Without reserved pages (`--no-huge`), an announced region is the
    /// wrapped allocator's, with transparent huge pages advised.
    #[test]
    fn regions_are_on_transparent_pages_without_reserved_ones() {
        let a = HugeAlloc(std::alloc::System);
        let mut pages = TablePages::new(false);
        pages.placing(LEN);
        // SAFETY: a valid layout; freed below with it.
        let p = unsafe { a.alloc(layout()) };
        assert!(!p.is_null());
        pages.reserved(p as usize, LEN);
        assert_eq!(page_size(p as usize), None);
        assert_eq!((pages.on_1g, pages.on_2m, pages.refused), (0, 0, 0));
        assert_eq!(pages.transparent, LEN, "madvise(MADV_HUGEPAGE) taken");
        // SAFETY: allocated above with this layout.
        unsafe { a.dealloc(p, layout()) };
    }

    /// Regions announced to `TablePages` come from the hugetlb pools:
    /// packed into a run of 1 GiB pages when that pool has free pages,
    /// else each on 2 MiB pages; they do not overlap, the zeroed one reads
    /// zero, a region grown moves to the wrapped allocator with its bytes,
    /// and freed ones go back. Without clear room in the pools (other
    /// processes use them too) there is nothing to check.
    #[test]
    fn announced_regions_are_on_the_pools_when_they_have_room() {
        let a = HugeAlloc(std::alloc::System);
        let l = layout();
        // Not announced: the system allocator's.
        // SAFETY: a valid layout; freed below with it.
        let p = unsafe { a.alloc(l) };
        assert_eq!(page_size(p as usize), None);
        // SAFETY: allocated above with `l`.
        unsafe { a.dealloc(p, l) };

        let gib = pool_free(1_048_576) >= 1;
        let room_2m = pool_free(2048) >= 2 * LEN.div_ceil(PAGE_2M) + KEEP_FREE_2M + 32;
        let mut pages = TablePages::new(true);
        if !gib && !room_2m {
            if pool_free(2048) < LEN.div_ceil(PAGE_2M) + KEEP_FREE_2M {
                // No room at all: the system allocator's, counted refused.
                pages.placing(LEN);
                // SAFETY: as above.
                let p = unsafe { a.alloc(l) };
                pages.reserved(p as usize, LEN);
                assert_eq!(page_size(p as usize), None);
                assert_eq!((pages.on_1g, pages.on_2m, pages.refused), (0, 0, 1));
                assert_eq!(pages.transparent, LEN);
                // SAFETY: allocated above with `l`.
                unsafe { a.dealloc(p, l) };
            } else {
                eprintln!("the hugetlb pools are nearly full: not enough room to check both ways");
            }
            return;
        }
        pages.placing(LEN);
        // SAFETY: as above.
        let r0 = unsafe { a.alloc(l) };
        pages.reserved(r0 as usize, LEN);
        pages.placing(LEN);
        // SAFETY: as above.
        let r1 = unsafe { a.alloc_zeroed(l) };
        pages.reserved(r1 as usize, LEN);
        assert!(!r0.is_null() && !r1.is_null());
        let (x, y) = (r0 as usize, r1 as usize);
        assert!(x % 64 == 0 && y % 64 == 0);
        assert!(x + LEN <= y || y + LEN <= x, "disjoint");
        // SAFETY: `LEN` bytes at each are ours until freed below.
        unsafe {
            std::ptr::write_bytes(r0, 0xa5, LEN);
            assert!([0, LEN / 2, LEN - 1].iter().all(|&i| *r1.add(i) == 0));
            std::ptr::write_bytes(r1, 0x5a, LEN);
        }
        let kib = [page_kib(x), page_kib(y)];
        if gib {
            assert_eq!(kib, [Some(1 << 20); 2], "on 1 GiB pages");
            assert_eq!((pages.on_1g, pages.on_2m, pages.refused), (2 * LEN, 0, 0));
            let ms = mappings();
            assert_eq!(ms.holding(x), ms.holding(y), "packed into one run");
        } else {
            assert_eq!(kib, [Some(2048); 2], "on 2 MiB pages");
            assert_eq!((pages.on_1g, pages.on_2m, pages.refused), (0, 2 * LEN, 0));
        }
        assert_eq!(pages.transparent, 0);
        // Grown: moved to the system allocator, its bytes with it.
        // SAFETY: `r0` is ours with layout `l`; the new size is valid.
        let q = unsafe { a.realloc(r0, l, LEN + PAGE_2M) };
        assert!(!q.is_null());
        assert_eq!(page_size(q as usize), None);
        // SAFETY: `q` holds `LEN + PAGE_2M` bytes, the first `LEN` copied.
        assert!(unsafe { [0, LEN - 1].iter().all(|&i| *q.add(i) == 0xa5) });
        if !gib {
            assert_eq!(page_size(x), None, "its own mapping unmapped");
        }
        assert!(page_size(y).is_some(), "the other region untouched");
        // SAFETY: `q` from realloc with this size; `r1` with `l`.
        unsafe {
            a.dealloc(q, Layout::from_size_align(LEN + PAGE_2M, 64).unwrap());
            a.dealloc(r1, l);
        }
        for addr in [x, y] {
            assert_eq!(page_size(addr), None, "given back");
            assert!(
                !matches!(page_kib(addr), Some(2048) | Some(1_048_576)),
                "unmapped"
            );
        }
        // The plans were used: the next allocation of that size is the system's.
        // SAFETY: as above.
        let q = unsafe { a.alloc(l) };
        assert_eq!(page_size(q as usize), None);
        // SAFETY: allocated above with `l`.
        unsafe { a.dealloc(q, l) };
    }
}
