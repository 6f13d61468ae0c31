//! Continual-learning metrics computed from a stored accuracy matrix.
//!
//! The matrix is the single source of truth: every run stores it raw, and every metric is
//! derived from it under a *named* convention, because the published frameworks disagree on
//! the details (GEM's code divides BWT by `T` where the paper divides by `T − 1`; Avalanche's
//! forgetting subtracts from `R[j,j]` where Chaudhry et al. take the maximum over earlier rows).
//!
//! Indexing follows the papers: `R[i,j]` is the accuracy on task `j` after training task `i`,
//! both 1-based (`1..=T`), and `b_j` is the accuracy of the untrained model on task `j`
//! (row 0 of the matrix). This crate depends on neither tch nor polars.

use serde::{Deserialize, Serialize};

mod anytime;

pub use anytime::{
    AnytimePoint, TaskCurve, average_anytime_accuracy, learning_curve_area, task_curves,
};

/// Errors from building or reading an accuracy matrix.
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum MetricsError {
    #[error("an accuracy matrix needs at least one task")]
    NoTasks,
    #[error("row {row} of the accuracy matrix has {found} entries, expected {expected}")]
    RaggedRow {
        row: usize,
        found: usize,
        expected: usize,
    },
    #[error("the accuracy matrix has {found} rows, expected {expected} (untrained + one per task)")]
    WrongRowCount { found: usize, expected: usize },
    #[error("accuracy {value} at row {row}, task {task} is outside [0, 1]")]
    OutOfRange { row: usize, task: usize, value: f64 },
}

/// Accuracies of one run in one read-out scenario.
///
/// Row `0` holds the untrained model (`b_j`); row `i` (`1..=T`) holds the accuracies after
/// training task `i`. Column `j` (0-based in storage, 1-based in the accessors below) is the
/// evaluated task. Every task is evaluated after every training task, future ones included,
/// which FWT needs.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AccuracyMatrix {
    tasks: usize,
    /// `(tasks + 1) × tasks`, row-major.
    values: Vec<f64>,
}

impl AccuracyMatrix {
    /// Builds a matrix from rows: `rows[0]` is the untrained model, `rows[i]` follows task `i`.
    pub fn from_rows(rows: &[Vec<f64>]) -> Result<Self, MetricsError> {
        let tasks = rows.first().map_or(0, Vec::len);
        if tasks == 0 {
            return Err(MetricsError::NoTasks);
        }
        if rows.len() != tasks + 1 {
            return Err(MetricsError::WrongRowCount {
                found: rows.len(),
                expected: tasks + 1,
            });
        }
        let mut values = Vec::with_capacity(rows.len() * tasks);
        for (row, entries) in rows.iter().enumerate() {
            if entries.len() != tasks {
                return Err(MetricsError::RaggedRow {
                    row,
                    found: entries.len(),
                    expected: tasks,
                });
            }
            for (task, &value) in entries.iter().enumerate() {
                if !(0.0..=1.0).contains(&value) {
                    return Err(MetricsError::OutOfRange { row, task, value });
                }
                values.push(value);
            }
        }
        Ok(Self { tasks, values })
    }

    /// Number of tasks `T`.
    pub fn tasks(&self) -> usize {
        self.tasks
    }

    /// `R[i,j]`, 1-based: accuracy on task `j` after training task `i`.
    pub fn r(&self, i: usize, j: usize) -> f64 {
        assert!((1..=self.tasks).contains(&i) && (1..=self.tasks).contains(&j));
        self.values[i * self.tasks + (j - 1)]
    }

    /// `b_j`, 1-based: accuracy of the untrained model on task `j`.
    pub fn untrained(&self, j: usize) -> f64 {
        assert!((1..=self.tasks).contains(&j));
        self.values[j - 1]
    }

    /// Row `i` (0 = untrained) as a slice over tasks.
    pub fn row(&self, i: usize) -> &[f64] {
        &self.values[i * self.tasks..(i + 1) * self.tasks]
    }

