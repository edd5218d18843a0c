//! `--verbose` logs to stderr and only with it: without `-v` a successful command leaves stderr
//! empty (even with `RUST_LOG` set), `-vv` logs debug lines naming the command and the store kind,
//! `-v` stays at info, and `RUST_LOG` refines the filter `-v` sets.
#![allow(missing_docs)]

mod common;

use std::path::Path;

use common::{command, small_store, Run, TestResult};

/// Runs `annals --store DIR ARGS...` with `RUST_LOG` set to `rust_log` (or unset).
fn annals_with(store: &Path, rust_log: Option<&str>, args: &[&str]) -> std::io::Result<Run> {
    let mut command = command();
    if let Some(rust_log) = rust_log {
        command.env("RUST_LOG", rust_log);
    }
    command.arg("--store").arg(store).args(args);
    Ok(command.output()?.into())
}

/// The lines of stderr at `level` (as the fmt subscriber prints it: ` DEBUG `, ` INFO `...).
fn lines_at<'a>(run: &'a Run, level: &str) -> Vec<&'a str> {
    let marker = format!(" {level} ");
    run.stderr.lines().filter(|line| line.contains(&marker)).collect()
}

#[tokio::test]
async fn without_verbose_a_successful_command_writes_nothing_to_stderr() -> TestResult {
    let dir = tempfile::tempdir()?;
    small_store(dir.path()).await?;
    for rust_log in [None, Some("trace"), Some("annals=trace")] {
        for args in [&["subscriptions"][..], &["stats"], &["log", "--json"]] {
            let run = annals_with(dir.path(), rust_log, args)?;
            assert!(run.ok(), "{rust_log:?} {args:?}: {run:?}");
            assert_eq!(run.stderr, "", "{rust_log:?} {args:?}: {run:?}");
        }
    }
    Ok(())
}

#[tokio::test]
async fn double_verbose_logs_debug_lines_naming_the_command_and_the_store_kind() -> TestResult {
    let dir = tempfile::tempdir()?;
    small_store(dir.path()).await?;
    let quiet = annals_with(dir.path(), None, &["subscriptions", "--json"])?;
    let loud = annals_with(dir.path(), None, &["-vv", "subscriptions", "--json"])?;
    assert!(loud.ok(), "{loud:?}");
    // The logs go to stderr; stdout is what it is without them.
    assert_eq!(loud.stdout, quiet.stdout);
    assert!(loud.stderr.lines().any(|line| line.contains("annals")), "{loud:?}");
    let debug = lines_at(&loud, "DEBUG");
    assert!(
        debug.iter().any(|line| line.contains("annals subscriptions on the sled store")),
        "a debug line names the command and the store kind: {loud:?}"
    );
    // The long form counts the same way.
    let long = annals_with(dir.path(), None, &["--verbose", "--verbose", "stats"])?;
    assert!(lines_at(&long, "DEBUG").iter().any(|line| line.contains("annals stats on the sled store")), "{long:?}");
    Ok(())
}

#[tokio::test]
async fn one_verbose_stays_at_info_unless_rust_log_asks_for_more() -> TestResult {
    let dir = tempfile::tempdir()?;
    small_store(dir.path()).await?;
    let info = annals_with(dir.path(), None, &["-v", "stats"])?;
    assert!(info.ok(), "{info:?}");
    assert_eq!(lines_at(&info, "DEBUG"), Vec::<&str>::new(), "{info:?}");
    assert_eq!(lines_at(&info, "TRACE"), Vec::<&str>::new(), "{info:?}");

    let refined = annals_with(dir.path(), Some("annals=debug"), &["-v", "stats"])?;
    assert!(refined.ok(), "{refined:?}");
    assert!(
        lines_at(&refined, "DEBUG").iter().any(|line| line.contains("annals stats on the sled store")),
        "{refined:?}"
    );
    Ok(())
}
