//! Starting a command step's process from an environment prepared once per
//! run, and waiting for its exit through a pidfd.
//!
//! `std::process::Command` copies the whole environment into a map and back
//! into C strings on every spawn in which a variable changes, and every step
//! sets `PHOENIX_OUTPUT` and `PHOENIX_STEP`: that copy alone was a fifth of
//! what Phoenix spent per step on a run of short commands. Here the inherited
//! environment is converted once ([`Spawner`]), a spawn adds only the step's
//! own variables, and `/dev/null` for stdin is opened once.
//!
//! The child is started as glibc's `posix_spawn` starts one, by `clone` with
//! `CLONE_VM | CLONE_VFORK`: it runs on Phoenix's memory, with this thread
//! suspended, until its exec. Unlike `posix_spawn`, it runs on a stack kept
//! for the thread instead of one mapped and unmapped for every child, and
//! resets the signals it must in one call each.
//!
//! What the child gets is what `std` would give it with a process group of
//! its own, and no controlling terminal (see `child_main`): every signal
//! unblocked and at its default but those Phoenix was started
//! ignoring (`SIGPIPE`, which Rust ignores, is reset all the same), the
//! directory changed before the program is looked up, stdin from `/dev/null`,
//! stdout and stderr to the caller's descriptor, nothing else open (every
//! descriptor Phoenix opens is close-on-exec).
//!
//! The thread that starts and reaps the children asks for a short CPU slice
//! while a run lasts ([`ShortSlice`]): see there for why.
//!
//! The one module allowed `unsafe`: the libc calls above and the child's code
//! before exec, each with its reason. Nothing else in Phoenix calls C.
#![allow(unsafe_code)]

use std::collections::HashMap;
use std::ffi::{CString, OsStr, OsString};
use std::io;
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd};
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::os::unix::fs::OpenOptionsExt;
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::ExitStatus;
use std::time::Duration;

use tokio::io::unix::AsyncFd;

/// Used to look a program up when no `PATH` is set at all (as `execvp` does).
const DEFAULT_PATH: &str = "/bin:/usr/bin";

/// While it lives, the thread that made it asks the scheduler for the
/// shortest CPU slice it gives (EEVDF's per-task slice, `sched_setattr` with
/// a `sched_runtime` for `SCHED_OTHER`: Linux 6.12 and later, no privilege
/// needed), and gives every process and thread it starts the default again
/// (`SCHED_FLAG_RESET_ON_FORK`): the steps keep the usual slice. Dropped, it
/// sets the thread back to the default.
///
/// For the executor's thread, whose work is short bursts between a step's
/// exit and the next step's start, on cores the steps keep busy. With the
/// default slice (1.4 ms here), a woken executor could wait behind a step's
/// process for most of one while the other core sat idle; with a short one
/// its deadline comes first and it runs sooner. It asks for no more CPU than
/// before: the weight, and so the share, stays that of nice 0. Over 2,000
/// short steps on two cores (`LAYERS=20 benches/compare.sh`), the cores sat
/// idle 0.10-0.13 s longer than under `ninja -j2` with the default slice, and
/// 0.03-0.06 s less than that with this one (four series of 30-60 rounds;
/// docs/performance.md), with no more CPU spent. A kernel that refuses the
/// call (older, or a seccomp filter) leaves the thread as it was.
pub struct ShortSlice {
    /// The thread's nice value, when the slice was set.
    set: Option<libc::c_int>,
}

impl ShortSlice {
    /// The shortest slice the kernel takes, in nanoseconds.
    const NANOS: u64 = 100_000;

    /// Only for a thread of the normal policy at nice 0 or above: resetting
    /// on fork would take a real-time policy or a negative nice (a rebuild
    /// run with `chrt` or `nice -n -5` on purpose) from the steps, and
    /// `sched_setattr` would take `SCHED_BATCH` or `SCHED_IDLE` from Phoenix.
    /// Such a thread is left as it is.
    pub fn for_this_thread() -> ShortSlice {
        // SAFETY: both only read the calling thread's scheduling settings.
        let (policy, nice) = unsafe {
            (
                libc::sched_getscheduler(0),
                // -1 is also what an error gives: left alone either way.
                libc::getpriority(libc::PRIO_PROCESS, libc::gettid() as libc::id_t),
            )
        };
        let set = policy == libc::SCHED_OTHER && nice >= 0 && set_slice(Self::NANOS, nice, true);
        ShortSlice {
            set: set.then_some(nice),
        }
    }
}

impl Drop for ShortSlice {
    fn drop(&mut self) {
        if let Some(nice) = self.set {
            // The default slice, and no reset on fork: as it was.
            set_slice(0, nice, false);
        }
    }
}

/// Sets the calling thread's slice (0 for the default) and its nice value
/// (which `sched_setattr` sets too), resetting both for what it starts if
/// `reset_on_fork`; whether the kernel took it.
fn set_slice(nanos: u64, nice: libc::c_int, reset_on_fork: bool) -> bool {
    /// The first version of the kernel's `struct sched_attr` (48 bytes).
    #[repr(C)]
    struct SchedAttr {
        size: u32,
        policy: u32,
        flags: u64,
        nice: i32,
        priority: u32,
        runtime: u64,
        deadline: u64,
        period: u64,
    }
    const SCHED_FLAG_RESET_ON_FORK: u64 = 0x01;
    let attr = SchedAttr {
        size: std::mem::size_of::<SchedAttr>() as u32,
        policy: libc::SCHED_OTHER as u32,
        flags: if reset_on_fork {
            SCHED_FLAG_RESET_ON_FORK
        } else {
            0
        },
        nice,
        priority: 0,
        runtime: nanos,
        deadline: 0,
        period: 0,
    };
    // SAFETY: sched_setattr reads `size` bytes of a valid sched_attr for the
    // calling thread (pid 0) and changes nothing else.
    unsafe { libc::syscall(libc::SYS_sched_setattr, 0, &attr as *const SchedAttr, 0) == 0 }
}

