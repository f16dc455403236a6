//! The in-memory oid → position index.
//!
//! ZODB hands out oids from a counter, so the oids in a storage are dense. The index groups
//! them by `oid >> 12` into buckets of at most 4096 entries; a bucket is a sorted `Vec<u64>`
//! whose entries pack the low 12 oid bits above a 48-bit file position
//! (`suffix << 48 | pos`). Sorting the packed words sorts by suffix, so a lookup is one
//! B-tree step and a binary search over plain integers. There is no per-entry allocation:
//! about 8 bytes per object for dense oids (a full bucket is exactly 32 KiB), far below
//! the 16-byte budget, and positions beyond 2^48 are refused like Python's `fsIndex`
//! (whose index file stores 6-byte positions, §4.1.1).
//!
//! New oids arrive in increasing order in practice, so inserts are mostly appends; an
//! out-of-order insert moves at most 32 KiB.

use std::collections::BTreeMap;
use std::mem::size_of;

use super::types::Oid;

const SUFFIX_BITS: u32 = 12;
const SUFFIX_MASK: u64 = (1 << SUFFIX_BITS) - 1;
const POS_BITS: u32 = 48;
/// Positions must be below this (Python's index cannot store more either).
pub const MAX_POS: u64 = 1 << POS_BITS;
const POS_MASK: u64 = MAX_POS - 1;

#[derive(Clone, Default, Debug)]
pub struct OidIndex {
    buckets: BTreeMap<u64, Vec<u64>>,
    len: usize,
}

/// A position that does not fit the index (≥ 2^48).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PositionTooLarge(pub u64);

impl OidIndex {
    pub fn new() -> OidIndex {
        OidIndex::default()
    }

    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    pub fn get(&self, oid: Oid) -> Option<u64> {
        let bucket = self.buckets.get(&(oid.0 >> SUFFIX_BITS))?;
        let suffix = oid.0 & SUFFIX_MASK;
        // Dense buckets (every suffix below this one present, the usual case: oids come from
        // a counter and only pack removes any) hold suffix `s` at index `s`, since suffixes
        // are unique and sorted: one load instead of a 12-step binary search.
        if let Some(&e) = bucket.get(suffix as usize)
            && e >> POS_BITS == suffix
        {
            return Some(e & POS_MASK);
        }
        bucket
            .binary_search_by_key(&suffix, |e| e >> POS_BITS)
            .ok()
            .map(|i| bucket[i] & POS_MASK)
    }

    pub fn contains(&self, oid: Oid) -> bool {
        self.get(oid).is_some()
    }

    /// Set the position of `oid`, returning the previous one.
    pub fn insert(&mut self, oid: Oid, pos: u64) -> Result<Option<u64>, PositionTooLarge> {
        if pos >= MAX_POS {
            return Err(PositionTooLarge(pos));
        }
        let suffix = oid.0 & SUFFIX_MASK;
        let entry = (suffix << POS_BITS) | pos;
        let bucket = self.buckets.entry(oid.0 >> SUFFIX_BITS).or_default();
        // Fast path: appending a new largest suffix (the common case for new objects).
        if bucket.last().is_none_or(|&e| e >> POS_BITS < suffix) {
            bucket.push(entry);
            self.len += 1;
            return Ok(None);
        }
        match bucket.binary_search_by_key(&suffix, |e| e >> POS_BITS) {
            Ok(i) => {
                let old = bucket[i] & POS_MASK;
                bucket[i] = entry;
                Ok(Some(old))
            }
            Err(i) => {
                bucket.insert(i, entry);
                self.len += 1;
                Ok(None)
            }
        }
    }

    /// Remove `oid` (used to rebuild in tests and by callers that drop objects).
    pub fn remove(&mut self, oid: Oid) -> Option<u64> {
        let key = oid.0 >> SUFFIX_BITS;
        let bucket = self.buckets.get_mut(&key)?;
        let i = bucket
            .binary_search_by_key(&(oid.0 & SUFFIX_MASK), |e| e >> POS_BITS)
            .ok()?;
        let old = bucket.remove(i) & POS_MASK;
        if bucket.is_empty() {
            self.buckets.remove(&key);
        }
        self.len -= 1;
        Some(old)
    }

