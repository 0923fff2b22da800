//! The test hosts' programs of `tests/support/ha_hosts.py` (a download, a
//! UDP stream, their servers), started in a namespace with their output in a
//! file, and what the tests read back from those files.

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use super::repo;

/// The programs a test started, killed and waited for on drop (also when
/// the test fails).
#[derive(Default)]
pub struct Programs(pub Vec<Child>);

impl Drop for Programs {
    fn drop(&mut self) {
        for c in &mut self.0 {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Programs {
    /// `ha_hosts.py ARGS` in namespace `ns`, its stdout to `log`.
    pub fn start(&mut self, ns: &str, log: &Path, args: &[&str]) {
        let py = repo().join("tests/support/ha_hosts.py");
        let child = Command::new("ip")
            .args(["netns", "exec", ns, "python3", py.to_str().unwrap()])
            .args(args)
            .stdout(std::fs::File::create(log).unwrap())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap();
        self.0.push(child);
    }
}

/// The lines a program wrote so far.
pub fn lines(log: &Path) -> Vec<String> {
    std::fs::read_to_string(log)
        .unwrap_or_default()
        .lines()
        .map(str::to_owned)
        .collect()
}

/// The number after `word` on the last line that has one (0 if none).
pub fn last_number(log: &Path, word: &str) -> u64 {
    lines(log)
        .iter()
        .rev()
        .find_map(|l| {
            l.rsplit_once(word)?
                .1
                .split_whitespace()
                .next()?
                .parse()
                .ok()
        })
        .unwrap_or(0)
}

/// Waits (bounded) until `ok`; false if it never held.
pub fn wait_for(secs: u64, mut ok: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + Duration::from_secs(secs);
    while Instant::now() < deadline {
        if ok() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    ok()
}

/// Waits (bounded) for a server to say "listening".
pub fn wait_listening(log: &Path) {
    assert!(
        wait_for(20, || lines(log).iter().any(|l| l == "listening")),
        "{} did not start",
        log.display()
    );
}
