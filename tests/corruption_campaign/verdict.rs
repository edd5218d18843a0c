//! Running one mutation in a child process, and judging what the child read against the reference.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::common::child::{read_lines, read_stderr, Rng};
use crate::mutations::{copy_dir, mutate, Kind, Layout};
use crate::reference::{Expect, Reference};
use crate::{CHILD_TIME_LIMIT, DIR_VAR, KNOWN_PROBLEMS, MARK, ONLY_VAR, SEED_VAR, SKIP_VERIFY_VAR};

/// How a mutation ended, from the best to the worst.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) enum Class {
    /// Opened, and every read gave exactly what was acknowledged.
    Intact,
    /// Refused at open, or some reads ended in `Corrupt` / `LogTruncated` after a correct prefix.
    Detected,
    /// A type-filtered read missed the events of a removed event-type index entry.
    KnownGap,
    /// A finding listed in [`KNOWN_PROBLEMS`] (its index there).
    Known(usize),
    UntypedError,
    SilentLoss,
    WrongAnswer,
    Hang,
    Panic,
}

impl Class {
    pub(crate) fn is_failure(self) -> bool {
        self >= Class::UntypedError
    }

    pub(crate) fn name(self) -> &'static str {
        match self {
            Class::Intact => "intact",
            Class::Detected => "detected",
            Class::KnownGap => "KNOWN GAP (type index)",
            Class::Known(_) => "KNOWN",
            Class::UntypedError => "UNTYPED ERROR",
            Class::SilentLoss => "SILENT LOSS",
            Class::WrongAnswer => "WRONG ANSWER",
            Class::Hang => "HANG",
            Class::Panic => "PANIC",
        }
    }
}

/// What was wrong with one read.
pub(crate) struct Finding {
    pub(crate) class: Class,
    pub(crate) read: String,
    pub(crate) detail: String,
}

pub(crate) struct MutationResult {
    pub(crate) index: usize,
    pub(crate) kind: Kind,
    pub(crate) description: String,
    pub(crate) class: Class,
    pub(crate) opened: bool,
    /// Whether `verify` reported problems (or failed with damage); `None` when it did not run.
    verify_flagged: Option<bool>,
    pub(crate) findings: Vec<Finding>,
    pub(crate) stderr: String,
    /// What the open answered: `ok`, or the error.
    pub(crate) open: String,
    /// The label of the last read the child reported (where a hang or a panic happened after).
    last_read: String,
    pub(crate) kept: Option<PathBuf>,
    pub(crate) elapsed: Duration,
}

impl MutationResult {
    pub(crate) fn line(&self, seed: u64) -> String {
        format!(
            "#{:<5} {:<18} {:<22} {:>6.0?} {} (seed {seed})",
            self.index,
            self.kind.name(),
            self.class.name(),
            self.elapsed,
            self.description
        )
    }

    pub(crate) fn report(&self, seed: u64) -> String {
        let mut text = format!(
            "{} in mutation {} ({}): {}\n  replay: {SEED_VAR}={seed} {ONLY_VAR}={} cargo test --test corruption_campaign -- --nocapture\n",
            self.class.name(),
            self.index,
            self.kind.name(),
            self.description,
            self.index
        );
        let _ = writeln!(text, "  the open answered: {}", self.open);
        for finding in self.findings.iter().filter(|f| f.class >= Class::KnownGap) {
            let _ = writeln!(text, "  {} in {}: {}", finding.class.name(), finding.read, finding.detail);
        }
        if self.class == Class::Panic || self.class == Class::Hang {
            let _ = writeln!(text, "  the child's last complete read: {}", self.last_read);
            let tail: Vec<&str> = self.stderr.lines().filter(|l| !l.trim().is_empty()).take(12).collect();
            let _ = writeln!(text, "  child's stderr: {}", tail.join("\n    "));
        }
        if let Some(kept) = &self.kept {
            let _ = writeln!(text, "  damaged copy kept in {}", kept.display());
        }
        text
    }
}

