//! Thin safe wrappers over DPDK: the EAL, mempools, mbufs (RAII), ports with
//! N RX/TX queues and symmetric RSS, bursts, link status, stats and xstats,
//! lcore launch, DPDK tooling (telemetry commands, pdump for `dpdk-dumpcap`).
//! The only module of this crate with `unsafe` code.
//!
//! Ownership: an [`Mbuf`] owns one packet buffer and frees it on drop. RX bursts
//! append owned `Mbuf`s to an `ArrayVec`; TX bursts hand the sent ones to the
//! driver and leave the unsent ones in the vector, still owned by the caller.

use std::ffi::{c_char, c_int, c_uint, c_void, CStr, CString};
use std::ptr::NonNull;
use std::sync::atomic::{AtomicBool, Ordering};

use arrayvec::ArrayVec;
use dpdk_sys as sys;

pub mod huge;

/// A DPDK ethdev port id.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct PortId(pub u16);

/// An RX or TX queue index on one port.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct QueueId(pub u16);

/// An EAL lcore id.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct LcoreId(pub u32);

/// Everything that can go wrong talking to DPDK. Messages say what to do.
#[derive(Debug, thiserror::Error)]
pub enum DpdkError {
    #[error("DPDK EAL initialisation failed ({0}): check eal_args and hugepages (scripts/setup.sh), or add \"--no-huge\" to eal_args")]
    EalInit(String),
    #[error("the DPDK EAL is already initialised in this process (it can be initialised once)")]
    EalAlreadyInit,
    #[error("DPDK found no port named {name:?} (from devargs {devargs:?}): check the devargs string and that its PMD is installed (apt-get install dpdk)")]
    PortNotFound { name: String, devargs: String },
    #[error("port {port}: {what} failed: {reason}")]
    Port {
        port: u16,
        what: &'static str,
        reason: String,
    },
    #[error("mempool {name}: creation failed ({reason}): reserve more hugepages (scripts/setup.sh) or lower mempool_mbufs")]
    Mempool { name: String, reason: String },
    #[error(
        "lcore {lcore}: launch failed ({reason}): is it listed in the EAL core list and idle?"
    )]
    Launch { lcore: u32, reason: String },
    #[error("ring {name}: creation failed ({reason}): reserve more hugepages (scripts/setup.sh) or use fewer workers")]
    Ring { name: String, reason: String },
    #[error("string contains a NUL byte: {0:?}")]
    Nul(String),
    #[error("DPDK tooling: {what} failed: {reason}")]
    Tooling { what: &'static str, reason: String },
}

/// The text for the current `rte_errno`.
fn errno_text() -> String {
    // SAFETY: ct_shim_errno reads the per-thread rte_errno; no preconditions.
    let errno = unsafe { sys::ct_shim_errno() };
    strerror(errno)
}

/// The text for a DPDK error number (positive or negative).
fn strerror(err: c_int) -> String {
    // SAFETY: rte_strerror returns a pointer to a static or thread-local
    // NUL-terminated string for any input.
    let text = unsafe { CStr::from_ptr(sys::rte_strerror(err.abs())) };
    format!("{} (errno {})", text.to_string_lossy(), err.abs())
}

fn port_err(port: PortId, what: &'static str, ret: c_int) -> DpdkError {
    DpdkError::Port {
        port: port.0,
        what,
        reason: strerror(ret),
    }
}

/// The DPDK runtime version string (e.g. "DPDK 22.11.11").
pub fn runtime_version() -> String {
    // SAFETY: ct_shim_version returns rte_version(), a static NUL-terminated string.
    let v = unsafe { CStr::from_ptr(sys::ct_shim_version()) };
    v.to_string_lossy().into_owned()
}

/// The DPDK version the bindings were built against.
pub fn build_version() -> &'static str {
    sys::DPDK_BUILD_VERSION
}

static EAL_INIT: AtomicBool = AtomicBool::new(false);

/// The initialised EAL. Dropping it calls `rte_eal_cleanup`; drop ports and
/// mempools first (the [`crate::control`] runtime orders this).
pub struct Eal {
    _not_send: std::marker::PhantomData<*const ()>,
}

impl Eal {
    /// Initialises the EAL with `args` (argv without the program name).
    pub fn init(args: &[String]) -> Result<Eal, DpdkError> {
        if EAL_INIT.swap(true, Ordering::SeqCst) {
            return Err(DpdkError::EalAlreadyInit);
        }
        let mut owned = Vec::with_capacity(args.len() + 1);
        owned.push(CString::new("ctgate").expect("no NUL"));
        for a in args {
            owned.push(CString::new(a.as_str()).map_err(|_| DpdkError::Nul(a.clone()))?);
        }
        // rte_eal_init may permute argv and keeps pointers into it: leak it on
        // purpose (once per process).
        let owned: &'static mut [CString] = owned.leak();
        let argv: Vec<*mut c_char> = owned
            .iter_mut()
            .map(|s| s.as_ptr() as *mut c_char)
            .collect();
        let argv: &'static mut [*mut c_char] = argv.leak();
        // SAFETY: argv holds argc valid NUL-terminated strings that live for the
        // rest of the process; this is the only EAL init (guarded above).
        let ret = unsafe { sys::rte_eal_init(argv.len() as c_int, argv.as_mut_ptr()) };
        if ret < 0 {
            return Err(DpdkError::EalInit(errno_text()));
        }
        Ok(Eal {
            _not_send: std::marker::PhantomData,
        })
    }

    /// Number of ethdev ports DPDK probed.
    pub fn ports_available(&self) -> u16 {
        // SAFETY: the EAL is initialised (self exists).
        unsafe { sys::rte_eth_dev_count_avail() }
    }

    /// The port DPDK created for a device name (a vdev name like `net_pcap0`
    /// or a PCI address like `0000:01:00.0`).
    pub fn port_by_name(&self, name: &str, devargs: &str) -> Result<PortId, DpdkError> {
        let c = CString::new(name).map_err(|_| DpdkError::Nul(name.to_owned()))?;
        let mut id: u16 = 0;
        // SAFETY: c is a valid C string; id is a valid out pointer.
        let ret = unsafe { sys::rte_eth_dev_get_port_by_name(c.as_ptr(), &mut id) };
        if ret != 0 {
            return Err(DpdkError::PortNotFound {
                name: name.to_owned(),
                devargs: devargs.to_owned(),
            });
        }
        Ok(PortId(id))
    }