    /// The largest oid in the index.
    pub fn max_oid(&self) -> Option<Oid> {
        let (key, bucket) = self.buckets.iter().next_back()?;
        let last = bucket.last()?;
        Some(Oid((key << SUFFIX_BITS) | (last >> POS_BITS)))
    }

    /// The smallest oid ≥ `from` (`fsIndex.minKey`).
    pub fn min_key_from(&self, from: Oid) -> Option<Oid> {
        self.iter_from(from).next().map(|(oid, _)| oid)
    }

    /// All (oid, position) pairs in oid order.
    pub fn iter(&self) -> impl Iterator<Item = (Oid, u64)> + '_ {
        self.iter_from(Oid(0))
    }

    /// (oid, position) pairs with oid ≥ `from`, in oid order.
    pub fn iter_from(&self, from: Oid) -> impl Iterator<Item = (Oid, u64)> + '_ {
        let start_key = from.0 >> SUFFIX_BITS;
        let start_suffix = from.0 & SUFFIX_MASK;
        self.buckets
            .range(start_key..)
            .flat_map(move |(&key, bucket)| {
                let skip = if key == start_key {
                    bucket.partition_point(|e| e >> POS_BITS < start_suffix)
                } else {
                    0
                };
                bucket[skip..]
                    .iter()
                    .map(move |&e| (Oid((key << SUFFIX_BITS) | (e >> POS_BITS)), e & POS_MASK))
            })
    }

    /// Release spare capacity (after a bulk load).
    pub fn shrink_to_fit(&mut self) {
        for bucket in self.buckets.values_mut() {
            bucket.shrink_to_fit();
        }
    }

    /// Heap bytes used, approximately (entries plus bucket bookkeeping).
    pub fn memory_bytes(&self) -> usize {
        // A B-tree node holds up to 11 keys and values; count key + Vec header per bucket
        // with a factor for node slack.
        let per_bucket = (size_of::<u64>() + size_of::<Vec<u64>>()) * 3 / 2;
        self.buckets
            .values()
            .map(|b| b.capacity() * size_of::<u64>() + per_bucket)
            .sum()
    }
}

/// Builds an index from entries in strictly increasing oid order (an index file, a sorted
/// dump) without a B-tree search per entry.
#[derive(Default)]
pub struct SortedBuilder {
    index: OidIndex,
    key: Option<u64>,
    bucket: Vec<u64>,
    last: Option<u64>,
}

impl SortedBuilder {
    pub fn new() -> SortedBuilder {
        SortedBuilder::default()
    }

    /// Add the next entry; `Err` when it is not after the previous oid or the position is
    /// too large.
    pub fn push(&mut self, oid: Oid, pos: u64) -> Result<(), PositionTooLarge> {
        if pos >= MAX_POS || self.last.is_some_and(|l| l >= oid.0) {
            return Err(PositionTooLarge(pos));
        }
        self.last = Some(oid.0);
        let key = oid.0 >> SUFFIX_BITS;
        if self.key != Some(key) {
            self.flush();
            self.key = Some(key);
        }
        self.bucket.push(((oid.0 & SUFFIX_MASK) << POS_BITS) | pos);
        Ok(())
    }

    fn flush(&mut self) {
        if let Some(key) = self.key.take()
            && !self.bucket.is_empty()
        {
            let bucket = std::mem::take(&mut self.bucket);
            self.index.len += bucket.len();
            self.index.buckets.insert(key, bucket);
        }
    }