pub(crate) fn run_mutation(
    root: &Path,
    pristine: &Path,
    layout: &Layout,
    reference: &Reference,
    seed: u64,
    index: usize,
    keep: bool,
) -> MutationResult {
    let started = Instant::now();
    let kind = Kind::of(index);
    let mut rng = Rng::new(seed ^ (index as u64 + 1).wrapping_mul(0x9e37_79b9_7f4a_7c15));
    let dir = root.join(format!("m{index}"));
    copy_dir(pristine, &dir);
    let description = mutate(kind, &dir, layout, &mut rng);
    // A known hang of verify() is not run again: it would cost the time limit every time.
    let skip_verify = KNOWN_PROBLEMS
        .iter()
        .any(|known| known.kinds.contains(&kind) && known.classes.contains(&Class::Hang) && known.reads == ["verify"]);
    let child = run_child(&dir, skip_verify);
    let mut result = classify(reference, &child);
    result.index = index;
    result.kind = kind;
    result.description = description;
    // Known problems and the known gap turn findings into KNOWN; the worst finding decides.
    for finding in &mut result.findings {
        if kind == Kind::TypeEntryRemove && finding.class == Class::SilentLoss && finding.read.starts_with("log:types=")
        {
            finding.class = Class::KnownGap;
        }
        if let Some(id) = KNOWN_PROBLEMS.iter().position(|known| known.covers(kind, finding)) {
            finding.class = Class::Known(id);
        }
    }
    result.class = result.findings.iter().map(|f| f.class).max().unwrap_or(result.class).max(result.class);
    if result.class.is_failure() && keep {
        result.kept = Some(dir.clone());
    } else {
        let _ = std::fs::remove_dir_all(&dir);
    }
    result.elapsed = started.elapsed();
    result
}

/// What a child printed, and how it ended.
struct ChildRun {
    pub(crate) lines: Vec<String>,
    pub(crate) stderr: String,
    /// `None` when it was killed for taking too long.
    success: Option<bool>,
}

fn run_child(dir: &Path, skip_verify: bool) -> ChildRun {
    let mut command = Command::new(std::env::current_exe().unwrap());
    if skip_verify {
        command.env(SKIP_VERIFY_VAR, "1");
    }
    let mut child = command
        .args(["--exact", "corruption_child", "--ignored", "--nocapture", "--test-threads=1"])
        .env(DIR_VAR, dir)
        .env("RUST_BACKTRACE", "0")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let (lines, stdout) = read_lines(&mut child);
    let stderr = read_stderr(&mut child);
    let deadline = Instant::now() + CHILD_TIME_LIMIT;
    let success = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break Some(status.success());
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        std::thread::sleep(Duration::from_millis(5));
    };
    stdout.join().unwrap();
    let lines = lines.try_iter().filter_map(|line| line.strip_prefix(MARK).map(str::to_owned)).collect();
    ChildRun { lines, stderr: stderr.join().unwrap_or_default(), success }
}

/// One read as the child reported it.
struct Got {
    pub(crate) status: String,
    pub(crate) tokens: Vec<String>,
    pub(crate) error: Option<String>,
}

/// Compares what the child got with the reference.
fn classify(reference: &Reference, child: &ChildRun) -> MutationResult {
    let mut result = MutationResult {
        index: 0,
        kind: Kind::Control,
        description: String::new(),
        class: Class::Intact,
        opened: false,
        verify_flagged: None,
        findings: Vec::new(),
        stderr: child.stderr.clone(),
        last_read: String::new(),
        open: "nothing (the child reported no open)".to_owned(),
        kept: None,
        elapsed: Duration::ZERO,
    };
    let mut reads: BTreeMap<String, Got> = BTreeMap::new();
    let mut done = false;
    for line in &child.lines {
        if line == "DONE" {
            done = true;
        } else if let Some(rest) = line.strip_prefix("R ") {
            let mut words = rest.split(' ');
            let label = words.next().unwrap_or_default().to_owned();
            let status = words.next().unwrap_or_default().to_owned();
            let tokens = words.map(str::to_owned).collect();
            result.last_read.clone_from(&label);
            reads.insert(label, Got { status, tokens, error: None });
        } else if let Some(rest) = line.strip_prefix("E ") {
            let (label, text) = rest.split_once(' ').unwrap_or((rest, ""));
            if let Some(got) = reads.get_mut(label) {
                got.error = Some(text.to_owned());
            }
        }
    }
    let mut finding = |class: Class, read: &str, detail: String| {
        result.findings.push(Finding { class, read: read.to_owned(), detail });
    };
    match child.success {
        None => finding(Class::Hang, "child", format!("no answer within {CHILD_TIME_LIMIT:?}")),
        Some(false) => finding(Class::Panic, "child", "the child died (a panic or a signal)".to_owned()),
        Some(true) if !done => {
            finding(Class::Panic, "child", "the child stopped before the end of its reads".to_owned())
        }
        Some(true) => {}
    }
    // A panic inside sled that the store caught at its boundary and answered `Corrupt` (the child
    // read on to the end) is what the store promises: it counts as detected damage. It still went
    // through the process's panic hook, which is why it shows on stderr. Any other panic fails.
    let caught = done && child.success == Some(true);
    for location in panic_locations(&child.stderr) {
        let (class, label) = if caught { (Class::Detected, "caught panic") } else { (Class::Panic, "panic") };
        finding(class, &format!("{label} at {location}"), "\"panicked\" on the child's stderr".to_owned());
    }
    let Some(open) = reads.get("open") else {
        result.class = result.findings.iter().map(|f| f.class).max().unwrap_or(Class::Intact);
        return result;
    };
    result.open = open.error.clone().unwrap_or_else(|| open.status.clone());
    match open.status.as_str() {
        "ok" => result.opened = true,
        "damage" => result.class = Class::Detected,
        _ => finding(Class::UntypedError, "open", open.error.clone().unwrap_or_default()),
    }
    if result.opened {
        for (label, expect) in &reference.expected {
            match reads.get(label) {
                None => {
                    if done {
                        finding(Class::Panic, label, "the child did not report this read".to_owned());
                    }
                }
                Some(got) => match judge(expect, got) {
                    Verdict::Exact => {}
                    Verdict::Detected => result.class = result.class.max(Class::Detected),
                    Verdict::Bad(class, detail) => finding(class, label, detail),
                },
            }
        }
        if let Some(verify) = reads.get("verify") {
            match verify.status.as_str() {
                "ok" => result.verify_flagged = Some(verify.tokens.first().is_some_and(|n| n != "0")),
                "damage" => result.verify_flagged = Some(true),
                "skipped" => finding(Class::Hang, "verify", "not run: it hangs after this damage".to_owned()),
                _ => finding(Class::UntypedError, "verify", verify.error.clone().unwrap_or_default()),
            }
        }
    }
    result
}

