//! `ctcore::checksum::l4_checksum_ok` on arbitrary frames: the body is `ctcore::fuzzing::l4_checksum_ok` (its invariants there; the
//! committed corpus is replayed by ctcore's `fuzz_corpus` test).
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| ctcore::fuzzing::l4_checksum_ok(data));
