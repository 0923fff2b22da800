//! Reading and writing classic pcap files (Ethernet link type), for tests and
//! offline replay. Control path only: these allocate and do I/O.

use std::io::{self, Read, Write};
use std::path::Path;

const MAGIC_US: u32 = 0xa1b2_c3d4;
const MAGIC_NS: u32 = 0xa1b2_3c4d;
const LINKTYPE_ETHERNET: u32 = 1;

/// One captured frame and its timestamp in nanoseconds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Frame {
    pub ts_ns: u64,
    pub data: Vec<u8>,
}

/// Writes `frames` as a microsecond pcap file with Ethernet link type.
pub fn write(path: &Path, frames: &[Frame]) -> io::Result<()> {
    let mut out = Vec::new();
    out.extend_from_slice(&MAGIC_US.to_le_bytes());
    out.extend_from_slice(&2u16.to_le_bytes()); // version 2.4
    out.extend_from_slice(&4u16.to_le_bytes());
    for v in [0u32, 0, 65535, LINKTYPE_ETHERNET] {
        out.extend_from_slice(&v.to_le_bytes());
    }
    for f in frames {
        let sec = (f.ts_ns / 1_000_000_000) as u32;
        let usec = ((f.ts_ns % 1_000_000_000) / 1000) as u32;
        for v in [sec, usec, f.data.len() as u32, f.data.len() as u32] {
            out.extend_from_slice(&v.to_le_bytes());
        }
        out.extend_from_slice(&f.data);
    }
    std::fs::File::create(path)?.write_all(&out)
}

/// Reads a pcap file (either byte order, micro- or nanosecond timestamps).
pub fn read(path: &Path) -> io::Result<Vec<Frame>> {
    let mut buf = Vec::new();
    std::fs::File::open(path)?.read_to_end(&mut buf)?;
    parse(&buf).map_err(|e| io::Error::new(io::ErrorKind::InvalidData, format!("{}: {e}", path.display())))
}

/// Parses pcap file bytes.
pub fn parse(buf: &[u8]) -> Result<Vec<Frame>, String> {
    if buf.len() < 24 {
        return Err("shorter than a pcap header".into());
    }
    let magic_le = u32::from_le_bytes([buf[0], buf[1], buf[2], buf[3]]);
    let magic_be = u32::from_be_bytes([buf[0], buf[1], buf[2], buf[3]]);
    let (be, nanos) = match (magic_le, magic_be) {
        (MAGIC_US, _) => (false, false),
        (MAGIC_NS, _) => (false, true),
        (_, MAGIC_US) => (true, false),
        (_, MAGIC_NS) => (true, true),
        _ => return Err("not a pcap file (bad magic)".into()),
    };
    let u32_at = |off: usize| -> u32 {
        let b = [buf[off], buf[off + 1], buf[off + 2], buf[off + 3]];
        if be {
            u32::from_be_bytes(b)
        } else {
            u32::from_le_bytes(b)
        }
    };
    let linktype = u32_at(20);
    if linktype != LINKTYPE_ETHERNET {
        return Err(format!("link type {linktype}, only Ethernet (1) is supported"));
    }
    let mut frames = Vec::new();
    let mut off = 24;
    while off + 16 <= buf.len() {
        let sec = u32_at(off) as u64;
        let frac = u32_at(off + 4) as u64;
        let caplen = u32_at(off + 8) as usize;
        off += 16;
        if off + caplen > buf.len() {
            return Err(format!("record at byte {} runs past the end of the file", off - 16));
        }
        let ts_ns = sec * 1_000_000_000 + if nanos { frac } else { frac * 1000 };
        frames.push(Frame { ts_ns, data: buf[off..off + caplen].to_vec() });
        off += caplen;
    }
    if off != buf.len() {
        return Err("trailing bytes after the last record".into());
    }
    Ok(frames)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn roundtrip() {
        let dir = std::env::temp_dir().join(format!("ctgate-pcap-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let p = dir.join("a.pcap");
        let frames = vec![Frame { ts_ns: 1_500_000_000, data: vec![1, 2, 3] }, Frame { ts_ns: 2_000_001_000, data: vec![0xff; 60] }];
        write(&p, &frames).unwrap();
        let raw = std::fs::read(&p).unwrap();
        assert_eq!(&raw[..8], &[0xd4, 0xc3, 0xb2, 0xa1, 2, 0, 4, 0]);
        assert_eq!(read(&p).unwrap(), frames);
        assert!(parse(&raw[..raw.len() - 1]).is_err());
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
