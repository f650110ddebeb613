//! Shards of a job's batches: shard `K/N` is every batch `i` with `i mod N = K - 1`, so N workers
//! given `1/N` .. `N/N` cover a job exactly once, with batch counts that differ by at most one.

use std::fmt;
use std::str::FromStr;

/// The most shards a job may be split into.
pub const MAX_SHARDS: usize = 1 << 20;

/// Shard `index` of `count` (both from 1): which batches one worker scores.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Shard {
    index: usize,
    count: usize,
}

/// Why a `K/N` shard was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ShardError {
    /// Not two whole numbers separated by `/`.
    #[error("`{0}` is not a shard: write K/N with whole numbers, e.g. 2/8 for shard 2 of 8")]
    Syntax(String),
    /// A number too large to hold.
    #[error(
        "`{0}`: the numbers are far too large (a job is split into at most {MAX_SHARDS} shards)"
    )]
    TooLarge(String),
    /// `N` is 0 or above [`MAX_SHARDS`].
    #[error("{index}/{count}: the number of shards must be 1 to {MAX_SHARDS}")]
    Count {
        /// K.
        index: usize,
        /// N.
        count: usize,
    },
    /// `K` is outside `1..=N`.
    #[error(
        "{index}/{count}: shards count from 1 to {count} (a Slurm array numbered from 0 passes \
         $((SLURM_ARRAY_TASK_ID + 1)), a Kubernetes Indexed Job $((JOB_COMPLETION_INDEX + 1)))"
    )]
    Index {
        /// K.
        index: usize,
        /// N.
        count: usize,
    },
}

impl Shard {
    /// The whole job (`1/1`).
    pub const ALL: Shard = Shard { index: 1, count: 1 };

    /// Shard `index` of `count`, both from 1.
    pub fn new(index: usize, count: usize) -> Result<Self, ShardError> {
        if count == 0 || count > MAX_SHARDS {
            return Err(ShardError::Count { index, count });
        }
        if index == 0 || index > count {
            return Err(ShardError::Index { index, count });
        }
        Ok(Shard { index, count })
    }

    /// K (from 1).
    pub fn index(&self) -> usize {
        self.index
    }

    /// N.
    pub fn count(&self) -> usize {
        self.count
    }

    /// Whether batch `i` (from 0) belongs to this shard.
    pub fn contains(&self, i: usize) -> bool {
        i % self.count == self.index - 1
    }

    /// This shard's batches of a job of `total` batches, in order.
    pub fn batches(&self, total: usize) -> impl Iterator<Item = usize> {
        (self.index - 1..total).step_by(self.count)
    }
}

impl Default for Shard {
    fn default() -> Self {
        Self::ALL
    }
}

impl fmt::Display for Shard {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.index, self.count)
    }
}

impl FromStr for Shard {
    type Err = ShardError;

    fn from_str(s: &str) -> Result<Self, ShardError> {
        let syntax = || ShardError::Syntax(s.to_string());
        let (k, n) = s.trim().split_once('/').ok_or_else(syntax)?;
        let number = |x: &str| {
            let x = x.trim();
            if x.is_empty() || !x.bytes().all(|b| b.is_ascii_digit()) {
                return Err(syntax());
            }
            // Digits only: a parse error can only be an overflow, which no count accepts.
            x.parse::<usize>()
                .map_err(|_| ShardError::TooLarge(s.to_string()))
        };
        Shard::new(number(k)?, number(n)?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shards_cover_every_batch_exactly_once() {
        for total in [0usize, 1, 2, 3, 7, 64, 65] {
            for count in 1..=9 {
                let mut seen = vec![0; total];
                for k in 1..=count {
                    let shard = Shard::new(k, count).unwrap();
                    let mine: Vec<usize> = shard.batches(total).collect();
                    assert!(mine.iter().all(|&i| shard.contains(i)));
                    // balanced: sizes differ by at most one
                    assert!(mine.len() == total / count || mine.len() == total.div_ceil(count));
                    for i in mine {
                        seen[i] += 1;
                    }
                }
                assert!(
                    seen.iter().all(|&c| c == 1),
                    "{total} batches, {count} shards"
                );
            }
        }
    }

    #[test]
    fn bad_shards_are_errors() {
        assert_eq!("2/3".parse::<Shard>().unwrap(), Shard::new(2, 3).unwrap());
        assert_eq!(" 3 / 3 ".parse::<Shard>().unwrap().to_string(), "3/3");
        for (s, want) in [
            ("0/3", "count from 1 to 3"),
            ("4/3", "count from 1 to 3"),
            ("1/0", "must be 1 to"),
            ("a/3", "not a shard"),
            ("1/b", "not a shard"),
            ("-1/3", "not a shard"),
            ("1.5/3", "not a shard"),
            ("3", "not a shard"),
            ("", "not a shard"),
            ("1/2/3", "not a shard"),
            (
                "1/99999999999999999999999",
                "1/99999999999999999999999`: the numbers are far too large",
            ),
        ] {
            let e = s.parse::<Shard>().unwrap_err().to_string();
            assert!(e.contains(want), "{s}: {e}");
        }
    }
}
