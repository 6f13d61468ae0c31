//! Metrics of an online run along its steps: the average anytime accuracy and the learning
//! curve area, from the anytime evaluations (every task evaluated every `eval_every` optimiser
//! steps of the run) and the per-task accuracy matrix.
//!
//! Notation: tasks are 0-based here, as the evaluations record them. An evaluation point `p`
//! is taken `s_p` steps into the run, while task `t_p` trains; `a_p[j]` is its accuracy on
//! task `j`. Task `k` starts `S_k = Σ_{i<k} n_i` steps into the run, `n_i` being task `i`'s
//! optimiser steps.

use crate::AccuracyMatrix;

/// One anytime evaluation: the accuracy on every task, `run_step` optimiser steps into the
/// run, while task `training_task` (0-based) trains.
#[derive(Debug, Clone, PartialEq)]
pub struct AnytimePoint {
    pub run_step: usize,
    pub training_task: usize,
    /// Per task of the stream (0-based), in `[0, 1]`.
    pub accuracies: Vec<f64>,
}

/// Average anytime accuracy (AAA, Caccia et al. 2022, "New Insights on Reducing Abrupt
/// Representation Change in Online Continual Learning"): the mean over the evaluation points
/// of the mean accuracy on the tasks seen so far,
///
/// ```text
/// AAA = (1/|P|) Σ_{p∈P} (1/(t_p + 1)) Σ_{j=0}^{t_p} a_p[j]
/// ```
///
/// (the task being trained counts as seen). With evenly spaced points it is Koh et al.
/// 2022's area under the accuracy curve `A_AUC` divided by the length of the stream. `None`
/// without points, or when a point lacks the accuracy of a seen task.
pub fn average_anytime_accuracy(points: &[AnytimePoint]) -> Option<f64> {
    if points.is_empty() {
        return None;
    }
    let mut sum = 0.0;
    for p in points {
        let seen = p.accuracies.get(..=p.training_task)?;
        sum += seen.iter().sum::<f64>() / seen.len() as f64;
    }
    Some(sum / points.len() as f64)
}

/// The learning curve of one task: `(b, a_{k,b,k})` pairs, the accuracy on task `k` after `b`
/// optimiser steps of training on task `k`, in ascending `b`, the first at `b = 0`.
pub type TaskCurve = Vec<(usize, f64)>;

/// Each task's learning curve from an online run's evaluations: for task `k`,
///
/// * `b = 0`: its accuracy before training it, row `k` of the per-task matrix (after `k`
///   tasks; row 0 is the untrained model);
/// * every anytime point taken while task `k` trains, at `b = s_p − S_k`;
/// * `b = n_k`: its accuracy after training it, row `k + 1` of the matrix (after the task's
///   `after_task` hook, so it comes after an anytime point at the same `b`).
///
/// `task_steps[k]` is `n_k`. `None` when `task_steps` does not list every task of `matrix`,
/// or a point lies outside its task's steps.
pub fn task_curves(
    matrix: &AccuracyMatrix,
    task_steps: &[usize],
    points: &[AnytimePoint],
) -> Option<Vec<TaskCurve>> {
    let tasks = matrix.tasks();
    if task_steps.len() != tasks {
        return None;
    }
    let mut curves: Vec<TaskCurve> = (0..tasks).map(|k| vec![(0, matrix.row(k)[k])]).collect();
    let mut start = 0;
    let starts: Vec<usize> = task_steps
        .iter()
        .map(|&n| {
            let s = start;
            start += n;
            s
        })
        .collect();
    for p in points {
        let k = p.training_task;
        let b = p.run_step.checked_sub(*starts.get(k)?)?;
        if b > task_steps[k] {
            return None;
        }
        curves[k].push((b, *p.accuracies.get(k)?));
    }
    for (k, curve) in curves.iter_mut().enumerate() {
        // Stable: points at the same `b` keep their order.
        curve.sort_by_key(|&(b, _)| b);
        curve.push((task_steps[k], matrix.row(k + 1)[k]));
    }
    Some(curves)
}

