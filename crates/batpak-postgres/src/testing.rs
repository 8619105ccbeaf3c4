//! A throwaway PostgreSQL cluster for tests and benchmarks (feature
//! `test-support`; never for production).
//!
//! The first caller in a process starts one cluster (`initdb` and `pg_ctl`
//! on a free port of 127.0.0.1 and a private socket directory, `fsync=on`;
//! as root, run as the `postgres` user) and every test takes a fresh schema
//! in it. `BATPAK_TEST_PG_URL` names an existing server to use instead;
//! `BATPAK_TEST_PG_BIN` the directory of `initdb` and `pg_ctl`.
//! Where neither exists, tests print one loud line and skip, except under
//! `CI=true`, where a skip is a failure (so CI proves they ran).
//!
//! The cluster is stopped and deleted when the process ends, whatever the
//! way: a watchdog in its own process group waits for this process to exit,
//! then runs `pg_ctl stop -m immediate` and removes the directory. Clusters
//! of processes that died before their watchdog could act are swept by the
//! next run.

use crate::PgConfig;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::OnceLock;
use std::time::Duration;

/// The environment variable naming an existing server for the tests.
pub const URL_VAR: &str = "BATPAK_TEST_PG_URL";

/// The shared cluster's connection URL, or `None` when PostgreSQL is not
/// available (after printing why). Panics under `CI=true` instead of
/// returning `None`, and when a cluster could not be started.
pub fn cluster_url() -> Option<&'static str> {
    static URL: OnceLock<Option<String>> = OnceLock::new();
    URL.get_or_init(start_or_skip).as_deref()
}

/// A configuration for a new, empty store in its own schema on the shared
/// cluster (`None`: skipped, see [`cluster_url`]).
pub fn fresh_config() -> Option<PgConfig> {
    let url = cluster_url()?;
    Some(PgConfig::new(url).with_schema(unique_schema("t")))
}

/// A schema name no other store of this run uses.
pub fn unique_schema(prefix: &str) -> String {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    format!(
        "{prefix}_{}_{}_{:x}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed),
        nanos
    )
}

fn start_or_skip() -> Option<String> {
    if let Ok(url) = std::env::var(URL_VAR) {
        if !url.trim().is_empty() {
            return Some(url);
        }
    }
    let Some(bin) = find_binaries() else {
        let msg = "PostgreSQL tests SKIPPED: no initdb/pg_ctl found (install PostgreSQL, \
                   or set BATPAK_TEST_PG_URL to a server to test against)";
        if std::env::var("CI").is_ok_and(|v| v == "true") {
            panic!("{msg}; under CI=true a skip is a failure");
        }
        // Straight to the process's stderr: the test harness captures
        // `eprintln!` of passing tests, and this line must be seen.
        let _ = writeln!(std::io::stderr().lock(), "\n!!!!!!!! {msg} !!!!!!!!\n");
        return None;
    };
    match Cluster::start(&bin) {
        Ok(url) => Some(url),
        Err(e) => panic!("could not start a throwaway PostgreSQL cluster: {e}"),
    }
}

/// The environment variable naming the directory of `initdb` and `pg_ctl`
/// (instead of searching `PATH` and `/usr/lib/postgresql/*/bin`).
pub const BIN_VAR: &str = "BATPAK_TEST_PG_BIN";

/// The directory holding `initdb` and `pg_ctl`.
fn find_binaries() -> Option<PathBuf> {
    let has = |dir: &Path| dir.join("initdb").is_file() && dir.join("pg_ctl").is_file();
    if let Some(dir) = std::env::var_os(BIN_VAR) {
        let dir = PathBuf::from(dir);
        return has(&dir).then_some(dir);
    }
    if let Some(path) = std::env::var_os("PATH") {
        for dir in std::env::split_paths(&path) {
            if has(&dir) {
                return Some(dir);
            }
        }
    }
    // Debian and Ubuntu keep them out of PATH.
    let mut versions: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .ok()?
        .flatten()
        .map(|e| e.path().join("bin"))
        .filter(|d| has(d))
        .collect();
    versions.sort();
    versions.pop()
}

fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .ok()
        .is_some_and(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
}

/// A command run as the cluster's owner: `postgres` when we are root
/// (PostgreSQL refuses to run as root), else ourselves.
fn as_owner(root: bool, program: &Path) -> Command {
    if root {
        let mut c = Command::new("runuser");
        c.args(["-u", "postgres", "--"]).arg(program);
        c
    } else {
        Command::new(program)
    }
}

fn id_of(flag: &str) -> Result<u32, String> {
    let out = Command::new("id")
        .args([flag, "postgres"])
        .output()
        .map_err(|e| format!("id {flag} postgres: {e}"))?;
    String::from_utf8_lossy(&out.stdout)
        .trim()
        .parse()
        .map_err(|_| "there is no postgres user to run the cluster as".to_owned())
}