    /// NUMA socket of an lcore.
    pub fn lcore_socket(&self, lcore: LcoreId) -> i32 {
        // SAFETY: plain query on an initialised EAL.
        unsafe { sys::rte_lcore_to_socket_id(lcore.0) as i32 }
    }

    /// TSC ticks per second.
    pub fn tsc_hz(&self) -> u64 {
        // SAFETY: plain query on an initialised EAL.
        unsafe { sys::rte_get_tsc_hz() }
    }

    /// Runs `f` on worker lcore `lcore` (which must be idle and in the core list).
    pub fn launch(
        &self,
        lcore: LcoreId,
        f: Box<dyn FnOnce() -> i32 + Send>,
    ) -> Result<(), DpdkError> {
        unsafe extern "C" fn trampoline(arg: *mut c_void) -> c_int {
            // SAFETY: arg is the Box<Box<dyn FnOnce>> leaked by launch() below and
            // is consumed exactly once here.
            let f = unsafe { Box::from_raw(arg as *mut Box<dyn FnOnce() -> i32 + Send>) };
            std::panic::catch_unwind(std::panic::AssertUnwindSafe(f)).unwrap_or(-1)
        }
        let arg = Box::into_raw(Box::new(f)) as *mut c_void;
        // SAFETY: trampoline has the lcore_function_t ABI; arg stays valid until
        // trampoline consumes it, and is reclaimed below if the launch fails.
        let ret = unsafe { sys::rte_eal_remote_launch(Some(trampoline), arg, lcore.0) };
        if ret != 0 {
            // SAFETY: the launch failed, so trampoline never ran and we still own arg.
            drop(unsafe { Box::from_raw(arg as *mut Box<dyn FnOnce() -> i32 + Send>) });
            return Err(DpdkError::Launch {
                lcore: lcore.0,
                reason: strerror(ret),
            });
        }
        Ok(())
    }

    /// Waits for the function launched on `lcore` and returns its value.
    pub fn wait(&self, lcore: LcoreId) -> i32 {
        // SAFETY: plain call on an initialised EAL from the main lcore.
        unsafe { sys::rte_eal_wait_lcore(lcore.0) }
    }
}

impl Drop for Eal {
    fn drop(&mut self) {
        // SAFETY: called once, from the main thread, after all lcores returned
        // (control waits for them) and ports/mempools were released.
        unsafe {
            sys::rte_eal_mp_wait_lcore();
            sys::rte_eal_cleanup();
        }
    }
}

/// The TSC of the calling core.
#[inline(always)]
pub fn tsc() -> u64 {
    // SAFETY: reads the time stamp counter; no preconditions.
    unsafe { sys::ct_shim_rdtsc() }
}

/// Real prefetch instructions for the conntrack engine's burst pipeline
/// (ctcore has no unsafe code and takes them from here).
#[derive(Debug, Clone, Copy, Default)]
pub struct HwPrefetch;

impl ctcore::table::Prefetch for HwPrefetch {
    #[inline(always)]
    fn read(p: *const u8) {
        // SAFETY: a prefetch is a hint and never faults, whatever the address.
        #[allow(unused_unsafe)]
        unsafe {
            std::arch::x86_64::_mm_prefetch::<{ std::arch::x86_64::_MM_HINT_T0 }>(p as *const i8)
        }
    }

    #[inline(always)]
    fn cycles() -> u64 {
        tsc()
    }
}

/// The EAL lcore id of the calling thread (`u32::MAX` off EAL threads).
pub fn current_lcore() -> LcoreId {
    // SAFETY: reads a thread-local; no preconditions.
    LcoreId(unsafe { sys::ct_shim_lcore_id() })
}

/// A packet mbuf pool. Allocation and free are thread-safe (per-lcore caches).
pub struct Mempool {
    ptr: NonNull<sys::rte_mempool>,
}

// SAFETY: rte_mempool get/put are multi-producer/multi-consumer safe.
unsafe impl Send for Mempool {}
// SAFETY: as above; &Mempool only allows alloc, which is thread-safe.
unsafe impl Sync for Mempool {}

impl Mempool {
    /// Creates a pool of `n` mbufs with the default 2 KiB data room.
    pub fn new(
        _eal: &Eal,
        name: &str,
        n: u32,
        cache: u32,
        socket: i32,
    ) -> Result<Mempool, DpdkError> {
        let c = CString::new(name).map_err(|_| DpdkError::Nul(name.to_owned()))?;
        // SAFETY: c is a valid C string; the EAL is initialised (_eal).
        let p = unsafe {
            sys::rte_pktmbuf_pool_create(
                c.as_ptr(),
                n as c_uint,
                cache as c_uint,
                0,
                sys::RTE_MBUF_DEFAULT_BUF_SIZE as u16,
                socket as c_int,
            )
        };
        match NonNull::new(p) {
            Some(ptr) => Ok(Mempool { ptr }),
            None => Err(DpdkError::Mempool {
                name: name.to_owned(),
                reason: errno_text(),
            }),
        }
    }

    /// One empty mbuf, or None when the pool is exhausted.
    #[inline]
    pub fn alloc(&self) -> Option<Mbuf> {
        // SAFETY: self.ptr is a live pktmbuf pool.
        let m = unsafe { sys::ct_shim_pktmbuf_alloc(self.ptr.as_ptr()) };
        NonNull::new(m).map(Mbuf)
    }

    /// Mbufs currently free in the pool (approximate under concurrency).
    pub fn available(&self) -> u32 {
        // SAFETY: read-only query on a live pool.
        unsafe { sys::rte_mempool_avail_count(self.ptr.as_ptr()) }
    }

    /// Mbufs taken from the pool and not returned: in RX rings, in flight
    /// through the workers, waiting for a neighbour or handed over, in TX
    /// rings (approximate under concurrency; the per-lcore caches count as
    /// free). Steady under steady traffic: a rise that stays is a leak.
    pub fn in_use(&self) -> u32 {
        // SAFETY: read-only query on a live pool (it sums the ring and the
        // per-lcore cache lengths, which other threads may change meanwhile).
        unsafe { sys::rte_mempool_in_use_count(self.ptr.as_ptr()) }
    }

