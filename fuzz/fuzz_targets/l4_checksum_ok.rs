//! `ctcore::checksum::l4_checksum_ok` on arbitrary frames: with the frame's own
//! parse, and with that parse applied to a shortened frame (a caller bug must
//! give `false`, not a panic).
#![no_main]

use ctcore::checksum::l4_checksum_ok;
use ctcore::wire::parse;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|frame: &[u8]| {
    let Ok(p) = parse(frame) else { return };
    let _ = l4_checksum_ok(frame, &p);
    let cut = usize::from(frame[frame.len() - 1]) % (frame.len() + 1);
    let _ = l4_checksum_ok(&frame[..cut], &p);
});
