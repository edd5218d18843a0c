//! A small in-memory FUSE filesystem that can lose power, for the power-loss test.
//!
//! Every file keeps two layers: what was last synced (durable) and what was written since (volatile:
//! writes, truncations, a new size). Every directory keeps its synced entries apart from its current
//! ones (creates, renames, unlinks, new subdirectories). `fsync` or `fdatasync` of a file moves that
//! file's volatile bytes and size into the durable layer; `fsyncdir` (or `fsync` of a directory) moves
//! that directory's entries. Nothing else does: sled's `sync_file_range` reaches no filesystem (the
//! kernel has no dirty pages to write: FUSE writes go straight through to [`Disk`]), and closing a
//! file syncs nothing.
//!
//! [`Disk::power_cut`] throws every volatile change away, as a machine that loses power does; files
//! and directories that no synced entry reaches are gone. Mounts made before a cut answer `EIO` to
//! everything from then on, so a later [`Disk::mount`] (fresh kernel caches) serves only what was
//! durable. Hard links, symlinks, xattrs and permissions are not modelled: sled needs none of them.
//!
//! [`Disk::hold_syncs`] makes the disk slow to sync one file: every `fsync` of a file of that name
//! waits, unanswered (the caller blocks), until [`Disk::release_syncs`], which does the syncs and
//! answers them. Other requests, reads and writes of that file included, are served meanwhile.
#![allow(dead_code, unreachable_pub, missing_docs, clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::{BTreeMap, HashMap};
use std::ffi::{OsStr, OsString};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant, SystemTime};

use fuser::{
    BackgroundSession, Errno, FileAttr, FileHandle, FileType, Filesystem, FopenFlags, Generation, INodeNo, MountOption,
    OpenFlags, RenameFlags, ReplyAttr, ReplyCreate, ReplyData, ReplyDirectory, ReplyEmpty, ReplyEntry, ReplyOpen,
    ReplyStatfs, ReplyWrite, Request, TimeOrNow, WriteFlags,
};

/// How long the kernel may cache names and attributes. Zero: every lookup asks the filesystem.
const TTL: Duration = Duration::ZERO;
const ROOT: u64 = 1;

/// A file or a directory, with its durable and its volatile state.
#[derive(Debug)]
enum Node {
    File {
        /// What readers see: the durable bytes with every volatile change applied.
        data: Vec<u8>,
        /// What survives a power cut.
        synced: Vec<u8>,
        /// The byte ranges of `data` changed since the last sync (`start..end`, possibly past its end).
        dirty: Vec<(u64, u64)>,
    },
    Dir {
        entries: BTreeMap<OsString, u64>,
        synced: BTreeMap<OsString, u64>,
    },
}

impl Node {
    fn file() -> Node {
        Node::File { data: Vec::new(), synced: Vec::new(), dirty: Vec::new() }
    }

    fn dir() -> Node {
        Node::Dir { entries: BTreeMap::new(), synced: BTreeMap::new() }
    }
}

/// What the filesystem was asked to do, for the test's report.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Stats {
    pub writes: u64,
    pub written_bytes: u64,
    /// `fsync` and `fdatasync` of files.
    pub file_syncs: u64,
    /// `fsyncdir`, and `fsync` of a directory.
    pub dir_syncs: u64,
}

/// What a power cut threw away.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Lost {
    /// Files with unsynced changes (their path, or `#inode` when no name is left), and how many bytes
    /// were written or truncated since their last sync.
    pub files: Vec<(String, u64)>,
    /// Directories whose entries changed since their last sync, with the names added (`+name`) and
    /// removed (`-name`).
    pub dirs: Vec<(String, Vec<String>)>,
}

impl std::fmt::Display for Lost {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let files: Vec<String> = self.files.iter().map(|(path, bytes)| format!("{path} ({bytes} B)")).collect();
        let dirs: Vec<String> =
            self.dirs.iter().map(|(path, changes)| format!("{path} ({})", changes.join(" "))).collect();
        write!(f, "files [{}], directories [{}]", files.join(", "), dirs.join(", "))
    }
}

