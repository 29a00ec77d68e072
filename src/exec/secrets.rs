//! Secrets: read when a step needs them, and masked as `***` everywhere phoenix
//! writes (logs, journal, status, reports, error messages).

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::sync::{Mutex, RwLock};

use crate::plan::model::{Secret, SecretSource};

/// Replaces every known secret value with `***`.
#[derive(Default, Debug)]
pub struct Masker {
    /// Longest first, so a secret that contains another is masked whole.
    values: RwLock<Vec<String>>,
}

pub const MASK: &str = "***";

impl Masker {
    /// Masks `value` from now on, and each line of it on its own when it has
    /// several ([`lines_of`]).
    pub fn add(&self, value: &str) {
        let mut values = self.values.write().unwrap_or_else(|e| e.into_inner());
        let before = values.len();
        for part in std::iter::once(value).chain(lines_of(value)) {
            if !part.is_empty() && !values.iter().any(|v| v == part) {
                values.push(part.to_string());
            }
        }
        if values.len() > before {
            values.sort_by_key(|v| std::cmp::Reverse(v.len()));
        }
    }

    pub fn is_empty(&self) -> bool {
        self.values.read().map(|v| v.is_empty()).unwrap_or(false)
    }

    /// Where a stream's text may be cut, at `cut` or before it, so that no
    /// secret is split between what is written now and what is held back: the
    /// cut is moved back to the start of any secret that crosses it, whole in
    /// `text` or running on past its end (the rest may come with the next
    /// read). What is written before the cut is then masked whole, and the
    /// held-back part begins with the secret, to be masked once it is complete.
    pub fn safe_cut(&self, text: &[u8], mut cut: usize) -> usize {
        let values = self.values.read().unwrap_or_else(|e| e.into_inner());
        loop {
            let before = cut;
            for value in values.iter().map(String::as_bytes) {
                // Each start from which `value` would cross the cut.
                for start in cut.saturating_sub(value.len() - 1)..cut {
                    let end = (start + value.len()).min(text.len());
                    if text[start..end] == value[..end - start] {
                        cut = start;
                        break;
                    }
                }
            }
            if cut == before {
                return cut;
            }
        }
    }

    /// Whether `text` holds the value of a secret read so far.
    pub fn reveals(&self, text: &str) -> bool {
        let values = self.values.read().unwrap_or_else(|e| e.into_inner());
        values.iter().any(|value| text.contains(value.as_str()))
    }

    pub fn mask<'a>(&self, text: &'a str) -> Cow<'a, str> {
        let values = self.values.read().unwrap_or_else(|e| e.into_inner());
        let mut out = Cow::Borrowed(text);
        for value in values.iter() {
            if out.contains(value.as_str()) {
                out = Cow::Owned(out.replace(value.as_str(), MASK));
            }
        }
        out
    }
}

/// The lines of a secret of several lines (a PEM key, a kubeconfig, a
/// service account's JSON), each masked on its own as well as the whole: a
/// step that prints part of the value (`tail`, a diff, a tool that logs a key
/// line by line, JSON that escapes its newlines) would otherwise write those
/// lines in the clear. A line is taken without the whitespace around it, as
/// a tool may indent it otherwise; shorter ones than [`MIN_LINE`] (a `}`, a
/// blank line) are left alone, as masking them would mask that text wherever
/// a log has it.
fn lines_of(value: &str) -> impl Iterator<Item = &str> {
    let several = value.contains('\n');
    value
        .lines()
        .map(str::trim)
        .filter(move |line| several && line.len() >= MIN_LINE)
}

/// See [`lines_of`].
const MIN_LINE: usize = 8;