    /// The pool's size in mbufs.
    pub fn size(&self) -> u32 {
        // SAFETY: self.ptr is a live pool; `size` is set at creation and never changes.
        unsafe { (*self.ptr.as_ptr()).size }
    }

    fn as_ptr(&self) -> *mut sys::rte_mempool {
        self.ptr.as_ptr()
    }
}

impl Drop for Mempool {
    fn drop(&mut self) {
        // SAFETY: the pool is not used by any port (ports are closed before the
        // pool is dropped) and every mbuf was returned.
        unsafe { sys::rte_mempool_free(self.ptr.as_ptr()) }
    }
}

/// One owned packet buffer (single segment as far as this API is concerned).
/// Dropping it returns it to its pool.
#[repr(transparent)]
pub struct Mbuf(NonNull<sys::rte_mbuf>);

// SAFETY: an mbuf is owned by exactly one Mbuf value; moving it to another
// thread moves the ownership.
unsafe impl Send for Mbuf {}

impl Mbuf {
    /// Start and length of the first segment's data: `rte_pktmbuf_mtod` and
    /// `data_len`, read from the mbuf fields directly so that the fast path
    /// makes no call into C. Debug builds check them against the C shim.
    #[inline(always)]
    fn raw_data(&self) -> (*mut u8, usize) {
        let m = self.0.as_ptr();
        // SAFETY: m is a live mbuf we own; buf_addr + data_off is where DPDK
        // puts the data (rte_pktmbuf_mtod), data_len bytes of it are initialised.
        let (ptr, len) = unsafe {
            (
                ((*m).buf_addr as *mut u8).add((*m).data_off as usize),
                (*m).data_len as usize,
            )
        };
        // SAFETY: the shim functions read the same live mbuf.
        debug_assert_eq!(ptr as *mut c_void, unsafe { sys::ct_shim_pktmbuf_mtod(m) });
        // SAFETY: as above.
        debug_assert_eq!(len, unsafe { sys::ct_shim_pktmbuf_data_len(m) } as usize);
        (ptr, len)
    }

    /// The packet bytes in the first segment.
    #[inline(always)]
    pub fn data(&self) -> &[u8] {
        let (ptr, len) = self.raw_data();
        // SAFETY: ptr points at len initialised bytes inside the buffer, which
        // lives as long as self.
        unsafe { std::slice::from_raw_parts(ptr, len) }
    }

    /// The packet bytes in the first segment, writable.
    #[inline(always)]
    pub fn data_mut(&mut self) -> &mut [u8] {
        let (ptr, len) = self.raw_data();
        // SAFETY: as in data(); &mut self guarantees exclusive access.
        unsafe { std::slice::from_raw_parts_mut(ptr, len) }
    }

    /// The DPDK port the packet was received on (`port`, set by the PMD).
    #[inline(always)]
    pub fn port(&self) -> PortId {
        // SAFETY: reads a field of a live mbuf we own.
        PortId(unsafe { (*self.0.as_ptr()).port })
    }

    /// Sets the packet's input port (what [`Mbuf::port`] returns).
    #[inline(always)]
    pub fn set_port(&mut self, port: PortId) {
        // SAFETY: writes a field of a live mbuf we own exclusively.
        unsafe { (*self.0.as_ptr()).port = port.0 }
    }

    /// Total packet length over all segments.
    #[inline(always)]
    pub fn pkt_len(&self) -> u32 {
        let m = self.0.as_ptr();
        // SAFETY: reads a field of a live mbuf we own.
        let len = unsafe { (*m).pkt_len };
        // SAFETY: as above, through the shim.
        debug_assert_eq!(len, unsafe { sys::ct_shim_pktmbuf_pkt_len(m) });
        len
    }

    /// True if the whole packet is in the first segment.
    #[inline(always)]
    pub fn is_contiguous(&self) -> bool {
        self.pkt_len() == self.data().len() as u32
    }

    /// Grows the packet by `len` bytes at the end; None if the tailroom is short.
    pub fn append(&mut self, len: u16) -> Option<&mut [u8]> {
        // SAFETY: append returns a pointer to len writable bytes inside the buffer or NULL.
        unsafe {
            let p = sys::ct_shim_pktmbuf_append(self.0.as_ptr(), len);
            if p.is_null() {
                None
            } else {
                Some(std::slice::from_raw_parts_mut(p as *mut u8, len as usize))
            }
        }
    }

    /// Grows the packet by `len` bytes at the front (`rte_pktmbuf_prepend`):
    /// the new bytes are the first of [`Mbuf::data`] and hold whatever the
    /// headroom held until written. False (nothing changed) if the headroom
    /// is short.
    pub fn prepend(&mut self, len: u16) -> bool {
        // SAFETY: prepend moves data_off back by len within the headroom and
        // fixes data_len / pkt_len, or returns NULL and changes nothing; the
        // bytes it exposes lie inside the buffer (data() may read them).
        !unsafe { sys::ct_shim_pktmbuf_prepend(self.0.as_ptr(), len) }.is_null()
    }

    /// Removes `len` bytes from the front of the packet (`rte_pktmbuf_adj`).
    /// False (nothing changed) if the first segment is shorter.
    pub fn adj(&mut self, len: u16) -> bool {
        // SAFETY: adj moves data_off forward by len within the first segment's
        // data and fixes data_len / pkt_len, or returns NULL and changes nothing.
        !unsafe { sys::ct_shim_pktmbuf_adj(self.0.as_ptr(), len) }.is_null()
    }

    /// Shortens a single-segment packet to `len` bytes (no-op if already shorter).
    pub fn truncate(&mut self, len: usize) {
        let cur = self.data().len();
        if len < cur && self.is_contiguous() {
            // SAFETY: trimming cur-len <= data_len bytes from the last (only) segment.
            unsafe {
                sys::ct_shim_pktmbuf_trim(self.0.as_ptr(), (cur - len) as u16);
            }
        }
    }