/// What every child of the run starts from.
pub struct Spawner {
    /// Phoenix's environment as `KEY=VALUE` strings, each key once.
    base: Vec<CString>,
    /// Where each key of `base` is: a step's variable replaces that entry.
    positions: HashMap<Vec<u8>, usize, foldhash::fast::RandomState>,
    /// Phoenix's own `PATH`, to look programs up when a step does not set one.
    path: Option<OsString>,
    dev_null: OwnedFd,
    /// Phoenix's controlling terminal, when it has one: each child gives it
    /// up before exec (see `child_main`).
    terminal: Option<OwnedFd>,
    /// The signals a child sets back to their defaults before exec.
    defaults: Vec<libc::c_int>,
}

/// One child to start.
pub struct SpawnRequest<'a> {
    /// The program: a path if it holds a `/`, else looked up in `PATH`.
    pub program: &'a OsStr,
    /// Every argument after the program's name.
    pub args: &'a [String],
    /// Variables set (or replaced) on top of the inherited environment.
    pub env: &'a [(&'a str, &'a OsStr)],
    pub cwd: &'a Path,
    /// Where stdout and stderr go.
    pub output: BorrowedFd<'a>,
}

impl Spawner {
    pub fn new() -> io::Result<Spawner> {
        let mut base = Vec::new();
        let mut positions = HashMap::default();
        for (key, value) in std::env::vars_os() {
            // A key set twice is passed on once, as `getenv` reads it: first.
            if positions.contains_key(key.as_bytes()) {
                continue;
            }
            let mut entry = key.as_bytes().to_vec();
            entry.push(b'=');
            entry.extend_from_slice(value.as_bytes());
            if let Ok(entry) = CString::new(entry) {
                positions.insert(key.into_vec(), base.len());
                base.push(entry);
            }
        }
        let dev_null = std::fs::File::open("/dev/null")?.into();
        // Opened without becoming anybody's terminal; fails (ENXIO) when
        // Phoenix has none: under cron, systemd or CI, nothing to give up.
        let terminal = std::fs::OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_NOCTTY)
            .open("/dev/tty")
            .ok()
            .map(OwnedFd::from);
        Ok(Spawner {
            base,
            positions,
            path: std::env::var_os("PATH"),
            dev_null,
            terminal,
            defaults: default_signals(),
        })
    }

    /// Starts the child. Errors are those of `exec` (a program that is not
    /// there, not executable) or of the directory change.
    pub fn spawn(&self, request: &SpawnRequest<'_>) -> io::Result<Child> {
        let program = self.resolve(request)?;
        let (pid, error) = EXEC.with_borrow_mut(|exec| {
            exec.clear();
            exec.push(&[program.as_os_str().as_bytes()])?;
            exec.push(&[request.cwd.as_os_str().as_bytes()])?;
            exec.push(&[request.program.as_bytes()])?;
            for arg in request.args {
                exec.push(&[arg.as_bytes()])?;
            }
            let first_variable = exec.starts.len();
            for (i, (key, value)) in request.env.iter().enumerate() {
                // A later entry replaces an earlier one of the same name
                // (Phoenix's own variables come after the step's `env`).
                if request.env[i + 1..].iter().any(|(later, _)| later == key) {
                    continue;
                }
                exec.push(&[key.as_bytes(), b"=", value.as_bytes()])?;
            }
            exec.point(first_variable, self, request.env);
            let mut args = ChildArgs {
                program: exec.string(0),
                argv: exec.argv.as_ptr(),
                envp: exec.envp.as_ptr(),
                cwd: exec.string(1),
                stdin: self.dev_null.as_raw_fd(),
                output: request.output.as_raw_fd(),
                terminal: self.terminal.as_ref().map_or(-1, |fd| fd.as_raw_fd()),
                defaults: self.defaults.as_slice(),
                error: 0,
            };
            let pid = STACK.with_borrow_mut(|stack| {
                let top = match stack {
                    Some(stack) => stack.top(),
                    None => stack.insert(ChildStack::new()?).top(),
                };
                // SAFETY: every pointer in `args` points into `exec` (not
                // changed again before the child is done), `self.base` or
                // `self.defaults`, and the child is done with them (exec'd or
                // exited) when clone returns: CLONE_VFORK suspends this
                // thread until then. The stack is this thread's own, unused
                // while it is suspended.
                unsafe { start_child(top, &mut args) }
            })?;
            exec.trim();
            // SAFETY: written by the child, which has exec'd or exited by now.
            let error = unsafe { std::ptr::read_volatile(&args.error) };
            Ok::<_, io::Error>((pid, error))
        })?;
        if error != 0 {
            // The child got no further than its setup or exec and has exited.
            let mut status = 0;
            // SAFETY: reaps our own child, which has exited.
            unsafe { libc::waitpid(pid, &mut status, 0) };
            return Err(io::Error::from_raw_os_error(error));
        }
        Ok(Child::new(pid))
    }

    /// The program's path: as given when it names a path, else the first
    /// executable file of that name in the step's `PATH` (or Phoenix's).
    fn resolve(&self, request: &SpawnRequest<'_>) -> io::Result<PathBuf> {
        let program = Path::new(request.program);
        if request.program.as_bytes().contains(&b'/') {
            return Ok(if program.is_relative() {
                request.cwd.join(program)
            } else {
                program.to_path_buf()
            });
        }
        if request.program.is_empty() {
            return Err(io::Error::from_raw_os_error(libc::ENOENT));
        }
        let path = request
            .env
            .iter()
            .find(|(key, _)| *key == "PATH")
            .map(|(_, value)| value.to_os_string())
            .or_else(|| self.path.clone())
            .unwrap_or_else(|| DEFAULT_PATH.into());
        let mut denied = false;
        for dir in std::env::split_paths(&path) {
            // An empty entry means the current directory, as for the shell.
            let dir = if dir.as_os_str().is_empty() {
                request.cwd.to_path_buf()
            } else {
                request.cwd.join(dir)
            };
            let candidate = dir.join(program);
            match executable(&candidate) {
                Some(true) => return Ok(candidate),
                Some(false) => denied = true,
                None => {}
            }
        }
        // The errors exec would give: what std's Command reported too.
        Err(io::Error::from_raw_os_error(if denied {
            libc::EACCES
        } else {
            libc::ENOENT
        }))
    }
}

