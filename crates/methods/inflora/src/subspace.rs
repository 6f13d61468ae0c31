//! The DualGPM memory of an adapted layer's input space and InfLoRA's design of the
//! down-projection from it (the reference's `update_DualGPM` and the projection in `_train`).
//!
//! Everything is computed in `float64` on the tensors' device; the ranks chosen by the energy
//! thresholds are read to the host (between tasks, never inside a step).

use tch::{Kind, Tensor};

/// The memory of one layer's old input space, as the reference's `feature_list[i]` and
/// `project_type[i]`: an orthonormal basis `[D, k]` of the old subspace (`retain = false`,
/// the reference's "remove") or of its orthogonal complement (`retain = true`, "retain"),
/// whichever has at most `D/2` columns once a task is consolidated.
#[derive(Debug)]
pub struct Memory {
    pub basis: Tensor,
    pub retain: bool,
}

impl Memory {
    /// `U Uᵀ` of the stored basis, `[D, D]`.
    fn projector(&self) -> Tensor {
        self.basis.matmul(&self.basis.tr())
    }

    /// The component of `m` (`[D, D]`) orthogonal to the old subspace: `m − U Uᵀ m` for a
    /// basis of the old subspace, `U Uᵀ m` for a basis of its complement.
    pub fn off_old(&self, m: &Tensor) -> Tensor {
        let along = self.projector().matmul(m);
        if self.retain { along } else { m - along }
    }

    /// The orthogonal projector onto the old subspace, `[D, D]`.
    pub fn old_projector(&self) -> Tensor {
        let p = self.projector();
        if self.retain {
            Tensor::eye(p.size()[0], (Kind::Double, p.device())) - p
        } else {
            p
        }
    }

    pub fn dim(&self) -> i64 {
        self.basis.size()[0]
    }

    /// Dimension of the old subspace.
    pub fn old_dim(&self) -> i64 {
        let k = self.basis.size()[1];
        if self.retain { self.dim() - k } else { k }
    }
}

fn host(t: &Tensor) -> Vec<f64> {
    Vec::<f64>::try_from(
        &t.to_kind(Kind::Double)
            .to_device(tch::Device::Cpu)
            .contiguous(),
    )
    .expect("a float vector")
}

fn svd_reduced(m: &Tensor) -> (Tensor, Vec<f64>) {
    let (u, s, _) = m.svd(true, true);
    (u, host(&s))
}

fn svd_full(m: &Tensor) -> Tensor {
    let (u, _, _) = m.svd(false, true);
    u
}

/// `(lame − lamb) · t / T + lamb`: the energy threshold after task `t` (0-based) of `T`.
pub fn threshold(lamb: f64, lame: f64, task: usize, tasks: usize) -> f64 {
    (lame - lamb) * task as f64 / tasks.max(1) as f64 + lamb
}

/// The memory after the first task from the layer's input matrix `act` (`[D, D]`, the
/// tokens' `x xᵀ` averaged, as the reference's `cur_matrix`): its top `r` left singular
/// vectors, `r` the number of leading singular values `σ` whose cumulative share of `Σ σ²`
/// stays below `threshold` (at least 1).
pub fn first(act: &Tensor, threshold: f64) -> Memory {
    let act = act.to_kind(Kind::Double);
    let (u, s) = svd_reduced(&act);
    let total: f64 = s.iter().map(|v| v * v).sum();
    let mut cumulative = 0.0;
    let mut r = 0;
    for v in &s {
        cumulative += v * v / total;
        if cumulative < threshold {
            r += 1;
        }
    }
    let r = r.max(1) as i64;
    // The reference keeps the old subspace's basis here even when `r ≥ D/2` (labelled
    // "retain", which its own summary then refuses); `consolidate` turns a basis of more
    // than `D/2` columns into its complement, as the reference does for later tasks.
    let mut memory = Memory {
        basis: u.narrow(1, 0, r),
        retain: false,
    };
    consolidate(&mut memory);
    memory
}