    /// What the NIC said about the L4 checksum (`ol_flags`): GOOD, or NONE
    /// (the data's integrity verified), needs no software check; BAD is
    /// INVALID; UNKNOWN is checked in software.
    #[inline(always)]
    pub fn rx_l4_csum(&self) -> ctcore::engine::RxCsum {
        use ctcore::engine::RxCsum;
        let m = self.0.as_ptr();
        // SAFETY: reads a field of a live mbuf we own.
        let flags = unsafe { (*m).ol_flags };
        match flags & sys::RTE_MBUF_F_RX_L4_CKSUM_MASK {
            sys::RTE_MBUF_F_RX_L4_CKSUM_GOOD | sys::RTE_MBUF_F_RX_L4_CKSUM_NONE => RxCsum::Good,
            sys::RTE_MBUF_F_RX_L4_CKSUM_BAD => RxCsum::Bad,
            _ => RxCsum::Unknown,
        }
    }

    /// Prefetches the packet data into L1.
    #[inline(always)]
    pub fn prefetch(&self) {
        let (ptr, _) = self.raw_data();
        // SAFETY: a prefetch is a hint and never faults, whatever the address
        // (the intrinsic is a safe fn on newer toolchains, hence the allow).
        #[allow(unused_unsafe)]
        unsafe {
            std::arch::x86_64::_mm_prefetch::<{ std::arch::x86_64::_MM_HINT_T0 }>(ptr as *const i8)
        }
    }
}

impl Drop for Mbuf {
    #[inline]
    fn drop(&mut self) {
        // SAFETY: we own the mbuf; it is freed once.
        unsafe { sys::ct_shim_pktmbuf_free(self.0.as_ptr()) }
    }
}

/// Receives up to the free capacity of `out` packets from `port`/`queue`,
/// appending them. Returns how many arrived.
#[inline(always)]
pub fn rx_burst<const N: usize>(
    port: PortId,
    queue: QueueId,
    out: &mut ArrayVec<Mbuf, N>,
) -> usize {
    let len = out.len();
    let room = (N - len).min(u16::MAX as usize) as u16;
    if room == 0 {
        return 0;
    }
    // SAFETY: Mbuf is repr(transparent) over NonNull<rte_mbuf>, layout-equal to
    // *mut rte_mbuf; the driver writes n <= room non-null pointers to owned mbufs
    // into the spare capacity, which then become initialised elements.
    unsafe {
        let dst = out.as_mut_ptr().add(len) as *mut *mut sys::rte_mbuf;
        let n = sys::ct_shim_rx_burst(port.0, queue.0, dst, room) as usize;
        out.set_len(len + n);
        n
    }
}

/// Sends the packets of `pkts` from the front; the driver takes ownership of
/// the sent ones. The unsent ones stay in `pkts` (in order). Returns how many were sent.
#[inline(always)]
pub fn tx_burst<const N: usize>(
    port: PortId,
    queue: QueueId,
    pkts: &mut ArrayVec<Mbuf, N>,
) -> usize {
    let len = pkts.len();
    if len == 0 {
        return 0;
    }
    // SAFETY: the vector's first len elements are initialised Mbufs (layout of
    // *mut rte_mbuf). The driver takes ownership of the first `sent`; we forget
    // them by moving the unsent tail to the front and shortening the vector.
    unsafe {
        let base = pkts.as_mut_ptr();
        let sent =
            sys::ct_shim_tx_burst(port.0, queue.0, base as *mut *mut sys::rte_mbuf, len as u16)
                as usize;
        if sent > 0 {
            std::ptr::copy(base.add(sent), base, len - sent);
            pkts.set_len(len - sent);
        }
        sent
    }
}

/// A ring of mbufs from one worker to another (software dispatch's
/// handoff): `rte_ring` with one producer and one consumer. [`handoff_ring`]
/// makes the two ends; each is `Send` but not `Clone`, so one thread
/// enqueues and one dequeues, as the ring's single-producer /
/// single-consumer mode requires.
struct RingShared {
    ring: NonNull<sys::rte_ring>,
}

// SAFETY: the ring is a lock-free structure meant to be shared between
// threads; the producer / consumer split is enforced by the end types.
unsafe impl Send for RingShared {}
// SAFETY: as above: `&RingShared` only reaches the ring through an end.
unsafe impl Sync for RingShared {}

impl Drop for RingShared {
    fn drop(&mut self) {
        // Both ends are gone: nothing else touches the ring. Free what it
        // still holds (a worker that stopped between enqueue and dequeue).
        let mut left: ArrayVec<Mbuf, 32> = ArrayVec::new();
        loop {
            // SAFETY: the last owner dequeues, as the consumer would.
            let n = unsafe { ring_dequeue(self.ring, &mut left) };
            left.clear();
            if n == 0 {
                break;
            }
        }
        // SAFETY: created by rte_ring_create, freed once.
        unsafe { sys::rte_ring_free(self.ring.as_ptr()) }
    }
}

/// The producer end of a handoff ring.
pub struct RingTx(std::sync::Arc<RingShared>);
/// The consumer end of a handoff ring.
pub struct RingRx(std::sync::Arc<RingShared>);

/// Makes a single-producer / single-consumer ring of `count` (a power of
/// two; it holds `count - 1`) mbufs on `socket`, named `name` (unique in the
/// process).
pub fn handoff_ring(name: &str, count: u32, socket: i32) -> Result<(RingTx, RingRx), DpdkError> {
    let c = CString::new(name).map_err(|_| DpdkError::Nul(name.to_owned()))?;
    // SAFETY: c is a valid C string; count is a power of two (checked by DPDK).
    let r = unsafe { sys::ct_shim_ring_create_spsc(c.as_ptr(), count, socket) };
    let ring = NonNull::new(r).ok_or_else(|| DpdkError::Ring {
        name: name.to_owned(),
        reason: errno_text(),
    })?;
    let shared = std::sync::Arc::new(RingShared { ring });
    Ok((RingTx(shared.clone()), RingRx(shared)))
}

/// Dequeues up to the free capacity of `out` from `ring`, appending.
/// SAFETY: the caller is the ring's only consumer at this time.
#[inline(always)]
unsafe fn ring_dequeue<const N: usize>(
    ring: NonNull<sys::rte_ring>,
    out: &mut ArrayVec<Mbuf, N>,
) -> usize {
    let len = out.len();
    let room = (N - len) as c_uint;
    if room == 0 {
        return 0;
    }
    // SAFETY: the ring holds pointers to owned mbufs (enqueued by RingTx,
    // which gave up their ownership); the n written into the spare
    // capacity become initialised Mbufs (repr(transparent) over the pointer).
    unsafe {
        let dst = out.as_mut_ptr().add(len) as *mut *mut c_void;
        let n = sys::ct_shim_ring_dequeue_burst(ring.as_ptr(), dst, room) as usize;
        out.set_len(len + n);
        n
    }
}

