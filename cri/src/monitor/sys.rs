//! The few raw system calls the monitor and the exec helper need, each in one small
//! function, and the files they write.

use std::os::fd::{AsRawFd, BorrowedFd, OwnedFd, RawFd};

/// Fails unless this process has a single thread: `fork` and `clone` from a process with
/// other threads would leave the child with locks (malloc's) that nobody will release.
pub fn ensure_single_threaded() -> Result<(), String> {
    match rrun::procfs::thread_count() {
        Ok(1) => Ok(()),
        Ok(n) => Err(format!(
            "the monitor must start single-threaded, but this process has {n} threads"
        )),
        Err(e) => Err(format!("reading /proc/self/status: {e}")),
    }
}

/// `fork(2)`.
pub fn fork() -> nix::Result<nix::unistd::ForkResult> {
    // SAFETY: callers have checked (ensure_single_threaded) that no other thread exists,
    // so the child's copy of the address space has no lock held by a vanished thread.
    unsafe { nix::unistd::fork() }
}

/// Ends a forked child at once, without the exit-time work (atexit handlers, buffered
/// stdout) that belongs to the process it was forked from.
pub fn exit_now(code: i32) -> ! {
    // SAFETY: _exit has no preconditions; it never returns.
    unsafe { libc::_exit(code) }
}

/// Gives freed heap pages back to the kernel (the setup's allocations are done with).
pub fn trim_heap() {
    // SAFETY: malloc_trim only walks glibc's own heap under its lock; no pointer of ours
    // is involved.
    unsafe {
        libc::malloc_trim(0);
    }
}

/// Sets SIGPIPE back to its default action. Rust's runtime ignores it at startup, and an
/// ignored signal stays ignored across fork and execve: the container's processes would
/// inherit that. The monitor blocks SIGPIPE instead (a blocked signal is not inherited
/// by the container: its init clears its signal mask).
pub fn default_sigpipe() -> nix::Result<()> {
    use nix::sys::signal::{signal, SigHandler, Signal};
    // SAFETY: installs no handler function, only the default action.
    unsafe { signal(Signal::SIGPIPE, SigHandler::SigDfl) }.map(drop)
}

/// `dup2(from, to)` onto one of the standard descriptors (0, 1 or 2), which stay open
/// across exec (the duplicate has no close-on-exec flag).
pub fn dup_onto(from: BorrowedFd<'_>, to: RawFd) -> nix::Result<()> {
    // SAFETY: dup2 on a descriptor we borrow; `to` is a standard descriptor of ours that
    // the caller means to replace, not one owned by an OwnedFd.
    let r = unsafe { libc::dup2(from.as_raw_fd(), to) };
    nix::errno::Errno::result(r).map(drop)
}

/// Clears close-on-exec on `fd`, so an exec'd helper inherits it.
pub fn keep_on_exec(fd: RawFd) -> nix::Result<()> {
    use nix::fcntl::{fcntl, FcntlArg, FdFlag};
    // SAFETY: `fd` is only borrowed for the call; it is open (just dup2'd by the caller).
    let borrowed = unsafe { BorrowedFd::borrow_raw(fd) };
    fcntl(borrowed, FcntlArg::F_SETFD(FdFlag::empty())).map(drop)
}