/// Where the panics on a child's stderr happened (`file:line`, a dependency's path from its crate on);
/// "unknown" for a "panicked" without a location.
fn panic_locations(stderr: &str) -> Vec<String> {
    let mut locations = Vec::new();
    for line in stderr.lines().filter(|line| line.contains("panicked")) {
        let Some((_, place)) = line.split_once(" panicked at ") else {
            locations.push("unknown".to_owned());
            continue;
        };
        let place = place.trim_end_matches(':');
        let place = place.rsplit_once(':').map_or(place, |(file_line, _column)| file_line);
        let place = match place.split_once("index.crates.io-") {
            Some((_, rest)) => rest.split_once('/').map_or(rest, |(_, crate_path)| crate_path),
            None => place,
        };
        locations.push(place.to_owned());
    }
    locations
}

enum Verdict {
    Exact,
    Detected,
    Bad(Class, String),
}

fn judge(expect: &Expect, got: &Got) -> Verdict {
    let ended = |complete: bool, missing: &dyn Fn() -> String| match got.status.as_str() {
        "ok" if complete => Verdict::Exact,
        "ok" => Verdict::Bad(Class::SilentLoss, missing()),
        "damage" => Verdict::Detected,
        _ => Verdict::Bad(Class::UntypedError, got.error.clone().unwrap_or_default()),
    };
    match expect {
        Expect::Sequence(expected) => {
            for (i, token) in got.tokens.iter().enumerate() {
                match expected.get(i) {
                    Some(wanted) if wanted == token => {}
                    Some(wanted) if expected[i + 1..].contains(token) => {
                        return Verdict::Bad(
                            Class::SilentLoss,
                            format!("skipped {wanted}: got {token} in its place (#{i})"),
                        );
                    }
                    Some(wanted) if expected[..i].contains(token) => {
                        return Verdict::Bad(
                            Class::WrongAnswer,
                            format!("{token} again or out of order, in place of {wanted} (#{i})"),
                        );
                    }
                    Some(wanted) => {
                        return Verdict::Bad(Class::WrongAnswer, format!("got {token} in place of {wanted} (#{i})"))
                    }
                    None => {
                        return Verdict::Bad(
                            Class::WrongAnswer,
                            format!("got {token} after all {} expected", expected.len()),
                        )
                    }
                }
            }
            let n = got.tokens.len();
            ended(n == expected.len(), &|| {
                format!(
                    "ended Ok after {n} of {}; first missing {}",
                    expected.len(),
                    expected.get(n).map_or("?", String::as_str)
                )
            })
        }
        Expect::Number(wanted) => {
            let number = got.tokens.first().map(|t| t.parse::<u64>().unwrap_or(0));
            match number {
                Some(n) if got.status == "ok" && n > *wanted => {
                    Verdict::Bad(Class::WrongAnswer, format!("{n}, but {wanted} was acknowledged"))
                }
                _ => ended(number == Some(*wanted), &|| {
                    format!("{}, but {wanted} was acknowledged", got.tokens.first().map_or("nothing", String::as_str))
                }),
            }
        }
        Expect::OneOf(allowed) => match got.tokens.first() {
            Some(token) if got.status == "ok" && !allowed.contains(token) => {
                Verdict::Bad(Class::WrongAnswer, format!("got {token}, expected one of {allowed:?}"))
            }
            _ => ended(true, &String::new),
        },
        Expect::Streams(versions) => {
            let mut listed = BTreeMap::new();
            for token in &got.tokens {
                let (name, version) = token.rsplit_once('|').unwrap_or((token, "0"));
                listed.insert(name.to_owned(), version.parse::<u64>().unwrap_or(0));
            }
            if let Some((name, version)) = listed.iter().find(|(name, v)| versions.get(*name).is_none_or(|w| *v > w)) {
                return Verdict::Bad(Class::WrongAnswer, format!("lists {name} at version {version}"));
            }
            let sorted = got.tokens.windows(2).all(|w| w[0] < w[1]);
            if !sorted && got.status == "ok" {
                return Verdict::Bad(Class::WrongAnswer, format!("not ordered by name: {:?}", got.tokens));
            }
            let short = versions.iter().find(|(name, v)| listed.get(*name).is_none_or(|l| l < *v));
            ended(short.is_none(), &|| {
                let (name, version) = short.unwrap();
                format!("{name} at {:?}, but {version} was acknowledged", listed.get(name))
            })
        }
    }
}

