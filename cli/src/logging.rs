//! `--verbose`: tracing output on stderr for the tool's own work and the library's spans and events.
//!
//! Without `-v` no subscriber is installed, so nothing is logged whatever `RUST_LOG` says and stderr
//! keeps its contract (empty on success, one `error:` line on failure). With `-v` (`-vv`, `-vvv`) the
//! `annals` targets log at info (debug, trace) and everything else at warn; directives in `RUST_LOG`
//! are added after these, so they override them for their targets.

use tracing_subscriber::filter::{EnvFilter, LevelFilter};

/// Installs the stderr subscriber for `verbose` (the number of `-v`), if any.
pub(crate) fn init(verbose: u8) {
    let level = match verbose {
        0 => return,
        1 => "info",
        2 => "debug",
        _ => "trace",
    };
    let mut directives = format!("warn,annals={level}");
    if let Ok(extra) = std::env::var(EnvFilter::DEFAULT_ENV) {
        if !extra.trim().is_empty() {
            directives.push(',');
            directives.push_str(&extra);
        }
    }
    let filter = EnvFilter::builder().with_default_directive(LevelFilter::WARN.into()).parse_lossy(directives);
    // Another subscriber already installed is not worth failing the command for.
    let _ = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr).try_init();
}
