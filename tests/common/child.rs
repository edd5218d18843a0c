//! What the kill -9 tests share: a seeded generator, the child's way of talking, and the parent's way
//! of listening.

use std::io::{BufRead, BufReader, Write};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

/// Writes `text` to stdout at once: the parent reads it line by line while the child runs.
pub fn say(text: &str) {
    let mut out = std::io::stdout().lock();
    out.write_all(text.as_bytes()).unwrap();
    out.flush().unwrap();
}

/// The directory a child test works in, from the environment variable `var` its parent sets. A child
/// run without it (by hand, with `--ignored`) fails rather than passing without doing anything.
pub fn child_dir(var: &str) -> std::path::PathBuf {
    match std::env::var_os(var) {
        Some(dir) => dir.into(),
        None => panic!("{var} is not set: this child test is run by its parent test, which sets it"),
    }
}

/// The command that runs `test`, an ignored test of this test binary, as a child process: alone,
/// printing as it goes, with stdout and stderr piped and no stdin. The caller adds its environment.
pub fn child_command(test: &str) -> Command {
    let mut command = Command::new(std::env::current_exe().unwrap());
    command
        .args(["--exact", test, "--ignored", "--nocapture", "--test-threads=1"])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    command
}

/// The number in the environment variable `name`, if it holds one.
pub fn env_number<T: std::str::FromStr>(name: &str) -> Option<T> {
    std::env::var(name).ok()?.parse().ok()
}

/// The seed in `var` (to replay a run), or one from the clock.
pub fn seed_from(var: &str) -> u64 {
    env_number(var)
        .unwrap_or_else(|| SystemTime::now().duration_since(UNIX_EPOCH).map_or(7, |d| d.as_nanos() as u64) | 1)
}

/// Reads the child's complete stdout lines in a thread; a line cut short by the kill is dropped.
pub fn read_lines(child: &mut Child) -> (mpsc::Receiver<String>, std::thread::JoinHandle<()>) {
    let pipe = child.stdout.take().unwrap();
    let (send, lines) = mpsc::channel();
    let reader = std::thread::spawn(move || {
        let mut pipe = BufReader::new(pipe);
        let mut line = String::new();
        while pipe.read_line(&mut line).is_ok_and(|n| n > 0) {
            if let Some(complete) = line.strip_suffix('\n') {
                let _ = send.send(complete.to_owned());
            }
            line.clear();
        }
    });
    (lines, reader)
}

/// As [`read_lines`], each line with the moment it was read.
pub fn read_timed_lines(child: &mut Child) -> (mpsc::Receiver<(Instant, String)>, std::thread::JoinHandle<()>) {
    let pipe = child.stdout.take().unwrap();
    let (send, lines) = mpsc::channel();
    let reader = std::thread::spawn(move || {
        let mut pipe = BufReader::new(pipe);
        let mut line = String::new();
        while pipe.read_line(&mut line).is_ok_and(|n| n > 0) {
            if let Some(complete) = line.strip_suffix('\n') {
                let _ = send.send((Instant::now(), complete.to_owned()));
            }
            line.clear();
        }
    });
    (lines, reader)
}

/// A small xorshift64* generator: enough randomness for kill moments and event shapes, no dependency.
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Self {
        // splitmix64 of the seed, so that nearby seeds give unrelated sequences; never zero.
        let mut z = seed.wrapping_add(0x9e37_79b9_7f4a_7c15);
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        Rng((z ^ (z >> 31)) | 1)
    }

    pub fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    /// A number in `0..n` (`n` > 0).
    pub fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }
}

/// Reads the child's whole stderr in a thread (for the report when it fails).
pub fn read_stderr(child: &mut Child) -> std::thread::JoinHandle<String> {
    let mut pipe = child.stderr.take().unwrap();
    std::thread::spawn(move || {
        let mut text = String::new();
        let _ = std::io::Read::read_to_string(&mut pipe, &mut text);
        text
    })
}
