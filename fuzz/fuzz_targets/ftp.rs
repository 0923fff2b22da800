//! The FTP helper: its command / reply parser, then the bytes as payloads
//! of a control connection through masquerade with the rewrite and sequence
//! adjustment applied: the body is `ctcore::fuzzing::ftp` (its invariants
//! there; the committed corpus is replayed by ctcore's `fuzz_corpus` test).
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| ctcore::fuzzing::ftp(data));
