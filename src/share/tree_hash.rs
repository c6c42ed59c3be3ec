//! A file's BLAKE3 hash put together from the reads that serve it, so a receive reads each
//! file once on the sender instead of twice (once to send, once more to hash it).
//!
//! BLAKE3 is a tree of 1 KiB chunks whose left subtrees hold a power of two of them. A read of
//! `MAX_READ` (1 MiB, 1024 chunks) at a multiple of `MAX_READ` is one such subtree, whatever
//! the file's size, so its chaining value can be computed alone (`blake3::hazmat`) in whatever
//! order the reads complete; [`TreeHash`] merges them in order into the root hash. Pure and
//! bounded: at most [`LATER`] subtrees wait for the ones before them.

use std::collections::BTreeMap;

use blake3::hazmat::{
    merge_subtrees_non_root, merge_subtrees_root, ChainingValue, HasherExt, Mode,
};

use crate::proto::MAX_READ;

/// Bytes of one subtree: one full read.
pub(crate) const SUBTREE: u64 = MAX_READ as u64;
/// Subtrees kept while one before them is missing (32 bytes each); more are dropped, and the
/// hash is then computed by reading the file.
const LATER: usize = 1024;

/// The subtrees of one file hashed so far.
#[derive(Debug)]
pub(crate) struct TreeHash {
    /// Subtrees in the file.
    count: u64,
    /// Subtrees `0..next` are merged into `stack`.
    next: u64,
    /// Chaining values of the complete left subtrees of `0..next`, largest first (BLAKE3's
    /// incremental stack: one per set bit of `next`).
    stack: Vec<ChainingValue>,
    /// Subtrees after `next`, waiting for the ones before them.
    later: BTreeMap<u64, ChainingValue>,
}

impl TreeHash {
    /// For a file of `size` bytes; `None` if one read covers it (that read hashes it whole).
    pub(crate) fn new(size: u64) -> Option<Self> {
        (size > SUBTREE).then(|| TreeHash {
            count: size.div_ceil(SUBTREE),
            next: 0,
            stack: Vec::new(),
            later: BTreeMap::new(),
        })
    }

    /// The subtree that `data`, read at `offset` of a file of `size` bytes, is, with its
    /// chaining value; `None` if it is not exactly one (unaligned, short, or the whole file).
    pub(crate) fn subtree(size: u64, offset: u64, data: &[u8]) -> Option<(u64, ChainingValue)> {
        let whole = SUBTREE.min(size.checked_sub(offset)?);
        if size <= SUBTREE
            || whole == 0
            || !offset.is_multiple_of(SUBTREE)
            || data.len() as u64 != whole
        {
            return None;
        }
        let mut h = blake3::Hasher::new();
        h.set_input_offset(offset);
        h.update(data);
        Some((offset / SUBTREE, h.finalize_non_root()))
    }

    /// Adds subtree `index`; returns the file's hash once every subtree is in.
    pub(crate) fn add(&mut self, index: u64, cv: ChainingValue) -> Option<[u8; 32]> {
        if index < self.next || index >= self.count {
            return None;
        }
        if index > self.next {
            if self.later.len() < LATER {
                self.later.insert(index, cv);
            }
            return None;
        }
        let mut cv = cv;
        loop {
            if self.next + 1 == self.count {
                return Some(self.root(cv));
            }
            self.push(cv);
            match self.later.remove(&self.next) {
                Some(c) => cv = c,
                None => return None,
            }
        }
    }

    /// Merges subtree `next` (not the last) into the stack: each complete pair becomes its
    /// parent, which is never the root since more follows.
    fn push(&mut self, mut cv: ChainingValue) {
        self.next += 1;
        let mut total = self.next;
        while total & 1 == 0 {
            let left = self.stack.pop().expect("one per set bit");
            cv = merge_subtrees_non_root(&left, &cv, Mode::Hash);
            total >>= 1;
        }
        self.stack.push(cv);
    }

