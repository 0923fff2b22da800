//! Ethernet II header, followed by at most two VLAN tags (see `vlan`).

use super::{be16, vlan, ParseError};

pub const ETHERTYPE_IPV4: u16 = 0x0800;
pub const ETHERTYPE_IPV6: u16 = 0x86dd;
pub const ETHERTYPE_ARP: u16 = 0x0806;

/// Field offsets of the Ethernet II header.
pub mod field {
    use core::ops::Range;
    pub const DESTINATION: Range<usize> = 0..6;
    pub const SOURCE: Range<usize> = 6..12;
    pub const ETHERTYPE: usize = 12;
    pub const PAYLOAD: usize = 14;
}

pub const HEADER_LEN: usize = field::PAYLOAD;

/// A read-only view of an Ethernet II frame.
#[derive(Debug, Clone, Copy)]
pub struct EthernetFrame<T: AsRef<[u8]>> {
    buffer: T,
}

impl<T: AsRef<[u8]>> EthernetFrame<T> {
    /// Wraps `buffer` after checking it holds the 14-byte header.
    pub fn new_checked(buffer: T) -> Result<Self, ParseError> {
        if buffer.as_ref().len() < HEADER_LEN {
            return Err(ParseError::TruncatedEthernet);
        }
        Ok(EthernetFrame { buffer })
    }

    pub fn dst_addr(&self) -> [u8; 6] {
        let mut mac = [0u8; 6];
        mac.copy_from_slice(&self.buffer.as_ref()[field::DESTINATION]);
        mac
    }

    pub fn src_addr(&self) -> [u8; 6] {
        let mut mac = [0u8; 6];
        mac.copy_from_slice(&self.buffer.as_ref()[field::SOURCE]);
        mac
    }

    pub fn ethertype(&self) -> u16 {
        be16(self.buffer.as_ref(), field::ETHERTYPE)
    }
}

/// Walks the Ethernet header and up to `vlan::MAX_TAGS` VLAN tags, filling
/// `vlan_ids` outermost first. Returns the inner EtherType and the L3 offset.
pub(crate) fn walk(
    frame: &[u8],
    vlan_ids: &mut [u16; 2],
    vlan_count: &mut u8,
) -> Result<(u16, usize), ParseError> {
    let eth = EthernetFrame::new_checked(frame)?;
    let mut ethertype = eth.ethertype();
    let mut offset = HEADER_LEN;
    let mut count = 0usize;
    while vlan::is_tag(ethertype) {
        if count == vlan::MAX_TAGS {
            return Err(ParseError::BadVlan);
        }
        let tag = vlan::VlanTag::new_checked(&frame[offset..])?;
        vlan_ids[count] = tag.vlan_id();
        ethertype = tag.inner_ethertype();
        offset += vlan::TAG_LEN;
        count += 1;
    }
    *vlan_count = count as u8;
    Ok((ethertype, offset))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(ethertype: u16, rest: &[u8]) -> Vec<u8> {
        let mut f = vec![0xaa; 12];
        f.extend_from_slice(&ethertype.to_be_bytes());
        f.extend_from_slice(rest);
        f
    }

    #[test]
    fn untagged() {
        let f = frame(ETHERTYPE_IPV4, &[0x45]);
        let (mut ids, mut n) = ([0; 2], 0);
        assert_eq!(walk(&f, &mut ids, &mut n), Ok((ETHERTYPE_IPV4, 14)));
        assert_eq!((ids, n), ([0, 0], 0));
        let eth = EthernetFrame::new_checked(&f[..]).unwrap();
        assert_eq!(eth.src_addr(), [0xaa; 6]);
    }

    #[test]
    fn short_frame() {
        let (mut ids, mut n) = ([0; 2], 0);
        assert_eq!(
            walk(&[0u8; 13], &mut ids, &mut n),
            Err(ParseError::TruncatedEthernet)
        );
    }

    #[test]
    fn qinq_and_too_many_tags() {
        // 802.1ad outer tag (PCP 5, VID 10), 802.1Q inner (VID 0xfff), then IPv6.
        let f = frame(0x88a8, &[0xa0, 0x0a, 0x81, 0x00, 0x0f, 0xff, 0x86, 0xdd]);
        let (mut ids, mut n) = ([0; 2], 0);
        assert_eq!(walk(&f, &mut ids, &mut n), Ok((ETHERTYPE_IPV6, 22)));
        assert_eq!((ids, n), ([10, 0xfff], 2));

        let f = frame(
            0x9100,
            &[0, 1, 0x81, 0x00, 0, 2, 0x81, 0x00, 0, 3, 0x08, 0x00],
        );
        assert_eq!(walk(&f, &mut ids, &mut n), Err(ParseError::BadVlan));
        // A tag cut short.
        let f = frame(0x8100, &[0, 1, 0x08]);
        assert_eq!(walk(&f, &mut ids, &mut n), Err(ParseError::BadVlan));
    }
}