impl RingTx {
    /// Enqueues the packets of `pkts` from the front; the ring takes the
    /// enqueued ones, the rest stay in `pkts` (in order). Returns how many
    /// were enqueued.
    #[inline(always)]
    pub fn enqueue<const N: usize>(&mut self, pkts: &mut ArrayVec<Mbuf, N>) -> usize {
        let len = pkts.len();
        if len == 0 {
            return 0;
        }
        // SAFETY: &mut self: this thread is the only producer. The first
        // len elements are initialised Mbufs (pointer layout); the ring owns
        // the first `n` from now on, which we forget by moving the tail
        // forward and shortening the vector.
        unsafe {
            let base = pkts.as_mut_ptr();
            let n = sys::ct_shim_ring_enqueue_burst(
                self.0.ring.as_ptr(),
                base as *const *mut c_void,
                len as c_uint,
            ) as usize;
            if n > 0 {
                std::ptr::copy(base.add(n), base, len - n);
                pkts.set_len(len - n);
            }
            n
        }
    }
}

impl RingRx {
    /// Dequeues up to the free capacity of `out`, appending; returns how many.
    #[inline(always)]
    pub fn dequeue<const N: usize>(&mut self, out: &mut ArrayVec<Mbuf, N>) -> usize {
        // SAFETY: &mut self: this thread is the only consumer.
        unsafe { ring_dequeue(self.0.ring, out) }
    }
}

/// What [`Port::setup`] asks of a port.
#[derive(Debug, Clone)]
pub struct PortConf {
    pub rx_queues: u16,
    pub tx_queues: u16,
    pub rx_desc: u16,
    pub tx_desc: u16,
    /// Set this MAC address before starting, if given.
    pub mac: Option<[u8; 6]>,
}

/// What a port turned out to be after setup.
#[derive(Debug, Clone)]
pub struct PortInfo {
    pub id: PortId,
    pub driver: String,
    pub mac: [u8; 6],
    pub rx_queues: u16,
    /// TX queues set up: as many as asked (one per worker) where the PMD
    /// has them; fewer (at least one) where it has not, and then workers
    /// share them (the worker serialises its bursts on a shared queue).
    pub tx_queues: u16,
    /// RSS hash functions enabled (0 if RSS is off: one RX queue, or the PMD has none).
    pub rss_hf: u64,
    /// The RSS redirection table as read back from the device after
    /// programming it round-robin over the RX queues (`reta[hash % len]` is
    /// the queue); empty when the PMD cannot program or report it, and then
    /// the hardware's choice of queue is not known.
    pub reta: Vec<u16>,
    /// RX L4 checksum offload enabled (the PMD verifies TCP and UDP
    /// checksums and says so per packet; conntrack then skips its own check).
    pub rx_l4_csum: bool,
    pub socket: i32,
    /// True if the MAC of `PortConf::mac` was set on the device.
    pub mac_set: bool,
    /// The Linux interface the PMD sends and receives through (net_af_packet's
    /// `iface`, ...), by name and index, when DPDK reports one.
    pub kernel_if: Option<(String, u32)>,
}

/// Link state.
#[derive(Debug, Clone, Copy)]
pub struct LinkStatus {
    pub up: bool,
    pub speed_mbps: u32,
}

/// Basic port counters.
#[derive(Debug, Clone, Copy, Default)]
pub struct PortStats {
    pub ipackets: u64,
    pub opackets: u64,
    pub ibytes: u64,
    pub obytes: u64,
    pub imissed: u64,
    pub ierrors: u64,
    pub oerrors: u64,
    pub rx_nombuf: u64,
}

/// The name of the Linux interface with index `index` (0: none).
fn kernel_if_name(index: u32) -> Option<String> {
    if index == 0 {
        return None;
    }
    let mut buf = [0 as c_char; libc::IF_NAMESIZE];
    // SAFETY: buf has the IF_NAMESIZE bytes if_indextoname may write.
    let p = unsafe { libc::if_indextoname(index, buf.as_mut_ptr()) };
    if p.is_null() {
        return None;
    }
    // SAFETY: on success if_indextoname wrote a NUL-terminated name into buf.
    Some(
        unsafe { CStr::from_ptr(buf.as_ptr()) }
            .to_string_lossy()
            .into_owned(),
    )
}

/// Whether Linux interface `name` runs (its operstate is up, or unknown for
/// drivers without one: what IFF_RUNNING says); None if this namespace has
/// no such interface with that index any more (moved or replaced).
fn kernel_if_running(name: &str, index: u32) -> Option<bool> {
    let dir = std::path::Path::new("/sys/class/net").join(name);
    let now: u32 = std::fs::read_to_string(dir.join("ifindex"))
        .ok()?
        .trim()
        .parse()
        .ok()?;
    if now != index {
        return None;
    }
    let state = std::fs::read_to_string(dir.join("operstate")).ok()?;
    Some(matches!(state.trim(), "up" | "unknown"))
}

/// A 40-byte Toeplitz key whose 16-bit period makes the hash symmetric
/// (swapping source and destination address/port gives the same hash):
/// Woo & Park, "Scalable TCP Session Monitoring with Symmetric RSS".
pub const SYMMETRIC_RSS_KEY: [u8; 52] = {
    let mut k = [0u8; 52];
    let mut i = 0;
    while i < 52 {
        k[i] = if i % 2 == 0 { 0x6d } else { 0x5a };
        i += 1;
    }
    k
};