/// Whether `path` is a file one may execute; `None` when there is no file.
/// (`access` with `X_OK` also holds for root only when an execute bit is set.)
fn executable(path: &Path) -> Option<bool> {
    if !std::fs::metadata(path).ok()?.is_file() {
        return None;
    }
    let c_path = c_string(path.as_os_str().as_bytes()).ok()?;
    // SAFETY: a valid NUL-terminated path.
    Some(unsafe { libc::access(c_path.as_ptr(), libc::X_OK) } == 0)
}

fn c_string(bytes: &[u8]) -> io::Result<CString> {
    CString::new(bytes).map_err(|_| nul_error())
}

fn nul_error() -> io::Error {
    io::Error::new(
        io::ErrorKind::InvalidInput,
        "an argument, a variable or a path holds a NUL byte",
    )
}

/// The signals a child resets before exec, so that no handler of Phoenix's
/// is left to run in it between unblocking its signals and exec: every
/// signal with a handler now (Rust's `SIGSEGV` and `SIGBUS`), those a run
/// installs handlers for later ([`super::signals::watched`], and `SIGCHLD`,
/// which `tokio::process` handles where pidfds are missing), perhaps over an
/// ignored one, and `SIGPIPE`, which Rust ignores. A signal at its default
/// is left alone: it stays at its default through exec. So is one Phoenix
/// was started ignoring (SIGHUP under `nohup`), as exec would leave it. That
/// is a handful of calls a child, where resetting every signal not ignored
/// took 62 (and glibc's `posix_spawn`, which asks about each first, 121).
///
/// A handler Phoenix installs after a run has started must be for one of
/// [`INSTALLED_LATER`]'s signals.
fn default_signals() -> Vec<libc::c_int> {
    (1..=libc::SIGRTMAX())
        .filter(|signal| {
            has_handler(*signal)
                || INSTALLED_LATER.contains(signal)
                || super::signals::watched().any(|(watched, _)| watched == *signal)
        })
        .collect()
}

/// Whether `signal` has a handler now (neither ignored nor at its default).
fn has_handler(signal: libc::c_int) -> bool {
    disposition(signal).is_some_and(|d| ![libc::SIG_IGN, libc::SIG_DFL].contains(&d))
}

/// Whether `signal` is ignored now.
pub(crate) fn is_ignored(signal: libc::c_int) -> bool {
    disposition(signal) == Some(libc::SIG_IGN)
}

/// `signal`'s handler, `SIG_IGN` or `SIG_DFL`; `None` for glibc's own
/// signals, which cannot be asked about (and which a child leaves alone).
fn disposition(signal: libc::c_int) -> Option<libc::sighandler_t> {
    let mut action = std::mem::MaybeUninit::<libc::sigaction>::uninit();
    // SAFETY: a query only; the answer is read only when it succeeded.
    unsafe {
        (libc::sigaction(signal, std::ptr::null(), action.as_mut_ptr()) == 0)
            .then(|| action.assume_init().sa_sigaction)
    }
}

/// Besides the run's own signals ([`super::signals::watched`]): `SIGCHLD`,
/// whose handler `tokio::process` may install after the children's reset
/// list is made, and `SIGPIPE`, at its default in every step.
const INSTALLED_LATER: [libc::c_int; 2] = [libc::SIGPIPE, libc::SIGCHLD];

thread_local! {
    /// The stack every child started from this thread runs on until its
    /// exec: mapped once, where `posix_spawn` maps and unmaps one for every
    /// child (two system calls in a process with many mappings, and the
    /// child's first touches of it as page faults, all while this thread
    /// waits).
    static STACK: std::cell::RefCell<Option<ChildStack>> = const {
        std::cell::RefCell::new(None)
    };

    /// What the children started from this thread exec, rebuilt for each.
    static EXEC: std::cell::RefCell<ExecStrings> = std::cell::RefCell::default();
}

