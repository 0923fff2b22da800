//! Whole-frame tests: real captures from `/work/shared/pcaps` (when present),
//! hand-built frames, and no-panic properties.

use super::*;
use crate::checksum::l4_checksum_ok;

/// Reads a classic little-endian pcap (24-byte global header, 16-byte record
/// headers) into its frames.
pub(crate) fn read_pcap(bytes: &[u8]) -> Vec<Vec<u8>> {
    assert!(bytes.len() >= 24, "pcap global header");
    assert_eq!(
        &bytes[..4],
        &[0xd4, 0xc3, 0xb2, 0xa1],
        "little-endian microsecond pcap"
    );
    assert_eq!(
        u32::from_le_bytes(bytes[20..24].try_into().unwrap()),
        1,
        "link type Ethernet"
    );
    let mut frames = vec![];
    let mut off = 24;
    while off < bytes.len() {
        let rec = &bytes[off..off + 16];
        let caplen = u32::from_le_bytes(rec[8..12].try_into().unwrap()) as usize;
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
