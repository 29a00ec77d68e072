//! Starting a command step's process: `posix_spawn` from an environment
//! prepared once per run, and waiting for its exit through a pidfd.
//!
//! `std::process::Command` copies the whole environment into a map and back
//! into C strings on every spawn in which a variable changes, and every step
//! sets `PHOENIX_OUTPUT` and `PHOENIX_STEP`: that copy alone was a fifth of
//! what Phoenix spent per step on a run of short commands. Here the inherited
//! environment is converted once ([`Spawner`]), a spawn adds only the step's
//! own variables, and `/dev/null` for stdin is opened once.
//!
//! What the child gets is what `std` would give it: its own process group,
//! every signal unblocked and at its default but those Phoenix was started
//! ignoring (`SIGPIPE`, which Rust ignores, is reset all the same), the
//! directory changed before the program is looked up, stdin from `/dev/null`,
//! stdout and stderr to the caller's descriptor, nothing else open (every
//! descriptor Phoenix opens is close-on-exec).
//!
//! The one module allowed `unsafe`: the libc calls above, each with its
//! reason. Nothing else in Phoenix calls C.
#![allow(unsafe_code)]

use std::ffi::{CString, OsStr, OsString};
use std::io;
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd};
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::ExitStatus;
use std::time::Duration;

use tokio::io::unix::AsyncFd;

/// Used to look a program up when no `PATH` is set at all (as `execvp` does).
const DEFAULT_PATH: &str = "/bin:/usr/bin";

/// What every child of the run starts from.
pub struct Spawner {
    /// Phoenix's environment as `KEY=VALUE` strings, with each key's length.
    base: Vec<(usize, CString)>,
    /// Phoenix's own `PATH`, to look programs up when a step does not set one.
    path: Option<OsString>,
    dev_null: OwnedFd,
    /// The same for every child: its own process group, no signal blocked,
    /// signals back to their defaults (`SIGPIPE` too).
    attributes: Attributes,
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
        let base = std::env::vars_os()
            .filter_map(|(key, value)| {
                let key_len = key.len();
                let mut entry = key.into_vec();
                entry.push(b'=');
                entry.extend_from_slice(value.as_bytes());
                CString::new(entry).ok().map(|entry| (key_len, entry))
            })
            .collect();
        let dev_null = std::fs::File::open("/dev/null")?.into();
        Ok(Spawner {
            base,
            path: std::env::var_os("PATH"),
            dev_null,
            attributes: Attributes::new()?,
        })
    }

    /// Starts the child. Errors are those of `exec` (a program that is not
    /// there, not executable) or of the directory change.
    pub fn spawn(&self, request: &SpawnRequest<'_>) -> io::Result<Child> {
        let program = self.resolve(request)?;
        let program = c_string(program.as_os_str().as_bytes())?;
        let name = c_string(request.program.as_bytes())?;
        let args = request
            .args
            .iter()
            .map(|arg| c_string(arg.as_bytes()))
            .collect::<io::Result<Vec<_>>>()?;
        // A later entry replaces an earlier one of the same name (Phoenix's
        // own variables come after the step's `env`).
        let mut env: Vec<&(&str, &OsStr)> = Vec::with_capacity(request.env.len());
        for entry in request.env.iter().rev() {
            if !env.iter().any(|(key, _)| *key == entry.0) {
                env.push(entry);
            }
        }
        let added = env
            .iter()
            .map(|(key, value)| {
                let mut entry = Vec::with_capacity(key.len() + 1 + value.len());
                entry.extend_from_slice(key.as_bytes());
                entry.push(b'=');
                entry.extend_from_slice(value.as_bytes());
                c_string(&entry)
            })
            .collect::<io::Result<Vec<_>>>()?;
        let cwd = c_string(request.cwd.as_os_str().as_bytes())?;

        let mut argv: Vec<*const libc::c_char> = Vec::with_capacity(args.len() + 2);
        argv.push(name.as_ptr());
        argv.extend(args.iter().map(|arg| arg.as_ptr()));
        argv.push(std::ptr::null());
        let mut envp: Vec<*const libc::c_char> =
            Vec::with_capacity(self.base.len() + added.len() + 1);
        envp.extend(
            self.base
                .iter()
                .filter(|(key_len, entry)| {
                    let key = &entry.as_bytes()[..*key_len];
                    !request.env.iter().any(|(k, _)| k.as_bytes() == key)
                })
                .map(|(_, entry)| entry.as_ptr()),
        );
        envp.extend(added.iter().map(|entry| entry.as_ptr()));
        envp.push(std::ptr::null());

        let stdin = self.dev_null.as_raw_fd();
        let output = request.output.as_raw_fd();
        let mut pid: libc::pid_t = 0;
        let code = FILE_ACTIONS.with_borrow_mut(|cache| {
            let actions = cache.get(stdin, output, &cwd)?;
            // SAFETY: every pointer handed to libc points into a CString or a
            // vector that lives until the end of this block; the file actions
            // and attributes are initialised, and only read by posix_spawn.
            Ok::<_, io::Error>(unsafe {
                libc::posix_spawn(
                    &mut pid,
                    program.as_ptr(),
                    &actions.0,
                    &self.attributes.0,
                    argv.as_ptr() as *const *mut libc::c_char,
                    envp.as_ptr() as *const *mut libc::c_char,
                )
            })
        })?;
        check(code)?;
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
    CString::new(bytes).map_err(|_| {
        io::Error::new(
            io::ErrorKind::InvalidInput,
            "an argument, a variable or a path holds a NUL byte",
        )
    })
}

