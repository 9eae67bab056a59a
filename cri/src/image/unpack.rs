//! Layer blobs: decompression (sniffed from the magic bytes, whatever the media type says)
//! and unpacking into a directory an overlay mount can use as a lowerdir.
//!
//! # What unpacking does
//!
//! - OCI whiteouts become overlayfs whiteouts: `DIR/.wh.NAME` → a 0:0 character device
//!   `DIR/NAME` (unless this layer itself already made `NAME`: a whiteout hides only lower
//!   layers); `DIR/.wh..wh..opq` → the `trusted.overlay.opaque=y` xattr on `DIR`. Other
//!   `.wh..wh.*` names (aufs bookkeeping) are skipped. A whiteout later replaced by a directory
//!   in the same layer becomes an opaque directory, so the lower contents stay hidden.
//! - Files, directories, symlinks, hardlinks (to entries of the same layer), character and
//!   block devices and fifos are made with the entry's mode (setuid/setgid/sticky included),
//!   owner, mtime and `SCHILY.xattr.*` pax xattrs. `trusted.overlay.*` xattrs from the tar are
//!   dropped: they steer overlayfs itself (redirects, metacopy), and only the opaque marker
//!   above is the layer's to set.
//! - Directories the tar leaves implicit take their mode and owner from the same directory in
//!   the layers below (which is why layers are keyed by chain id), else 0755 root:root.
//!
//! # What is refused
//!
//! Entries with a `..` component or an absolute path, and entries whose parent path goes
//! through a symlink or a non-directory. Every path is walked one component at a time from
//! an fd of the layer directory with `O_NOFOLLOW | O_DIRECTORY`, and every entry is created
//! relative to its parent's fd (`openat`, `mkdirat`, `mknodat`, `symlinkat`, `linkat`), so no
//! symlink, whether made by this layer or not, is ever followed while unpacking: a layer
//! cannot write outside its directory. (containerd instead resolves symlinks inside the
//! rootfs; an entry below a symlink of the same layer does not come out of a filesystem diff,
//! so refusing it costs nothing real.) Symlink targets are stored as they are: they are only
//! resolved later, inside the container's root.

use std::ffi::{OsStr, OsString};
use std::fs::File;
use std::io::{self, BufRead, BufReader, Read};
use std::os::fd::AsFd;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use nix::errno::Errno;
use nix::fcntl::{openat, AtFlags, OFlag};
use nix::sys::stat::{
    fchmod, fchmodat, fstatat, futimens, mkdirat, mknodat, utimensat, FchmodatFlags, Mode, SFlag,
    UtimensatFlags,
};
use nix::sys::time::TimeSpec;
use nix::unistd::{fchown, fchownat, linkat, symlinkat, unlinkat, Gid, Uid, UnlinkatFlags};
use sha2::{Digest, Sha256};
use tar::EntryType;
use xattr::FileExt;

/// The xattr overlayfs reads to make a directory opaque.
pub const OPAQUE_XATTR: &str = "trusted.overlay.opaque";
const OVERLAY_XATTR_PREFIX: &str = "trusted.overlay.";
const WHITEOUT_PREFIX: &[u8] = b".wh.";
const OPAQUE_MARKER: &[u8] = b".wh..wh..opq";
const AUFS_META_PREFIX: &[u8] = b".wh..wh.";

/// Why a layer could not be unpacked.
#[derive(Debug, thiserror::Error)]
pub enum UnpackError {
    /// The destination's filesystem is full (ENOSPC, EDQUOT): not the layer's fault, and
    /// the caller answers it as such (RESOURCE_EXHAUSTED, not a corrupt layer).
    #[error("{0}")]
    NoSpace(String),
    /// The layer is malformed, or could not be read or written.
    #[error("{0}")]
    Layer(String),
}

impl From<String> for UnpackError {
    fn from(m: String) -> Self {
        UnpackError::Layer(m)
    }
}

impl From<&str> for UnpackError {
    fn from(m: &str) -> Self {
        UnpackError::Layer(m.to_string())
    }
}

/// Is this the error of a full filesystem (blocks, inodes or a quota)?
pub(crate) fn is_no_space(errno: Option<i32>) -> bool {
    matches!(errno, Some(libc::ENOSPC | libc::EDQUOT))
}

impl UnpackError {
    /// A failed call that may allocate on the destination's filesystem.
    fn errno(what: impl std::fmt::Display, e: Errno) -> Self {
        let m = format!("{what}: {e}");
        if is_no_space(Some(e as i32)) {
            UnpackError::NoSpace(m)
        } else {
            UnpackError::Layer(m)
        }
    }

    fn io(what: impl std::fmt::Display, e: io::Error) -> Self {
        let m = format!("{what}: {e}");
        if is_no_space(e.raw_os_error()) {
            UnpackError::NoSpace(m)
        } else {
            UnpackError::Layer(m)
        }
    }

    /// The same error, its message prefixed with what was being done.
    pub(crate) fn context(self, what: impl std::fmt::Display) -> Self {
        match self {
            UnpackError::NoSpace(m) => UnpackError::NoSpace(format!("{what}: {m}")),
            UnpackError::Layer(m) => UnpackError::Layer(format!("{what}: {m}")),
        }
    }
}

/// How a blob is compressed, by its first bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Compression {
    None,
    Gzip,
    Zstd,
}

