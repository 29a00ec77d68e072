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
    pub fn add(&self, value: &str) {
        if value.is_empty() {
            return;
        }
        let mut values = self.values.write().unwrap_or_else(|e| e.into_inner());
        if !values.iter().any(|v| v == value) {
            values.push(value.to_string());
            values.sort_by_key(|v| std::cmp::Reverse(v.len()));
        }
    }

    pub fn is_empty(&self) -> bool {
        self.values.read().map(|v| v.is_empty()).unwrap_or(false)
    }

    /// The length of the longest secret: how much text a streaming masker must
    /// hold back so that no secret is split across two writes.
    pub fn longest(&self) -> usize {
        self.values
            .read()
            .map(|v| v.first().map(String::len).unwrap_or(0))
            .unwrap_or(0)
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

    /// Reads every secret that can be read now, so that output which prints a
    /// secret no expression named (a child that reads its own environment) is
    /// masked too. Secrets that cannot be read yet are read when a step needs them.
    pub fn preload(&self, masker: &Masker) {
        for name in self.sources.keys() {
            let _ = self.get(name, masker);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn masks_longest_first() {
        let masker = Masker::default();
        masker.add("hunter2");
        masker.add("hunter2-extended");
        assert_eq!(masker.mask("a hunter2-extended b hunter2"), "a *** b ***");
        assert_eq!(masker.mask("nothing here"), "nothing here");
    }
}