/// Every distinct finding (kind, class, read with its stream or checkpoint left out), how often,
/// and the first mutation that showed it.
pub(crate) fn print_findings(results: &[MutationResult]) {
    let mut seen: BTreeMap<(&str, &str, String), (usize, usize)> = BTreeMap::new();
    for result in results {
        for finding in result.findings.iter().filter(|f| f.class >= Class::KnownGap) {
            let general =
                ["stream>", "stream<", "version:", "checkpoint:"].into_iter().find(|p| finding.read.starts_with(p));
            let read = general.map_or_else(|| finding.read.clone(), |prefix| format!("{prefix}*"));
            let entry = seen.entry((result.kind.name(), finding.class.name(), read)).or_insert((0, result.index));
            entry.0 += 1;
        }
    }
    if seen.is_empty() {
        return;
    }
    println!("\nfindings (kind, class, read: times, first mutation):");
    for ((kind, class, read), (times, first)) in seen {
        println!("  {kind:<18} {class:<22} {read:<28} {times:>4}  #{first}");
    }
}

/// The table of outcomes per mutation kind.
pub(crate) fn print_table(results: &[MutationResult]) {
    let columns = [
        Class::Intact,
        Class::Detected,
        Class::KnownGap,
        Class::Known(0),
        Class::UntypedError,
        Class::SilentLoss,
        Class::WrongAnswer,
        Class::Hang,
        Class::Panic,
    ];
    let heads = ["intact", "detected", "gap", "known", "untyped", "silent", "wrong", "hang", "panic"];
    let mut text = format!("\n{:<18} {:>5} {:>7}", "kind", "runs", "refused");
    for head in heads {
        let _ = write!(text, " {head:>8}");
    }
    let _ = writeln!(text, " {:>8} {:>6}", "verify!", "slow");
    let mut kinds: Vec<Kind> = results.iter().map(|r| r.kind).collect();
    kinds.sort();
    kinds.dedup();
    let mut row = |name: &str, rows: Vec<&MutationResult>| {
        let refused = rows.iter().filter(|r| !r.opened && r.class == Class::Detected).count();
        let _ = write!(text, "{name:<18} {:>5} {refused:>7}", rows.len());
        for column in columns {
            let same = |class: Class| match (class, column) {
                (Class::Known(_), Class::Known(_)) => true,
                _ => class == column,
            };
            let _ = write!(text, " {:>8}", rows.iter().filter(|r| same(r.class)).count());
        }
        let flagged = rows.iter().filter(|r| r.verify_flagged == Some(true)).count();
        let slowest = rows.iter().map(|r| r.elapsed).max().unwrap_or_default();
        let _ = writeln!(text, " {flagged:>8} {:>6.1?}", slowest);
    };
    for kind in kinds {
        row(kind.name(), results.iter().filter(|r| r.kind == kind).collect());
    }
    row("all", results.iter().collect());
    println!("{text}(refused: the open answered Corrupt or LogTruncated; verify!: verify() reported problems; slow: the slowest mutation)");
}