impl Compression {
    /// The OCI layer media type for a blob with this compression.
    pub fn oci_media_type(self) -> &'static str {
        match self {
            Compression::None => "application/vnd.oci.image.layer.v1.tar",
            Compression::Gzip => "application/vnd.oci.image.layer.v1.tar+gzip",
            Compression::Zstd => "application/vnd.oci.image.layer.v1.tar+zstd",
        }
    }
}

/// Sniffs the compression of the data `r` is about to return.
pub fn sniff<R: BufRead>(r: &mut R) -> io::Result<Compression> {
    let head = r.fill_buf()?;
    Ok(if head.starts_with(&[0x1f, 0x8b]) {
        Compression::Gzip
    } else if head.starts_with(&[0x28, 0xb5, 0x2f, 0xfd]) {
        Compression::Zstd
    } else {
        Compression::None
    })
}

/// A reader of `r`'s data, decompressed according to its magic bytes.
pub fn decompressed<R: Read + 'static>(r: R) -> io::Result<Box<dyn Read>> {
    let mut r = BufReader::new(r);
    Ok(match sniff(&mut r)? {
        Compression::Gzip => Box::new(flate2::read::MultiGzDecoder::new(r)),
        Compression::Zstd => Box::new(zstd::stream::read::Decoder::with_buffer(r)?),
        Compression::None => Box::new(r),
    })
}

/// Hashes what is read through it.
pub(crate) struct HashingReader<R> {
    inner: R,
    hasher: Sha256,
    len: u64,
}

impl<R: Read> HashingReader<R> {
    pub(crate) fn new(inner: R) -> Self {
        HashingReader {
            inner,
            hasher: Sha256::new(),
            len: 0,
        }
    }

    /// `sha256:<hex>` of everything read so far, and its length.
    pub(crate) fn finish(self) -> (String, u64) {
        (
            format!("sha256:{}", hex::encode(self.hasher.finalize())),
            self.len,
        )
    }
}

impl<R: Read> Read for HashingReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.hasher.update(&buf[..n]);
        self.len += n as u64;
        Ok(n)
    }
}

/// The diff id (`sha256:` of the uncompressed tar) of the layer blob at `blob`.
pub fn diff_id(blob: &Path) -> Result<String, String> {
    let file = File::open(blob).map_err(|e| format!("opening {}: {e}", blob.display()))?;
    let mut r = HashingReader::new(
        decompressed(file).map_err(|e| format!("reading {}: {e}", blob.display()))?,
    );
    io::copy(&mut r, &mut io::sink())
        .map_err(|e| format!("decompressing {}: {e}", blob.display()))?;
    Ok(r.finish().0)
}

/// Unpacks the layer blob at `blob` into the empty directory `dest`, converting whiteouts
/// (see the module documentation). `lowers` are the unpacked layers below it, top first,
/// for the metadata of implicit directories. Returns the diff id of what it read; the
/// caller compares it with the config's and discards `dest` when they differ.
pub fn unpack(blob: &Path, dest: &Path, lowers: &[PathBuf]) -> Result<String, UnpackError> {
    let file = File::open(blob).map_err(|e| format!("opening {}: {e}", blob.display()))?;
    unpack_from(file, dest, lowers)
}

/// [`unpack`] of the blob `blob` reads (compressed or not), e.g. a download as it arrives.
pub fn unpack_from<R: Read + 'static>(
    blob: R,
    dest: &Path,
    lowers: &[PathBuf],
) -> Result<String, UnpackError> {
    let reader =
        HashingReader::new(decompressed(blob).map_err(|e| format!("reading the layer: {e}"))?);
    let root = File::open(dest).map_err(|e| format!("opening {}: {e}", dest.display()))?;
    let mut unpacker = Unpacker {
        root,
        lowers,
        dir_times: Vec::new(),
    };
    let mut archive = tar::Archive::new(reader);
    {
        let entries = archive
            .entries()
            .map_err(|e| format!("reading the tar: {e}"))?;
        for entry in entries {
            let mut entry = entry.map_err(|e| format!("reading the tar: {e}"))?;
            let path = entry.path_bytes().into_owned();
            unpacker
                .entry(&mut entry)
                .map_err(|e| e.context(format!("entry {:?}", String::from_utf8_lossy(&path))))?;
        }
    }
    unpacker.finish()?;
    let mut reader = archive.into_inner();
    // The diff id covers the whole stream, padding after the end-of-archive blocks included.
    io::copy(&mut reader, &mut io::sink()).map_err(|e| format!("reading the tar: {e}"))?;
    Ok(reader.finish().0)
}

/// A tar path split into components below the layer root: `.` and empty ones dropped, so
/// that `/` and `./` name the root itself and an absolute path is taken from the root (as
/// containerd joins it under the root); `..` is refused (containerd clamps it at the root,
/// but no honest image needs it).
fn components(raw: &[u8]) -> Result<Vec<OsString>, String> {
    let mut out = Vec::new();
    for c in raw.split(|b| *b == b'/') {
        match c {
            b"" | b"." => {}
            b".." => return Err("path with a \"..\" component".into()),
            c => out.push(OsStr::from_bytes(c).to_os_string()),
        }
    }
    Ok(out)
}

fn open_dir<Fd: AsFd>(parent: Fd, name: &OsStr) -> nix::Result<File> {
    openat(
        parent,
        name,
        OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
        Mode::empty(),
    )
    .map(File::from)
}