/// Programs `id`'s RSS redirection table (`size` entries, as the PMD
/// reports) round-robin over `queues`, then reads it back; returns what the
/// device holds, or an empty table if it cannot be programmed or read.
fn program_reta(id: PortId, size: u16, queues: u16) -> Vec<u16> {
    if size == 0 || size as usize > 64 * 8 {
        return Vec::new();
    }
    let groups = (size as usize).div_ceil(64);
    let mut conf = vec![sys::rte_eth_rss_reta_entry64::default(); groups];
    for i in 0..size as usize {
        conf[i / 64].mask |= 1 << (i % 64);
        conf[i / 64].reta[i % 64] = (i % queues as usize) as u16;
    }
    // SAFETY: conf holds size.div_ceil(64) groups, as the call requires.
    let ret = unsafe { sys::rte_eth_dev_rss_reta_update(id.0, conf.as_mut_ptr(), size) };
    if ret != 0 {
        tracing::debug!(port = id.0, ret, "RSS redirection table not programmable");
    }
    let mut back = vec![sys::rte_eth_rss_reta_entry64::default(); groups];
    for (g, e) in back.iter_mut().enumerate() {
        let n = (size as usize - g * 64).min(64);
        e.mask = if n == 64 { u64::MAX } else { (1 << n) - 1 };
    }
    // SAFETY: as above, for the query.
    let ret = unsafe { sys::rte_eth_dev_rss_reta_query(id.0, back.as_mut_ptr(), size) };
    if ret != 0 {
        return Vec::new();
    }
    (0..size as usize)
        .map(|i| back[i / 64].reta[i % 64])
        .collect()
}

/// A configured, started port. Dropping it stops and closes it.
pub struct Port {
    info: PortInfo,
}

impl Port {
    /// Configures `id` with the queues of `conf` (RSS over the IP/TCP/UDP fields
    /// the PMD supports, with [`SYMMETRIC_RSS_KEY`], when there is more than one
    /// RX queue), sets up every queue on `pool`, and starts it.
    pub fn setup(
        _eal: &Eal,
        id: PortId,
        conf: &PortConf,
        pool: &Mempool,
    ) -> Result<Port, DpdkError> {
        let mut dev_info = sys::rte_eth_dev_info::default();
        // SAFETY: dev_info is a valid out pointer; the port id came from the EAL.
        let ret = unsafe { sys::rte_eth_dev_info_get(id.0, &mut dev_info) };
        if ret != 0 {
            return Err(port_err(id, "rte_eth_dev_info_get", ret));
        }
        let driver = if dev_info.driver_name.is_null() {
            String::from("?")
        } else {
            // SAFETY: driver_name is a static NUL-terminated string owned by the PMD.
            unsafe { CStr::from_ptr(dev_info.driver_name) }
                .to_string_lossy()
                .into_owned()
        };
        // Fewer queues than asked is fine: some workers then poll nothing on
        // this port, and share TX queues (see PortInfo::tx_queues).
        let rx_queues = conf.rx_queues.min(dev_info.max_rx_queues).max(1);
        let tx_queues = conf.tx_queues.min(dev_info.max_tx_queues).max(1);

        let mut eth_conf = sys::rte_eth_conf::default();
        let mut key = SYMMETRIC_RSS_KEY;
        let rss_hf = if rx_queues > 1 {
            dev_info.flow_type_rss_offloads
                & (sys::RTE_ETH_RSS_IP | sys::RTE_ETH_RSS_TCP | sys::RTE_ETH_RSS_UDP)
        } else {
            0
        };
        if rss_hf != 0 {
            eth_conf.rxmode.mq_mode = sys::RTE_ETH_MQ_RX_RSS;
            let key_len = if dev_info.hash_key_size == 0 {
                40
            } else {
                dev_info.hash_key_size.min(52)
            };
            eth_conf.rx_adv_conf.rss_conf.rss_key = key.as_mut_ptr();
            eth_conf.rx_adv_conf.rss_conf.rss_key_len = key_len;
            eth_conf.rx_adv_conf.rss_conf.rss_hf = rss_hf;
        }
        // RX checksum offload where the PMD has it for both TCP and UDP.
        let csum = sys::RTE_ETH_RX_OFFLOAD_TCP_CKSUM | sys::RTE_ETH_RX_OFFLOAD_UDP_CKSUM;
        let rx_l4_csum = dev_info.rx_offload_capa & csum == csum;
        if rx_l4_csum {
            eth_conf.rxmode.offloads |= csum;
        }
        // SAFETY: eth_conf is valid for the call (the key is copied by the PMD).
        let ret = unsafe { sys::rte_eth_dev_configure(id.0, rx_queues, tx_queues, &eth_conf) };
        if ret != 0 {
            return Err(port_err(id, "rte_eth_dev_configure", ret));
        }
        let (mut nb_rxd, mut nb_txd) = (conf.rx_desc, conf.tx_desc);
        // SAFETY: valid out pointers.
        let ret = unsafe { sys::rte_eth_dev_adjust_nb_rx_tx_desc(id.0, &mut nb_rxd, &mut nb_txd) };
        if ret != 0 {
            return Err(port_err(id, "rte_eth_dev_adjust_nb_rx_tx_desc", ret));
        }
        // SAFETY: plain query.
        let mut socket = unsafe { sys::rte_eth_dev_socket_id(id.0) };
        if socket < 0 {
            socket = 0;
        }
        for q in 0..rx_queues {
            // SAFETY: configured port; NULL rxconf means the PMD default; pool is live
            // and outlives the port (control drops ports first).
            let ret = unsafe {
                sys::rte_eth_rx_queue_setup(
                    id.0,
                    q,
                    nb_rxd,
                    socket as c_uint,
                    std::ptr::null(),
                    pool.as_ptr(),
                )
            };
            if ret != 0 {
                return Err(port_err(id, "rte_eth_rx_queue_setup", ret));
            }
        }
        for q in 0..tx_queues {
            // SAFETY: configured port; NULL txconf means the PMD default.
            let ret = unsafe {
                sys::rte_eth_tx_queue_setup(id.0, q, nb_txd, socket as c_uint, std::ptr::null())
            };
            if ret != 0 {
                return Err(port_err(id, "rte_eth_tx_queue_setup", ret));
            }
        }
        let mut mac_set = false;
        if let Some(mac) = conf.mac {
            let mut addr = sys::rte_ether_addr { addr_bytes: mac };
            // SAFETY: addr is a valid pointer for the call.
            let ret = unsafe { sys::rte_eth_dev_default_mac_addr_set(id.0, &mut addr) };
            // Virtual PMDs (net_pcap, net_af_packet) cannot change their MAC;
            // the caller then uses the configured one in software (see PortInfo::mac_set).
            mac_set = ret == 0;
        }
        // SAFETY: all queues are set up.
        let ret = unsafe { sys::rte_eth_dev_start(id.0) };
        if ret != 0 {
            return Err(port_err(id, "rte_eth_dev_start", ret));
        }
        let reta = if rss_hf != 0 {
            program_reta(id, dev_info.reta_size, rx_queues)
        } else {
            Vec::new()
        };
        // Promiscuous mode lets frames for the port's MAC in on PMDs that filter
        // by another address; the worker checks the destination MAC itself.
        // Not every PMD supports it, which is fine.
        // SAFETY: started port.
        unsafe { sys::rte_eth_promiscuous_enable(id.0) };
        let mut addr = sys::rte_ether_addr::default();
        // SAFETY: valid out pointer.
        let ret = unsafe { sys::rte_eth_macaddr_get(id.0, &mut addr) };
        if ret != 0 {
            return Err(port_err(id, "rte_eth_macaddr_get", ret));
        }
        Ok(Port {
            info: PortInfo {
                id,
                driver,
                mac: addr.addr_bytes,
                rx_queues,
                tx_queues,
                rss_hf,
                reta,
                rx_l4_csum,
                socket,
                mac_set,
                kernel_if: kernel_if_name(dev_info.if_index).map(|n| (n, dev_info.if_index)),
            },
        })
    }

