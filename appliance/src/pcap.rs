//! Classic pcap files (libpcap format): reading any byte order and timestamp
//! resolution, writing microsecond little-endian Ethernet captures.
//!
//! The one pcap module of the project: the same code and API as the binary's
//! `src/pcap.rs` on main, moved here so that the appliance, its integration
//! tests and `ctgate replay` share it (`use appliance::pcap;`).

use std::io::{self, Write};

/// One captured frame.
#[derive(Debug, Clone)]
pub struct Record {
    /// Capture time in nanoseconds since the epoch.
    pub ts_ns: u64,
    /// Original length on the wire (may exceed `data.len()` when cut by snaplen).
    pub orig_len: u32,
    pub data: Vec<u8>,
}

pub const LINKTYPE_ETHERNET: u32 = 1;

#[derive(Debug, thiserror::Error)]
pub enum PcapError {
    #[error("{0}")]
    Io(#[from] io::Error),
    #[error("not a classic pcap file (magic {0:#010x}); convert pcapng with `editcap -F pcap`")]
    BadMagic(u32),
    #[error("link type {0} is not supported (only Ethernet, 1)")]
    LinkType(u32),
    #[error("truncated record at byte {0}")]
    Truncated(usize),
}

/// Parses a capture held in memory.
pub fn parse(buf: &[u8]) -> Result<Vec<Record>, PcapError> {
    if buf.len() < 24 {
        return Err(PcapError::Truncated(0));
    }
    let magic_le = u32::from_le_bytes(buf[0..4].try_into().unwrap_or_default());
    let (big_endian, nanos) = match magic_le {
        0xa1b2_c3d4 => (false, false),
        0xa1b2_3c4d => (false, true),
        0xd4c3_b2a1 => (true, false),
        0x4d3c_b2a1 => (true, true),
        m => return Err(PcapError::BadMagic(m)),
    };
    let u32_at = |b: &[u8], o: usize| -> u32 {
        let a = [b[o], b[o + 1], b[o + 2], b[o + 3]];
        if big_endian {
            u32::from_be_bytes(a)
        } else {
            u32::from_le_bytes(a)
        }
    };
    let linktype = u32_at(buf, 20) & 0x0fff_ffff;
    if linktype != LINKTYPE_ETHERNET {
        return Err(PcapError::LinkType(linktype));
    }
    let mut out = Vec::new();
    let mut off = 24;
    while off < buf.len() {
        if off + 16 > buf.len() {
            return Err(PcapError::Truncated(off));
        }
        let sec = u32_at(buf, off) as u64;
        let frac = u32_at(buf, off + 4) as u64;
        let caplen = u32_at(buf, off + 8) as usize;
        let orig_len = u32_at(buf, off + 12);
        off += 16;
        if off + caplen > buf.len() {
            return Err(PcapError::Truncated(off));
        }
        let ts_ns = sec * 1_000_000_000 + if nanos { frac } else { frac * 1000 };
        out.push(Record {
            ts_ns,
            orig_len,
            data: buf[off..off + caplen].to_vec(),
        });
        off += caplen;
    }
    Ok(out)
}

/// Writes an Ethernet capture (microsecond timestamps, snaplen 65535).
pub struct Writer<W: Write> {
    w: W,
}

impl<W: Write> Writer<W> {
    pub fn new(mut w: W) -> io::Result<Self> {
        let mut h = Vec::with_capacity(24);
        h.extend_from_slice(&0xa1b2_c3d4u32.to_le_bytes());
        h.extend_from_slice(&2u16.to_le_bytes());
        h.extend_from_slice(&4u16.to_le_bytes());
        h.extend_from_slice(&0i32.to_le_bytes());
        h.extend_from_slice(&0u32.to_le_bytes());
        h.extend_from_slice(&65535u32.to_le_bytes());
        h.extend_from_slice(&LINKTYPE_ETHERNET.to_le_bytes());
        w.write_all(&h)?;
        Ok(Writer { w })
    }

    pub fn write(&mut self, ts_ns: u64, orig_len: u32, data: &[u8]) -> io::Result<()> {
        let mut h = [0u8; 16];
        h[0..4].copy_from_slice(&((ts_ns / 1_000_000_000) as u32).to_le_bytes());
        h[4..8].copy_from_slice(&(((ts_ns % 1_000_000_000) / 1000) as u32).to_le_bytes());
        h[8..12].copy_from_slice(&(data.len() as u32).to_le_bytes());
        h[12..16].copy_from_slice(&orig_len.max(data.len() as u32).to_le_bytes());
        self.w.write_all(&h)?;
        self.w.write_all(data)
    }

    pub fn finish(mut self) -> io::Result<W> {
        self.w.flush()?;
        Ok(self.w)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn write_then_read_round_trips() {
        let mut w = Writer::new(Vec::new()).unwrap();
        w.write(1_500_000_123_000, 60, &[1, 2, 3]).unwrap();
        w.write(1_500_000_124_000, 4, &[4, 5, 6, 7]).unwrap();
        let bytes = w.finish().unwrap();
        let recs = parse(&bytes).unwrap();
        assert_eq!(recs.len(), 2);
        assert_eq!(recs[0].ts_ns, 1_500_000_123_000);
        assert_eq!(recs[0].orig_len, 60);
        assert_eq!(recs[1].data, vec![4, 5, 6, 7]);
    }

    #[test]
    fn rejects_garbage() {
        assert!(matches!(parse(&[0u8; 30]), Err(PcapError::BadMagic(0))));
        assert!(matches!(parse(&[1u8; 3]), Err(PcapError::Truncated(0))));
    }
}