fn is_whiteout(st: &nix::sys::stat::FileStat) -> bool {
    (st.st_mode & libc::S_IFMT) == libc::S_IFCHR && st.st_rdev == 0
}

/// Owner, mode, mtime and xattrs of an entry.
struct Meta {
    uid: u32,
    gid: u32,
    mode: u32,
    mtime: i64,
    xattrs: Vec<(String, Vec<u8>)>,
}

/// A numeric header field; blank (NULs and spaces) reads as 0, as Go's archive/tar (which
/// wrote most layers) reads it.
fn numeric(parsed: io::Result<u64>, raw: &[u8], what: &str) -> Result<u64, String> {
    match parsed {
        Ok(v) => Ok(v),
        Err(_) if raw.iter().all(|b| *b == 0 || *b == b' ') => Ok(0),
        Err(e) => Err(format!("bad {what}: {e}")),
    }
}

impl Meta {
    fn of<R: Read>(entry: &mut tar::Entry<'_, R>) -> Result<Meta, String> {
        let h = entry.header();
        let old = h.as_old();
        let mut uid = numeric(h.uid(), &old.uid, "uid")?;
        let mut gid = numeric(h.gid(), &old.gid, "gid")?;
        let mode = numeric(h.mode().map(u64::from), &old.mode, "mode")? as u32 & 0o7777;
        let mut mtime = i64::try_from(numeric(h.mtime(), &old.mtime, "mtime")?).unwrap_or(0);
        let mut xattrs = Vec::new();
        if let Some(pax) = entry
            .pax_extensions()
            .map_err(|e| format!("bad pax header: {e}"))?
        {
            for ext in pax {
                let ext = ext.map_err(|e| format!("bad pax header: {e}"))?;
                let Ok(key) = ext.key() else { continue };
                let value = ext.value_bytes();
                let number = || {
                    std::str::from_utf8(value)
                        .ok()
                        .and_then(|v| v.split('.').next()?.parse::<i64>().ok())
                };
                match key {
                    "uid" => {
                        uid = number()
                            .and_then(|n| u64::try_from(n).ok())
                            .ok_or("bad pax uid")?
                    }
                    "gid" => {
                        gid = number()
                            .and_then(|n| u64::try_from(n).ok())
                            .ok_or("bad pax gid")?
                    }
                    "mtime" => mtime = number().ok_or("bad pax mtime")?,
                    _ => {
                        if let Some(name) = key.strip_prefix("SCHILY.xattr.") {
                            if name.starts_with(OVERLAY_XATTR_PREFIX) {
                                tracing::debug!(
                                    xattr = name,
                                    "dropping an overlayfs xattr from a layer"
                                );
                            } else {
                                xattrs.push((name.to_string(), value.to_vec()));
                            }
                        }
                    }
                }
            }
        }
        Ok(Meta {
            uid: u32::try_from(uid).map_err(|_| format!("uid {uid} out of range"))?,
            gid: u32::try_from(gid).map_err(|_| format!("gid {gid} out of range"))?,
            mode,
            mtime,
            xattrs,
        })
    }

    fn mode(&self) -> Mode {
        Mode::from_bits_truncate(self.mode)
    }

    fn time(&self) -> TimeSpec {
        TimeSpec::new(self.mtime, 0)
    }

    /// Owner, then mode (chown clears setuid), xattrs and times, on an open file or dir.
    fn apply_fd(&self, f: &File, times: bool) -> Result<(), String> {
        fchown(
            f,
            Some(Uid::from_raw(self.uid)),
            Some(Gid::from_raw(self.gid)),
        )
        .map_err(|e| format!("chown: {e}"))?;
        fchmod(f, self.mode()).map_err(|e| format!("chmod: {e}"))?;
        for (name, value) in &self.xattrs {
            f.set_xattr(name, value)
                .map_err(|e| format!("setting xattr {name}: {e}"))?;
        }
        if times {
            futimens(f, &self.time(), &self.time()).map_err(|e| format!("setting times: {e}"))?;
        }
        Ok(())
    }

    /// The same for a symlink or device node, by name (none of them is ever opened).
    fn apply_at(&self, parent: &File, name: &OsStr, chmod: bool) -> Result<(), String> {
        fchownat(
            parent,
            name,
            Some(Uid::from_raw(self.uid)),
            Some(Gid::from_raw(self.gid)),
            AtFlags::AT_SYMLINK_NOFOLLOW,
        )
        .map_err(|e| format!("chown: {e}"))?;
        if chmod {
            // The node was just made by mknodat in this private directory: not a symlink.
            fchmodat(parent, name, self.mode(), FchmodatFlags::FollowSymlink)
                .map_err(|e| format!("chmod: {e}"))?;
        }
        if !self.xattrs.is_empty() {
            let path = proc_path(parent, name);
            for (n, value) in &self.xattrs {
                // lsetxattr: the last component (the entry) is not followed.
                xattr::set(&path, n, value).map_err(|e| format!("setting xattr {n}: {e}"))?;
            }
        }
        utimensat(
            parent,
            name,
            &self.time(),
            &self.time(),
            UtimensatFlags::NoFollowSymlink,
        )
        .map_err(|e| format!("setting times: {e}"))
    }
}