#[derive(Debug)]
struct State {
    nodes: HashMap<u64, Node>,
    next_ino: u64,
    /// Bumped by every power cut; a mount of an older generation answers `EIO`.
    generation: u64,
    stats: Stats,
    born: SystemTime,
    /// Syncs held back, while [`Disk::hold_syncs`] is in force.
    hold: Option<Hold>,
}

/// The file name whose syncs are held, and the syncs waiting: the node and the unanswered reply.
#[derive(Debug)]
struct Hold {
    name: OsString,
    waiting: Vec<(u64, ReplyEmpty)>,
}

/// The disk: shared by its mounts and the test, which cuts its power.
#[derive(Clone, Debug)]
pub struct Disk(Arc<Mutex<State>>);

impl Default for Disk {
    fn default() -> Self {
        Disk::new()
    }
}

impl Disk {
    /// An empty disk: a root directory, durable.
    pub fn new() -> Disk {
        let nodes = HashMap::from([(ROOT, Node::dir())]);
        let state = State {
            nodes,
            next_ino: ROOT + 1,
            generation: 0,
            stats: Stats::default(),
            born: SystemTime::now(),
            hold: None,
        };
        Disk(Arc::new(Mutex::new(state)))
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.0.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Mounts the disk's current state at `at` (an empty directory), served by a thread of this process
    /// until [`Mount::unmount`] or drop. Panics, naming what is missing, when it cannot mount.
    pub fn mount(&self, at: &Path) -> Mount {
        let generation = self.lock().generation;
        let owner = std::fs::metadata(at).map(|m| (m.uid(), m.gid())).unwrap_or((0, 0));
        let served = Served { disk: self.clone(), generation, owner };
        let mut config = fuser::Config::default();
        config.mount_options = vec![MountOption::FSName("annals-volatile".to_owned()), MountOption::NoAtime];
        match fuser::spawn_mount(served, at, &config) {
            Ok(session) => Mount { session: Some(session), path: at.canonicalize().unwrap_or_else(|_| at.to_owned()) },
            Err(error) => panic!("{}", cannot_mount(at, &error)),
        }
    }

    /// Cuts the power: every change not synced is lost, and every mount made so far answers `EIO`
    /// from now on (unmount it and mount again to read what survived).
    pub fn power_cut(&self) -> Lost {
        let mut state = self.lock();
        state.generation += 1;
        let names = paths(&state.nodes);
        let path = |ino: &u64| names.get(ino).cloned().unwrap_or_else(|| format!("#{ino}"));
        let mut lost = Lost::default();
        for (ino, node) in &mut state.nodes {
            match node {
                Node::File { data, synced, dirty } => {
                    if !dirty.is_empty() {
                        lost.files.push((path(ino), dirty.iter().map(|(start, end)| end - start).sum()));
                    }
                    data.clone_from(synced);
                    dirty.clear();
                }
                Node::Dir { entries, synced } => {
                    let added = entries.iter().filter(|(name, ino)| synced.get(*name) != Some(ino));
                    let removed = synced.iter().filter(|(name, ino)| entries.get(*name) != Some(ino));
                    let changes: Vec<String> = added
                        .map(|(name, _)| format!("+{}", name.to_string_lossy()))
                        .chain(removed.map(|(name, _)| format!("-{}", name.to_string_lossy())))
                        .collect();
                    if !changes.is_empty() {
                        lost.dirs.push((path(ino), changes));
                    }
                    entries.clone_from(synced);
                }
            }
        }
        lost.files.sort();
        lost.dirs.sort();
        // Whatever no synced entry reaches is gone (also files that were unlinked and synced away).
        let kept = paths(&state.nodes);
        state.nodes.retain(|ino, _| kept.contains_key(ino));
        lost
    }

    pub fn stats(&self) -> Stats {
        self.lock().stats
    }

    /// From now on, an `fsync` or `fdatasync` of a file named `name` (in any directory) is neither
    /// done nor answered until [`release_syncs`](Self::release_syncs): its caller blocks, as on a
    /// disk that is slow to flush. Everything else is served as usual.
    pub fn hold_syncs(&self, name: &str) {
        self.lock().hold = Some(Hold { name: name.into(), waiting: Vec::new() });
    }

    /// How many syncs are waiting under [`hold_syncs`](Self::hold_syncs).
    pub fn held_syncs(&self) -> usize {
        self.lock().hold.as_ref().map_or(0, |hold| hold.waiting.len())
    }

    /// Ends [`hold_syncs`](Self::hold_syncs): does the waiting syncs, in order, and answers them.
    pub fn release_syncs(&self) {
        let mut replies = Vec::new();
        {
            let mut state = self.lock();
            let Some(hold) = state.hold.take() else { return };
            for (ino, reply) in hold.waiting {
                replies.push((reply, sync_node(&mut state, ino)));
            }
        }
        for (reply, result) in replies {
            match result {
                Ok(()) => reply.ok(),
                Err(errno) => reply.error(errno),
            }
        }
    }
}

/// `fsync`, `fdatasync` or `fsyncdir` of `ino`: what the node holds now becomes durable.
fn sync_node(state: &mut State, ino: u64) -> Result<(), Errno> {
    let is_file = match state.nodes.get_mut(&ino).ok_or(Errno::ENOENT)? {
        Node::File { data, synced, dirty } => {
            synced.resize(data.len(), 0);
            for (start, end) in dirty.drain(..) {
                let end = (end as usize).min(data.len());
                let start = (start as usize).min(end);
                synced[start..end].copy_from_slice(&data[start..end]);
            }
            true
        }
        Node::Dir { entries, synced } => {
            synced.clone_from(entries);
            false
        }
    };
    if is_file {
        state.stats.file_syncs += 1;
    } else {
        state.stats.dir_syncs += 1;
    }
    Ok(())
}

/// The path of every node that the root reaches through the directories' current entries, by inode.
fn paths(nodes: &HashMap<u64, Node>) -> HashMap<u64, String> {
    let mut paths = HashMap::from([(ROOT, "/".to_owned())]);
    let mut todo = vec![ROOT];
    while let Some(ino) = todo.pop() {
        let Some(Node::Dir { entries: children, .. }) = nodes.get(&ino) else { continue };
        for (name, &child) in children {
            if !paths.contains_key(&child) {
                let path = format!("{}{}", paths[&ino], name.to_string_lossy());
                let path = if matches!(nodes.get(&child), Some(Node::Dir { .. })) { path + "/" } else { path };
                paths.insert(child, path);
                todo.push(child);
            }
        }
    }
    paths
}

/// A mounted [`Disk`]; unmounted by [`Mount::unmount`] or on drop.
#[derive(Debug)]
pub struct Mount {
    session: Option<BackgroundSession>,
    path: PathBuf,
}

impl Mount {
    /// Unmounts and waits for the serving thread to end. Panics if the kernel refuses.
    pub fn unmount(mut self) {
        if let Err(error) = self.close() {
            panic!("cannot unmount the power-loss test's filesystem at {:?}: {error}", self.path);
        }
    }