    /// The root, from the last subtree's chaining value and the stack.
    fn root(&mut self, mut cv: ChainingValue) -> [u8; 32] {
        self.next = self.count;
        self.later.clear();
        while self.stack.len() > 1 {
            let left = self.stack.pop().expect("checked");
            cv = merge_subtrees_non_root(&left, &cv, Mode::Hash);
        }
        let left = self.stack.pop().expect("two subtrees at least");
        *merge_subtrees_root(&left, &cv, Mode::Hash).as_bytes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn pieces(data: &[u8]) -> Vec<(u64, ChainingValue)> {
        let size = data.len() as u64;
        (0..size.div_ceil(SUBTREE))
            .map(|i| {
                let off = i * SUBTREE;
                let end = (off + SUBTREE).min(size);
                TreeHash::subtree(size, off, &data[off as usize..end as usize]).unwrap()
            })
            .collect()
    }

    fn data(len: usize, seed: u8) -> Vec<u8> {
        (0..len)
            .map(|i| (i as u8).wrapping_mul(31) ^ seed ^ (i >> 11) as u8)
            .collect()
    }

    #[test]
    fn in_order_equals_blake3_at_the_edges_of_the_tree() {
        let s = SUBTREE as usize;
        for len in [
            s + 1,
            2 * s,
            2 * s + 1,
            3 * s,
            4 * s,
            4 * s + 7,
            5 * s - 1,
            8 * s,
            9 * s + 3,
        ] {
            let d = data(len, 1);
            let mut t = TreeHash::new(len as u64).unwrap();
            let ps = pieces(&d);
            let n = ps.len();
            for (k, (i, cv)) in ps.into_iter().enumerate() {
                let got = t.add(i, cv);
                assert_eq!(got.is_some(), k + 1 == n, "len {len}, piece {k}");
                if let Some(h) = got {
                    assert_eq!(h, *blake3::hash(&d).as_bytes(), "len {len}");
                }
            }
        }
    }

    #[test]
    fn what_is_not_one_subtree_is_refused() {
        let s = SUBTREE as usize;
        let d = data(3 * s, 2);
        let size = d.len() as u64;
        // Unaligned, short, past the end, or a file that one read covers.
        assert!(TreeHash::subtree(size, 4096, &d[4096..4096 + s]).is_none());
        assert!(TreeHash::subtree(size, 0, &d[..s - 1]).is_none());
        assert!(TreeHash::subtree(size, 4 * SUBTREE, &[]).is_none());
        assert!(TreeHash::subtree(size, size, &[]).is_none());
        assert!(TreeHash::subtree(s as u64, 0, &d[..s]).is_none());
        assert!(TreeHash::new(SUBTREE).is_none());
        // Out of range and repeated subtrees change nothing.
        let mut t = TreeHash::new(size).unwrap();
        let ps = pieces(&d);
        assert_eq!(t.add(7, ps[0].1), None);
        assert_eq!(t.add(0, ps[0].1), None);
        assert_eq!(t.add(0, ps[0].1), None);
        assert_eq!(t.add(1, ps[1].1), None);
        assert_eq!(t.add(2, ps[2].1), Some(*blake3::hash(&d).as_bytes()));
        assert_eq!(t.add(2, ps[2].1), None);
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(24))]
        /// Any order of arrival gives BLAKE3 of the whole file, once, with the last piece in.
        #[test]
        fn any_order_equals_blake3(extra in 1usize..(6 * SUBTREE as usize), seed: u8,
                                   order in proptest::collection::vec(any::<u32>(), 7)) {
            let len = SUBTREE as usize + extra;
            let d = data(len, seed);
            let mut ps = pieces(&d);
            for (k, r) in order.iter().enumerate() {
                let n = ps.len();
                ps.swap(k % n, *r as usize % n);
            }
            let mut t = TreeHash::new(len as u64).unwrap();
            let n = ps.len();
            let mut done = None;
            for (k, (i, cv)) in ps.into_iter().enumerate() {
                if let Some(h) = t.add(i, cv) {
                    prop_assert!(done.is_none());
                    prop_assert_eq!(k + 1, n);
                    done = Some(h);
                }
            }
            prop_assert_eq!(done, Some(*blake3::hash(&d).as_bytes()));
        }
    }
}