    pub fn info(&self) -> &PortInfo {
        &self.info
    }

    pub fn id(&self) -> PortId {
        self.info.id
    }

    /// Link status without waiting (control path: it may read sysfs). A port
    /// on a Linux interface is up only while that interface runs: DPDK
    /// 22.11's net_af_packet and net_af_xdp report the link up from start
    /// to stop, whatever the interface does.
    pub fn link(&self) -> LinkStatus {
        let mut link = sys::rte_eth_link::default();
        // SAFETY: valid out pointer; started port.
        let ret = unsafe { sys::rte_eth_link_get_nowait(self.info.id.0, &mut link) };
        if ret != 0 {
            return LinkStatus {
                up: false,
                speed_mbps: 0,
            };
        }
        let up = link.link_status() as u32 == sys::RTE_ETH_LINK_UP;
        let kernel_up = self
            .info
            .kernel_if
            .as_ref()
            .and_then(|(name, index)| kernel_if_running(name, *index));
        LinkStatus {
            up: up && kernel_up.unwrap_or(true),
            speed_mbps: link.link_speed,
        }
    }

    /// Basic counters.
    pub fn stats(&self) -> PortStats {
        let mut s = sys::rte_eth_stats::default();
        // SAFETY: valid out pointer.
        let ret = unsafe { sys::rte_eth_stats_get(self.info.id.0, &mut s) };
        if ret != 0 {
            return PortStats::default();
        }
        PortStats {
            ipackets: s.ipackets,
            opackets: s.opackets,
            ibytes: s.ibytes,
            obytes: s.obytes,
            imissed: s.imissed,
            ierrors: s.ierrors,
            oerrors: s.oerrors,
            rx_nombuf: s.rx_nombuf,
        }
    }

    /// Extended statistics as (name, value); control path only (allocates).
    pub fn xstats(&self) -> Vec<(String, u64)> {
        let port = self.info.id.0;
        // SAFETY: NULL/0 asks for the count.
        let n = unsafe { sys::rte_eth_xstats_get_names(port, std::ptr::null_mut(), 0) };
        if n <= 0 {
            return Vec::new();
        }
        let mut names = vec![sys::rte_eth_xstat_name { name: [0; 64] }; n as usize];
        let mut vals = vec![sys::rte_eth_xstat::default(); n as usize];
        // SAFETY: the buffers hold n entries each.
        let got_names =
            unsafe { sys::rte_eth_xstats_get_names(port, names.as_mut_ptr(), n as c_uint) };
        // SAFETY: as above.
        let got_vals = unsafe { sys::rte_eth_xstats_get(port, vals.as_mut_ptr(), n as c_uint) };
        if got_names != n || got_vals != n {
            return Vec::new();
        }
        vals.iter()
            .filter_map(|v| {
                let name = names.get(v.id as usize)?;
                // SAFETY: the PMD wrote a NUL-terminated name into the 64-byte array.
                let s = unsafe { CStr::from_ptr(name.name.as_ptr()) }
                    .to_string_lossy()
                    .into_owned();
                Some((s, v.value))
            })
            .collect()
    }
}

impl Drop for Port {
    fn drop(&mut self) {
        // SAFETY: no worker uses the port any more (control joins them first);
        // stop flushes PMD state (net_pcap writes its file), close frees it.
        unsafe {
            sys::rte_eth_dev_stop(self.info.id.0);
            sys::rte_eth_dev_close(self.info.id.0);
        }
    }
}

/// What a telemetry command answers: (name, value) pairs, a dict for the client.
pub type TelemetryFn = Box<dyn Fn() -> Vec<(String, u64)> + Send + Sync>;

/// The registered telemetry commands (the C callback finds them by name).
static TELEMETRY: std::sync::Mutex<Vec<(CString, TelemetryFn)>> = std::sync::Mutex::new(Vec::new());

extern "C" fn telemetry_cb(
    cmd: *const c_char,
    _params: *const c_char,
    d: *mut sys::rte_tel_data,
) -> c_int {
    // SAFETY: the telemetry library passes the registered command's
    // NUL-terminated name, valid for the call.
    let cmd = unsafe { CStr::from_ptr(cmd) };
    let cmds = TELEMETRY.lock().unwrap_or_else(|e| e.into_inner());
    let Some((_, f)) = cmds.iter().find(|(c, _)| c.as_c_str() == cmd) else {
        return -1;
    };
    // A panic must not unwind into C.
    let Ok(pairs) = std::panic::catch_unwind(std::panic::AssertUnwindSafe(f)) else {
        return -1;
    };
    // SAFETY: d is the reply the library owns for this call.
    unsafe { sys::rte_tel_data_start_dict(d) };
    for (k, v) in pairs.iter().take(sys::RTE_TEL_MAX_DICT_ENTRIES as usize) {
        if let Ok(k) = CString::new(k.as_str()) {
            // SAFETY: d as above; the library copies the name.
            unsafe { sys::rte_tel_data_add_dict_u64(d, k.as_ptr(), *v) };
        }
    }
    0
}

