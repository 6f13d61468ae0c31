//! The exemplar memory's selection: FACIL's default `RandomExemplarsSelector`, a uniform
//! random choice of a fixed number of samples per class.

use retain_stream::seed::SplitMix64;

/// Up to `per_class` of `indices` for each class of `classes`, drawn uniformly without
/// replacement by a generator seeded with `seed`: for every class in `classes`' order, that
/// class's chosen indices in ascending order. `labels[i]` is the class of `indices[i]`. A
/// class with fewer than `per_class` samples keeps all of them (FACIL asserts there are
/// enough); a class without samples keeps none.
pub fn select_per_class(
    indices: &[i64],
    labels: &[i64],
    classes: &[i64],
    per_class: usize,
    seed: u64,
) -> Vec<i64> {
    let mut rng = SplitMix64::new(seed);
    let mut selected = Vec::with_capacity(per_class * classes.len());
    for &class in classes {
        let mut members: Vec<i64> = indices
            .iter()
            .zip(labels)
            .filter(|&(_, &label)| label == class)
            .map(|(&index, _)| index)
            .collect();
        if members.len() > per_class {
            rng.shuffle(&mut members);
            members.truncate(per_class);
        }
        members.sort_unstable();
        selected.extend(members);
    }
    selected
}
