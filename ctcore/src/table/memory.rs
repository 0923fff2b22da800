//! Where the table's large regions come from. ctcore reserves them with
//! the global allocator; the caller, which may use unsafe code and knows
//! the machine, is told before and after each one, so that it can place
//! them on huge pages: its allocator serves the announced allocation from
//! reserved huge pages (`placing`), or it asks for transparent huge pages
//! on what the allocator gave (`reserved`).

/// Told of each large region the table reserves (the buckets, the
/// records' lines, the NAT mappings), on the thread that reserves it.
pub trait Memory {
    /// The next allocation this thread makes is of `len` bytes and is one
    /// of the table's regions (called right before it is made; the region
    /// may be empty).
    fn placing(&mut self, _len: usize) {}
    /// Region `addr .. addr + len` was reserved, and is not written yet.
    fn reserved(&mut self, addr: usize, len: usize);
}

/// No placement: the regions are wherever the allocator puts them.
impl Memory for () {
    fn reserved(&mut self, _addr: usize, _len: usize) {}
}
