//! Exact solvers for the small quadratic programs of gradient-projection methods.
//!
//! GEM (Lopez-Paz & Ranzato 2017) replaces the gradient `g` of the current batch by the
//! closest vector `g̃` (in L2) that does not increase the loss of any earlier task, to first
//! order: `⟨g̃, g_k⟩ ≥ 0` for each task's memory gradient `g_k`. With `G` the `t × p` matrix of
//! memory gradients, that is the projection of `g` onto the cone `{z : G z ≥ 0}`, whose dual
//!
//! ```text
//! min_v ½ vᵀ (G Gᵀ) v + (G g)ᵀ v   subject to v ≥ 0,        g̃ = g + Gᵀ v
//! ```
//!
//! has only `t` variables. This crate solves it **exactly** (finite termination, no step
//! sizes or iteration budgets to tune) in `f64` on the host, from the `t × t` Gram matrix
//! alone, so a GPU only has to send `(t+1)²` numbers per step, never the `p`-dimensional
//! gradients.
//!
//! * [`nonnegative_qp`]: `min ½ wᵀ M w + cᵀ w` subject to `w ≥ 0` for symmetric positive
//!   definite `M`, by the Lawson–Hanson active-set method written on the normal equations
//!   (the problem is the non-negative least-squares problem `min ‖Aw − b‖²` with `M = AᵀA`,
//!   `c = −Aᵀb`, and Lawson–Hanson only ever touches `AᵀA` and `Aᵀb`).
//! * [`nonnegative_qp_exhaustive`]: the same problem by enumerating every active set, the
//!   independent reference the tests compare against (exponential, for `t ≤ 20`).
//! * [`gem_correction`]: GEM's step from the Gram matrix of `[g_1 … g_t, g]`, including the
//!   margin of GEM's published code.
//!
//! No `tch` here: the crate is pure Rust so that it builds and tests in seconds.

/// Errors of the solvers. Each names the problem size so a failing step can be located.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum QpError {
    #[error("matrix has {entries} entries but the linear term has {len} (expected {len}² = {expected})", expected = len * len)]
    Shape { entries: usize, len: usize },
    #[error("non-finite entry in the {what} of a {size}-variable problem")]
    NotFinite { what: &'static str, size: usize },
    #[error(
        "matrix of a {size}-variable problem is not positive definite on variables {subset:?} (add a ridge)"
    )]
    NotPositiveDefinite { size: usize, subset: Vec<usize> },
    #[error("active-set method did not terminate after {iterations} iterations ({size} variables)")]
    NoConvergence { iterations: usize, size: usize },
    #[error("exhaustive solver enumerates 2^{size} active sets; at most 20 variables are allowed")]
    TooLarge { size: usize },
}

/// `½ wᵀ M w + cᵀ w` for row-major `M`.
pub fn objective(m: &[f64], c: &[f64], w: &[f64]) -> f64 {
    let n = c.len();
    let mut value = 0.0;
    for i in 0..n {
        let row: f64 = (0..n).map(|j| m[i * n + j] * w[j]).sum();
        value += 0.5 * w[i] * row + c[i] * w[i];
    }
    value
}

fn check(m: &[f64], c: &[f64]) -> Result<usize, QpError> {
    let n = c.len();
    if m.len() != n * n {
        return Err(QpError::Shape {
            entries: m.len(),
            len: n,
        });
    }
    if m.iter().any(|x| !x.is_finite()) {
        return Err(QpError::NotFinite {
            what: "matrix",
            size: n,
        });
    }
    if c.iter().any(|x| !x.is_finite()) {
        return Err(QpError::NotFinite {
            what: "linear term",
            size: n,
        });
    }
    Ok(n)
}

/// Solves `M[S,S] x = rhs` for the variables `subset` by Cholesky factorisation.
fn solve_subset(m: &[f64], n: usize, subset: &[usize], rhs: &[f64]) -> Result<Vec<f64>, QpError> {
    let k = subset.len();
    let mut l = vec![0.0; k * k];
    for i in 0..k {
        for j in 0..=i {
            let mut sum = m[subset[i] * n + subset[j]];
            for p in 0..j {
                sum -= l[i * k + p] * l[j * k + p];
            }
            if i == j {
                if sum <= 0.0 || !sum.is_finite() {
                    return Err(QpError::NotPositiveDefinite {
                        size: n,
                        subset: subset.to_vec(),
                    });
                }
                l[i * k + i] = sum.sqrt();
            } else {
                l[i * k + j] = sum / l[j * k + j];
            }
        }
    }
    // L y = rhs, then Lᵀ x = y.
    let mut y = rhs.to_vec();
    for i in 0..k {
        for p in 0..i {
            y[i] -= l[i * k + p] * y[p];
        }
        y[i] /= l[i * k + i];
    }
    for i in (0..k).rev() {
        for p in i + 1..k {
            y[i] -= l[p * k + i] * y[p];
        }
        y[i] /= l[i * k + i];
    }
    Ok(y)
}

