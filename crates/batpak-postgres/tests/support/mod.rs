//! Helpers shared by the tests that run the test binary again as child
//! processes (writers, cursors, reactors) and kill them: a small seeded
//! generator, starting a child in a role, waiting for children, and reading
//! line logs that a SIGKILL may have cut mid-line.

#![allow(dead_code)]

use std::io::Write;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A small deterministic generator (xorshift), seeded per child.
pub struct Rng(pub u64);

impl Rng {
    pub fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    pub fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

/// Run this test binary's test `test` (a child entry point that does
/// nothing unless `role_var` is set) with `role_var=role` and `envs`; its
/// stderr goes to `stderr`.
pub fn spawn_child(
    test: &str,
    role_var: &str,
    role: &str,
    envs: &[(&str, String)],
    stderr: &Path,
) -> Child {
    let mut cmd = Command::new(std::env::current_exe().expect("test binary"));
    cmd.args([test, "--exact", "--nocapture", "--test-threads", "1"])
        .env(role_var, role)
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(stderr).expect("stderr file"));
    for (k, v) in envs {
        cmd.env(k, v);
    }
    cmd.spawn().expect("spawn child")
}

/// Wait for `child` to exit successfully within `within`, else fail with
/// what it wrote to `stderr`.
pub fn wait_success(child: &mut Child, within: Duration, what: &str, stderr: &Path) {
    let deadline = Instant::now() + within;
    loop {
        if let Some(status) = child.try_wait().expect("child status") {
            let err = std::fs::read_to_string(stderr).unwrap_or_default();
            assert!(status.success(), "{what} failed ({status}): {err}");
            return;
        }
        assert!(Instant::now() < deadline, "{what} did not finish");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// SIGKILL `child` and reap it.
pub fn kill(child: &mut Child) {
    let _ = child.kill();
    let _ = child.wait();
}

/// The complete lines of a log (a SIGKILL may have cut the last one short:
/// it was never acted on, so it is left out).
pub fn complete_lines(path: &Path) -> Vec<String> {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let complete = match text.rfind('\n') {
        Some(i) => &text[..=i],
        None => "",
    };
    complete.lines().map(str::to_owned).collect()
}

/// Cut a log back to its last complete line, so that appending goes on
/// from a clean line (a previous generation may have been killed mid-line).
pub fn truncate_partial_line(path: &Path) {
    let Ok(text) = std::fs::read(path) else {
        return;
    };
    let keep = text.iter().rposition(|&b| b == b'\n').map_or(0, |i| i + 1);
    if keep < text.len() {
        let f = std::fs::OpenOptions::new()
            .write(true)
            .open(path)
            .expect("open log");
        f.set_len(keep as u64).expect("truncate log");
    }
}

/// An append-only line log; each call writes whole lines with one `write`
/// (a SIGKILL leaves at most one partial line at the end). Not synced: a
/// killed process's writes survive in the page cache.
pub struct LineLog(std::fs::File);

impl LineLog {
    pub fn open(path: &Path) -> Self {
        Self(
            std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(path)
                .expect("open log"),
        )
    }

    pub fn lines(&mut self, lines: &[String]) {
        if lines.is_empty() {
            return;
        }
        let mut buf = lines.join("\n");
        buf.push('\n');
        self.0.write_all(buf.as_bytes()).expect("write log");
    }

    pub fn line(&mut self, line: String) {
        self.lines(&[line]);
    }
}

/// Microseconds since the Unix epoch (one clock for every process here).
pub fn wall_us() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_micros() as u64)
        .unwrap_or(0)
}
