//! Where a sparse file's data and holes are, as far as its sender said: the answer to one
//! `Seek` (SPEC §11.7) covers a run of the file's extents, so a reader walking them with
//! `SEEK_DATA` / `SEEK_HOLE` by turns (`cp`, `tar --sparse`) pays one round trip for up to
//! [`MAX_EDGES`] of them instead of one per call.

use crate::fetch::SeekAnswer;
use crate::proto::MAX_EDGES;

/// Part of a file, `from..edges.last()`, in spans of data and hole by turns: the first span,
/// `from..edges[0]` (empty when they are equal), is data if `first_data`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Extents {
    from: u64,
    first_data: bool,
    edges: Vec<u64>,
}

impl Extents {
    /// What the answer to a seek from `offset` (`hole`: for the next hole) in a file of `size`
    /// bytes says, checked: `None` when its position is out of range. Edges that are not
    /// increasing after the position, above `size` or too many are dropped, keeping what the
    /// position alone says (the span before it is of the other kind).
    pub fn from_answer(offset: u64, hole: bool, size: u64, answer: &SeekAnswer) -> Option<Self> {
        let position = answer.position;
        if !(offset..=size).contains(&position) {
            return None;
        }
        let mut edges = vec![position];
        let well_made = answer.edges.len() <= MAX_EDGES
            && answer
                .edges
                .iter()
                .try_fold(position, |prev, &e| (e > prev && e <= size).then_some(e))
                .is_some();
        if well_made {
            edges.extend_from_slice(&answer.edges);
        }
        Some(Extents {
            from: offset,
            // Before the next hole lies data; before the next data, a hole.
            first_data: hole,
            edges,
        })
    }

    /// `lseek`'s answer for `SEEK_DATA` (`hole` false) or `SEEK_HOLE` from `offset`, if these
    /// extents tell: `offset` itself when it lies in a span of the kind sought, else where that
    /// span ends (the size of the file for data means none: `ENXIO`).
    pub fn answer(&self, offset: u64, hole: bool) -> Option<u64> {
        let end = *self.edges.last()?;
        if offset < self.from || offset >= end {
            return None;
        }
        let i = self.edges.partition_point(|&e| e <= offset);
        let data = self.first_data ^ (i % 2 == 1);
        Some(if data != hole { offset } else { self.edges[i] })
    }

    /// The data spans these extents tell of from `offset` on (the first cut at `offset`).
    pub fn data_from(&self, offset: u64) -> impl Iterator<Item = std::ops::Range<u64>> + '_ {
        let starts = std::iter::once(self.from).chain(self.edges.iter().copied());
        starts
            .zip(self.edges.iter().copied())
            .enumerate()
            .filter(move |&(i, (_, end))| self.first_data ^ (i % 2 == 1) && end > offset)
            .map(move |(_, (start, end))| start.max(offset)..end)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn answer(position: u64, edges: &[u64]) -> SeekAnswer {
        SeekAnswer {
            position,
            edges: edges.to_vec(),
        }
    }

    fn spans(e: &Extents, from: u64) -> Vec<(u64, u64)> {
        e.data_from(from).map(|r| (r.start, r.end)).collect()
    }

    /// A 100-byte file: hole 0..10, data 10..20, hole 20..30, data 30..40, hole to the end.
    #[test]
    fn one_answer_tells_the_extents_that_follow() {
        let e = Extents::from_answer(0, false, 100, &answer(10, &[20, 30, 40, 100])).unwrap();
        let data = |x| e.answer(x, false);
        let hole = |x| e.answer(x, true);
        assert_eq!((data(0), hole(0)), (Some(10), Some(0)));
        assert_eq!((data(10), hole(10)), (Some(10), Some(20)));
        assert_eq!((data(19), hole(19)), (Some(19), Some(20)));
        assert_eq!((data(20), hole(20)), (Some(30), Some(20)));
        assert_eq!((data(35), hole(35)), (Some(35), Some(40)));
        // No data after 40: the size, which the caller says as ENXIO.
        assert_eq!((data(40), hole(99)), (Some(100), Some(99)));
        assert_eq!(data(100), None);
        assert_eq!(spans(&e, 15), [(15, 20), (30, 40)]);
        // Seeking a hole from 12: data before the position.
        let e = Extents::from_answer(12, true, 100, &answer(20, &[30])).unwrap();
        assert_eq!(
            (e.answer(12, false), e.answer(12, true)),
            (Some(12), Some(20))
        );
        assert_eq!(
            (e.answer(25, false), e.answer(25, true)),
            (Some(30), Some(25))
        );
        assert_eq!(spans(&e, 0), [(12, 20)]);
        // Past what was said, or before it: ask again.
        assert_eq!((e.answer(30, true), e.answer(11, true)), (None, None));
        // The position at the offset: an empty first span.
        let e = Extents::from_answer(10, false, 100, &answer(10, &[20])).unwrap();
        assert_eq!(
            (e.answer(10, false), e.answer(10, true)),
            (Some(10), Some(20))
        );
    }

    #[test]
    fn a_lying_answer_says_no_more_than_its_position() {
        assert_eq!(Extents::from_answer(10, false, 100, &answer(9, &[])), None);
        assert_eq!(
            Extents::from_answer(10, false, 100, &answer(101, &[])),
            None
        );
        let too_many: Vec<u64> = (21..21 + MAX_EDGES as u64 + 1).collect();
        for edges in [&[30, 30][..], &[30, 25], &[101], &[20], &too_many] {
            let e = Extents::from_answer(10, false, 100, &answer(20, edges)).unwrap();
            assert_eq!(e.answer(15, false), Some(20), "{edges:?}");
            assert_eq!(e.answer(20, true), None, "{edges:?}");
        }
    }
}