/// The strings a child's exec reads and the arrays that point at them, in
/// buffers kept from one child to the next: one buffer holds every string,
/// where a `CString` each cost nine allocations a step.
#[derive(Default)]
struct ExecStrings {
    /// The program's path, the directory, the arguments (its name first), the
    /// variables added: each ended by a NUL.
    bytes: Vec<u8>,
    /// Where each string starts in `bytes`.
    starts: Vec<usize>,
    argv: Vec<*const libc::c_char>,
    envp: Vec<*const libc::c_char>,
    /// The entries of the inherited environment the step sets anew.
    replaced: Vec<usize>,
}

impl ExecStrings {
    /// A step with arguments longer than this gives the memory back after.
    const KEEP: usize = 64 * 1024;

    fn clear(&mut self) {
        self.bytes.clear();
        self.starts.clear();
        self.argv.clear();
        self.envp.clear();
        self.replaced.clear();
    }

    /// Adds one string, made of `parts`.
    fn push(&mut self, parts: &[&[u8]]) -> io::Result<()> {
        self.starts.push(self.bytes.len());
        for part in parts {
            if part.contains(&0) {
                return Err(nul_error());
            }
            self.bytes.extend_from_slice(part);
        }
        self.bytes.push(0);
        Ok(())
    }

    /// The string pushed `index`th.
    fn string(&self, index: usize) -> *const libc::c_char {
        self.bytes[self.starts[index]..].as_ptr().cast()
    }

    /// Points `argv` at the arguments (the strings from the third up to
    /// `first_variable`) and `envp` at the inherited variables that `env`
    /// does not set, then at the ones added. After the last push: `bytes`
    /// does not move again.
    fn point(&mut self, first_variable: usize, spawner: &Spawner, env: &[(&str, &OsStr)]) {
        let argv = self.starts[2..first_variable].iter();
        self.argv
            .extend(argv.map(|&start| self.bytes[start..].as_ptr().cast()));
        self.argv.push(std::ptr::null());
        let replaced = env
            .iter()
            .filter_map(|(key, _)| spawner.positions.get(key.as_bytes()));
        self.replaced.extend(replaced);
        let inherited = spawner.base.iter().enumerate();
        self.envp.extend(
            inherited
                .filter(|(i, _)| !self.replaced.contains(i))
                .map(|(_, entry)| entry.as_ptr()),
        );
        let added = self.starts[first_variable..].iter();
        self.envp
            .extend(added.map(|&start| self.bytes[start..].as_ptr().cast()));
        self.envp.push(std::ptr::null());
    }

    /// Lets a step's long arguments go once its child has exec'd.
    fn trim(&mut self) {
        if self.bytes.capacity() > Self::KEEP {
            *self = ExecStrings::default();
        }
    }
}

/// A stack for children, with an unmapped page below it: a child that
/// overflowed it would fault instead of writing over Phoenix's memory.
struct ChildStack {
    base: *mut libc::c_void,
}

impl ChildStack {
    /// What a child needs before exec is a few `libc` calls deep: glibc's
    /// `posix_spawn` gives it 32 KiB and the arguments' size.
    const SIZE: usize = 64 * 1024;
    const GUARD: usize = 4096;

    fn new() -> io::Result<ChildStack> {
        // SAFETY: a fresh anonymous mapping, owned by the ChildStack and
        // unmapped by its Drop; the guard is its lowest page.
        unsafe {
            let base = libc::mmap(
                std::ptr::null_mut(),
                Self::GUARD + Self::SIZE,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_STACK,
                -1,
                0,
            );
            if base == libc::MAP_FAILED {
                return Err(io::Error::last_os_error());
            }
            let stack = ChildStack { base };
            if libc::mprotect(base, Self::GUARD, libc::PROT_NONE) != 0 {
                return Err(io::Error::last_os_error());
            }
            Ok(stack)
        }
    }

    /// Where a child's stack starts: stacks grow down.
    fn top(&self) -> *mut libc::c_void {
        // SAFETY: one past the end of the mapping.
        unsafe { self.base.cast::<u8>().add(Self::GUARD + Self::SIZE).cast() }
    }
}

impl Drop for ChildStack {
    fn drop(&mut self) {
        // SAFETY: the mapping made in new, used by no child any more (a
        // child is done with it before clone returns).
        unsafe { libc::munmap(self.base, Self::GUARD + Self::SIZE) };
    }
}

/// What the child reads between clone and exec, on the parent's stack.
#[repr(C)]
struct ChildArgs {
    program: *const libc::c_char,
    argv: *const *const libc::c_char,
    envp: *const *const libc::c_char,
    cwd: *const libc::c_char,
    stdin: libc::c_int,
    output: libc::c_int,
    /// Phoenix's controlling terminal, or -1.
    terminal: libc::c_int,
    defaults: *const [libc::c_int],
    /// The errno of the setup step or the exec that failed; 0 if exec ran.
    error: libc::c_int,
}