    /// ACC: mean final accuracy, `(1/T) Σ_j R[T,j]` (Lopez-Paz & Ranzato 2017).
    pub fn acc(&self) -> f64 {
        let t = self.tasks;
        mean((1..=t).map(|j| self.r(t, j)))
    }

    /// BWT: mean change on earlier tasks between learning them and the end,
    /// `Σ_{j<T} (R[T,j] − R[j,j])` divided as the convention says. `None` for one task.
    pub fn bwt(&self, convention: BwtConvention) -> Option<f64> {
        let t = self.tasks;
        if t < 2 {
            return None;
        }
        let sum: f64 = (1..t).map(|j| self.r(t, j) - self.r(j, j)).sum();
        Some(sum / convention.divisor(t))
    }

    /// FWT: how much earlier training helps a task before it is seen,
    /// `Σ_{j≥2} (R[j−1,j] − b_j)` divided as the convention says. `None` for one task.
    pub fn fwt(&self, convention: BwtConvention) -> Option<f64> {
        let t = self.tasks;
        if t < 2 {
            return None;
        }
        let sum: f64 = (2..=t).map(|j| self.r(j - 1, j) - self.untrained(j)).sum();
        Some(sum / convention.divisor(t))
    }

    /// Average forgetting after training task `k` (1-based, `k ≥ 2`) under a convention.
    pub fn forgetting_at(&self, k: usize, convention: ForgettingConvention) -> Option<f64> {
        if k < 2 || k > self.tasks {
            return None;
        }
        let per_task = (1..k).map(|j| {
            let reference = match convention {
                ForgettingConvention::MaxPrevious => (1..k)
                    .map(|l| self.r(l, j))
                    .fold(f64::NEG_INFINITY, f64::max),
                ForgettingConvention::WhenLearned => self.r(j, j),
                ForgettingConvention::MaxIncludingCurrent => (1..=k)
                    .map(|l| self.r(l, j))
                    .fold(f64::NEG_INFINITY, f64::max),
            };
            reference - self.r(k, j)
        });
        Some(mean(per_task))
    }

    /// Final forgetting `F_T` under a convention. `None` for one task.
    pub fn forgetting(&self, convention: ForgettingConvention) -> Option<f64> {
        self.forgetting_at(self.tasks, convention)
    }

    /// Average incremental accuracy, `(1/T) Σ_t A_t` with `A_t = mean_{j≤t} R[t,j]`: every
    /// task seen so far counts equally in `A_t`. That is the iCaRL / PyCIL value (the top-1
    /// accuracy over all classes seen) when the tasks have equally many test samples; for
    /// tasks of unequal sizes (B50-Inc10) see
    /// [`AccuracyMatrix::sample_weighted_average_incremental_accuracy`].
    pub fn average_incremental_accuracy(&self) -> f64 {
        let t = self.tasks;
        mean((1..=t).map(|i| mean((1..=i).map(|j| self.r(i, j)))))
    }

    /// Average incremental accuracy with `A_t` the accuracy over every test sample of the
    /// tasks seen so far, `A_t = Σ_{j≤t} n_j R[t,j] / Σ_{j≤t} n_j` (`n_j` = `samples[j − 1]`,
    /// task `j`'s test samples), then `(1/T) Σ_t A_t`: PyCIL's "average accuracy", the mean
    /// over steps of the top-1 accuracy on all classes seen, which weights a task by its
    /// samples (a first task of 50 classes counts five times a task of 10). Equal to
    /// [`AccuracyMatrix::average_incremental_accuracy`] when every `n_j` is the same. `None`
    /// unless `samples` has one positive count per task.
    pub fn sample_weighted_average_incremental_accuracy(&self, samples: &[u64]) -> Option<f64> {
        if samples.len() != self.tasks || samples.contains(&0) {
            return None;
        }
        let seen = |i: usize| {
            let (correct, total) = (1..=i).fold((0.0, 0.0), |(c, n), j| {
                let n_j = samples[j - 1] as f64;
                (c + n_j * self.r(i, j), n + n_j)
            });
            correct / total
        };
        Some(mean((1..=self.tasks).map(seen)))
    }

