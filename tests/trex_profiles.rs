//! The TRex STL profiles (scripts/trex/) build the traffic they promise:
//! scripts/trex/validate.py builds their streams with the TRex client library
//! (PyPI `trex-stl-lib`), runs the streams' field engine programs, writes the
//! packets to a pcap and replays it through `ctgate replay` (conntrack +
//! SNAT): every packet forwarded, exactly the asked-for number of flows
//! tracked, nothing invalid, every source translated.
//!
//! The Python used is `CTGATE_TREX_PYTHON` (scripts/test.sh makes a venv with
//! `pip install trex-stl-lib scapy==2.4.5` and sets it), else `python3`. With
//! `CTGATE_TREX_PYTHON` set, a missing library fails the test; without it
//! (a plain `cargo test`) the test says it could not check and passes.

use std::process::Command;

#[test]
fn trex_stl_profiles_replay_through_ctgate() {
    let python = std::env::var("CTGATE_TREX_PYTHON").unwrap_or_else(|_| "python3".into());
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/scripts/trex/validate.py");
    let out = Command::new(&python)
        .arg(script)
        .arg("--ctgate")
        .arg(env!("CARGO_BIN_EXE_ctgate"))
        .output()
        .unwrap_or_else(|e| panic!("cannot run {python}: {e}"));
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    if out.status.code() == Some(77) {
        // scripts/test.sh (CI) provides the library: there it must be checked.
        assert!(
            std::env::var_os("CTGATE_TREX_PYTHON").is_none(),
            "CTGATE_TREX_PYTHON={python} lacks the TRex library: {}",
            stderr.trim()
        );
        eprintln!(
            "trex_profiles: not checked: {} (set CTGATE_TREX_PYTHON to a Python with trex-stl-lib)",
            stderr.trim()
        );
        return;
    }
    assert!(
        out.status.success(),
        "validate.py failed:\n{stdout}\n{stderr}"
    );
    let ok = stdout.lines().filter(|l| l.ends_with(": ok")).count();
    assert_eq!(ok, 4, "four profile cases validated:\n{stdout}");
}
