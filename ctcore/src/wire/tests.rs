//! Whole-frame tests: real captures from `/work/shared/pcaps` (when present),
//! hand-built frames, and no-panic properties.

use super::*;
use crate::checksum::l4_checksum_ok;

/// Reads a classic pcap (24-byte global header, 16-byte record headers; either
/// byte order, micro- or nanosecond magic) into its frames.
pub(crate) fn read_pcap(bytes: &[u8]) -> Vec<Vec<u8>> {
    assert!(bytes.len() >= 24, "pcap global header");
    let magic: [u8; 4] = bytes[..4].try_into().unwrap();
    let little = match magic {
        [0xd4, 0xc3, 0xb2, 0xa1] | [0x4d, 0x3c, 0xb2, 0xa1] => true,
        [0xa1, 0xb2, 0xc3, 0xd4] | [0xa1, 0xb2, 0x3c, 0x4d] => false,
        _ => panic!("not a classic pcap: magic {magic:02x?}"),
    };
    let u32_at = |off: usize| {
        let b: [u8; 4] = bytes[off..off + 4].try_into().unwrap();
        if little { u32::from_le_bytes(b) } else { u32::from_be_bytes(b) }
    };
    assert_eq!(u32_at(20), 1, "link type Ethernet");
    let mut frames = vec![];
    let mut off = 24;
    while off < bytes.len() {
        let caplen = u32_at(off + 8) as usize;
        frames.push(bytes[off + 16..off + 16 + caplen].to_vec());
        off += 16 + caplen;
    }
    frames
}

const PCAP_DIR: &str = "/work/shared/pcaps";

/// The frames of one capture, or `None` where the captures are not installed.
fn capture(name: &str) -> Option<Vec<Vec<u8>>> {
    let bytes = std::fs::read(format!("{PCAP_DIR}/{name}")).ok()?;
    Some(read_pcap(&bytes))
}

/// Every capture in the shared directory.
fn all_captures() -> Vec<(String, Vec<Vec<u8>>)> {
    let Ok(dir) = std::fs::read_dir(PCAP_DIR) else { return vec![] };
    let mut names: Vec<String> = dir
        .filter_map(|e| e.ok()?.file_name().into_string().ok())
        .filter(|n| n.ends_with(".pcap"))
        .collect();
    names.sort();
    names.into_iter().filter_map(|n| Some((n.clone(), capture(&n)?))).collect()
}

#[test]
#[ignore = "prints one line per frame, for comparing with tshark by hand"]
fn dump_all_captures() {
    for (name, frames) in all_captures() {
        for (i, f) in frames.iter().enumerate() {
            let line = match parse(f) {
                Ok(p) => format!("ok\t{}\t{}\t{:?}\t{:?}", p.proto, l4_checksum_ok(f, &p) as u8, p.frag, p.l4),
                Err(e) => format!("err\t{}", e.name()),
            };
            println!("DUMP\t{name}\t{}\t{line}", i + 1);
        }
    }
}