/// Starts a child on `stack` with `CLONE_VM | CLONE_VFORK`, as `posix_spawn`
/// does: it shares Phoenix's memory and this thread waits until it has
/// exec'd or exited. Every signal is blocked across the clone, so that no
/// handler of Phoenix's can run in the child before it has reset them.
///
/// # Safety
/// `stack` is the top of a stack no one else uses while this runs, and the
/// pointers in `args` are valid until it returns.
unsafe fn start_child(stack: *mut libc::c_void, args: &mut ChildArgs) -> io::Result<libc::pid_t> {
    let mut all = std::mem::MaybeUninit::<libc::sigset_t>::uninit();
    let mut old = std::mem::MaybeUninit::<libc::sigset_t>::uninit();
    libc::sigfillset(all.as_mut_ptr());
    // The raw call blocks glibc's own signals as well, as posix_spawn does.
    set_signal_mask(all.as_ptr(), old.as_mut_ptr());
    let pid = libc::clone(
        child_main,
        stack,
        libc::CLONE_VM | libc::CLONE_VFORK | libc::SIGCHLD,
        (args as *mut ChildArgs).cast(),
    );
    let clone_error = io::Error::last_os_error();
    set_signal_mask(old.as_ptr(), std::ptr::null_mut());
    if pid == -1 {
        return Err(clone_error);
    }
    Ok(pid)
}

/// `rt_sigprocmask(SIG_SETMASK)` without glibc's filter of its own signals.
///
/// # Safety
/// `set` is a valid signal set; `old` is null or writable.
unsafe fn set_signal_mask(set: *const libc::sigset_t, old: *mut libc::sigset_t) {
    // The kernel's set is 64 bits, the first word of glibc's.
    libc::syscall(libc::SYS_rt_sigprocmask, libc::SIG_SETMASK, set, old, 8);
}

/// The child, from clone to exec. It runs on Phoenix's memory while the
/// thread that started it waits, so it calls only what is safe there (no
/// allocation, no lock, no panic): each signal back to its default, no
/// terminal, its own process group, stdin, stdout and stderr, the
/// directory, the signal mask
/// emptied, exec. A step that fails leaves its errno for the parent and
/// exits 127.
extern "C" fn child_main(arg: *mut libc::c_void) -> libc::c_int {
    // SAFETY: `arg` is the ChildArgs that start_child was given, alive and
    // not touched by the suspended parent until this child execs or exits;
    // every call is async-signal-safe, on descriptors and strings the
    // parent prepared.
    unsafe {
        let args = arg.cast::<ChildArgs>();
        let mut action: libc::sigaction = std::mem::zeroed();
        action.sa_sigaction = libc::SIG_DFL;
        for &signal in &*(*args).defaults {
            libc::sigaction(signal, &action, std::ptr::null_mut());
        }
        let stdin = (*args).stdin;
        let output = (*args).output;
        // No controlling terminal: a program that asks on /dev/tty (ssh's
        // host-key question, sudo's password) fails at once, where in a
        // background group of Phoenix's terminal it would be stopped by
        // SIGTTIN and hang, unseen, to its timeout. Not by a session of its
        // own (`setsid`): with the kernel's autogroup scheduling, as here,
        // each would make and free a scheduling group per step, which left
        // the cores idle 0.29 s longer on 10,000 short steps. TIOCNOTTY in a
        // process that does not lead its session only drops its own
        // terminal; a failure leaves the step as it was before.
        let terminal = (*args).terminal;
        if terminal >= 0 {
            libc::ioctl(terminal, libc::TIOCNOTTY);
        }
        let ok = libc::setpgid(0, 0) == 0
            && redirect(stdin, 0)
            && redirect(output, 1)
            && redirect(output, 2)
            && libc::chdir((*args).cwd) == 0;
        if ok {
            let mut none = std::mem::MaybeUninit::<libc::sigset_t>::uninit();
            libc::sigemptyset(none.as_mut_ptr());
            set_signal_mask(none.as_ptr(), std::ptr::null_mut());
            libc::execve((*args).program, (*args).argv, (*args).envp);
        }
        let errno = *libc::__errno_location();
        let error = if errno == 0 { libc::EINVAL } else { errno };
        std::ptr::write_volatile(&mut (*args).error, error);
        libc::_exit(127)
    }
}

/// `fd` as descriptor `target` of the child, kept open across exec.
///
/// # Safety
/// In the child only, before exec.
unsafe fn redirect(fd: libc::c_int, target: libc::c_int) -> bool {
    if fd == target {
        // dup2 onto itself would leave close-on-exec set.
        return libc::fcntl(fd, libc::F_SETFD, 0) == 0;
    }
    libc::dup2(fd, target) == target
}

/// A started child, not yet reaped.
pub struct Child {
    pid: libc::pid_t,
    /// Readable once the child has exited; opened at the first [`Child::wait`]
    /// (a child reaped before that never needs one). `Unavailable` where
    /// pidfds are missing (Linux before 5.3, some sandboxes): the child is
    /// then polled.
    pidfd: Pidfd,
    status: Option<ExitStatus>,
}

enum Pidfd {
    NotYet,
    /// Opened by [`Child::wait_exiting`], not yet registered with tokio.
    Unregistered(OwnedFd),
    Open(AsyncFd<OwnedFd>),
    Unavailable,
}

impl Child {
    fn new(pid: libc::pid_t) -> Child {
        Child {
            pid,
            pidfd: Pidfd::NotYet,
            status: None,
        }
    }

