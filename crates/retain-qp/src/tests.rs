use super::*;

/// A tiny seeded generator for the property tests (SplitMix64), uniform in [-1, 1).
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
    fn uniform(&mut self) -> f64 {
        (self.next() >> 11) as f64 / (1u64 << 53) as f64 * 2.0 - 1.0
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
    fn vector(&mut self, n: usize) -> Vec<f64> {
        (0..n).map(|_| self.uniform()).collect()
    }
}

fn gram(rows: &[Vec<f64>], ridge: f64) -> Vec<f64> {
    let n = rows.len();
    let mut m = vec![0.0; n * n];
    for i in 0..n {
        for j in 0..n {
            m[i * n + j] = dot(&rows[i], &rows[j]) + if i == j { ridge } else { 0.0 };
        }
    }
    m
}

fn assert_close(a: &[f64], b: &[f64], tolerance: f64) {
    assert_eq!(a.len(), b.len());
    for (x, y) in a.iter().zip(b) {
        assert!((x - y).abs() <= tolerance, "{a:?} vs {b:?}");
    }
}

#[test]
fn hand_computed_problems() {
    // M = I: w = max(−c, 0).
    assert_eq!(
        nonnegative_qp(&[1.0, 0.0, 0.0, 1.0], &[-1.0, 2.0]).unwrap(),
        vec![1.0, 0.0]
    );
    // Unconstrained optimum M⁻¹(−c) = (1/3, 1/3) is feasible.
    let m = [2.0, 1.0, 1.0, 2.0];
    assert_close(
        &nonnegative_qp(&m, &[-1.0, -1.0]).unwrap(),
        &[1.0 / 3.0, 1.0 / 3.0],
        1e-15,
    );
    // Unconstrained optimum (7/3, −5/3) is not; with w₂ = 0, w₁ = 3/2 and ∂f/∂w₂ = 5/2 ≥ 0.
    assert_close(
        &nonnegative_qp(&m, &[-3.0, 1.0]).unwrap(),
        &[1.5, 0.0],
        1e-15,
    );
    assert_close(
        &nonnegative_qp_exhaustive(&m, &[-3.0, 1.0]).unwrap(),
        &[1.5, 0.0],
        1e-15,
    );
    // c ≥ 0: zero is optimal.
    assert_eq!(nonnegative_qp(&m, &[0.5, 0.0]).unwrap(), vec![0.0, 0.0]);
}

#[test]
fn active_set_matches_exhaustive_enumeration_on_random_problems() {
    let mut rng = Rng(2017);
    for case in 0..2000 {
        let t = 1 + rng.below(6) as usize;
        let dim = 1 + rng.below(10) as usize;
        // Rank-deficient Gram matrices (t > dim) need GEM's ridge to be positive definite.
        let ridge = if t > dim || case % 2 == 0 { 1e-3 } else { 0.0 };
        let rows: Vec<Vec<f64>> = (0..t).map(|_| rng.vector(dim)).collect();
        let m = gram(&rows, ridge);
        let c = rng.vector(t);
        let fast = nonnegative_qp(&m, &c).unwrap();
        let brute = nonnegative_qp_exhaustive(&m, &c).unwrap();
        let (f, b) = (objective(&m, &c, &fast), objective(&m, &c, &brute));
        assert!(
            (f - b).abs() <= 1e-9 * (1.0 + b.abs()),
            "case {case}: objective {f} vs exhaustive {b}"
        );
        // KKT: feasibility, dual feasibility, complementarity (relative to the size of w:
        // near-singular Gram matrices give large weights).
        let scale = 1.0 + fast.iter().fold(0.0f64, |a, x| a.max(x.abs()));
        for i in 0..t {
            let gradient = c[i] + (0..t).map(|j| m[i * t + j] * fast[j]).sum::<f64>();
            assert!(fast[i] >= 0.0, "case {case}: w = {fast:?}");
            assert!(gradient >= -1e-9 * scale, "case {case}: ∇f = {gradient}");
            if fast[i] > 0.0 {
                assert!(
                    gradient.abs() <= 1e-9 * scale,
                    "case {case}: w = {} with ∇f = {gradient}",
                    fast[i]
                );
            }
        }
        // Strictly convex with the ridge: the optimum is unique.
        if ridge > 0.0 || t <= dim {
            let scale = 1.0 + brute.iter().fold(0.0f64, |a, x| a.max(x.abs()));
            assert_close(&fast, &brute, 1e-6 * scale);
        }
    }
}

