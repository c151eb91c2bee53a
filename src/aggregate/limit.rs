//! Cardinality limits: keep the top N series of a metric, fold the rest.

/// The outcome of limiting one metric's series.
#[derive(Debug, Clone, PartialEq)]
pub struct Limited<T> {
    /// Kept items, largest |value| first.
    pub kept: Vec<(T, i64)>,
    /// Sum of the folded items' values, if any were folded.
    pub other: Option<i64>,
    /// How many items were folded.
    pub dropped: usize,
}

/// Keeps the `n` items with the largest absolute value (ties broken by key order, so
/// the choice is deterministic) and sums the rest into `other`, so that the kept
/// values plus `other` still add up to the total.
pub fn top_n<T: Ord>(mut items: Vec<(T, i64)>, n: usize) -> Limited<T> {
    items.sort_by(|a, b| {
        b.1.unsigned_abs()
            .cmp(&a.1.unsigned_abs())
            .then_with(|| a.0.cmp(&b.0))
    });
    if items.len() <= n {
        return Limited {
            kept: items,
            other: None,
            dropped: 0,
        };
    }
    let folded = items.split_off(n);
    Limited {
        dropped: folded.len(),
        other: Some(folded.iter().fold(0i64, |acc, (_, v)| acc.wrapping_add(*v))),
        kept: items,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_all_when_under_limit() {
        let l = top_n(vec![("a", 1), ("b", 5)], 2);
        assert_eq!(l.kept, [("b", 5), ("a", 1)]);
        assert_eq!((l.other, l.dropped), (None, 0));
    }

    #[test]
    fn folds_the_rest_and_preserves_the_sum() {
        let items = vec![("a", 1), ("b", -9), ("c", 3), ("d", 2), ("e", 2)];
        let total: i64 = items.iter().map(|x| x.1).sum();
        let l = top_n(items, 2);
        assert_eq!(l.kept, [("b", -9), ("c", 3)]);
        assert_eq!(l.dropped, 3);
        assert_eq!(
            l.kept.iter().map(|x| x.1).sum::<i64>() + l.other.unwrap(),
            total
        );
    }

    #[test]
    fn ties_break_by_key() {
        let l = top_n(vec![("z", 1), ("y", 1), ("x", 1)], 1);
        assert_eq!(l.kept, [("x", 1)]);
    }
}