    fn open_pidfd(pid: libc::pid_t) -> Option<OwnedFd> {
        // SAFETY: pidfd_open takes a pid and flags and returns a new descriptor
        // or -1; the pid is our unreaped child, so it cannot have been reused.
        // No flags: it is only polled for readiness, never read.
        let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0) };
        // SAFETY: a descriptor pidfd_open just returned, owned by nobody else.
        (fd >= 0).then(|| unsafe { OwnedFd::from_raw_fd(fd as i32) })
    }

    /// The pidfd registered with tokio, opened first if need be.
    fn register_pidfd(&mut self) {
        let fd = match std::mem::replace(&mut self.pidfd, Pidfd::Unavailable) {
            Pidfd::NotYet => Child::open_pidfd(self.pid),
            Pidfd::Unregistered(fd) => Some(fd),
            open @ (Pidfd::Open(_) | Pidfd::Unavailable) => {
                self.pidfd = open;
                return;
            }
        };
        if let Some(fd) = fd {
            // SAFETY: the OwnedFd is ours alone and keeps the descriptor open
            // for as long as the AsyncFd.
            if let Ok(fd) =
                unsafe { AsyncFd::register_with_interest(fd, tokio::io::Interest::READABLE) }
            {
                self.pidfd = Pidfd::Open(fd);
            }
        }
    }

    pub fn id(&self) -> i32 {
        self.pid
    }

    /// Waits for the child to exit and reaps it. Cancel-safe, and once it
    /// has returned a status it returns the same again.
    pub async fn wait(&mut self) -> io::Result<ExitStatus> {
        if let Some(status) = self.status {
            return Ok(status);
        }
        self.register_pidfd();
        let mut poll_delay = Duration::from_millis(1);
        loop {
            match &self.pidfd {
                // Readable once the child has exited (a pidfd that was
                // readable before it was registered is reported at once).
                Pidfd::Open(pidfd) => {
                    let mut ready = pidfd.readable().await?;
                    if let Some(status) = reap(self.pid)? {
                        self.status = Some(status);
                        return Ok(status);
                    }
                    ready.clear_ready();
                }
                Pidfd::NotYet | Pidfd::Unregistered(_) | Pidfd::Unavailable => {
                    if let Some(status) = self.try_wait()? {
                        return Ok(status);
                    }
                    tokio::time::sleep(poll_delay).await;
                    poll_delay = (poll_delay * 2).min(Duration::from_millis(50));
                }
            }
        }
    }

    /// For a child known to be exiting (its output has just closed): waits
    /// for its exit on this thread, for at most `limit`, and reaps it. The
    /// pipe closes a few microseconds before the process can be reaped; this
    /// sleeps until it can be, as a blocking `waitpid` would, where yielding
    /// the CPU instead could hand it to any other runnable process for a
    /// whole time slice. A child still running after `limit` (one that closed
    /// its output and runs on) is left to [`Child::wait`].
    pub fn wait_exiting(&mut self, limit: Duration) -> io::Result<Option<ExitStatus>> {
        if let Some(status) = self.try_wait()? {
            return Ok(Some(status));
        }
        if matches!(self.pidfd, Pidfd::NotYet) {
            self.pidfd = match Child::open_pidfd(self.pid) {
                Some(fd) => Pidfd::Unregistered(fd),
                None => Pidfd::Unavailable,
            };
        }
        let Pidfd::Unregistered(fd) = &self.pidfd else {
            return Ok(None);
        };
        let mut poll = libc::pollfd {
            fd: fd.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        };
        let millis = limit.as_millis().clamp(1, i32::MAX as u128) as i32;
        // SAFETY: one pollfd that lives across the call; the descriptor is
        // open. An interrupted or failed poll only means we reap below and
        // find the child still running.
        unsafe { libc::poll(&mut poll, 1, millis) };
        self.try_wait()
    }

    /// The exit status if the child has exited, without waiting.
    pub fn try_wait(&mut self) -> io::Result<Option<ExitStatus>> {
        if self.status.is_none() {
            self.status = reap(self.pid)?;
        }
        Ok(self.status)
    }
}

/// Reaps `pid` if it has exited, without blocking.
fn reap(pid: libc::pid_t) -> io::Result<Option<ExitStatus>> {
    let mut raw: libc::c_int = 0;
    // SAFETY: waits for our own child only, without blocking.
    match unsafe { libc::waitpid(pid, &mut raw, libc::WNOHANG) } {
        0 => Ok(None),
        -1 => Err(io::Error::last_os_error()),
        _ => Ok(Some(ExitStatus::from_raw(raw))),
    }
}