/// Adds task inputs `act` (`[D, D]`) to `memory` (the reference's later-task branch of
/// `update_DualGPM`): the directions of `act` outside the old subspace join it until the old
/// subspace holds `threshold` of `act`'s energy `Σ σ²`; with a complement basis, the
/// complement loses the directions of `act` inside it until what is left holds less than
/// `1 − threshold`.
pub fn update(memory: &mut Memory, act: &Tensor, threshold: f64) {
    let act = act.to_kind(Kind::Double);
    let (_, s1) = svd_reduced(&act);
    let total: f64 = s1.iter().map(|v| v * v).sum();
    if total <= 0.0 {
        return;
    }
    let d = memory.dim();
    if !memory.retain {
        let hat = &act - memory.projector().matmul(&act);
        let (u, s) = svd_reduced(&hat);
        let hat_energy: f64 = s.iter().map(|v| v * v).sum();
        let mut accumulated = (total - hat_energy) / total;
        let mut r = 0;
        for v in &s {
            if accumulated < threshold {
                accumulated += v * v / total;
                r += 1;
            } else {
                break;
            }
        }
        if r == 0 {
            return;
        }
        let joined = Tensor::cat(&[&memory.basis, &u.narrow(1, 0, r)], 1);
        let cols = joined.size()[1].min(d);
        memory.basis = joined.narrow(1, 0, cols);
    } else {
        let hat = memory.projector().matmul(&act);
        let (u, s) = svd_reduced(&hat);
        let mut accumulated = s.iter().map(|v| v * v).sum::<f64>() / total;
        let mut r = 0;
        for v in &s {
            if accumulated >= 1.0 - threshold {
                accumulated -= v * v / total;
                r += 1;
            } else {
                break;
            }
        }
        if r == 0 {
            return;
        }
        let ur = u.narrow(1, 0, r);
        let feature = &memory.basis - ur.matmul(&ur.tr()).matmul(&memory.basis);
        let keep = (memory.basis.size()[1] - r).max(0);
        memory.basis = svd_full(&feature).narrow(1, 0, keep);
    }
    consolidate(memory);
}

/// The reference's "Gradient Constraints Summary": a basis of the old subspace with more
/// than `D/2` columns is replaced by a basis of its complement.
fn consolidate(memory: &mut Memory) {
    let [d, k] = [memory.dim(), memory.basis.size()[1]];
    if !memory.retain && 2 * k > d {
        memory.basis = svd_full(&memory.basis).narrow(1, k, d - k);
        memory.retain = true;
    }
}

/// Singular values at most this fraction of the largest count as zero in
/// [`down_projection`].
pub const NULL: f64 = 1e-9;

/// InfLoRA's down-projection `[rank, D]` for a new task whose layer inputs give `act`
/// (`[D, D]`): the top `rank` left singular vectors of `act` with the old subspace projected
/// out (`act − U Uᵀ act`, or `U Uᵀ act` with a complement basis; `act` itself before the
/// first memory), as rows, divided by `√3` (the reference's scale). A row whose singular value
/// is numerically zero (≤ [`NULL`] × the largest) is set to zero: such a direction is
/// arbitrary and could lie in the old subspace (the reference's rank 10 of width 768 never
/// meets this).
pub fn down_projection(act: &Tensor, memory: Option<&Memory>, rank: i64) -> Tensor {
    let act = act.to_kind(Kind::Double);
    let projected = match memory {
        Some(m) => m.off_old(&act),
        None => act,
    };
    let (u, s) = svd_reduced(&projected);
    let largest = s.first().copied().unwrap_or(0.0);
    let keep: Vec<f64> = (0..rank as usize)
        .map(|i| {
            let v = s.get(i).copied().unwrap_or(0.0);
            if largest > 0.0 && v > NULL * largest {
                1.0
            } else {
                0.0
            }
        })
        .collect();
    let keep = Tensor::from_slice(&keep).to_device(u.device()).unsqueeze(1);
    u.narrow(1, 0, rank).tr() * keep / 3f64.sqrt()
}