fn run(mut cmd: Command, what: &str) -> Result<(), String> {
    let out = cmd.output().map_err(|e| format!("{what}: {e}"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "{what} failed ({}): {}{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ))
    }
}

fn free_port() -> Result<u16, String> {
    let l = std::net::TcpListener::bind("127.0.0.1:0").map_err(|e| e.to_string())?;
    l.local_addr().map(|a| a.port()).map_err(|e| e.to_string())
}

fn process_alive(pid: u32) -> bool {
    Path::new(&format!("/proc/{pid}")).exists()
}

struct Cluster;

impl Cluster {
    fn start(bin: &Path) -> Result<String, String> {
        let root = is_root();
        let base = std::env::temp_dir().join("batpak-pg-tests");
        std::fs::create_dir_all(&base).map_err(|e| format!("{}: {e}", base.display()))?;
        sweep_stale(&base, bin, root);
        let dir = base.join(format!("{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
        std::fs::write(dir.join("owner.pid"), std::process::id().to_string())
            .map_err(|e| e.to_string())?;
        if root {
            let (uid, gid) = (id_of("-u")?, id_of("-g")?);
            std::os::unix::fs::chown(&dir, Some(uid), Some(gid)).map_err(|e| e.to_string())?;
        }
        // Watch first, so that even a failed start leaves nothing behind.
        spawn_watchdog(&dir, bin, root)?;
        let data = dir.join("data");
        let mut initdb = as_owner(root, &bin.join("initdb"));
        initdb
            .arg("-D")
            .arg(&data)
            .args(["-A", "trust", "-U", "postgres", "-E", "UTF8", "--locale=C"])
            // Syncing the new cluster's files is for clusters that must
            // survive a power cut; the server itself runs with fsync=on.
            .arg("--no-sync");
        run(initdb, "initdb")?;
        let mut last = String::new();
        for _ in 0..5 {
            let port = free_port()?;
            let opts = format!(
                "-p {port} -k {} -c listen_addresses=127.0.0.1 -c fsync=on \
                 -c max_connections=300 -c shared_buffers=64MB",
                dir.display()
            );
            let mut pg_ctl = as_owner(root, &bin.join("pg_ctl"));
            pg_ctl
                .arg("-D")
                .arg(&data)
                .arg("-l")
                .arg(dir.join("server.log"))
                .args(["-w", "-t", "60", "-o", &opts, "start"])
                .stdin(Stdio::null());
            match run(pg_ctl, "pg_ctl start") {
                Ok(()) => return Ok(format!("postgres://postgres@127.0.0.1:{port}/postgres")),
                Err(e) => {
                    last = format!(
                        "{e}\n{}",
                        std::fs::read_to_string(dir.join("server.log")).unwrap_or_default()
                    );
                    std::thread::sleep(Duration::from_millis(200));
                }
            }
        }
        Err(last)
    }
}

/// The shell commands that stop the cluster in `dir` and delete it.
fn teardown_script(dir: &Path, bin: &Path, root: bool) -> String {
    let pg_ctl = bin.join("pg_ctl");
    let stop = format!(
        "{}'{}' -D '{}/data' -m immediate -w -t 30 stop >/dev/null 2>&1",
        if root { "runuser -u postgres -- " } else { "" },
        pg_ctl.display(),
        dir.display()
    );
    format!("{stop}; rm -rf '{}'", dir.display())
}

/// A process outside our process group (an interrupted `cargo test` does not
/// take it down) that waits for this process to end, then tears down.
fn spawn_watchdog(dir: &Path, bin: &Path, root: bool) -> Result<(), String> {
    use std::os::unix::process::CommandExt;
    let script = format!(
        "while [ -e /proc/{pid} ]; do sleep 1; done; {teardown}",
        pid = std::process::id(),
        teardown = teardown_script(dir, bin, root)
    );
    Command::new("sh")
        .args(["-c", &script])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .process_group(0)
        .spawn()
        .map(|_| ())
        .map_err(|e| format!("watchdog: {e}"))
}

/// Stop and delete clusters whose owning process is gone.
fn sweep_stale(base: &Path, bin: &Path, root: bool) {
    let Ok(entries) = std::fs::read_dir(base) else {
        return;
    };
    for entry in entries.flatten() {
        let dir = entry.path();
        let owner = std::fs::read_to_string(dir.join("owner.pid"))
            .ok()
            .and_then(|s| s.trim().parse::<u32>().ok());
        let stale = match owner {
            Some(pid) => !process_alive(pid) && pid != std::process::id(),
            // A directory without an owner file is a start that died early.
            None => entry
                .metadata()
                .and_then(|m| m.modified())
                .ok()
                .and_then(|t| t.elapsed().ok())
                .is_some_and(|age| age > Duration::from_secs(600)),
        };
        if stale {
            let _ = Command::new("sh")
                .args(["-c", &teardown_script(&dir, bin, root)])
                .status();
        }
    }
}
