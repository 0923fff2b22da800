//! IEEE 802.1Q / 802.1ad VLAN tags (the 4 bytes after a tag EtherType).

use super::{be16, ParseError};

pub const ETHERTYPE_8021Q: u16 = 0x8100;
pub const ETHERTYPE_8021AD: u16 = 0x88a8;
/// Pre-standard QinQ outer tag still sent by some switches.
pub const ETHERTYPE_QINQ_9100: u16 = 0x9100;

/// More tags than this is `ParseError::BadVlan` (the kernel strips at most two).
pub const MAX_TAGS: usize = 2;
pub const TAG_LEN: usize = 4;

mod field {
    pub const TCI: usize = 0;
    pub const ETHERTYPE: usize = 2;
}

const VID_MASK: u16 = 0x0fff;

/// True for the EtherTypes that announce a VLAN tag.
pub fn is_tag(ethertype: u16) -> bool {
    matches!(
        ethertype,
        ETHERTYPE_8021Q | ETHERTYPE_8021AD | ETHERTYPE_QINQ_9100
    )
}

/// A read-only view of one VLAN tag: TCI and the EtherType that follows.
#[derive(Debug, Clone, Copy)]
pub struct VlanTag<T: AsRef<[u8]>> {
    buffer: T,
}

impl<T: AsRef<[u8]>> VlanTag<T> {
    pub fn new_checked(buffer: T) -> Result<Self, ParseError> {
        if buffer.as_ref().len() < TAG_LEN {
            return Err(ParseError::BadVlan);
        }
        Ok(VlanTag { buffer })
    }

    pub fn tci(&self) -> u16 {
        be16(self.buffer.as_ref(), field::TCI)
    }

    /// VLAN identifier: the low 12 bits of the TCI.
    pub fn vlan_id(&self) -> u16 {
        self.tci() & VID_MASK
    }

    pub fn priority(&self) -> u8 {
        (self.tci() >> 13) as u8
    }

    pub fn inner_ethertype(&self) -> u16 {
        be16(self.buffer.as_ref(), field::ETHERTYPE)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tag_fields() {
        let tag = VlanTag::new_checked([0xb0u8, 0x2a, 0x08, 0x00]).unwrap();
        assert_eq!(tag.vlan_id(), 42);
        assert_eq!(tag.priority(), 5);
        assert_eq!(tag.inner_ethertype(), 0x0800);
        assert!(VlanTag::new_checked([0u8; 3]).is_err());
        assert!(is_tag(0x8100) && is_tag(0x88a8) && is_tag(0x9100) && !is_tag(0x0800));
    }
}
