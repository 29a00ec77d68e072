//! `--chaos`: failures and crashes injected into drills, repeatably.

use std::sync::Mutex;

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

#[derive(Clone, Debug, PartialEq)]
pub struct ChaosSpec {
    /// Probability that a step attempt fails before its action runs.
    pub fail: f64,
    /// Probability that phoenix aborts right after a step finishes.
    pub kill: f64,
    pub seed: Option<u64>,
}

impl ChaosSpec {
    /// `fail=P,kill=P,seed=N`, any subset, in any order.
    pub fn parse(text: &str) -> Result<ChaosSpec, String> {
        let mut spec = ChaosSpec {
            fail: 0.0,
            kill: 0.0,
            seed: None,
        };
        let mut seen = Vec::new();
        for part in text.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            let (key, value) = part.split_once('=').ok_or_else(|| {
                format!("`{part}`: expected KEY=VALUE (fail=P, kill=P or seed=N)")
            })?;
            // Which of two values was meant is not guessed.
            if seen.contains(&key) {
                return Err(format!("`{key}` is given twice"));
            }
            seen.push(key);
            let probability = || -> Result<f64, String> {
                value
                    .parse::<f64>()
                    .ok()
                    .filter(|p| (0.0..=1.0).contains(p))
                    .ok_or_else(|| format!("`{part}`: {key} must be a probability from 0 to 1"))
            };
            match key {
                "fail" => spec.fail = probability()?,
                "kill" => spec.kill = probability()?,
                "seed" => {
                    spec.seed = Some(
                        value
                            .parse()
                            .map_err(|_| format!("`{part}`: seed must be a whole number"))?,
                    )
                }
                other => {
                    return Err(format!(
                        "unknown chaos `{other}`; expected fail, kill or seed"
                    ))
                }
            }
        }
        Ok(spec)
    }
}

/// Draws the chaos decisions. With a seed, a resumed run draws a different but
/// still repeatable sequence (the seed is mixed with the resume count), so that
/// a drill with `kill` converges instead of dying at the same step forever.
pub struct Chaos {
    spec: ChaosSpec,
    rng: Mutex<StdRng>,
}

impl Chaos {
    pub fn new(spec: ChaosSpec, salt: u64) -> Self {
        let rng = match spec.seed {
            Some(seed) => {
                StdRng::seed_from_u64(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15).wrapping_add(salt))
            }
            None => StdRng::from_os_rng(),
        };
        Chaos {
            spec,
            rng: Mutex::new(rng),
        }
    }

    fn draw(&self, probability: f64) -> bool {
        probability > 0.0
            && self
                .rng
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .random_bool(probability)
    }

    pub fn fail_attempt(&self) -> bool {
        self.draw(self.spec.fail)
    }

    pub fn kill_after_step(&self) -> bool {
        self.draw(self.spec.kill)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_specs() {
        assert_eq!(
            ChaosSpec::parse("fail=0.2,kill=0.1,seed=42").unwrap(),
            ChaosSpec {
                fail: 0.2,
                kill: 0.1,
                seed: Some(42)
            }
        );
        assert!(ChaosSpec::parse("fail=2").is_err());
        assert!(ChaosSpec::parse("boom=1").is_err());
        assert_eq!(
            ChaosSpec::parse("fail=0.5,kill=0.1,fail=0.1").unwrap_err(),
            "`fail` is given twice"
        );
    }
}