    /// Waits (up to 10 s) for this process to close its files on the mount, since a dropped store
    /// closes them from its own threads a little later, then unmounts. If the kernel refuses, detaches
    /// the mount lazily (best effort) so that no dead mount is left behind.
    fn close(&mut self) -> std::io::Result<()> {
        let Some(session) = self.session.take() else { return Ok(()) };
        let started = Instant::now();
        while self.open_here() && started.elapsed() < Duration::from_secs(10) {
            std::thread::sleep(Duration::from_millis(5));
        }
        session.umount_and_join().inspect_err(|_| {
            let detached = |program: &str, args: &[&str]| {
                Command::new(program)
                    .args(args)
                    .arg(&self.path)
                    .stderr(Stdio::null())
                    .status()
                    .is_ok_and(|s| s.success())
            };
            let _ = detached("fusermount3", &["-u", "-z"]) || detached("umount", &["-l"]);
        })
    }

    /// Whether a file descriptor of this process points into the mount.
    fn open_here(&self) -> bool {
        let Ok(fds) = std::fs::read_dir("/proc/self/fd") else { return false };
        fds.flatten().any(|fd| std::fs::read_link(fd.path()).is_ok_and(|target| target.starts_with(&self.path)))
    }
}

impl Drop for Mount {
    fn drop(&mut self) {
        let _ = self.close();
    }
}

/// Why a mount failed, naming what is missing.
fn cannot_mount(at: &Path, error: &std::io::Error) -> String {
    let mut missing = Vec::new();
    if !Path::new("/dev/fuse").exists() {
        missing.push("the device /dev/fuse (load the `fuse` kernel module; a container needs `--device /dev/fuse`)");
    }
    let on_path = |name: &str| {
        std::env::var_os("PATH").is_some_and(|path| std::env::split_paths(&path).any(|dir| dir.join(name).is_file()))
    };
    if !on_path("fusermount3") {
        missing.push("`fusermount3`, which mounts when mount(2) is not permitted (Debian package `fuse3`)");
    }
    let missing = if missing.is_empty() {
        "nothing obvious (mounting needs root or CAP_SYS_ADMIN, or a working setuid `fusermount3`)".to_owned()
    } else {
        missing.join("; ")
    };
    format!("the power-loss test cannot mount its FUSE filesystem at {at:?}: {error}. Missing: {missing}")
}

/// One mount's view of the disk.
#[derive(Debug)]
struct Served {
    disk: Disk,
    generation: u64,
    owner: (u32, u32),
}

impl Served {
    /// The disk, unless its power was cut since this mount was made.
    fn state(&self) -> Result<MutexGuard<'_, State>, Errno> {
        let state = self.disk.lock();
        if state.generation == self.generation {
            Ok(state)
        } else {
            Err(Errno::EIO)
        }
    }