/// `/proc/self/fd/<parent>/<name>`: a path to `name` in `parent` for calls without an `*at`
/// form; the kernel resolves the fd link to the directory itself.
fn proc_path(parent: &File, name: &OsStr) -> PathBuf {
    use std::os::fd::AsRawFd;
    PathBuf::from(format!("/proc/self/fd/{}", parent.as_raw_fd())).join(name)
}

/// What the layers below have at a path.
enum Lower {
    Dir(nix::sys::stat::FileStat),
    /// Deleted, replaced by a non-directory, or hidden by an opaque directory.
    Hidden,
    Absent,
}

struct Unpacker<'a> {
    root: File,
    lowers: &'a [PathBuf],
    /// Explicit directories' mtimes, set last (making their children changes them).
    dir_times: Vec<(Vec<OsString>, TimeSpec)>,
}

impl Unpacker<'_> {
    fn entry<R: Read>(&mut self, entry: &mut tar::Entry<'_, R>) -> Result<(), UnpackError> {
        let comps = components(&entry.path_bytes())?;
        let mut kind = entry.header().entry_type();
        // Old tars mark directories as regular entries whose name ends in '/' (Go's
        // archive/tar reads them so too).
        if matches!(kind, EntryType::Regular | EntryType::Continuous)
            && entry.path_bytes().ends_with(b"/")
        {
            kind = EntryType::Directory;
        }
        if matches!(
            kind,
            EntryType::XGlobalHeader
                | EntryType::XHeader
                | EntryType::GNULongName
                | EntryType::GNULongLink
        ) {
            return Ok(());
        }
        let meta = Meta::of(entry)?;
        let Some((name, parents)) = comps.split_last() else {
            if kind == EntryType::Directory {
                meta.apply_fd(&self.root, false)?;
                self.dir_times.push((Vec::new(), meta.time()));
                return Ok(());
            }
            return Err("a non-directory entry for the layer root".into());
        };

        if let Some(target) = name.as_bytes().strip_prefix(WHITEOUT_PREFIX) {
            let dir = self.dir_at(parents, true)?;
            if name.as_bytes() == OPAQUE_MARKER {
                return Ok(set_opaque(&dir)?);
            }
            if name.as_bytes().starts_with(AUFS_META_PREFIX) {
                return Ok(());
            }
            if target.is_empty() || target == b"." || target == b".." {
                return Err("a whiteout without a name".into());
            }
            let target = OsStr::from_bytes(target);
            return match fstatat(&dir, target, AtFlags::AT_SYMLINK_NOFOLLOW) {
                // Made by this layer: a whiteout hides only what is below.
                Ok(_) => Ok(()),
                Err(Errno::ENOENT) => mknodat(&dir, target, SFlag::S_IFCHR, Mode::empty(), 0)
                    .map_err(|e| UnpackError::errno("making the whiteout device", e)),
                Err(e) => Err(format!("stat {}: {e}", target.to_string_lossy()).into()),
            };
        }

        let parent = self.dir_at(parents, true)?;
        match kind {
            EntryType::Directory => {
                let dir = self.child_dir(&parent, name, &comps)?;
                meta.apply_fd(&dir, false)?;
                self.dir_times.push((comps.clone(), meta.time()));
            }
            EntryType::Regular | EntryType::Continuous | EntryType::GNUSparse => {
                remove_non_dir(&parent, name)?;
                let fd = openat(
                    &parent,
                    name.as_os_str(),
                    OFlag::O_WRONLY
                        | OFlag::O_CREAT
                        | OFlag::O_EXCL
                        | OFlag::O_NOFOLLOW
                        | OFlag::O_CLOEXEC,
                    Mode::from_bits_truncate(0o600),
                )
                .map_err(|e| UnpackError::errno("creating", e))?;
                let mut file = File::from(fd);
                io::copy(entry, &mut file).map_err(|e| UnpackError::io("writing", e))?;
                meta.apply_fd(&file, true)?;
            }
            EntryType::Symlink => {
                let target = entry
                    .link_name_bytes()
                    .ok_or("a symlink without a target")?
                    .into_owned();
                remove_non_dir(&parent, name)?;
                symlinkat(OsStr::from_bytes(&target), &parent, name.as_os_str())
                    .map_err(|e| UnpackError::errno("symlink", e))?;
                meta.apply_at(&parent, name, false)?;
            }
            EntryType::Link => {
                let raw = entry
                    .link_name_bytes()
                    .ok_or("a hard link without a target")?
                    .into_owned();
                let target = components(&raw).map_err(|e| format!("hard link target: {e}"))?;
                let Some((tname, tparents)) = target.split_last() else {
                    return Err("a hard link to the layer root".into());
                };
                if target == comps {
                    return Ok(());
                }
                let tdir = self.dir_at(tparents, false).map_err(|e| {
                    format!("hard link target {}: {e}", String::from_utf8_lossy(&raw))
                })?;
                remove_non_dir(&parent, name)?;
                linkat(
                    &tdir,
                    tname.as_os_str(),
                    &parent,
                    name.as_os_str(),
                    AtFlags::empty(),
                )
                .map_err(|e| match e {
                    Errno::ENOENT => UnpackError::Layer(format!(
                        "hard link to {}, which this layer does not hold",
                        String::from_utf8_lossy(&raw)
                    )),
                    e => UnpackError::errno(
                        format_args!("hard link to {}", String::from_utf8_lossy(&raw)),
                        e,
                    ),
                })?;
            }
            EntryType::Char | EntryType::Block | EntryType::Fifo => {
                let h = entry.header();
                let major = h.device_major().ok().flatten().unwrap_or(0);
                let minor = h.device_minor().ok().flatten().unwrap_or(0);
                let sflag = match kind {
                    EntryType::Char => SFlag::S_IFCHR,
                    EntryType::Block => SFlag::S_IFBLK,
                    _ => SFlag::S_IFIFO,
                };
                remove_non_dir(&parent, name)?;
                let dev = nix::sys::stat::makedev(u64::from(major), u64::from(minor));
                mknodat(&parent, name.as_os_str(), sflag, meta.mode(), dev)
                    .map_err(|e| UnpackError::errno("mknod", e))?;
                meta.apply_at(&parent, name, true)?;
            }
            other => return Err(format!("unsupported tar entry type {other:?}").into()),
        }
        Ok(())
    }

    /// Opens (or, with `create`, makes) the directory at `comps`, one component at a time
    /// without following symlinks.
    fn dir_at(&self, comps: &[OsString], create: bool) -> Result<File, UnpackError> {
        let mut cur: Option<File> = None;
        for (i, c) in comps.iter().enumerate() {
            let parent = cur.as_ref().unwrap_or(&self.root);
            let next = match open_dir(parent, c) {
                Ok(f) => f,
                Err(Errno::ENOENT) if create => {
                    mkdirat(parent, c.as_os_str(), Mode::from_bits_truncate(0o755)).map_err(
                        |e| UnpackError::errno(format_args!("mkdir {}", show(&comps[..=i])), e),
                    )?;
                    let dir = open_dir(parent, c)
                        .map_err(|e| format!("opening {}: {e}", show(&comps[..=i])))?;
                    self.inherit(&dir, &comps[..=i])?;
                    dir
                }
                Err(Errno::ELOOP | Errno::ENOTDIR) => {
                    let st = fstatat(parent, c.as_os_str(), AtFlags::AT_SYMLINK_NOFOLLOW)
                        .map_err(|e| format!("stat {}: {e}", show(&comps[..=i])))?;
                    if create && is_whiteout(&st) {
                        self.replace_whiteout(parent, c, &comps[..=i])?
                    } else if (st.st_mode & libc::S_IFMT) == libc::S_IFLNK {
                        return Err(format!(
                            "the path goes through the symlink {}",
                            show(&comps[..=i])
                        )
                        .into());
                    } else {
                        return Err(format!(
                            "the path goes through the non-directory {}",
                            show(&comps[..=i])
                        )
                        .into());
                    }
                }
                Err(e) => return Err(format!("opening {}: {e}", show(&comps[..=i])).into()),
            };
            cur = Some(next);
        }
        match cur {
            Some(f) => Ok(f),
            None => open_dir(&self.root, OsStr::new("."))
                .map_err(|e| format!("opening the layer root: {e}").into()),
        }
    }

    /// The directory `name` in `parent` for an explicit directory entry: kept if there,
    /// made if not, replacing a non-directory.
    fn child_dir(
        &self,
        parent: &File,
        name: &OsStr,
        comps: &[OsString],
    ) -> Result<File, UnpackError> {
        match open_dir(parent, name) {
            Ok(f) => Ok(f),
            Err(Errno::ENOENT) => {
                mkdirat(parent, name, Mode::from_bits_truncate(0o755))
                    .map_err(|e| UnpackError::errno("mkdir", e))?;
                Ok(open_dir(parent, name).map_err(|e| format!("opening: {e}"))?)
            }
            Err(Errno::ELOOP | Errno::ENOTDIR) => {
                let st = fstatat(parent, name, AtFlags::AT_SYMLINK_NOFOLLOW)
                    .map_err(|e| format!("stat: {e}"))?;
                if is_whiteout(&st) {
                    return self.replace_whiteout(parent, name, comps);
                }
                unlinkat(parent, name, UnlinkatFlags::NoRemoveDir)
                    .map_err(|e| format!("removing the non-directory: {e}"))?;
                mkdirat(parent, name, Mode::from_bits_truncate(0o755))
                    .map_err(|e| UnpackError::errno("mkdir", e))?;
                Ok(open_dir(parent, name).map_err(|e| format!("opening: {e}"))?)
            }
            Err(e) => Err(format!("opening: {e}").into()),
        }
    }

    /// A directory where this layer put a whiteout: the lower contents must stay hidden, so
    /// it becomes an opaque directory.
    fn replace_whiteout(
        &self,
        parent: &File,
        name: &OsStr,
        comps: &[OsString],
    ) -> Result<File, UnpackError> {
        unlinkat(parent, name, UnlinkatFlags::NoRemoveDir)
            .map_err(|e| format!("removing the whiteout {}: {e}", show(comps)))?;
        mkdirat(parent, name, Mode::from_bits_truncate(0o755))
            .map_err(|e| UnpackError::errno(format_args!("mkdir {}", show(comps)), e))?;
        let dir = open_dir(parent, name).map_err(|e| format!("opening {}: {e}", show(comps)))?;
        set_opaque(&dir)?;
        Ok(dir)
    }

    /// Gives an implicit directory the owner and mode it has in the layers below.
    fn inherit(&self, dir: &File, comps: &[OsString]) -> Result<(), String> {
        for lower in self.lowers {
            match lookup_lower(lower, comps) {
                Lower::Dir(st) => {
                    fchown(
                        dir,
                        Some(Uid::from_raw(st.st_uid)),
                        Some(Gid::from_raw(st.st_gid)),
                    )
                    .map_err(|e| format!("chown {}: {e}", show(comps)))?;
                    fchmod(dir, Mode::from_bits_truncate(st.st_mode & 0o7777))
                        .map_err(|e| format!("chmod {}: {e}", show(comps)))?;
                    return Ok(());
                }
                Lower::Hidden => return Ok(()),
                Lower::Absent => {}
            }
        }
        Ok(())
    }

    fn finish(&mut self) -> Result<(), String> {
        for (comps, time) in std::mem::take(&mut self.dir_times).into_iter().rev() {
            // A directory an entry named may since have been replaced; only dirs get times.
            if let Ok(dir) = self.dir_at(&comps, false) {
                futimens(&dir, &time, &time)
                    .map_err(|e| format!("setting times of {}: {e}", show(&comps)))?;
            }
        }
        Ok(())
    }
}