    /// The diagonal `R[k,k]`, `k = 1..=T`: each task's accuracy right after learning it.
    /// For a joint model (trained on tasks `1..=k` at step `k`) this is the `a*_k` that
    /// [`AccuracyMatrix::intransigence`] compares against.
    pub fn diagonal(&self) -> Vec<f64> {
        (1..=self.tasks).map(|k| self.r(k, k)).collect()
    }

    /// Intransigence `I_k = a*_k − R[k,k]` against the accuracies `a*_k` of a joint model
    /// trained on tasks `1..=k` (Chaudhry et al. 2018), **averaged over `k = 1..=T`**: retain's
    /// `intransigence` column. Chaudhry et al. report the intransigence at the end of the
    /// stream, `I_T`: [`AccuracyMatrix::final_intransigence`]. `a*_k` is the diagonal of a
    /// `joint` run (from scratch on tasks `1..=k`; not `joint-cumulative`, which is no joint
    /// model of any prefix).
    pub fn intransigence(&self, joint_diagonal: &[f64]) -> Option<f64> {
        if joint_diagonal.len() != self.tasks {
            return None;
        }
        Some(mean(
            (1..=self.tasks).map(|k| joint_diagonal[k - 1] - self.r(k, k)),
        ))
    }

    /// The intransigence of the last task, `I_T = a*_T − R[T,T]` (Chaudhry et al. 2018's
    /// reported value); `None` when `joint_diagonal` is not of length `T`.
    pub fn final_intransigence(&self, joint_diagonal: &[f64]) -> Option<f64> {
        (joint_diagonal.len() == self.tasks && self.tasks > 0)
            .then(|| joint_diagonal[self.tasks - 1] - self.r(self.tasks, self.tasks))
    }

    /// Every headline metric under the default (paper) conventions.
    pub fn summary(&self) -> Summary {
        Summary {
            acc: self.acc(),
            bwt: self.bwt(BwtConvention::Paper),
            fwt: self.fwt(BwtConvention::Paper),
            forgetting: self.forgetting(ForgettingConvention::MaxPrevious),
            average_incremental_accuracy: self.average_incremental_accuracy(),
        }
    }
}

/// How BWT and FWT are normalised.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum BwtConvention {
    /// Divide by `T − 1`, the number of terms (the GEM paper's formula). The default.
    Paper,
    /// Divide by `T`, as GEM's public code does (values are `(T−1)/T` of the paper's).
    GemCode,
}

impl BwtConvention {
    fn divisor(self, tasks: usize) -> f64 {
        match self {
            Self::Paper => (tasks - 1) as f64,
            Self::GemCode => tasks as f64,
        }
    }
}

/// Which earlier accuracy forgetting is measured from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ForgettingConvention {
    /// `max_{l<k} R[l,j] − R[k,j]` (Chaudhry et al. 2018, RWalk). The default.
    MaxPrevious,
    /// `R[j,j] − R[k,j]`: from the accuracy right after learning the task (Avalanche).
    WhenLearned,
    /// `max_{l≤k} R[l,j] − R[k,j]`: the maximum includes the current row (Mammoth).
    MaxIncludingCurrent,
}

/// Headline metrics of one matrix under the default conventions.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Summary {
    pub acc: f64,
    pub bwt: Option<f64>,
    pub fwt: Option<f64>,
    pub forgetting: Option<f64>,
    pub average_incremental_accuracy: f64,
}