    fn attr(&self, state: &State, ino: u64) -> Result<FileAttr, Errno> {
        let (kind, size, perm, nlink) = match state.nodes.get(&ino).ok_or(Errno::ENOENT)? {
            Node::File { data, .. } => (FileType::RegularFile, data.len() as u64, 0o644, 1),
            Node::Dir { entries, .. } => (FileType::Directory, entries.len() as u64, 0o755, 2),
        };
        let time = state.born;
        Ok(FileAttr {
            ino: INodeNo(ino),
            size,
            blocks: size.div_ceil(512),
            atime: time,
            mtime: time,
            ctime: time,
            crtime: time,
            kind,
            perm,
            nlink,
            uid: self.owner.0,
            gid: self.owner.1,
            rdev: 0,
            blksize: 4096,
            flags: 0,
        })
    }

    /// Adds a new node named `name` to the directory `parent`, or fails if the name is taken.
    fn add(&self, state: &mut State, parent: u64, name: &OsStr, node: Node) -> Result<FileAttr, Errno> {
        let ino = state.next_ino;
        match state.nodes.get_mut(&parent) {
            Some(Node::Dir { entries, .. }) if entries.contains_key(name) => return Err(Errno::EEXIST),
            Some(Node::Dir { entries, .. }) => entries.insert(name.to_owned(), ino),
            Some(Node::File { .. }) => return Err(Errno::ENOTDIR),
            None => return Err(Errno::ENOENT),
        };
        state.next_ino += 1;
        state.nodes.insert(ino, node);
        self.attr(state, ino)
    }

    fn child(state: &State, parent: u64, name: &OsStr) -> Result<u64, Errno> {
        match state.nodes.get(&parent) {
            Some(Node::Dir { entries, .. }) => entries.get(name).copied().ok_or(Errno::ENOENT),
            Some(Node::File { .. }) => Err(Errno::ENOTDIR),
            None => Err(Errno::ENOENT),
        }
    }