fn lookup_lower(lower: &Path, comps: &[OsString]) -> Lower {
    let mut path = lower.to_path_buf();
    let mut opaque_above = false;
    for (i, c) in comps.iter().enumerate() {
        path.push(c);
        match std::fs::symlink_metadata(&path) {
            Ok(m) if m.is_dir() => {
                if i + 1 == comps.len() {
                    return match nix::sys::stat::lstat(&path) {
                        Ok(st) => Lower::Dir(st),
                        Err(_) => Lower::Absent,
                    };
                }
                if matches!(xattr::get(&path, OPAQUE_XATTR), Ok(Some(v)) if v == b"y") {
                    opaque_above = true;
                }
            }
            Ok(_) => return Lower::Hidden,
            Err(_) if opaque_above => return Lower::Hidden,
            Err(_) => return Lower::Absent,
        }
    }
    Lower::Absent
}

fn set_opaque(dir: &File) -> Result<(), String> {
    dir.set_xattr(OPAQUE_XATTR, b"y")
        .map_err(|e| format!("setting {OPAQUE_XATTR}: {e}"))
}

/// Makes room for a new non-directory entry: an existing non-directory is replaced (later
/// entries win, as in tar), an existing directory is refused.
fn remove_non_dir(parent: &File, name: &OsStr) -> Result<(), String> {
    match fstatat(parent, name, AtFlags::AT_SYMLINK_NOFOLLOW) {
        Err(Errno::ENOENT) => Ok(()),
        Err(e) => Err(format!("stat: {e}")),
        Ok(st) if (st.st_mode & libc::S_IFMT) == libc::S_IFDIR => {
            Err("a non-directory entry over a directory of the same layer".into())
        }
        Ok(_) => unlinkat(parent, name, UnlinkatFlags::NoRemoveDir)
            .map_err(|e| format!("replacing: {e}")),
    }
}