/// Packet capture for `dpdk-dumpcap` (a secondary process) on this process's
/// ports; stops on drop. Needs a multi-process EAL (not `--in-memory`).
pub struct Pdump {
    _not_send: std::marker::PhantomData<*const ()>,
}

impl Drop for Pdump {
    fn drop(&mut self) {
        // SAFETY: initialised by Eal::pdump_init, dropped before the EAL.
        unsafe { sys::rte_pdump_uninit() };
    }
}

impl Eal {
    /// Registers the telemetry command `cmd` (e.g. `/ctgate/stats`), answered
    /// with the dict `f` returns, on DPDK's telemetry thread
    /// (`dpdk-telemetry.py`; the socket exists only without `--in-memory`).
    pub fn register_telemetry(
        &self,
        cmd: &str,
        help: &str,
        f: TelemetryFn,
    ) -> Result<(), DpdkError> {
        let c = CString::new(cmd).map_err(|_| DpdkError::Nul(cmd.into()))?;
        let h = CString::new(help).map_err(|_| DpdkError::Nul(help.into()))?;
        let cmd_ptr = c.as_ptr();
        TELEMETRY
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push((c, f));
        // The library keeps the help pointer: keep it for the process's life.
        let h: &'static CStr = Box::leak(h.into_boxed_c_str());
        // SAFETY: cmd_ptr points into a CString now owned by TELEMETRY (moving
        // a CString does not move its heap buffer) and is copied by the call;
        // the callback has the telemetry_cb signature.
        let ret =
            unsafe { sys::rte_telemetry_register_cmd(cmd_ptr, Some(telemetry_cb), h.as_ptr()) };
        if ret != 0 {
            return Err(DpdkError::Tooling {
                what: "rte_telemetry_register_cmd",
                reason: strerror(ret),
            });
        }
        Ok(())
    }

    /// Starts the packet capture server `dpdk-dumpcap` talks to.
    pub fn pdump_init(&self) -> Result<Pdump, DpdkError> {
        // SAFETY: the EAL is initialised (self exists); called once by control.
        let ret = unsafe { sys::rte_pdump_init() };
        if ret != 0 {
            return Err(DpdkError::Tooling {
                what: "rte_pdump_init",
                reason: errno_text(),
            });
        }
        Ok(Pdump {
            _not_send: std::marker::PhantomData,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rss_key_is_16_bit_periodic() {
        for i in 2..SYMMETRIC_RSS_KEY.len() {
            assert_eq!(SYMMETRIC_RSS_KEY[i], SYMMETRIC_RSS_KEY[i - 2]);
        }
        assert_eq!(&SYMMETRIC_RSS_KEY[..2], &[0x6d, 0x5a]);
    }

    /// The Toeplitz hash (Microsoft RSS specification) of `input` under `key`.
    fn toeplitz(key: &[u8], input: &[u8]) -> u32 {
        let mut hash = 0u32;
        let mut window = u32::from_be_bytes([key[0], key[1], key[2], key[3]]);
        for (i, byte) in input.iter().enumerate() {
            for bit in 0..8 {
                if byte & (0x80 >> bit) != 0 {
                    hash ^= window;
                }
                let next_bit = (key[i + 4] >> (7 - bit)) & 1;
                window = (window << 1) | next_bit as u32;
            }
        }
        hash
    }

    #[test]
    fn rss_key_hashes_both_directions_alike() {
        // IPv4 + TCP/UDP ports, the RSS input order: src addr, dst addr, src port, dst port.
        let tuple = |s: [u8; 4], d: [u8; 4], sp: u16, dp: u16| {
            let mut v = Vec::new();
            v.extend_from_slice(&s);
            v.extend_from_slice(&d);
            v.extend_from_slice(&sp.to_be_bytes());
            v.extend_from_slice(&dp.to_be_bytes());
            v
        };
        let mut x = 0x1234_5678u32;
        let mut hashes = std::collections::HashSet::new();
        for _ in 0..1000 {
            x = x.wrapping_mul(1_103_515_245).wrapping_add(12_345);
            let s = x.to_be_bytes();
            let d = x.rotate_left(11).to_be_bytes();
            let (sp, dp) = ((x >> 7) as u16, (x >> 13) as u16);
            let fwd = toeplitz(&SYMMETRIC_RSS_KEY, &tuple(s, d, sp, dp));
            let rev = toeplitz(&SYMMETRIC_RSS_KEY, &tuple(d, s, dp, sp));
            assert_eq!(fwd, rev);
            hashes.insert(fwd);
        }
        assert!(
            hashes.len() > 900,
            "the key still spreads flows: {} distinct hashes",
            hashes.len()
        );
        // The default (non-symmetric) Microsoft key does not have the property.
        let ms_key: [u8; 40] = [
            0x6d, 0x5a, 0x56, 0xda, 0x25, 0x5b, 0x0e, 0xc2, 0x41, 0x67, 0x25, 0x3d, 0x43, 0xa3,
            0x8f, 0xb0, 0xd0, 0xca, 0x2b, 0xcb, 0xae, 0x7b, 0x30, 0xb4, 0x77, 0xcb, 0x2d, 0xa3,
            0x80, 0x30, 0xf2, 0x0c, 0x6a, 0x42, 0xb7, 0x3b, 0xbe, 0xac, 0x01, 0xfa,
        ];
        let t = tuple([66, 9, 149, 187], [161, 142, 100, 80], 2794, 1766);
        assert_eq!(toeplitz(&ms_key, &t), 0x51cc_c178, "RSS spec test vector");
        let r = tuple([161, 142, 100, 80], [66, 9, 149, 187], 1766, 2794);
        assert_ne!(toeplitz(&ms_key, &t), toeplitz(&ms_key, &r));
    }

    #[test]
    fn mbuf_is_pointer_sized() {
        assert_eq!(
            std::mem::size_of::<Mbuf>(),
            std::mem::size_of::<*mut sys::rte_mbuf>()
        );
        assert_eq!(
            std::mem::size_of::<Option<Mbuf>>(),
            std::mem::size_of::<*mut sys::rte_mbuf>()
        );
    }

    #[test]
    fn build_version_is_at_least_22_11() {
        let v: Vec<u32> = build_version()
            .split('.')
            .take(2)
            .map(|x| x.parse().unwrap())
            .collect();
        assert!(v[0] > 22 || (v[0] == 22 && v[1] >= 11), "{v:?}");
    }
}