    fn remove(&self, parent: u64, name: &OsStr, want_dir: bool) -> Result<(), Errno> {
        let mut state = self.state()?;
        let ino = Self::child(&state, parent, name)?;
        match (state.nodes.get(&ino), want_dir) {
            (Some(Node::Dir { entries, .. }), true) if !entries.is_empty() => return Err(Errno::ENOTEMPTY),
            (Some(Node::Dir { .. }), false) => return Err(Errno::EISDIR),
            (Some(Node::File { .. }), true) => return Err(Errno::ENOTDIR),
            _ => {}
        }
        // The node stays (it may still be open); a power cut forgets it unless a synced entry names it.
        if let Some(Node::Dir { entries, .. }) = state.nodes.get_mut(&parent) {
            entries.remove(name);
        }
        Ok(())
    }

    fn rename(&self, from: (u64, &OsStr), to: (u64, &OsStr), flags: RenameFlags) -> Result<(), Errno> {
        if flags.contains(RenameFlags::RENAME_EXCHANGE) || flags.contains(RenameFlags::RENAME_WHITEOUT) {
            return Err(Errno::EINVAL);
        }
        let mut state = self.state()?;
        let ino = Self::child(&state, from.0, from.1)?;
        match Self::child(&state, to.0, to.1) {
            Ok(_) if flags.contains(RenameFlags::RENAME_NOREPLACE) => return Err(Errno::EEXIST),
            Ok(target) => match (state.nodes.get(&ino), state.nodes.get(&target)) {
                (_, Some(Node::Dir { entries, .. })) if !entries.is_empty() => return Err(Errno::ENOTEMPTY),
                (Some(Node::File { .. }), Some(Node::Dir { .. })) => return Err(Errno::EISDIR),
                (Some(Node::Dir { .. }), Some(Node::File { .. })) => return Err(Errno::ENOTDIR),
                _ => {}
            },
            Err(e) if e == Errno::ENOENT => {}
            Err(e) => return Err(e),
        }
        if let Some(Node::Dir { entries, .. }) = state.nodes.get_mut(&from.0) {
            entries.remove(from.1);
        }
        if let Some(Node::Dir { entries, .. }) = state.nodes.get_mut(&to.0) {
            entries.insert(to.1.to_owned(), ino);
        }
        Ok(())
    }

    fn resize(&self, ino: u64, size: u64) -> Result<FileAttr, Errno> {
        let mut state = self.state()?;
        match state.nodes.get_mut(&ino) {
            Some(Node::File { data, dirty, .. }) => {
                let old = data.len() as u64;
                data.resize(size as usize, 0);
                if old != size {
                    dirty.push((old.min(size), old.max(size)));
                }
            }
            Some(Node::Dir { .. }) => return Err(Errno::EISDIR),
            None => return Err(Errno::ENOENT),
        }
        self.attr(&state, ino)
    }

    fn write_at(&self, ino: u64, offset: u64, bytes: &[u8]) -> Result<u32, Errno> {
        let mut state = self.state()?;
        let Some(Node::File { data, dirty, .. }) = state.nodes.get_mut(&ino) else { return Err(Errno::EBADF) };
        let (start, end) = (offset as usize, offset as usize + bytes.len());
        // Bytes between the old end and `offset` become zeros: they are changed too.
        let changed_from = start.min(data.len()) as u64;
        if data.len() < end {
            data.resize(end, 0);
        }
        data[start..end].copy_from_slice(bytes);
        match dirty.last_mut() {
            Some(last) if last.0 <= changed_from && changed_from <= last.1 => last.1 = last.1.max(end as u64),
            _ => dirty.push((changed_from, end as u64)),
        }
        state.stats.writes += 1;
        state.stats.written_bytes += bytes.len() as u64;
        Ok(bytes.len() as u32)
    }

    /// `fsync`, `fdatasync` or `fsyncdir`: what the node holds now becomes durable.
    fn sync(&self, ino: u64) -> Result<(), Errno> {
        sync_node(&mut *self.state()?, ino)
    }

