//! SCTP common header and chunk headers (RFC 9260).

use super::{be16, be32, ParseError, L4};

pub const COMMON_HEADER_LEN: usize = 12;
pub const CHUNK_HEADER_LEN: usize = 4;
/// The chunk walk stops after this many chunks (the kernel's is unbounded).
pub const MAX_CHUNKS: usize = 32;

/// Field offsets of the SCTP common header and of a chunk header.
pub mod field {
    pub const SRC_PORT: usize = 0;
    pub const DST_PORT: usize = 2;
    pub const VTAG: usize = 4;
    pub const CHECKSUM: usize = 8;
    pub const CHUNKS: usize = 12;
    pub const CHUNK_TYPE: usize = 0;
    pub const CHUNK_FLAGS: usize = 1;
    pub const CHUNK_LEN: usize = 2;
}

/// Parses the 12-byte common header and walks the chunks like the kernel's
/// `for_each_sctp_chunk`: each chunk advances by its length rounded up to 4.
/// The walk stops at a chunk header cut short, a chunk length below 4 (the
/// kernel's `do_basic_checks` calls that invalid), or after `MAX_CHUNKS`.
/// `chunk_map == 0` means no chunk header was present.
pub(crate) fn parse(seg: &[u8]) -> Result<L4, ParseError> {
    if seg.len() < COMMON_HEADER_LEN {
        return Err(ParseError::TruncatedL4);
    }
    let mut chunk_map = 0u32;
    let (mut first_chunk, mut first_flags) = (0u8, 0u8);
    let mut off = field::CHUNKS;
    for n in 0..MAX_CHUNKS {
        let Some(chunk) = seg.get(off..off + CHUNK_HEADER_LEN) else {
            break;
        };
        let (kind, len) = (
            chunk[field::CHUNK_TYPE],
            usize::from(be16(chunk, field::CHUNK_LEN)),
        );
        if n == 0 {
            (first_chunk, first_flags) = (kind, chunk[field::CHUNK_FLAGS]);
        }
        if kind < 32 {
            chunk_map |= 1 << kind;
        }
        if len < CHUNK_HEADER_LEN {
            break;
        }
        off += (len + 3) & !3;
    }
    Ok(L4::Sctp {
        src_port: be16(seg, field::SRC_PORT),
        dst_port: be16(seg, field::DST_PORT),
        vtag: be32(seg, field::VTAG),
        chunk_map,
        first_chunk,
        first_flags,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn common() -> Vec<u8> {
        vec![0x0b, 0x59, 0x0b, 0x59, 0xde, 0xad, 0xbe, 0xef, 0, 0, 0, 0]
    }

    #[test]
    fn init_chunk() {
        let mut s = common();
        s.extend_from_slice(&[1, 0, 0, 20]);
        s.extend_from_slice(&[0; 16]);
        let want = L4::Sctp {
            src_port: 2905,
            dst_port: 2905,
            vtag: 0xdeadbeef,
            chunk_map: 1 << 1,
            first_chunk: 1,
            first_flags: 0,
        };
        assert_eq!(parse(&s), Ok(want));
    }

    #[test]
    fn sack_then_data_with_padding() {
        let mut s = common();
        s.extend_from_slice(&[3, 0, 0, 16]); // SACK
        s.extend_from_slice(&[0; 12]);
        s.extend_from_slice(&[0, 3, 0, 17]); // DATA, B|E flags, 17 bytes, padded to 20
        s.extend_from_slice(&[0; 16]);
        s.extend_from_slice(&[14, 0, 0, 4]); // SHUTDOWN-COMPLETE
        let Ok(L4::Sctp {
            chunk_map,
            first_chunk,
            first_flags,
            ..
        }) = parse(&s)
        else {
            panic!()
        };
        assert_eq!(chunk_map, (1 << 3) | (1 << 0) | (1 << 14));
        assert_eq!((first_chunk, first_flags), (3, 0));
    }

    #[test]
    fn walk_stops_after_max_chunks() {
        let mut s = common();
        for kind in 0..MAX_CHUNKS as u8 {
            s.extend_from_slice(&[kind % 2, 0, 0, 4]);
        }
        s.extend_from_slice(&[9, 0, 0, 4]); // ERROR, one past the bound
        let Ok(L4::Sctp { chunk_map, .. }) = parse(&s) else {
            panic!()
        };
        assert_eq!(chunk_map, 0b11);
        s.truncate(s.len() - 8);
        s.extend_from_slice(&[9, 0, 0, 4]);
        let Ok(L4::Sctp { chunk_map, .. }) = parse(&s) else {
            panic!()
        };
        assert_eq!(chunk_map, 0b11 | 1 << 9);
    }

    #[test]
    fn bounded_and_short() {
        assert_eq!(parse(&common()[..11]), Err(ParseError::TruncatedL4));
        let Ok(L4::Sctp { chunk_map, .. }) = parse(&common()) else {
            panic!()
        };
        assert_eq!(chunk_map, 0);
        // A zero-length chunk must not loop forever.
        let mut s = common();
        s.extend_from_slice(&[6, 0, 0, 0, 7, 0, 0, 4]);
        let Ok(L4::Sctp { chunk_map, .. }) = parse(&s) else {
            panic!()
        };
        assert_eq!(chunk_map, 1 << 6);
        // Chunk types >= 32 (FORWARD-TSN 192) are not in the map.
        let mut s = common();
        s.extend_from_slice(&[192, 0, 0, 8, 0, 0, 0, 0]);
        let Ok(L4::Sctp {
            chunk_map,
            first_chunk,
            ..
        }) = parse(&s)
        else {
            panic!()
        };
        assert_eq!((chunk_map, first_chunk), (0, 192));
    }
}