/// Minimises `½ wᵀ M w + cᵀ w` subject to `w ≥ 0`, for a symmetric positive definite `M`
/// (row-major, `n × n`), by the Lawson–Hanson active-set method.
///
/// Every iteration either frees one variable with a positive multiplier or fixes at least one
/// at zero, and no active set repeats, so the method terminates after finitely many steps with
/// the exact optimum (up to rounding): the returned `w` satisfies the KKT conditions
/// `w ≥ 0`, `Mw + c ≥ 0`, `wᵢ (Mw + c)ᵢ = 0`. A hard cap of `30·n + 30` iterations only guards
/// against rounding-induced cycling and reports [`QpError::NoConvergence`].
pub fn nonnegative_qp(m: &[f64], c: &[f64]) -> Result<Vec<f64>, QpError> {
    let n = check(m, c)?;
    let scale = m
        .iter()
        .chain(c)
        .fold(0.0f64, |a, x| a.max(x.abs()))
        .max(f64::MIN_POSITIVE);
    let tolerance = 1e-12 * scale;
    let mut w = vec![0.0; n];
    let mut free = vec![false; n];
    let cap = 30 * n + 30;
    let mut iterations = 0;
    loop {
        // Multipliers of the bound constraints: −∇f = −(Mw + c).
        let descent: Vec<f64> = (0..n)
            .map(|i| -(c[i] + (0..n).map(|j| m[i * n + j] * w[j]).sum::<f64>()))
            .collect();
        let entering = (0..n)
            .filter(|&i| !free[i] && descent[i] > tolerance)
            .max_by(|&a, &b| descent[a].total_cmp(&descent[b]));
        let Some(entering) = entering else {
            return Ok(w);
        };
        free[entering] = true;
        let mut first = true;
        loop {
            iterations += 1;
            if iterations > cap {
                return Err(QpError::NoConvergence {
                    iterations: cap,
                    size: n,
                });
            }
            let subset: Vec<usize> = (0..n).filter(|&i| free[i]).collect();
            let rhs: Vec<f64> = subset.iter().map(|&i| -c[i]).collect();
            let solution = solve_subset(m, n, &subset, &rhs)?;
            let mut s = vec![0.0; n];
            for (&i, &x) in subset.iter().zip(&solution) {
                s[i] = x;
            }
            if subset.iter().all(|&i| s[i] > 0.0) {
                w = s;
                break;
            }
            if first && s[entering] <= 0.0 {
                // In exact arithmetic the entering variable is positive here; when rounding
                // says otherwise, its multiplier is at the noise level: w is optimal.
                free[entering] = false;
                return Ok(w);
            }
            first = false;
            // Step from w towards s until the first free variable reaches zero; that one (and
            // any other that rounding puts at or below zero) becomes bound again.
            let (blocking, alpha) = subset
                .iter()
                .filter(|&&i| s[i] <= 0.0)
                .map(|&i| (i, w[i] / (w[i] - s[i])))
                .min_by(|a, b| a.1.total_cmp(&b.1))
                .expect("some free variable is non-positive");
            for &i in &subset {
                w[i] += alpha * (s[i] - w[i]);
            }
            w[blocking] = 0.0;
            for &i in &subset {
                if w[i] <= 0.0 {
                    w[i] = 0.0;
                    free[i] = false;
                }
            }
        }
    }
}

/// The same problem as [`nonnegative_qp`], solved by brute force: for every subset `S` of
/// variables allowed to be positive, solve `M[S,S] w_S = −c_S`, keep the feasible solutions
/// (`w_S ≥ 0`) and return the one with the lowest objective. Since `M` is positive definite,
/// the optimum is one of them. Independent of the active-set logic, hence the reference for
/// tests; `2^n` linear solves, so `n ≤ 20`.
pub fn nonnegative_qp_exhaustive(m: &[f64], c: &[f64]) -> Result<Vec<f64>, QpError> {
    let n = check(m, c)?;
    if n > 20 {
        return Err(QpError::TooLarge { size: n });
    }
    let mut best = vec![0.0; n];
    let mut best_value = 0.0;
    for mask in 1u32..(1 << n) {
        let subset: Vec<usize> = (0..n).filter(|&i| mask & (1 << i) != 0).collect();
        let rhs: Vec<f64> = subset.iter().map(|&i| -c[i]).collect();
        let solution = solve_subset(m, n, &subset, &rhs)?;
        if solution.iter().any(|&x| x < 0.0) {
            continue;
        }
        let mut w = vec![0.0; n];
        for (&i, &x) in subset.iter().zip(&solution) {
            w[i] = x;
        }
        let value = objective(m, c, &w);
        if value < best_value {
            best_value = value;
            best = w;
        }
    }
    Ok(best)
}