#[derive(Debug, thiserror::Error)]
pub enum SecretError {
    #[error("secret `{name}`: environment variable `{var}` is not set")]
    EnvMissing { name: String, var: String },
    #[error("secret `{name}`: cannot read `{path}`")]
    File {
        name: String,
        path: std::path::PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// Reads secret values on first use and teaches each to the masker.
pub struct Secrets {
    sources: BTreeMap<String, Secret>,
    dir: std::path::PathBuf,
    cache: Mutex<BTreeMap<String, String>>,
}

impl Secrets {
    pub fn new(sources: BTreeMap<String, Secret>, dir: std::path::PathBuf) -> Self {
        Secrets {
            sources,
            dir,
            cache: Mutex::new(BTreeMap::new()),
        }
    }

    pub fn get(&self, name: &str, masker: &Masker) -> Result<String, SecretError> {
        if let Some(value) = self
            .cache
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(name)
        {
            return Ok(value.clone());
        }
        let Some(secret) = self.sources.get(name) else {
            // Validation rejects references to undeclared secrets.
            return Err(SecretError::EnvMissing {
                name: name.into(),
                var: String::new(),
            });
        };
        let value = match &secret.source {
            SecretSource::Env(var) => std::env::var(var).map_err(|_| SecretError::EnvMissing {
                name: name.into(),
                var: var.clone(),
            })?,
            SecretSource::File(path) => {
                let path = self.dir.join(path);
                let text = std::fs::read_to_string(&path).map_err(|source| SecretError::File {
                    name: name.into(),
                    path: path.clone(),
                    source,
                })?;
                text.trim_end_matches(['\n', '\r']).to_string()
            }
        };
        masker.add(&value);
        self.cache
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(name.to_string(), value.clone());
        Ok(value)
    }

    /// The secrets read so far whose values are shorter than `chars`, with
    /// their length: masked wherever those characters stand, in any word or
    /// number.
    pub fn short(&self, chars: usize) -> Vec<(String, usize)> {
        let cache = self.cache.lock().unwrap_or_else(|e| e.into_inner());
        cache
            .iter()
            .map(|(name, value)| (name.clone(), value.chars().count()))
            .filter(|(_, length)| *length > 0 && *length < chars)
            .collect()
    }

    /// Reads the file secrets not read yet that can be read now: a file a
    /// step has just written (a password it generated). Whether any was. (An
    /// environment variable is phoenix's own: it does not appear mid-run.)
    pub fn read_new(&self, masker: &Masker) -> bool {
        let unread: Vec<&String> = {
            let cache = self.cache.lock().unwrap_or_else(|e| e.into_inner());
            self.sources
                .iter()
                .filter(|(name, secret)| {
                    matches!(secret.source, SecretSource::File(_)) && !cache.contains_key(*name)
                })
                .map(|(name, _)| name)
                .collect()
        };
        let mut any = false;
        for name in unread {
            any |= self.get(name, masker).is_ok();
        }
        any
    }

    /// Reads every secret that can be read now, so that output which prints a
    /// secret no expression named (a child that reads its own environment) is
    /// masked too; and teaches the masker the credentials in Phoenix's own
    /// environment ([`CREDENTIAL_SUFFIXES`]). Secrets that cannot be read yet
    /// are read when a step needs them.
    pub fn preload(&self, masker: &Masker) {
        for name in self.sources.keys() {
            let _ = self.get(name, masker);
        }
        for (_, value) in std::env::vars().filter(|(name, _)| is_credential(name)) {
            if value.len() >= MIN_CREDENTIAL {
                masker.add(&value);
            }
        }
    }
}

/// Names of the variables whose values are masked though no plan declares
/// them: the credentials in Phoenix's own environment (its AWS keys for the
/// stores and the state, a token a CI job was given), which every step
/// inherits and one that prints its environment (`env`, `set -x`) would
/// write into its log.
const CREDENTIAL_SUFFIXES: &[&str] = &[
    "_SECRET_ACCESS_KEY",
    "_SESSION_TOKEN",
    "_TOKEN",
    "_SECRET",
    "_PASSWORD",
    "_API_KEY",
    "_PRIVATE_KEY",
];

/// Shorter values are left alone: a placeholder such as `test` would mask
/// that word wherever a log has it.
const MIN_CREDENTIAL: usize = 8;

fn is_credential(name: &str) -> bool {
    let upper = name.to_ascii_uppercase();
    upper == "PGPASSWORD" || CREDENTIAL_SUFFIXES.iter().any(|s| upper.ends_with(s))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn credentials_are_known_by_their_names() {
        for name in [
            "AWS_SECRET_ACCESS_KEY",
            "AWS_SESSION_TOKEN",
            "GITHUB_TOKEN",
            "vault_token",
            "DB_PASSWORD",
            "PGPASSWORD",
            "STRIPE_API_KEY",
        ] {
            assert!(is_credential(name), "{name}");
        }
        for name in [
            "AWS_ACCESS_KEY_ID",
            "PATH",
            "HOME",
            "TOKENIZER",
            "PASSWORD_POLICY",
        ] {
            assert!(!is_credential(name), "{name}");
        }
    }

    #[test]
    fn masks_longest_first() {
        let masker = Masker::default();
        masker.add("hunter2");
        masker.add("hunter2-extended");
        assert_eq!(masker.mask("a hunter2-extended b hunter2"), "a *** b ***");
        assert_eq!(masker.mask("nothing here"), "nothing here");
    }

    #[test]
    fn each_line_of_a_secret_of_several_is_masked() {
        let masker = Masker::default();
        masker.add("-----BEGIN KEY-----\nAAAABBBBCCCC\n  DDDDEEEEFFFF  \r\nshort\n}\n");
        // Part of the value, as `tail` or a tool that logs it line by line
        // would print it, and its lines in JSON, newlines escaped.
        assert_eq!(
            masker.mask("DDDDEEEEFFFF\n}"),
            "***\n}",
            "a line, not the short ones"
        );
        assert_eq!(
            masker.mask(r#"{"key": "AAAABBBBCCCC\n  DDDDEEEEFFFF"}"#),
            r#"{"key": "***\n  ***"}"#
        );
        assert_eq!(masker.mask("short } ok"), "short } ok");
        // A value of one line is masked whole only.
        masker.add("one-line-secret");
        assert_eq!(masker.mask("one-line"), "one-line");
    }

    #[test]
    fn a_cut_never_splits_a_secret() {
        let masker = Masker::default();
        masker.add("canary-42");
        masker.add("alpha\nbeta");
        masker.add("abc");
        masker.add("cde");
        let cut = |text: &str, at: usize| masker.safe_cut(text.as_bytes(), at);
        // Nothing crosses the cut: it stays.
        assert_eq!(cut("plain text", 5), 5);
        assert_eq!(cut("yy canary-42 zz", 15), 15);
        // A whole secret across it (one byte before it, or all but one).
        assert_eq!(cut("yy canary-42 zz", 4), 3);
        assert_eq!(cut("yy canary-42 zz", 11), 3);
        // A secret that may go on in the next read is held back whole.
        assert_eq!(cut("yy cana", 7), 3);
        assert_eq!(cut("head alpha\n", 11), 5);
        // Secrets that overlap: back to the first one's start.
        assert_eq!(cut("xxabcde", 4), 2);
        assert_eq!(cut("xxabcde", 5), 2);
        // Written up to the cut and masked, then the rest once complete: no
        // part of a secret is ever written unmasked.
        let text = "yy canary-42 zz";
        let at = cut(text, 4);
        assert_eq!(masker.mask(&text[..at]), "yy ");
        assert_eq!(masker.mask(&text[at..]), "*** zz");
    }
}