    /// A file sync: done and answered now, or kept waiting when the disk holds syncs of its name.
    fn sync_file(&self, ino: u64, reply: ReplyEmpty) {
        let mut state = match self.state() {
            Ok(state) => state,
            Err(errno) => return reply.error(errno),
        };
        let held = state.hold.as_ref().is_some_and(|hold| {
            let names = paths(&state.nodes);
            let is_file = matches!(state.nodes.get(&ino), Some(Node::File { .. }));
            let name = names.get(&ino).and_then(|path| path.rsplit('/').next()).map(OsStr::new);
            is_file && name == Some(hold.name.as_os_str())
        });
        if held {
            if let Some(hold) = state.hold.as_mut() {
                hold.waiting.push((ino, reply));
            }
            return;
        }
        let result = sync_node(&mut state, ino);
        drop(state);
        match result {
            Ok(()) => reply.ok(),
            Err(errno) => reply.error(errno),
        }
    }
}

/// Answers `reply` with the result of `f`: `Ok` through `ok`, `Err` as the error.
macro_rules! answer {
    ($reply:ident, $result:expr, |$value:pat_param| $ok:expr) => {
        match $result {
            Ok($value) => $ok,
            Err(errno) => $reply.error(errno),
        }
    };
}

impl Filesystem for Served {
    fn lookup(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEntry) {
        let result = self.state().and_then(|state| {
            let ino = Self::child(&state, parent.0, name)?;
            self.attr(&state, ino)
        });
        answer!(reply, result, |attr| reply.entry(&TTL, &attr, Generation(0)));
    }

    fn getattr(&self, _req: &Request, ino: INodeNo, _fh: Option<FileHandle>, reply: ReplyAttr) {
        let result = self.state().and_then(|state| self.attr(&state, ino.0));
        answer!(reply, result, |attr| reply.attr(&TTL, &attr));
    }

    fn setattr(
        &self,
        _req: &Request,
        ino: INodeNo,
        _mode: Option<u32>,
        _uid: Option<u32>,
        _gid: Option<u32>,
        size: Option<u64>,
        _atime: Option<TimeOrNow>,
        _mtime: Option<TimeOrNow>,
        _ctime: Option<SystemTime>,
        _fh: Option<FileHandle>,
        _crtime: Option<SystemTime>,
        _chgtime: Option<SystemTime>,
        _bkuptime: Option<SystemTime>,
        _flags: Option<fuser::BsdFileFlags>,
        reply: ReplyAttr,
    ) {
        // Only the size is modelled; modes and times are accepted and ignored.
        let result = match size {
            Some(size) => self.resize(ino.0, size),
            None => self.state().and_then(|state| self.attr(&state, ino.0)),
        };
        answer!(reply, result, |attr| reply.attr(&TTL, &attr));
    }

    fn mkdir(&self, _req: &Request, parent: INodeNo, name: &OsStr, _mode: u32, _umask: u32, reply: ReplyEntry) {
        let result = self.state().and_then(|mut state| self.add(&mut state, parent.0, name, Node::dir()));
        answer!(reply, result, |attr| reply.entry(&TTL, &attr, Generation(0)));
    }

    fn unlink(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        answer!(reply, self.remove(parent.0, name, false), |()| reply.ok());
    }

    fn rmdir(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        answer!(reply, self.remove(parent.0, name, true), |()| reply.ok());
    }

    fn rename(
        &self,
        _req: &Request,
        parent: INodeNo,
        name: &OsStr,
        newparent: INodeNo,
        newname: &OsStr,
        flags: RenameFlags,
        reply: ReplyEmpty,
    ) {
        answer!(reply, self.rename((parent.0, name), (newparent.0, newname), flags), |()| reply.ok());
    }

    fn open(&self, _req: &Request, ino: INodeNo, _flags: OpenFlags, reply: ReplyOpen) {
        let result = self.state().and_then(|state| match state.nodes.get(&ino.0) {
            Some(Node::File { .. }) => Ok(()),
            Some(Node::Dir { .. }) => Err(Errno::EISDIR),
            None => Err(Errno::ENOENT),
        });
        answer!(reply, result, |()| reply.opened(FileHandle(0), FopenFlags::empty()));
    }

