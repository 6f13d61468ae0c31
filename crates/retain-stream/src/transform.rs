//! Per-task pixel transforms of domain-incremental streams, as gather maps.
//!
//! A permutation and a nearest-neighbour rotation are both "output pixel `j` takes input
//! pixel `map[j]`", so one code path serves both: the maps of every task are stacked into a
//! `[T, C·H·W]` index tensor on the device, and a batch is transformed by one `gather` with
//! each sample's row. Rotations leave corners without a source pixel; those entries point at
//! an extra zero column appended to the batch (index `C·H·W`), which is PIL's zero fill.
//!
//! Maps are computed once on the host (microseconds) and uploaded once; nothing about them
//! crosses to the device during training.

use crate::seed::{self, SplitMix64};

/// What a task does to every image of the dataset.
#[derive(Debug, Clone, PartialEq)]
pub enum TaskTransform {
    /// The images as stored (split streams, and an unpermuted first task).
    Identity,
    /// Output pixel `j` of every channel is input pixel `permutation[j]` (`j < H·W`).
    Permutation(Vec<i64>),
    /// Counter-clockwise rotation by this many degrees about the image centre.
    Rotation(f64),
}

impl TaskTransform {
    /// The gather map over `C·H·W` for an image of `shape`: output element `i` is input
    /// element `map[i]`, where `C·H·W` stands for "zero".
    pub fn gather_map(&self, shape: [usize; 3]) -> Vec<i64> {
        let [channels, height, width] = shape;
        let plane = height * width;
        let spatial: Vec<i64> = match self {
            Self::Identity => (0..plane as i64).collect(),
            Self::Permutation(permutation) => permutation.clone(),
            Self::Rotation(degrees) => rotation_map(*degrees, height, width),
        };
        let fill = (channels * plane) as i64;
        (0..channels)
            .flat_map(|c| {
                spatial
                    .iter()
                    .map(move |&j| if j < 0 { fill } else { (c * plane) as i64 + j })
            })
            .collect()
    }

    /// Whether some output pixel has no source (and so reads the zero fill).
    pub fn needs_fill(&self, shape: [usize; 3]) -> bool {
        let fill = shape.iter().product::<usize>() as i64;
        self.gather_map(shape).contains(&fill)
    }
}

/// The seeded pixel permutation of task `task`: a uniform permutation of `0..pixels`.
pub fn permutation(master_seed: u64, task: usize, pixels: usize) -> Vec<i64> {
    let mut order: Vec<i64> = (0..pixels as i64).collect();
    let purpose = format!("permutation/task{task}");
    SplitMix64::new(seed::derive(master_seed, &purpose)).shuffle(&mut order);
    order
}

/// Source pixel (`y·W + x`, or −1 for "outside") of every output pixel of a rotation by
/// `degrees` counter-clockwise about the image centre, nearest neighbour, zero fill.
///
/// This reproduces PIL's `Image.rotate(degrees)` with its default `NEAREST` resampling
/// pixel for pixel (the GEM paper made its Rotated-MNIST with it; checked against Pillow
/// 13 in the tests): 0° and 180°, and 90°/270° of square images, are exact transposes; any
/// other angle applies the inverse affine map, with coefficients rounded to 15 decimals and
/// then to 16.16 fixed point as Pillow's `affine_fixed` does, to each output pixel centre.
pub fn rotation_map(degrees: f64, height: usize, width: usize) -> Vec<i64> {
    let (h, w) = (height as i64, width as i64);
    let angle = degrees.rem_euclid(360.0);
    let transpose = |f: &dyn Fn(i64, i64) -> (i64, i64)| -> Vec<i64> {
        (0..h)
            .flat_map(|y| (0..w).map(move |x| (y, x)))
            .map(|(y, x)| {
                let (sy, sx) = f(y, x);
                sy * w + sx
            })
            .collect()
    };
    if angle == 0.0 {
        return transpose(&|y, x| (y, x));
    }
    if angle == 180.0 {
        return transpose(&|y, x| (h - 1 - y, w - 1 - x));
    }
    if h == w && angle == 90.0 {
        return transpose(&|y, x| (x, w - 1 - y));
    }
    if h == w && angle == 270.0 {
        return transpose(&|y, x| (h - 1 - x, y));
    }
    let round15 = |v: f64| (v * 1e15).round() / 1e15;
    let theta = -angle.to_radians();
    let (a, b) = (round15(theta.cos()), round15(theta.sin()));
    let (d, e) = (round15(-theta.sin()), round15(theta.cos()));
    let (cx, cy) = (width as f64 / 2.0, height as f64 / 2.0);
    let c = a * -cx + b * -cy + cx;
    let f = d * -cx + e * -cy + cy;
    // 16.16 fixed point; the half-pixel offset is folded into the constant terms.
    let fix = |v: f64| (v * 65536.0 + 0.5).floor() as i64;
    let (a0, a1, a3, a4) = (fix(a), fix(b), fix(d), fix(e));
    let a2 = fix(c + a * 0.5 + b * 0.5);
    let a5 = fix(f + d * 0.5 + e * 0.5);
    let mut map = Vec::with_capacity(height * width);
    for y in 0..h {
        for x in 0..w {
            let xin = (a2 + y * a1 + x * a0) >> 16;
            let yin = (a5 + y * a4 + x * a3) >> 16;
            let inside = (0..w).contains(&xin) && (0..h).contains(&yin);
            map.push(if inside { yin * w + xin } else { -1 });
        }
    }
    map
}

/// The angle of task `task` of `tasks` for generated angles over `[lo, hi]`.
pub fn generated_angle(
    seeded: bool,
    range: [f64; 2],
    master_seed: u64,
    task: usize,
    tasks: usize,
) -> f64 {
    let [lo, hi] = range;
    let unit = if seeded {
        let purpose = format!("rotation/task{task}");
        // 53 random bits → uniform in [0, 1).
        (SplitMix64::new(seed::derive(master_seed, &purpose)).next_u64() >> 11) as f64
            / (1u64 << 53) as f64
    } else {
        task as f64 / tasks as f64
    };
    lo + unit * (hi - lo)
}