/// The learning curve area `LCA_β` (Chaudhry et al. 2019, "Efficient Lifelong Learning with
/// A-GEM"), `β` in optimiser steps:
///
/// ```text
/// Z_b   = (1/T) Σ_{k} a_{k,b,k}
/// LCA_β = (1/(β + 1)) Σ_{b=0}^{β} Z_b
/// ```
///
/// where `a_{k,b,k}` is the accuracy on task `k` after `b` steps of training on it. The
/// paper evaluates after each of the first β mini-batches of every task; an online run
/// evaluates every `eval_every` steps of the whole run, so `a_{k,b,k}` is read from
/// `curves[k]` as the latest evaluation at or before `b` (a step function held from one
/// evaluation to the next, and past the task's end its final accuracy). With
/// `eval_every = 1` every `b` is evaluated and this is the paper's LCA; with a larger period
/// the curve between two evaluations is the earlier one's value, which under-states a rising
/// curve. `None` without curves, or when a curve does not start at `b = 0` or is not in
/// ascending `b`.
pub fn learning_curve_area(curves: &[TaskCurve], beta: usize) -> Option<f64> {
    if curves.is_empty() {
        return None;
    }
    let mut total = 0.0;
    for curve in curves {
        if curve.first()?.0 != 0 || curve.windows(2).any(|w| w[1].0 < w[0].0) {
            return None;
        }
        // Σ_{b=0}^{β} a_{k,b,k} for the held curve: each evaluation holds until the next.
        for (i, &(b, accuracy)) in curve.iter().enumerate() {
            if b > beta {
                break;
            }
            let until = curve
                .get(i + 1)
                .map_or(beta + 1, |&(next, _)| next.min(beta + 1));
            total += accuracy * (until - b) as f64;
        }
    }
    Some(total / (curves.len() as f64 * (beta + 1) as f64))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn close(a: f64, b: f64) {
        assert!((a - b).abs() < 1e-12, "{a} != {b}");
    }

    fn point(run_step: usize, training_task: usize, accuracies: &[f64]) -> AnytimePoint {
        AnytimePoint {
            run_step,
            training_task,
            accuracies: accuracies.to_vec(),
        }
    }

    /// Two tasks of 4 steps each, evaluated every 2 steps: points at steps 2, 4 (task 0) and
    /// 6, 8 (task 1).
    fn points() -> Vec<AnytimePoint> {
        vec![
            point(2, 0, &[0.5, 0.1]),
            point(4, 0, &[0.8, 0.2]),
            point(6, 1, &[0.6, 0.4]),
            point(8, 1, &[0.4, 0.9]),
        ]
    }

    #[test]
    fn average_anytime_accuracy_is_the_mean_over_points_of_the_seen_tasks_mean() {
        // Task 0 points see task 0 alone: 0.5, 0.8. Task 1 points see both: (0.6 + 0.4) / 2
        // = 0.5, (0.4 + 0.9) / 2 = 0.65. Mean: (0.5 + 0.8 + 0.5 + 0.65) / 4 = 0.6125.
        close(average_anytime_accuracy(&points()).unwrap(), 0.6125);
        assert_eq!(average_anytime_accuracy(&[]), None);
        // A point without the accuracy of the task it trains.
        assert_eq!(average_anytime_accuracy(&[point(1, 1, &[0.5])]), None);
    }

    #[test]
    fn task_curves_take_the_matrix_rows_at_both_ends() {
        let matrix =
            AccuracyMatrix::from_rows(&[vec![0.1, 0.05], vec![0.85, 0.3], vec![0.35, 0.95]])
                .unwrap();
        let curves = task_curves(&matrix, &[4, 4], &points()).unwrap();
        assert_eq!(
            curves,
            vec![
                vec![(0, 0.1), (2, 0.5), (4, 0.8), (4, 0.85)],
                vec![(0, 0.3), (2, 0.4), (4, 0.9), (4, 0.95)],
            ]
        );
        // A point beyond its task's steps, or task steps for the wrong task count.
        assert_eq!(
            task_curves(&matrix, &[4, 4], &[point(5, 0, &[0.5, 0.5])]),
            None
        );
        assert_eq!(task_curves(&matrix, &[8], &points()), None);
    }

    #[test]
    fn learning_curve_area_holds_each_evaluation_until_the_next() {
        let curves = vec![
            vec![(0, 0.1), (2, 0.5), (4, 0.8), (4, 0.85)],
            vec![(0, 0.3), (2, 0.4), (4, 0.9), (4, 0.95)],
        ];
        // β = 0: Z_0 = (0.1 + 0.3) / 2 = 0.2.
        close(learning_curve_area(&curves, 0).unwrap(), 0.2);
        // β = 3: b = 0, 1 hold the b = 0 values, b = 2, 3 the b = 2 ones.
        // Z_0 = Z_1 = 0.2, Z_2 = Z_3 = (0.5 + 0.4) / 2 = 0.45; LCA = (0.4 + 0.9) / 4 = 0.325.
        close(learning_curve_area(&curves, 3).unwrap(), 0.325);
        // β = 5: b = 4 and 5 hold the after-task accuracies (the last entry at b = 4):
        // Z_4 = Z_5 = (0.85 + 0.95) / 2 = 0.9; LCA = (0.4 + 0.9 + 1.8) / 6.
        close(learning_curve_area(&curves, 5).unwrap(), 3.1 / 6.0);
        // Evaluated after every step, it is the paper's mean of Z_b.
        let every_step = vec![vec![(0, 0.0), (1, 0.5), (2, 1.0)]];
        close(learning_curve_area(&every_step, 2).unwrap(), 0.5);
        assert_eq!(learning_curve_area(&[], 3), None);
        assert_eq!(learning_curve_area(&[vec![(1, 0.5)]], 3), None);
        assert_eq!(
            learning_curve_area(&[vec![(0, 0.5), (3, 0.1), (2, 0.2)]], 3),
            None
        );
    }
}