/// GEM's correction of one step, from the `(t+1) × (t+1)` Gram matrix (row-major) of the
/// vectors `[g_1, …, g_t, g]`: memory gradients first, the current gradient last.
///
/// Returns `None` when no constraint is violated (`⟨g, g_k⟩ ≥ 0` for every `k`): GEM then
/// leaves the gradient untouched. Otherwise returns the dual weights `v` (length `t`) of
/// `g̃ = g + Σ_k v_k g_k`, solving
///
/// ```text
/// min_v ½ vᵀ (G Gᵀ + ridge·I) v + (G g)ᵀ v   subject to v ≥ margin
/// ```
///
/// exactly as GEM's published code (`project2cone2`, where the margin is the lower bound `h`
/// of the dual variables and `ridge` is its `eps = 1e-3`). Substituting `v = margin + w` shows
/// what the margin means: `g` is first moved by `margin · Σ_k g_k` towards the memories, and
/// that vector is projected onto the cone `{z : G z ≥ 0}`, so `⟨g̃, g_k⟩ ≥ 0` holds for every
/// `k` whatever the margin (up to `ridge · v_k`); `margin = 0` is the exact projection of the
/// paper.
pub fn gem_correction(
    gram: &[f64],
    tasks: usize,
    margin: f64,
    ridge: f64,
) -> Result<Option<Vec<f64>>, QpError> {
    let size = tasks + 1;
    if gram.len() != size * size {
        return Err(QpError::Shape {
            entries: gram.len(),
            len: size,
        });
    }
    // ⟨g_k, g⟩ is the last column of the first t rows.
    let dots: Vec<f64> = (0..tasks).map(|k| gram[k * size + tasks]).collect();
    if dots.iter().any(|d| !d.is_finite()) {
        return Err(QpError::NotFinite {
            what: "memory/current gradient products",
            size: tasks,
        });
    }
    if dots.iter().all(|&d| d >= 0.0) {
        return Ok(None);
    }
    let mut m = vec![0.0; tasks * tasks];
    for i in 0..tasks {
        for j in 0..tasks {
            // Symmetrised, as GEM's code does, against rounding on the device.
            m[i * tasks + j] = 0.5 * (gram[i * size + j] + gram[j * size + i]);
        }
        m[i * tasks + i] += ridge;
    }
    // v = margin + w:  ½ wᵀMw + (Gg + margin·M·1)ᵀ w + const.
    let c: Vec<f64> = (0..tasks)
        .map(|i| dots[i] + margin * (0..tasks).map(|j| m[i * tasks + j]).sum::<f64>())
        .collect();
    let w = nonnegative_qp(&m, &c)?;
    Ok(Some(w.into_iter().map(|x| x + margin).collect()))
}

/// Host reference of a whole GEM step on explicit vectors: the corrected gradient
/// `g + Σ_k v_k g_k`, or `g` itself when no constraint is violated. For tests and for
/// documentation of what the device implementation computes.
pub fn gem_project(
    memories: &[Vec<f64>],
    g: &[f64],
    margin: f64,
    ridge: f64,
) -> Result<Vec<f64>, QpError> {
    let tasks = memories.len();
    let rows: Vec<&[f64]> = memories
        .iter()
        .map(Vec::as_slice)
        .chain(std::iter::once(g))
        .collect();
    let size = tasks + 1;
    let mut gram = vec![0.0; size * size];
    for i in 0..size {
        for j in 0..size {
            gram[i * size + j] = dot(rows[i], rows[j]);
        }
    }
    let mut out = g.to_vec();
    if let Some(v) = gem_correction(&gram, tasks, margin, ridge)? {
        for (memory, weight) in memories.iter().zip(v) {
            for (o, x) in out.iter_mut().zip(memory) {
                *o += weight * x;
            }
        }
    }
    Ok(out)
}

/// `⟨a, b⟩`.
pub fn dot(a: &[f64], b: &[f64]) -> f64 {
    a.iter().zip(b).map(|(x, y)| x * y).sum()
}

#[cfg(test)]
mod tests;