fn check(code: libc::c_int) -> io::Result<()> {
    match code {
        0 => Ok(()),
        code => Err(io::Error::from_raw_os_error(code)),
    }
}

thread_local! {
    /// File actions already built on this thread, by the descriptors and the
    /// directory they set up: the same few serve every child of a run (pipes
    /// reuse the lowest free descriptors). Building them anew cost each spawn
    /// an allocation and, in glibc, a `getrlimit` per descriptor checked.
    static FILE_ACTIONS: std::cell::RefCell<ActionsCache> = const {
        std::cell::RefCell::new(ActionsCache(Vec::new()))
    };
}

/// At most [`ActionsCache::SIZE`] file actions, the oldest dropped first.
struct ActionsCache(Vec<(libc::c_int, libc::c_int, CString, FileActions)>);

impl ActionsCache {
    const SIZE: usize = 16;

    /// The actions that give a child `stdin` as its stdin, `output` as its
    /// stdout and stderr, and `cwd` as its directory.
    fn get(
        &mut self,
        stdin: libc::c_int,
        output: libc::c_int,
        cwd: &CString,
    ) -> io::Result<&FileActions> {
        let found = self
            .0
            .iter()
            .position(|(i, o, dir, _)| *i == stdin && *o == output && dir == cwd);
        let index = match found {
            Some(index) => index,
            None => {
                let actions = FileActions::new(stdin, output, cwd)?;
                if self.0.len() == Self::SIZE {
                    self.0.remove(0);
                }
                self.0.push((stdin, output, cwd.clone(), actions));
                self.0.len() - 1
            }
        };
        Ok(&self.0[index].3)
    }
}

struct FileActions(libc::posix_spawn_file_actions_t);

impl FileActions {
    fn new(stdin: libc::c_int, output: libc::c_int, cwd: &CString) -> io::Result<FileActions> {
        // SAFETY: the actions are initialised before use (and destroyed by
        // Drop); glibc copies the directory's path.
        unsafe {
            let mut actions = std::mem::MaybeUninit::<libc::posix_spawn_file_actions_t>::uninit();
            check(libc::posix_spawn_file_actions_init(actions.as_mut_ptr()))?;
            let mut actions = FileActions(actions.assume_init());
            check(libc::posix_spawn_file_actions_adddup2(
                &mut actions.0,
                stdin,
                0,
            ))?;
            check(libc::posix_spawn_file_actions_adddup2(
                &mut actions.0,
                output,
                1,
            ))?;
            check(libc::posix_spawn_file_actions_adddup2(
                &mut actions.0,
                output,
                2,
            ))?;
            check(libc::posix_spawn_file_actions_addchdir_np(
                &mut actions.0,
                cwd.as_ptr(),
            ))?;
            Ok(actions)
        }
    }
}