/// Mean and spread of one metric over repeated runs (seeds).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct MeanStd {
    pub mean: f64,
    /// Sample standard deviation (divided by `n − 1`, as numpy's `std(ddof=1)` and pandas'
    /// default): the seeds are a sample of the runs one could make. `None` for one value.
    pub std: Option<f64>,
    pub n: usize,
}

impl MeanStd {
    /// Of `values`; `None` when there are none.
    pub fn of(values: &[f64]) -> Option<Self> {
        let n = values.len();
        if n == 0 {
            return None;
        }
        let mean = values.iter().sum::<f64>() / n as f64;
        let std = (n > 1).then(|| {
            let ss: f64 = values.iter().map(|v| (v - mean).powi(2)).sum();
            (ss / (n - 1) as f64).sqrt()
        });
        Some(Self { mean, std, n })
    }
}

/// The element-wise mean of matrices with the same task count (for plotting the typical
/// run of a configuration over its seeds). `None` for no matrices or mismatched task counts.
pub fn mean_matrix(matrices: &[AccuracyMatrix]) -> Option<AccuracyMatrix> {
    let first = matrices.first()?;
    if matrices.iter().any(|m| m.tasks != first.tasks) {
        return None;
    }
    let n = matrices.len() as f64;
    let values = (0..first.values.len())
        .map(|i| matrices.iter().map(|m| m.values[i]).sum::<f64>() / n)
        .collect();
    Some(AccuracyMatrix {
        tasks: first.tasks,
        values,
    })
}

