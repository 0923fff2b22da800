//! `ctcore::wire::parse` on arbitrary frames: never panics, and what it
//! returns indexes the frame safely.
#![no_main]

use ctcore::wire::{parse, IcmpInfo, L4};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|frame: &[u8]| {
    let Ok(p) = parse(frame) else { return };
    let l3_end = usize::from(p.l3_offset) + usize::from(p.l3_len);
    assert!(l3_end <= frame.len());
    assert!(p.l3_offset < p.l4_offset && usize::from(p.l4_offset) <= l3_end);
    match p.l4 {
        L4::Tcp(t) => {
            let options = &frame[usize::from(t.options.0)..usize::from(t.options.1)];
            assert_eq!(options.len() + 20, usize::from(t.header_len));
            assert_eq!(usize::from(t.options.1) + usize::from(t.payload_len), l3_end);
        }
        L4::Icmp(IcmpInfo { inner: Some(inner), is_error, .. }) => {
            assert!(is_error);
            assert!(inner.l3_offset < inner.l4_offset && usize::from(inner.l4_offset) <= l3_end);
        }
        L4::None => assert!(p.frag.is_some_and(|f| f.offset != 0)),
        _ => {}
    }
});