/// Takes ownership of a descriptor our parent left open for us (`--result-fd`), if it is
/// open; it becomes close-on-exec.
pub fn inherited_fd(fd: RawFd) -> Option<OwnedFd> {
    use nix::fcntl::{fcntl, FcntlArg, FdFlag};
    use std::os::fd::FromRawFd;
    if fd < 3 {
        return None;
    }
    // SAFETY: a borrow for the two calls below; F_GETFD fails on a closed descriptor.
    let borrowed = unsafe { BorrowedFd::borrow_raw(fd) };
    fcntl(borrowed, FcntlArg::F_GETFD).ok()?;
    fcntl(borrowed, FcntlArg::F_SETFD(FdFlag::FD_CLOEXEC)).ok()?;
    // SAFETY: the descriptor is open and nothing else in this process owns it: it was
    // inherited for us alone, and is named only by `--result-fd`.
    Some(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// Closes raw descriptors in a forked child that is about to do something long (create a
/// container) without them. The child ends with [`exit_now`], so the `OwnedFd`s these
/// belonged to in its copy of memory are never dropped (never closed twice).
pub fn close_in_child(fds: &[RawFd]) {
    for &fd in fds {
        // SAFETY: plain close(2); see above for why no owner closes it again.
        unsafe {
            libc::close(fd);
        }
    }
}

/// Closes every descriptor from `first` up, in a process that must hold nothing of its
/// parent's (the pod's pid 1, which lives as long as the pod).
pub fn close_fds_from(first: u32) {
    // SAFETY: close_range(2) only closes descriptors; callers own no `OwnedFd` at or above
    // `first` that would be closed a second time (they never return: see exit_now).
    unsafe {
        libc::syscall(libc::SYS_close_range, first, u32::MAX, 0);
    }
}

/// Sets or clears `O_NONBLOCK`.
pub fn set_nonblocking(fd: &OwnedFd, on: bool) -> nix::Result<()> {
    use nix::fcntl::{fcntl, FcntlArg, OFlag};
    let flags = OFlag::from_bits_truncate(fcntl(fd, FcntlArg::F_GETFL)?);
    let flags = if on {
        flags | OFlag::O_NONBLOCK
    } else {
        flags & !OFlag::O_NONBLOCK
    };
    fcntl(fd, FcntlArg::F_SETFL(flags)).map(drop)
}

/// Gives back the pages of our own executable that the setup brought in (argument
/// parsing, the container's creation, ...) and that are still exactly the file's (code,
/// read-only data). The monitor lives as long as its container, and a page of the program
/// that no other process maps counts as its private memory. Unmapping alone would not do:
/// the kernel maps up to 64 KiB of cached neighbours at each later fault ("fault-around"),
/// so the loop would soon map most of the program again. So the pages are reclaimed
/// (MADV_PAGEOUT: only those no other process maps; their content stays on disk) and later
/// faults read what the loop touches without read-ahead (MADV_RANDOM): what stays is the
/// loop's working set. Mappings holding anonymous pages (relocated data, .data, .bss) are
/// left alone.
pub fn drop_clean_exe_pages() {
    let Ok(smaps) = std::fs::read_to_string("/proc/self/smaps") else {
        return;
    };
    let here = drop_clean_exe_pages as *const () as usize;
    // The executable's mappings share the device and inode of the one holding this code.
    let mut maps: Vec<(usize, usize, bool, String, u64)> = Vec::new();
    for line in smaps.lines() {
        let mut f = line.split_whitespace();
        let Some(first) = f.next() else { continue };
        if let Some((a, b)) = first.split_once('-') {
            if let (Ok(start), Ok(end)) =
                (usize::from_str_radix(a, 16), usize::from_str_radix(b, 16))
            {
                let perms = f.next().unwrap_or("");
                let _offset = f.next();
                let dev = f.next().unwrap_or("");
                let inode = f.next().unwrap_or("");
                maps.push((
                    start,
                    end,
                    !perms.contains('w'),
                    format!("{dev} {inode}"),
                    u64::MAX,
                ));
                continue;
            }
        }
        if first == "Anonymous:" {
            if let (Some(last), Some(kb)) = (maps.last_mut(), f.next()) {
                last.4 = kb.parse().unwrap_or(u64::MAX);
            }
        }
    }
    let Some(exe) = maps
        .iter()
        .find(|m| m.0 <= here && here < m.1)
        .map(|m| m.3.clone())
    else {
        return;
    };
    for (start, end, read_only, id, anon) in maps {
        if id == exe && read_only && anon == 0 {
            let addr = start as *mut libc::c_void;
            // SAFETY: advice on a private file mapping that holds no anonymous (modified)
            // page: MADV_RANDOM changes read-ahead only; MADV_PAGEOUT and MADV_DONTNEED
            // only drop page table entries (and, for the first, reclaim the file's pages):
            // every later access reads the same bytes from the file again. No memory that
            // Rust owns is freed.
            unsafe {
                libc::madvise(addr, end - start, libc::MADV_RANDOM);
                if libc::madvise(addr, end - start, libc::MADV_PAGEOUT) != 0 {
                    // Before Linux 5.4.
                    libc::madvise(addr, end - start, libc::MADV_DONTNEED);
                }
            }
        }
    }
}