fn show(comps: &[OsString]) -> String {
    let parts: Vec<_> = comps.iter().map(|c| c.to_string_lossy()).collect();
    parts.join("/")
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};

    fn hdr(kind: EntryType, mode: u32, size: u64) -> tar::Header {
        let mut h = tar::Header::new_gnu();
        h.set_entry_type(kind);
        h.set_mode(mode);
        h.set_size(size);
        h.set_mtime(1_600_000_000);
        h
    }

    /// A tar from (path, kind, data or link target); raw names (no path checks by the builder).
    fn tar_of(entries: &[(&str, EntryType, &[u8])]) -> Vec<u8> {
        let mut b = tar::Builder::new(Vec::new());
        for (path, kind, data) in entries {
            let mut h = hdr(
                *kind,
                if *kind == EntryType::Directory {
                    0o755
                } else {
                    0o644
                },
                0,
            );
            {
                let name = &mut h.as_old_mut().name;
                name[..path.len()].copy_from_slice(path.as_bytes());
            }
            match kind {
                EntryType::Symlink | EntryType::Link => {
                    let l = &mut h.as_old_mut().linkname;
                    l[..data.len()].copy_from_slice(data);
                    h.set_cksum();
                    b.append(&h, io::empty()).unwrap();
                }
                _ => {
                    h.set_size(data.len() as u64);
                    h.set_cksum();
                    b.append(&h, *data).unwrap();
                }
            }
        }
        b.into_inner().unwrap()
    }

    fn unpack_tar(tar: &[u8], lowers: &[PathBuf]) -> (tempfile::TempDir, Result<String, String>) {
        let dir = tempfile::tempdir().unwrap();
        let blob = dir.path().join("blob");
        std::fs::write(&blob, tar).unwrap();
        let dest = dir.path().join("layer");
        std::fs::create_dir(&dest).unwrap();
        let r = unpack(&blob, &dest, lowers).map_err(|e| e.to_string());
        (dir, r)
    }

    #[test]
    fn whiteouts_become_overlay_whiteouts() {
        let tar = tar_of(&[
            ("etc/", EntryType::Directory, b""),
            ("etc/.wh.hosts", EntryType::Regular, b""),
            ("var/.wh..wh..opq", EntryType::Regular, b""),
            ("var/new", EntryType::Regular, b"x"),
            ("a/.wh..wh.plnk", EntryType::Regular, b""),
            ("b/.wh.c", EntryType::Regular, b""),
            ("b/c/", EntryType::Directory, b""),
            ("d/e", EntryType::Regular, b"kept"),
            ("d/.wh.e", EntryType::Regular, b""),
            ("old-style-dir/", EntryType::Regular, b""),
        ]);
        let (dir, r) = unpack_tar(&tar, &[]);
        let digest = r.unwrap();
        assert_eq!(
            digest,
            format!("sha256:{}", hex::encode(Sha256::digest(&tar)))
        );
        let l = dir.path().join("layer");
        let wh = std::fs::symlink_metadata(l.join("etc/hosts")).unwrap();
        assert!(wh.file_type().is_char_device());
        assert_eq!(wh.rdev(), 0);
        assert!(!l.join("etc/.wh.hosts").exists());
        assert_eq!(
            xattr::get(l.join("var"), OPAQUE_XATTR).unwrap().as_deref(),
            Some(&b"y"[..])
        );
        assert!(!l.join("var/.wh..wh..opq").exists());
        assert_eq!(std::fs::read(l.join("var/new")).unwrap(), b"x");
        assert!(std::fs::read_dir(l.join("a")).unwrap().next().is_none());
        // Whiteout then directory: an opaque directory.
        assert!(l.join("b/c").is_dir());
        assert_eq!(
            xattr::get(l.join("b/c"), OPAQUE_XATTR).unwrap().as_deref(),
            Some(&b"y"[..])
        );
        // A whiteout does not delete what its own layer made.
        assert_eq!(std::fs::read(l.join("d/e")).unwrap(), b"kept");
        assert_eq!(xattr::get(l.join("etc"), OPAQUE_XATTR).unwrap(), None);
        assert!(l.join("old-style-dir").is_dir());
    }

    #[test]
    fn refuses_escapes() {
        let outside = tempfile::tempdir().unwrap();
        let target = outside.path().to_str().unwrap().as_bytes().to_vec();
        type Case<'a> = (Vec<(&'a str, EntryType, &'a [u8])>, &'a str);
        let cases: Vec<Case> = vec![
            (vec![("../evil", EntryType::Regular, b"x")], "\"..\""),
            (vec![("a/../../evil", EntryType::Regular, b"x")], "\"..\""),
            (
                vec![
                    ("link", EntryType::Symlink, &target),
                    ("link/evil", EntryType::Regular, b"x"),
                ],
                "symlink",
            ),
            (
                vec![
                    ("link", EntryType::Symlink, &target),
                    ("link/.wh.x", EntryType::Regular, b""),
                ],
                "symlink",
            ),
            (
                vec![
                    ("link", EntryType::Symlink, b"."),
                    ("link/x/y", EntryType::Regular, b"x"),
                ],
                "symlink",
            ),
            (
                vec![
                    ("f", EntryType::Regular, b"x"),
                    ("f/g", EntryType::Regular, b"x"),
                ],
                "non-directory",
            ),
            (vec![("h", EntryType::Link, b"../../etc/passwd")], "\"..\""),
            (vec![("h", EntryType::Link, b"missing")], "does not hold"),
            (
                vec![
                    ("link", EntryType::Symlink, &target),
                    ("h", EntryType::Link, b"link/x"),
                ],
                "symlink",
            ),
        ];
        for (entries, want) in cases {
            let (_dir, r) = unpack_tar(&tar_of(&entries), &[]);
            let err = r.expect_err(&format!("{entries:?}"));
            assert!(err.contains(want), "{entries:?}: {err}");
            assert!(
                std::fs::read_dir(outside.path()).unwrap().next().is_none(),
                "{entries:?} wrote outside"
            );
        }
    }

    /// Issue 18 item 9: some builders write the layer root as `/` or `./`; it is the root
    /// (its mode and owner apply to it), and an absolute path lands under the root.
    #[test]
    fn root_entries_and_absolute_paths_stay_in_the_root() {
        for (root_name, mode, uid) in [("/", 0o750, 7), ("./", 0o711, 8), (".", 0o700, 9)] {
            let mut b = tar::Builder::new(Vec::new());
            let mut h = hdr(EntryType::Directory, mode, 0);
            h.as_old_mut().name[..root_name.len()].copy_from_slice(root_name.as_bytes());
            h.set_uid(uid);
            h.set_cksum();
            b.append(&h, io::empty()).unwrap();
            let mut h = hdr(EntryType::Regular, 0o644, 2);
            let name = b"/abs/file";
            h.as_old_mut().name[..name.len()].copy_from_slice(name);
            h.set_cksum();
            b.append(&h, &b"x\n"[..]).unwrap();
            let (dir, r) = unpack_tar(&b.into_inner().unwrap(), &[]);
            r.unwrap_or_else(|e| panic!("{root_name:?}: {e}"));
            let layer = dir.path().join("layer");
            let md = std::fs::metadata(&layer).unwrap();
            assert_eq!(md.permissions().mode() & 0o7777, mode, "{root_name:?}");
            assert_eq!(md.uid(), uid as u32, "{root_name:?}");
            assert_eq!(std::fs::read(layer.join("abs/file")).unwrap(), b"x\n");
            assert!(
                !dir.path().join("abs").exists(),
                "{root_name:?}: outside the layer"
            );
        }
    }

    #[test]
    fn keeps_metadata_links_and_devices() {
        let mut b = tar::Builder::new(Vec::new());
        let mut h = hdr(EntryType::Directory, 0o1777, 0);
        h.set_uid(1000);
        h.set_gid(1001);
        b.append_data(&mut h, "tmp/", io::empty()).unwrap();
        let mut h = hdr(EntryType::Regular, 0o4755, 3);
        h.set_uid(1000);
        b.append_data(&mut h, "bin/su", &b"abc"[..]).unwrap();
        let mut h = hdr(EntryType::Link, 0o4755, 0);
        b.append_link(&mut h, "bin/su2", "bin/su").unwrap();
        let mut h = hdr(EntryType::Symlink, 0o777, 0);
        h.set_uid(7);
        b.append_link(&mut h, "bin/sh", "/bin/busybox").unwrap();
        let mut h = hdr(EntryType::Char, 0o620, 0);
        h.set_device_major(1).unwrap();
        h.set_device_minor(3).unwrap();
        b.append_data(&mut h, "dev/null", io::empty()).unwrap();
        let mut h = hdr(EntryType::Fifo, 0o600, 0);
        b.append_data(&mut h, "run/fifo", io::empty()).unwrap();
        // A pax xattr, and an overlay one that must be dropped.
        b.append_pax_extensions([
            ("SCHILY.xattr.user.test", &b"v"[..]),
            ("SCHILY.xattr.trusted.overlay.redirect", &b"/x"[..]),
        ])
        .unwrap();
        let mut h = hdr(EntryType::Regular, 0o640, 1);
        b.append_data(&mut h, "x", &b"1"[..]).unwrap();
        let tar = b.into_inner().unwrap();

        let (dir, r) = unpack_tar(&tar, &[]);
        r.unwrap();
        let l = dir.path().join("layer");
        let tmp = std::fs::metadata(l.join("tmp")).unwrap();
        assert_eq!(
            (tmp.mode() & 0o7777, tmp.uid(), tmp.gid()),
            (0o1777, 1000, 1001)
        );
        assert_eq!(tmp.mtime(), 1_600_000_000);
        let su = std::fs::metadata(l.join("bin/su")).unwrap();
        assert_eq!((su.mode() & 0o7777, su.uid()), (0o4755, 1000));
        assert_eq!(su.nlink(), 2);
        assert_eq!(
            std::fs::metadata(l.join("bin/su2")).unwrap().ino(),
            su.ino()
        );
        assert_eq!(
            std::fs::read_link(l.join("bin/sh")).unwrap(),
            Path::new("/bin/busybox")
        );
        assert_eq!(
            std::fs::symlink_metadata(l.join("bin/sh")).unwrap().uid(),
            7
        );
        let null = std::fs::symlink_metadata(l.join("dev/null")).unwrap();
        assert!(null.file_type().is_char_device());
        assert_eq!(
            (null.rdev(), null.mode() & 0o7777),
            (nix::sys::stat::makedev(1, 3), 0o620)
        );
        assert!(std::fs::symlink_metadata(l.join("run/fifo"))
            .unwrap()
            .file_type()
            .is_fifo());
        assert_eq!(
            xattr::get(l.join("x"), "user.test").unwrap().as_deref(),
            Some(&b"v"[..])
        );
        assert_eq!(
            xattr::get(l.join("x"), "trusted.overlay.redirect").unwrap(),
            None
        );
        assert_eq!(
            std::fs::metadata(l.join("x")).unwrap().permissions().mode() & 0o7777,
            0o640
        );
    }

    #[test]
    fn implicit_dirs_inherit_from_lower_layers() {
        let lower = tempfile::tempdir().unwrap();
        let tmp = lower.path().join("tmp");
        std::fs::create_dir(&tmp).unwrap();
        std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(0o1777)).unwrap();
        nix::unistd::chown(&tmp, Some(Uid::from_raw(5)), Some(Gid::from_raw(6))).unwrap();
        let tar = tar_of(&[
            ("tmp/file", EntryType::Regular, b"x"),
            ("other/file", EntryType::Regular, b"y"),
        ]);
        let (dir, r) = unpack_tar(&tar, &[lower.path().to_path_buf()]);
        r.unwrap();
        let m = std::fs::metadata(dir.path().join("layer/tmp")).unwrap();
        assert_eq!((m.mode() & 0o7777, m.uid(), m.gid()), (0o1777, 5, 6));
        let m = std::fs::metadata(dir.path().join("layer/other")).unwrap();
        assert_eq!((m.mode() & 0o7777, m.uid()), (0o755, 0));
    }

    #[test]
    fn compressed_blobs_and_garbage() {
        let tar = tar_of(&[("f", EntryType::Regular, b"data")]);
        let want = format!("sha256:{}", hex::encode(Sha256::digest(&tar)));
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        io::Write::write_all(&mut gz, &tar).unwrap();
        let gz = gz.finish().unwrap();
        let zst = zstd::encode_all(tar.as_slice(), 1).unwrap();
        for blob in [gz, zst] {
            let (dir, r) = unpack_tar(&blob, &[]);
            assert_eq!(r.unwrap(), want);
            assert_eq!(std::fs::read(dir.path().join("layer/f")).unwrap(), b"data");
        }
        let mut bad = vec![0x1f, 0x8b];
        bad.extend_from_slice(b"not really gzip");
        let (_dir, r) = unpack_tar(&bad, &[]);
        assert!(r.is_err());
        let (_dir, r) = unpack_tar(&tar[..700], &[]);
        assert!(r.is_err(), "a truncated tar is an error");
    }
}
