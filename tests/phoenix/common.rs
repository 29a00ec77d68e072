//! A small builder around the `phoenix` binary.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

pub fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

pub fn fixtures() -> PathBuf {
    repo_root().join("tests/fixtures")
}

/// `phoenix ARGS…` run in `dir`, with a state directory of its own.
pub struct Phoenix {
    command: Command,
}

impl Phoenix {
    pub fn new(dir: &Path) -> Self {
        let mut command = Command::new(env!("CARGO_BIN_EXE_phoenix"));
        command
            .current_dir(dir)
            .env_remove("PHOENIX_STATE")
            .env("NO_COLOR", "1");
        Phoenix { command }
    }

    pub fn args<I, S>(mut self, args: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: AsRef<std::ffi::OsStr>,
    {
        self.command.args(args);
        self
    }

    pub fn run(mut self) -> Run {
        let output = self.command.output().expect("phoenix runs");
        Run { output }
    }
}

pub struct Run {
    pub output: Output,
}

impl Run {
    pub fn code(&self) -> i32 {
        self.output.status.code().unwrap_or(-1)
    }

    pub fn stdout(&self) -> String {
        String::from_utf8_lossy(&self.output.stdout).into_owned()
    }

    pub fn stderr(&self) -> String {
        String::from_utf8_lossy(&self.output.stderr).into_owned()
    }

    #[track_caller]
    pub fn expect_code(self, code: i32) -> Self {
        assert_eq!(
            self.code(),
            code,
            "exit code\n--- stdout\n{}\n--- stderr\n{}",
            self.stdout(),
            self.stderr()
        );
        self
    }
}