    pub fn finish(mut self) -> OidIndex {
        self.flush();
        self.index
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::collections::BTreeMap as Model;

    #[test]
    fn basic_operations() {
        let mut ix = OidIndex::new();
        assert_eq!(ix.max_oid(), None);
        assert_eq!(ix.insert(Oid(0), 199), Ok(None));
        assert_eq!(ix.insert(Oid(1), 332), Ok(None));
        assert_eq!(ix.insert(Oid(0), 500), Ok(Some(199)));
        assert_eq!(ix.get(Oid(0)), Some(500));
        assert_eq!(ix.get(Oid(2)), None);
        assert_eq!(ix.len(), 2);
        assert_eq!(ix.max_oid(), Some(Oid(1)));
        assert_eq!(ix.insert(Oid(5), MAX_POS), Err(PositionTooLarge(MAX_POS)));
        assert_eq!(ix.insert(Oid(u64::MAX), MAX_POS - 1), Ok(None));
        assert_eq!(ix.get(Oid(u64::MAX)), Some(MAX_POS - 1));
        assert_eq!(ix.min_key_from(Oid(2)), Some(Oid(u64::MAX)));
        assert_eq!(ix.remove(Oid(u64::MAX)), Some(MAX_POS - 1));
        assert_eq!(ix.min_key_from(Oid(2)), None);
    }

    #[test]
    fn dense_oids_cost_about_eight_bytes() {
        let mut ix = OidIndex::new();
        let n = 200_000u64;
        for i in 0..n {
            ix.insert(Oid(i), i * 100 + 4).unwrap();
        }
        ix.shrink_to_fit();
        let per = ix.memory_bytes() as f64 / n as f64;
        assert!(per <= 9.0, "{per} bytes per object");
    }

    #[test]
    fn sorted_builder_matches_inserts() {
        let mut b = SortedBuilder::new();
        let mut ix = OidIndex::new();
        for (i, oid) in [0u64, 1, 4095, 4096, 70_000, 1 << 40]
            .into_iter()
            .enumerate()
        {
            b.push(Oid(oid), i as u64 * 10).unwrap();
            ix.insert(Oid(oid), i as u64 * 10).unwrap();
        }
        assert!(b.push(Oid(5), 1).is_err());
        let built = b.finish();
        assert_eq!(built.len(), ix.len());
        assert_eq!(
            built.iter().collect::<Vec<_>>(),
            ix.iter().collect::<Vec<_>>()
        );
    }

    proptest! {
        #[test]
        fn behaves_like_a_map(ops in proptest::collection::vec(
            (0u64..20_000, 0u64..1_000_000, any::<bool>()), 0..400)) {
            check_against_model(ops)?;
        }

        /// Few oids: buckets are dense, then holed by removals (get's direct-index path
        /// and its binary-search fallback).
        #[test]
        fn behaves_like_a_map_when_dense(ops in proptest::collection::vec(
            (0u64..300, 0u64..1_000_000, proptest::bool::weighted(0.1)), 0..900)) {
            check_against_model(ops)?;
        }
    }

    fn check_against_model(ops: Vec<(u64, u64, bool)>) -> Result<(), TestCaseError> {
        {
            let mut ix = OidIndex::new();
            let mut model = Model::new();
            for (oid, pos, remove) in ops {
                if remove {
                    prop_assert_eq!(ix.remove(Oid(oid)), model.remove(&oid));
                } else {
                    prop_assert_eq!(ix.insert(Oid(oid), pos).unwrap(), model.insert(oid, pos));
                }
                prop_assert_eq!(ix.len(), model.len());
            }
            let got: Vec<(u64, u64)> = ix.iter().map(|(o, p)| (o.0, p)).collect();
            let want: Vec<(u64, u64)> = model.iter().map(|(&o, &p)| (o, p)).collect();
            prop_assert_eq!(got, want);
            prop_assert_eq!(ix.max_oid().map(|o| o.0), model.keys().next_back().copied());
            for probe in [0u64, 4095, 4096, 10_000] {
                prop_assert_eq!(
                    ix.min_key_from(Oid(probe)).map(|o| o.0),
                    model.range(probe..).next().map(|(&k, _)| k)
                );
            }
            for probe in model.keys().copied().chain([1, 299, 4097, 19_999]) {
                prop_assert_eq!(ix.get(Oid(probe)), model.get(&probe).copied());
            }
        }
        Ok(())
    }
}