impl Drop for Child {
    /// A child dropped before it was reaped (its step's task was torn down)
    /// is reaped in the background, so that it does not stay a zombie.
    fn drop(&mut self) {
        if self.status.is_some() || matches!(self.try_wait(), Ok(Some(_)) | Err(_)) {
            return;
        }
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return; // Phoenix is exiting: init reaps it.
        };
        let mut child = Child {
            pid: self.pid,
            pidfd: std::mem::replace(&mut self.pidfd, Pidfd::NotYet),
            status: None,
        };
        runtime.spawn(async move {
            let _ = child.wait().await;
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::fd::AsFd;

    fn runtime() -> tokio::runtime::Runtime {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap()
    }

    fn run(
        spawner: &Spawner,
        program: &str,
        args: &[&str],
        env: &[(&str, &OsStr)],
    ) -> (io::Result<ExitStatus>, String) {
        use std::io::Read;
        let (mut reader, writer) = std::io::pipe().unwrap();
        let args: Vec<String> = args.iter().map(|a| a.to_string()).collect();
        let result = runtime().block_on(async {
            let spawned = spawner.spawn(&SpawnRequest {
                program: OsStr::new(program),
                args: &args,
                env,
                cwd: Path::new("/tmp"),
                output: writer.as_fd(),
            });
            // Only the child holds the write end now: EOF when it exits.
            drop(writer);
            spawned?.wait().await
        });
        let mut text = String::new();
        let _ = reader.read_to_string(&mut text);
        (result, text)
    }

    #[test]
    fn the_child_gets_its_variables_directory_and_group() {
        let spawner = Spawner::new().unwrap();
        let (status, text) = run(
            &spawner,
            "sh",
            &["-c", "echo \"$PHOENIX_STEP $(pwd) $(ps -o pgid= -p $$ | tr -d ' ') $(ps -o sid= -p $$ | tr -d ' ') $$\"; echo err >&2; exit 3"],
            &[("PHOENIX_STEP", OsStr::new("s1"))],
        );
        assert_eq!(status.unwrap().code(), Some(3));
        let mut words = text.split_whitespace();
        assert_eq!(words.next(), Some("s1"));
        assert_eq!(words.next(), Some("/tmp"));
        let (pgid, sid, pid) = (words.next(), words.next(), words.next());
        assert_eq!(pgid, pid, "the child leads a process group of its own");
        assert_ne!(sid, pid, "in Phoenix's session (see child_main)");
        assert_eq!(words.next(), Some("err"), "stderr goes to the same place");
    }

    #[test]
    fn a_variable_of_the_step_replaces_the_inherited_one() {
        let spawner = Spawner::new().unwrap();
        let home = std::env::var_os("HOME").unwrap_or_default();
        assert_ne!(home, OsStr::new("/elsewhere"));
        let (_, text) = run(
            &spawner,
            "sh",
            &["-c", "echo $HOME; env | grep -c '^HOME='"],
            &[("HOME", OsStr::new("/elsewhere"))],
        );
        assert_eq!(text, "/elsewhere\n1\n");
    }

    #[test]
    fn a_later_variable_of_the_same_name_wins() {
        let spawner = Spawner::new().unwrap();
        let (_, text) = run(
            &spawner,
            "sh",
            &[
                "-c",
                "echo $PHOENIX_OUTPUT; env | grep -c '^PHOENIX_OUTPUT='",
            ],
            &[
                ("PHOENIX_OUTPUT", OsStr::new("from-the-step")),
                ("PHOENIX_OUTPUT", OsStr::new("from-phoenix")),
            ],
        );
        assert_eq!(text, "from-phoenix\n1\n");
    }

    #[test]
    fn programs_are_looked_up_in_the_steps_path() {
        let spawner = Spawner::new().unwrap();
        let (status, _) = run(
            &spawner,
            "true",
            &[],
            &[("PATH", OsStr::new("/nonexistent"))],
        );
        assert_eq!(status.unwrap_err().kind(), io::ErrorKind::NotFound);
        let (status, _) = run(&spawner, "true", &[], &[]);
        assert!(status.unwrap().success());
        let (status, _) = run(&spawner, "/nonexistent/program", &[], &[]);
        assert_eq!(status.unwrap_err().kind(), io::ErrorKind::NotFound);
    }

    /// `se.slice` from a `/proc/.../sched` text (kernels with EEVDF and
    /// scheduler statistics only).
    fn slice(sched: &str) -> Option<u64> {
        let line = sched.lines().find(|l| l.starts_with("se.slice"))?;
        line.split(':').nth(1)?.trim().parse().ok()
    }

    #[test]
    fn the_short_slice_is_the_threads_alone_and_ends_with_the_guard() {
        // On a thread of its own: the setting stays with the thread.
        std::thread::spawn(|| {
            let own = || slice(&std::fs::read_to_string("/proc/thread-self/sched").ok()?);
            let Some(before) = own() else {
                eprintln!("no se.slice in /proc: nothing to check on this kernel");
                return;
            };
            let guard = ShortSlice::for_this_thread();
            let during = own().unwrap();
            if guard.set.is_none() || during == before {
                eprintln!("this kernel keeps one slice for all: nothing to check");
                return;
            }
            assert_eq!(during, ShortSlice::NANOS);
            let spawner = Spawner::new().unwrap();
            let (_, text) = run(&spawner, "cat", &["/proc/self/sched"], &[]);
            assert_eq!(
                slice(&text),
                Some(before),
                "the child has the default slice"
            );
            let helper = std::thread::spawn(own).join().unwrap();
            assert_eq!(helper, Some(before), "a thread it starts has the default");
            drop(guard);
            assert_eq!(own(), Some(before), "the default again after the guard");
            // SAFETY: reads this thread's policy (with SCHED_RESET_ON_FORK's bit).
            let policy = unsafe { libc::sched_getscheduler(0) };
            assert_eq!(policy, libc::SCHED_OTHER, "no reset on fork any more");
        })
        .join()
        .unwrap();
    }

    #[test]
    fn a_thread_of_another_policy_or_nice_keeps_it_and_passes_it_on() {
        std::thread::spawn(|| {
            let param = libc::sched_param { sched_priority: 0 };
            // SAFETY: sets this thread's policy; SCHED_BATCH needs no privilege.
            assert_eq!(
                unsafe { libc::sched_setscheduler(0, libc::SCHED_BATCH, &param) },
                0
            );
            let guard = ShortSlice::for_this_thread();
            assert!(guard.set.is_none());
            // SAFETY: reads this thread's policy.
            assert_eq!(unsafe { libc::sched_getscheduler(0) }, libc::SCHED_BATCH);
            drop(guard);
        })
        .join()
        .unwrap();
        std::thread::spawn(|| {
            // SAFETY: raises this thread's nice value, which needs no privilege.
            let tid = unsafe { libc::gettid() } as libc::id_t;
            assert_eq!(unsafe { libc::setpriority(libc::PRIO_PROCESS, tid, 5) }, 0);
            let _guard = ShortSlice::for_this_thread();
            let spawner = Spawner::new().unwrap();
            let (_, text) = run(&spawner, "sh", &["-c", "ps -o ni= -p $$"], &[]);
            assert_eq!(text.trim(), "5", "the child keeps the nice value");
        })
        .join()
        .unwrap();
    }

    #[test]
    fn sigpipe_is_back_to_its_default_in_the_child() {
        let spawner = Spawner::new().unwrap();
        let (_, text) = run(
            &spawner,
            "sh",
            &["-c", "grep SigIgn /proc/self/status"],
            &[],
        );
        let mask = u64::from_str_radix(text.split_whitespace().nth(1).unwrap(), 16).unwrap();
        assert_eq!(
            mask & (1 << (libc::SIGPIPE - 1)),
            0,
            "SIGPIPE is not ignored: {text}"
        );
    }

    #[test]
    fn every_handler_a_run_installs_is_reset_in_its_children() {
        // The list is made before the run installs its handlers.
        let spawner = Spawner::new().unwrap();
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        runtime.block_on(async {
            let _watched: Vec<_> = crate::exec::signals::watched()
                .map(|(signal, _)| {
                    tokio::signal::unix::signal(tokio::signal::unix::SignalKind::from_raw(signal))
                        .unwrap()
                })
                .collect();
            // tokio's process handling (SIGCHLD, where pidfds are missing).
            let status = tokio::process::Command::new("true").status().await;
            assert!(status.unwrap().success());
        });
        for signal in 1..=libc::SIGRTMAX() {
            assert!(
                !has_handler(signal) || spawner.defaults.contains(&signal),
                "signal {signal} has a handler that a child would keep until exec"
            );
        }
    }

    #[test]
    fn the_child_starts_with_no_signal_blocked() {
        let spawner = Spawner::new().unwrap();
        // Every signal is blocked while the child is set up.
        let (_, text) = run(&spawner, "cat", &["/proc/self/status"], &[]);
        let blocked: Vec<&str> = text
            .lines()
            .filter(|line| line.starts_with("SigBlk:"))
            .collect();
        assert_eq!(blocked, ["SigBlk:\t0000000000000000"]);
    }

    #[test]
    fn a_child_that_cannot_start_is_an_error_of_the_spawn() {
        use std::os::unix::fs::PermissionsExt;
        let spawner = Spawner::new().unwrap();
        let dir = tempfile::tempdir().unwrap();
        let script = dir.path().join("not-executable");
        std::fs::write(&script, "#!/bin/sh\n").unwrap();
        std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o644)).unwrap();
        let (_reader, writer) = std::io::pipe().unwrap();
        let spawn = |program: &Path, cwd: &Path| {
            spawner
                .spawn(&SpawnRequest {
                    program: program.as_os_str(),
                    args: &[],
                    env: &[],
                    cwd,
                    output: writer.as_fd(),
                })
                .map(|child| child.id())
        };
        let denied = spawn(&script, dir.path()).unwrap_err();
        assert_eq!(denied.kind(), io::ErrorKind::PermissionDenied);
        let no_dir = spawn(Path::new("/bin/true"), &dir.path().join("gone")).unwrap_err();
        assert_eq!(no_dir.kind(), io::ErrorKind::NotFound);
    }

