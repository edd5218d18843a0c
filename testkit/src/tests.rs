//! These tests need the server binaries: without them they fail with [`TestkitError::BinariesNotFound`].

use super::*;
use std::error::Error;
use std::io::ErrorKind;
use std::net::TcpStream;
use std::time::{Duration, Instant};

type TestResult = Result<(), Box<dyn Error>>;

/// Set for the child process of [`watchdog_cleans_up_after_the_process_exits`].
const CHILD_ENV: &str = "ANNALS_TESTKIT_WATCHDOG_CHILD";

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