impl Drop for FileActions {
    fn drop(&mut self) {
        // SAFETY: initialised by posix_spawn_file_actions_init.
        unsafe { libc::posix_spawn_file_actions_destroy(&mut self.0) };
    }
}

struct Attributes(libc::posix_spawnattr_t);

impl Attributes {
    fn new() -> io::Result<Attributes> {
        // SAFETY: the attributes and the signal set are initialised before
        // use; the attributes are destroyed by Drop.
        unsafe {
            let mut attrs = std::mem::MaybeUninit::<libc::posix_spawnattr_t>::uninit();
            check(libc::posix_spawnattr_init(attrs.as_mut_ptr()))?;
            let mut attrs = Attributes(attrs.assume_init());
            let mut signals = std::mem::MaybeUninit::<libc::sigset_t>::uninit();
            libc::sigemptyset(signals.as_mut_ptr());
            let mut signals = signals.assume_init();
            check(libc::posix_spawnattr_setsigmask(&mut attrs.0, &signals))?;
            // The child resets each signal in this set with one `sigaction`;
            // glibc (2.36) asks about every other one first and then resets
            // it anyway: 121 `rt_sigaction` calls instead of 62 in the vfork child,
            // ~20 us of each spawn on this machine, while the executor's
            // thread waits. So the set holds every signal not ignored now:
            // what exec would give the child. An ignored one (SIGHUP under
            // `nohup`) stays ignored; a handler installed after this is still
            // found and reset by glibc's own check.
            for signal in 1..=libc::SIGRTMAX() {
                if signal == libc::SIGKILL || signal == libc::SIGSTOP {
                    continue;
                }
                let mut action = std::mem::MaybeUninit::<libc::sigaction>::uninit();
                if libc::sigaction(signal, std::ptr::null(), action.as_mut_ptr()) == 0
                    && action.assume_init().sa_sigaction != libc::SIG_IGN
                {
                    // Fails for glibc's own signals, which it handles itself.
                    libc::sigaddset(&mut signals, signal);
                }
            }
            libc::sigaddset(&mut signals, libc::SIGPIPE);
            check(libc::posix_spawnattr_setsigdefault(&mut attrs.0, &signals))?;
            check(libc::posix_spawnattr_setpgroup(&mut attrs.0, 0))?;
            let flags = libc::POSIX_SPAWN_SETPGROUP
                | libc::POSIX_SPAWN_SETSIGMASK
                | libc::POSIX_SPAWN_SETSIGDEF;
            check(libc::posix_spawnattr_setflags(&mut attrs.0, flags as _))?;
            Ok(attrs)
        }
    }
}

impl Drop for Attributes {
    fn drop(&mut self) {
        // SAFETY: initialised by posix_spawnattr_init.
        unsafe { libc::posix_spawnattr_destroy(&mut self.0) };
    }
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
            &["-c", "echo \"$PHOENIX_STEP $(pwd) $(ps -o pgid= -p $$ | tr -d ' ') $$\"; echo err >&2; exit 3"],
            &[("PHOENIX_STEP", OsStr::new("s1"))],
        );
        assert_eq!(status.unwrap().code(), Some(3));
        let mut words = text.split_whitespace();
        assert_eq!(words.next(), Some("s1"));
        assert_eq!(words.next(), Some("/tmp"));
        let (pgid, pid) = (words.next(), words.next());
        assert_eq!(pgid, pid, "the child leads a process group of its own");
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
    fn a_nul_byte_is_refused_before_anything_starts() {
        let spawner = Spawner::new().unwrap();
        let (status, _) = run(&spawner, "sh", &["-c", "echo a\0b"], &[]);
        assert_eq!(status.unwrap_err().kind(), io::ErrorKind::InvalidInput);
    }
}