fn mean(values: impl Iterator<Item = f64>) -> f64 {
    let (sum, count) = values.fold((0.0, 0usize), |(s, n), v| (s + v, n + 1));
    sum / count as f64
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A 3-task matrix whose metrics were computed by hand below.
    ///
    /// ```text
    ///            task1 task2 task3
    /// untrained   0.10  0.20  0.30
    /// after 1     0.90  0.40  0.10
    /// after 2     0.60  0.80  0.50
    /// after 3     0.50  0.70  0.90
    /// ```
    fn example() -> AccuracyMatrix {
        AccuracyMatrix::from_rows(&[
            vec![0.1, 0.2, 0.3],
            vec![0.9, 0.4, 0.1],
            vec![0.6, 0.8, 0.5],
            vec![0.5, 0.7, 0.9],
        ])
        .unwrap()
    }

    fn close(a: f64, b: f64) {
        assert!((a - b).abs() < 1e-12, "{a} != {b}");
    }

    #[test]
    fn acc_is_mean_of_last_row() {
        // (0.5 + 0.7 + 0.9) / 3
        close(example().acc(), 0.7);
    }

    #[test]
    fn bwt_under_both_conventions() {
        // (0.5 − 0.9) + (0.7 − 0.8) = −0.5
        close(example().bwt(BwtConvention::Paper).unwrap(), -0.25);
        close(example().bwt(BwtConvention::GemCode).unwrap(), -0.5 / 3.0);
    }

    #[test]
    fn fwt_uses_untrained_accuracy() {
        // (R[1,2] − b2) + (R[2,3] − b3) = (0.4 − 0.2) + (0.5 − 0.3) = 0.4
        close(example().fwt(BwtConvention::Paper).unwrap(), 0.2);
        close(example().fwt(BwtConvention::GemCode).unwrap(), 0.4 / 3.0);
    }

    #[test]
    fn forgetting_conventions_differ_where_the_papers_do() {
        let m = example();
        // Max over rows 1..2: task1 max(0.9, 0.6) − 0.5 = 0.4; task2 max(0.4, 0.8) − 0.7 = 0.1.
        close(
            m.forgetting(ForgettingConvention::MaxPrevious).unwrap(),
            0.25,
        );
        // From the diagonal: (0.9 − 0.5) + (0.8 − 0.7) → same here.
        close(
            m.forgetting(ForgettingConvention::WhenLearned).unwrap(),
            0.25,
        );
        // After task 2 only task 1 counts: max(0.9) − 0.6 = 0.3.
        close(
            m.forgetting_at(2, ForgettingConvention::MaxPrevious)
                .unwrap(),
            0.3,
        );
    }

    #[test]
    fn forgetting_max_previous_sees_a_later_peak() {
        // Task 1 peaks after task 2 (0.95), not when learned (0.8).
        let m = AccuracyMatrix::from_rows(&[
            vec![0.0, 0.0, 0.0],
            vec![0.8, 0.0, 0.0],
            vec![0.95, 0.9, 0.0],
            vec![0.5, 0.9, 0.9],
        ])
        .unwrap();
        // MaxPrevious: task1 0.95 − 0.5 = 0.45, task2 0.9 − 0.9 = 0 → 0.225.
        close(
            m.forgetting(ForgettingConvention::MaxPrevious).unwrap(),
            0.225,
        );
        // WhenLearned: task1 0.8 − 0.5 = 0.3, task2 0 → 0.15.
        close(
            m.forgetting(ForgettingConvention::WhenLearned).unwrap(),
            0.15,
        );
        // Including the current row changes nothing for a monotone drop...
        close(
            m.forgetting(ForgettingConvention::MaxIncludingCurrent)
                .unwrap(),
            0.225,
        );
        // ...but never lets forgetting go negative when a task improves.
        let improving =
            AccuracyMatrix::from_rows(&[vec![0.0, 0.0], vec![0.5, 0.0], vec![0.9, 0.9]]).unwrap();
        close(
            improving
                .forgetting(ForgettingConvention::MaxPrevious)
                .unwrap(),
            -0.4,
        );
        close(
            improving
                .forgetting(ForgettingConvention::MaxIncludingCurrent)
                .unwrap(),
            0.0,
        );
    }

    #[test]
    fn average_incremental_accuracy_by_hand() {
        // A1 = 0.9, A2 = (0.6 + 0.8)/2 = 0.7, A3 = 0.7 → 2.3 / 3
        close(example().average_incremental_accuracy(), 2.3 / 3.0);
    }

    #[test]
    fn sample_weighted_average_incremental_accuracy_by_hand() {
        // Tasks of 100, 300 and 100 test samples:
        // A1 = 0.9, A2 = (100·0.6 + 300·0.8)/400 = 0.75,
        // A3 = (100·0.5 + 300·0.7 + 100·0.9)/500 = 0.7 → 2.35 / 3
        let m = example();
        close(
            m.sample_weighted_average_incremental_accuracy(&[100, 300, 100])
                .unwrap(),
            2.35 / 3.0,
        );
        // Equal sizes: the equal-weight value.
        close(
            m.sample_weighted_average_incremental_accuracy(&[50, 50, 50])
                .unwrap(),
            m.average_incremental_accuracy(),
        );
        assert_eq!(
            m.sample_weighted_average_incremental_accuracy(&[1, 2]),
            None
        );
        assert_eq!(
            m.sample_weighted_average_incremental_accuracy(&[1, 0, 2]),
            None
        );
    }

    #[test]
    fn intransigence_against_joint() {
        // joint diag (1.0, 0.9, 0.95) minus (0.9, 0.8, 0.9) = (0.1, 0.1, 0.05)
        close(
            example().intransigence(&[1.0, 0.9, 0.95]).unwrap(),
            0.25 / 3.0,
        );
        assert_eq!(example().intransigence(&[1.0]), None);
    }

    #[test]
    fn intransigence_against_a_joint_matrix_diagonal() {
        // A joint run whose diagonal is (0.95, 0.9, 0.92).
        let joint = AccuracyMatrix::from_rows(&[
            vec![0.1, 0.1, 0.1],
            vec![0.95, 0.2, 0.1],
            vec![0.9, 0.9, 0.3],
            vec![0.9, 0.85, 0.92],
        ])
        .unwrap();
        assert_eq!(joint.diagonal(), [0.95, 0.9, 0.92]);
        // (0.95 − 0.9) + (0.9 − 0.8) + (0.92 − 0.9) = 0.17 over 3 tasks.
        close(
            example().intransigence(&joint.diagonal()).unwrap(),
            0.17 / 3.0,
        );
        // Against itself a model is never intransigent.
        close(joint.intransigence(&joint.diagonal()).unwrap(), 0.0);
        // I_T alone: 0.92 − 0.9.
        close(
            example().final_intransigence(&joint.diagonal()).unwrap(),
            0.92 - 0.9,
        );
        assert_eq!(example().final_intransigence(&[0.9]), None);
    }

    #[test]
    fn mean_and_sample_std_by_hand() {
        // mean 0.5; deviations ±0.1, 0 → ss = 0.02, / (3 − 1) = 0.01 → std 0.1.
        let s = MeanStd::of(&[0.4, 0.5, 0.6]).unwrap();
        close(s.mean, 0.5);
        close(s.std.unwrap(), 0.1);
        assert_eq!(s.n, 3);
        // Two seeds: 0.2 and 0.8 → mean 0.5, std sqrt(2 · 0.09 / 1) = 0.424264...
        let two = MeanStd::of(&[0.2, 0.8]).unwrap();
        close(two.std.unwrap(), 0.18f64.sqrt());
        let one = MeanStd::of(&[0.7]).unwrap();
        assert_eq!((one.mean, one.std, one.n), (0.7, None, 1));
        assert_eq!(MeanStd::of(&[]), None);
    }

    #[test]
    fn mean_matrix_is_element_wise() {
        let a =
            AccuracyMatrix::from_rows(&[vec![0.0, 0.2], vec![1.0, 0.4], vec![0.5, 0.5]]).unwrap();
        let b =
            AccuracyMatrix::from_rows(&[vec![0.2, 0.2], vec![0.8, 0.0], vec![0.5, 1.0]]).unwrap();
        let m = mean_matrix(&[a.clone(), b]).unwrap();
        for (got, want) in m
            .row(0)
            .iter()
            .chain(m.row(1))
            .chain(m.row(2))
            .zip([0.1, 0.2, 0.9, 0.2, 0.5, 0.75])
        {
            close(*got, want);
        }
        let three = AccuracyMatrix::from_rows(&[vec![0.0], vec![1.0]]).unwrap();
        assert_eq!(mean_matrix(&[a, three]), None);
        assert_eq!(mean_matrix(&[]), None);
    }

    #[test]
    fn single_task_has_no_transfer_metrics() {
        let m = AccuracyMatrix::from_rows(&[vec![0.1], vec![0.9]]).unwrap();
        assert_eq!(m.bwt(BwtConvention::Paper), None);
        assert_eq!(m.fwt(BwtConvention::Paper), None);
        assert_eq!(m.forgetting(ForgettingConvention::MaxPrevious), None);
        close(m.acc(), 0.9);
    }

    #[test]
    fn malformed_matrices_are_rejected() {
        assert_eq!(AccuracyMatrix::from_rows(&[]), Err(MetricsError::NoTasks));
        assert_eq!(
            AccuracyMatrix::from_rows(&[vec![0.1, 0.2], vec![0.5, 0.5]]),
            Err(MetricsError::WrongRowCount {
                found: 2,
                expected: 3
            })
        );
        assert_eq!(
            AccuracyMatrix::from_rows(&[vec![0.1, 0.2], vec![0.5], vec![0.5, 0.5]]),
            Err(MetricsError::RaggedRow {
                row: 1,
                found: 1,
                expected: 2
            })
        );
        assert!(matches!(
            AccuracyMatrix::from_rows(&[vec![0.1], vec![1.5]]),
            Err(MetricsError::OutOfRange {
                row: 1,
                task: 0,
                ..
            })
        ));
    }
}
