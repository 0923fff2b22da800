//! Every committed fuzz corpus file (`fuzz/corpus/<target>/`) through its
//! target's body (`ctcore::fuzzing`): what the fuzzer once found or kept is
//! replayed by `cargo test` on stable Rust, so a regression on any of those
//! inputs fails CI. `scripts/fuzz.sh` runs the fuzzer itself.

use std::path::Path;

#[test]
fn every_corpus_file_replays_through_its_target() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../fuzz/corpus");
    let mut replayed = Vec::new();
    for (name, target) in ctcore::fuzzing::TARGETS {
        let dir = root.join(name);
        let files = std::fs::read_dir(&dir)
            .unwrap_or_else(|e| panic!("{}: {e} (every target has a corpus)", dir.display()));
        let mut n = 0;
        for f in files {
            let path = f.unwrap().path();
            let data = std::fs::read(&path).unwrap();
            let run = std::panic::catch_unwind(|| target(&data));
            assert!(run.is_ok(), "target {name} panics on {}", path.display());
            n += 1;
        }
        assert!(n > 0, "{}: an empty corpus", dir.display());
        replayed.push(format!("{name} {n}"));
    }
    eprintln!("replayed: {}", replayed.join(", "));
}

#[test]
fn the_fuzz_crate_has_a_target_for_each() {
    // fuzz/ is its own workspace (cargo-fuzz, nightly): check by name that
    // each body here has its target there, and each target its body.
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../fuzz");
    let manifest = std::fs::read_to_string(root.join("Cargo.toml")).unwrap();
    for (name, _) in ctcore::fuzzing::TARGETS {
        let src = std::fs::read_to_string(root.join(format!("fuzz_targets/{name}.rs")))
            .unwrap_or_else(|e| panic!("fuzz_targets/{name}.rs: {e}"));
        assert!(
            src.contains(&format!("ctcore::fuzzing::{name}(")),
            "fuzz_targets/{name}.rs does not call ctcore::fuzzing::{name}"
        );
        assert!(
            manifest.contains(&format!("name = \"{name}\"")),
            "fuzz/Cargo.toml has no [[bin]] {name}"
        );
    }
}
