//! IP reassembly: the body is `ctcore::fuzzing::defrag` (its invariants
//! there; the committed corpus is replayed by ctcore's `fuzz_corpus` test).
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| ctcore::fuzzing::defrag(data));