#[test]
fn gem_projection_satisfies_every_constraint_and_is_the_closest() {
    let mut rng = Rng(7);
    let mut projected = 0;
    for case in 0..1000 {
        let t = 1 + rng.below(6) as usize;
        let dim = t + rng.below(11 - t as u64) as usize; // t ≤ dim ≤ 10
        let memories: Vec<Vec<f64>> = (0..t).map(|_| rng.vector(dim)).collect();
        let g = rng.vector(dim);
        let margin = if case % 2 == 0 { 0.0 } else { 0.5 };
        let corrected = gem_project(&memories, &g, margin, 0.0).unwrap();
        let violated = memories.iter().any(|m| dot(m, &g) < 0.0);
        if !violated {
            assert_eq!(
                corrected, g,
                "case {case}: untouched when no constraint binds"
            );
            continue;
        }
        projected += 1;
        for memory in &memories {
            assert!(
                dot(memory, &corrected) >= -1e-9,
                "case {case}: ⟨g̃, g_k⟩ = {}",
                dot(memory, &corrected)
            );
        }
        // The dual weights are the exhaustive optimum shifted by the margin.
        let m = gram(&memories, 0.0);
        let shifted: Vec<f64> = memories
            .iter()
            .map(|memory| {
                dot(memory, &g) + margin * memories.iter().map(|o| dot(memory, o)).sum::<f64>()
            })
            .collect();
        let w = nonnegative_qp_exhaustive(&m, &shifted).unwrap();
        let mut expected = g.clone();
        for (memory, wk) in memories.iter().zip(&w) {
            for (e, x) in expected.iter_mut().zip(memory) {
                *e += (wk + margin) * x;
            }
        }
        assert_close(&corrected, &expected, 1e-6);
        if margin == 0.0 {
            // Closest feasible point: no random feasible point is nearer to g.
            let distance = |z: &[f64]| z.iter().zip(&g).map(|(a, b)| (a - b).powi(2)).sum::<f64>();
            for _ in 0..50 {
                let z: Vec<f64> = corrected.iter().map(|x| x + 0.3 * rng.uniform()).collect();
                if memories.iter().all(|m| dot(m, &z) >= 0.0) {
                    assert!(distance(&z) >= distance(&corrected) - 1e-12, "case {case}");
                }
            }
        }
    }
    assert!(
        projected > 300,
        "only {projected} of 1000 cases violated a constraint"
    );
}

#[test]
fn gem_step_by_hand() {
    // One memory g₁ = (1, 0), g = (−1, 1): the projection removes the conflicting component.
    let memories = vec![vec![1.0, 0.0]];
    assert_eq!(
        gem_project(&memories, &[-1.0, 1.0], 0.0, 0.0).unwrap(),
        vec![0.0, 1.0]
    );
    // g = (−0.2, 1): the exact projection needs v = 0.2 < margin 0.5, so v = 0.5 and
    // g̃ = g + 0.5·g₁ = (0.3, 1).
    let corrected = gem_project(&memories, &[-0.2, 1.0], 0.5, 0.0).unwrap();
    assert_close(&corrected, &[0.3, 1.0], 1e-15);
    // Gram of [g₁, g] = [[1, −0.2], [−0.2, 1.04]]: v = 0.5 from the matrix alone.
    let v = gem_correction(&[1.0, -0.2, -0.2, 1.04], 1, 0.5, 0.0).unwrap();
    assert_eq!(v, Some(vec![0.5]));
    // No violation: no correction, whatever the margin.
    assert_eq!(
        gem_correction(&[1.0, 0.0, 0.0, 1.0], 1, 0.5, 1e-3).unwrap(),
        None
    );
    assert_eq!(
        gem_project(&memories, &[0.0, 1.0], 0.5, 0.0).unwrap(),
        vec![0.0, 1.0]
    );
}

#[test]
fn bad_input_is_reported() {
    assert_eq!(
        nonnegative_qp(&[1.0, 0.0, 0.0], &[1.0, 1.0]),
        Err(QpError::Shape { entries: 3, len: 2 })
    );
    assert_eq!(
        nonnegative_qp(&[1.0], &[f64::NAN]),
        Err(QpError::NotFinite {
            what: "linear term",
            size: 1
        })
    );
    // Singular matrix, descent direction along the null space: not positive definite.
    assert_eq!(
        nonnegative_qp(&[0.0], &[-1.0]),
        Err(QpError::NotPositiveDefinite {
            size: 1,
            subset: vec![0]
        })
    );
    assert_eq!(
        gem_correction(&[1.0, 2.0], 1, 0.0, 0.0),
        Err(QpError::Shape { entries: 2, len: 2 })
    );
    assert_eq!(
        nonnegative_qp_exhaustive(&vec![0.0; 21 * 21], &[0.0; 21]),
        Err(QpError::TooLarge { size: 21 })
    );
    let message = QpError::NotPositiveDefinite {
        size: 3,
        subset: vec![0, 2],
    }
    .to_string();
    assert!(message.contains("variables [0, 2]"), "{message}");
}