    #[test]
    fn waiting_again_gives_the_same_status() {
        let spawner = Spawner::new().unwrap();
        let (_reader, writer) = std::io::pipe().unwrap();
        runtime().block_on(async {
            let mut child = spawner
                .spawn(&SpawnRequest {
                    program: OsStr::new("sh"),
                    args: &["-c".into(), "exit 4".into()],
                    env: &[],
                    cwd: Path::new("/tmp"),
                    output: writer.as_fd(),
                })
                .unwrap();
            assert_eq!(child.wait().await.unwrap().code(), Some(4));
            assert_eq!(child.wait().await.unwrap().code(), Some(4));
            assert_eq!(child.try_wait().unwrap().and_then(|s| s.code()), Some(4));
        });
    }

    #[test]
    fn each_child_gets_only_its_own_arguments_and_variables() {
        // The strings are built in buffers kept from one child to the next,
        // and given back past ExecStrings::KEEP.
        let spawner = Spawner::new().unwrap();
        let long = "x".repeat(ExecStrings::KEEP + 1);
        let script = "echo $# ${#1} ${EXTRA:-none}";
        let expect = |args: &[&str], env: &[(&str, &OsStr)], expected: &str| {
            let args: Vec<&str> = ["-c", script].iter().chain(args).copied().collect();
            let (status, text) = run(&spawner, "sh", &args, env);
            assert!(status.unwrap().success());
            assert_eq!(text, expected);
        };
        let set = [("EXTRA", OsStr::new("set"))];
        expect(
            &["sh", &long, "b"],
            &set,
            &format!("2 {} set\n", long.len()),
        );
        expect(&["sh", "a"], &[], "1 1 none\n");
        expect(&["sh"], &[], "0 0 none\n");
    }

    #[test]
    fn a_nul_byte_is_refused_before_anything_starts() {
        let spawner = Spawner::new().unwrap();
        let (status, _) = run(&spawner, "sh", &["-c", "echo a\0b"], &[]);
        assert_eq!(status.unwrap_err().kind(), io::ErrorKind::InvalidInput);
    }
}
