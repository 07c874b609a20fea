//! The seed runner: one job per seed, on worker threads, results in seed order. Every run is
//! deterministic in its seed and the results are put back in seed order, so the output of a
//! parallel run is the output of a serial one.

use std::io::Write as _;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

/// Where to run: `count` seeds from `first` (wrapping at the end of the seed space), on
/// `threads` workers; `progress` prints `done/count runs` on stderr as runs end.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Seeds {
    pub(crate) first: u64,
    pub(crate) count: u64,
    pub(crate) threads: usize,
    pub(crate) progress: bool,
}

impl Seeds {
    /// The seed of the `i`-th run.
    pub(crate) fn seed(&self, i: u64) -> u64 {
        self.first.wrapping_add(i)
    }

    /// Runs `job` on every seed; the results in seed order, or the error of the first failed
    /// seed (in seed order) among those run. After an error no new run starts.
    pub(crate) fn run<T: Send, E: Send>(
        &self,
        job: impl Fn(u64) -> Result<T, E> + Sync,
    ) -> Result<Vec<T>, E> {
        let count = self.count;
        let next = AtomicU64::new(0);
        let done = AtomicU64::new(0);
        let results: Mutex<Vec<(u64, Result<T, E>)>> =
            Mutex::new(Vec::with_capacity(count.min(1 << 20) as usize));
        std::thread::scope(|s| {
            for _ in 0..self.threads.max(1) {
                s.spawn(|| {
                    loop {
                        let i = next.fetch_add(1, Ordering::Relaxed);
                        if i >= count {
                            break;
                        }
                        let result = job(self.seed(i));
                        if result.is_err() {
                            next.store(count, Ordering::Relaxed);
                        }
                        results
                            .lock()
                            .expect("no worker panics holding the lock")
                            .push((i, result));
                        let n = done.fetch_add(1, Ordering::Relaxed) + 1;
                        if self.progress && (n.is_multiple_of(10) || n == count) {
                            // A stderr gone away (`2>&1 | head`) is no reason to stop.
                            let _ = write!(std::io::stderr().lock(), "  {n}/{count} runs\r");
                        }
                    }
                });
            }
        });
        let mut results = results.into_inner().expect("workers have finished");
        results.sort_unstable_by_key(|(i, _)| *i);
        results.into_iter().map(|(_, r)| r).collect()
    }
}

/// One of `count` shards of a run's seeds (`--shard INDEX/COUNT`): shard `index` takes the
/// contiguous range of seed indices `[index * seeds / count, (index + 1) * seeds / count)`, so
/// the shards in index order are the seeds of the whole run in order, and their sizes differ by
/// at most one.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub(crate) struct Shard {
    pub(crate) index: u64,
    pub(crate) count: u64,
}

impl Shard {
    /// The whole run as one shard.
    pub(crate) const WHOLE: Shard = Shard { index: 0, count: 1 };

    /// The seeds of this shard of `seeds`.
    pub(crate) fn of(&self, seeds: &Seeds) -> Seeds {
        let at = |i: u64| (u128::from(seeds.count) * u128::from(i) / u128::from(self.count)) as u64;
        let (lo, hi) = (at(self.index), at(self.index + 1));
        Seeds {
            first: seeds.seed(lo),
            count: hi - lo,
            ..*seeds
        }
    }
}

impl std::str::FromStr for Shard {
    type Err = String;

    fn from_str(s: &str) -> Result<Shard, String> {
        let bad = || format!("`{s}` is not a shard such as `0/4` (INDEX/COUNT, INDEX from 0)");
        let (index, count) = s.split_once('/').ok_or_else(bad)?;
        let (index, count): (u64, u64) = (
            index.trim().parse().map_err(|_| bad())?,
            count.trim().parse().map_err(|_| bad())?,
        );
        if count == 0 || count > 100_000 || index >= count {
            return Err(format!(
                "`{s}`: INDEX must be below COUNT, and COUNT between 1 and 100000"
            ));
        }
        Ok(Shard { index, count })
    }
}

impl std::fmt::Display for Shard {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.index, self.count)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shards_in_index_order_are_the_seeds_of_the_whole_run() {
        let whole = Seeds {
            first: u64::MAX - 3,
            count: 10,
            threads: 2,
            progress: false,
        };
        let mut seeds = Vec::new();
        for index in 0..3 {
            let part = Shard { index, count: 3 }.of(&whole);
            assert!((3..=4).contains(&part.count), "{part:?}");
            seeds.extend((0..part.count).map(|i| part.seed(i)));
        }
        let expected: Vec<u64> = (0..whole.count).map(|i| whole.seed(i)).collect();
        assert_eq!(seeds, expected);
        assert_eq!(
            Shard {
                index: 4,
                count: 20
            }
            .of(&whole)
            .count,
            0,
            "more shards than seeds"
        );
    }

    #[test]
    fn a_shard_parses_as_index_over_count_from_zero() {
        assert_eq!("2/3".parse(), Ok(Shard { index: 2, count: 3 }));
        for bad in ["3/3", "1/0", "1", "a/2", "-1/2"] {
            assert!(bad.parse::<Shard>().is_err(), "{bad}");
        }
    }

    #[test]
    fn results_come_in_seed_order_whatever_the_threads() {
        let seeds = |threads| Seeds {
            first: u64::MAX - 2,
            count: 50,
            threads,
            progress: false,
        };
        // Later seeds finish first: a runner that kept completion order would shuffle them.
        let job = |seed: u64| -> Result<u64, ()> {
            std::thread::sleep(std::time::Duration::from_micros(seed % 7 * 50));
            Ok(seed)
        };
        let serial = seeds(1).run(job).unwrap();
        assert_eq!(serial[0], u64::MAX - 2);
        assert_eq!(serial[3], 0, "seeds wrap at the end of the seed space");
        assert_eq!(seeds(4).run(job).unwrap(), serial);
    }

    #[test]
    fn after_a_failed_seed_it_is_reported_and_no_new_run_starts() {
        let seeds = Seeds {
            first: 1,
            count: 20,
            threads: 1,
            progress: false,
        };
        let ran = AtomicU64::new(0);
        let err = seeds
            .run(|seed| {
                ran.fetch_add(1, Ordering::Relaxed);
                if seed >= 5 { Err(seed) } else { Ok(seed) }
            })
            .unwrap_err();
        assert_eq!(err, 5);
        assert_eq!(ran.into_inner(), 5, "seeds 1 to 5 ran, no more");
    }
}