    fn read(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        offset: u64,
        size: u32,
        _flags: OpenFlags,
        _lock_owner: Option<fuser::LockOwner>,
        reply: ReplyData,
    ) {
        let state = match self.state() {
            Ok(state) => state,
            Err(errno) => return reply.error(errno),
        };
        match state.nodes.get(&ino.0) {
            Some(Node::File { data, .. }) => {
                let start = (offset as usize).min(data.len());
                let end = (start + size as usize).min(data.len());
                reply.data(&data[start..end]);
            }
            Some(Node::Dir { .. }) => reply.error(Errno::EISDIR),
            None => reply.error(Errno::ENOENT),
        }
    }

    fn write(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        offset: u64,
        data: &[u8],
        _write_flags: WriteFlags,
        _flags: OpenFlags,
        _lock_owner: Option<fuser::LockOwner>,
        reply: ReplyWrite,
    ) {
        answer!(reply, self.write_at(ino.0, offset, data), |written| reply.written(written));
    }

    fn flush(&self, _req: &Request, _ino: INodeNo, _fh: FileHandle, _owner: fuser::LockOwner, reply: ReplyEmpty) {
        // Closing a file syncs nothing.
        reply.ok();
    }

    fn fsync(&self, _req: &Request, ino: INodeNo, _fh: FileHandle, _datasync: bool, reply: ReplyEmpty) {
        self.sync_file(ino.0, reply);
    }

    fn readdir(&self, _req: &Request, ino: INodeNo, _fh: FileHandle, offset: u64, mut reply: ReplyDirectory) {
        let state = match self.state() {
            Ok(state) => state,
            Err(errno) => return reply.error(errno),
        };
        let Some(Node::Dir { entries, .. }) = state.nodes.get(&ino.0) else { return reply.error(Errno::ENOTDIR) };
        let dots = [(ino.0, FileType::Directory, OsStr::new(".")), (ROOT, FileType::Directory, OsStr::new(".."))];
        let listed = entries.iter().map(|(name, &child)| {
            let kind = match state.nodes.get(&child) {
                Some(Node::Dir { .. }) => FileType::Directory,
                _ => FileType::RegularFile,
            };
            (child, kind, name.as_os_str())
        });
        for (index, (child, kind, name)) in dots.into_iter().chain(listed).enumerate().skip(offset as usize) {
            if reply.add(INodeNo(child), index as u64 + 1, kind, name) {
                break;
            }
        }
        reply.ok();
    }

    fn fsyncdir(&self, _req: &Request, ino: INodeNo, _fh: FileHandle, _datasync: bool, reply: ReplyEmpty) {
        answer!(reply, self.sync(ino.0), |()| reply.ok());
    }

    fn statfs(&self, _req: &Request, _ino: INodeNo, reply: ReplyStatfs) {
        reply.statfs(1 << 24, 1 << 24, 1 << 24, 1 << 20, 1 << 20, 4096, 255, 4096);
    }

    fn access(&self, _req: &Request, _ino: INodeNo, _mask: fuser::AccessFlags, reply: ReplyEmpty) {
        reply.ok();
    }

    fn create(
        &self,
        _req: &Request,
        parent: INodeNo,
        name: &OsStr,
        _mode: u32,
        _umask: u32,
        flags: i32,
        reply: ReplyCreate,
    ) {
        const O_EXCL: i32 = 0o200;
        let result = self.state().and_then(|mut state| match Self::child(&state, parent.0, name) {
            Ok(_) if flags & O_EXCL != 0 => Err(Errno::EEXIST),
            Ok(ino) => self.attr(&state, ino),
            Err(e) if e == Errno::ENOENT => self.add(&mut state, parent.0, name, Node::file()),
            Err(e) => Err(e),
        });
        answer!(reply, result, |attr| reply.created(&TTL, &attr, Generation(0), FileHandle(0), FopenFlags::empty()));
    }
}
