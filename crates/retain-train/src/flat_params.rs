//! A network's parameters as one flat tensor: every parameter, sorted by name (as
//! [`Network::parameters`](crate::Network::parameters) gives them), flattened and
//! concatenated, so that a per-parameter quantity (an importance, an anchor, a path integral)
//! is one tensor and each update one fused expression over all parameters.
//!
//! The regularisation methods (EWC, SI, MAS, RWalk) keep their state in this layout and add a
//! quadratic penalty's gradient, computed in closed form on flat tensors, to the parameters'
//! gradients after `backward`. The pieces they share live here, in the crate every method
//! already depends on, rather than in one method's crate that the others would then have to
//! depend on.
//!
//! This is not the layout of [`FlatOptimizer`](crate::FlatOptimizer)'s buffers: those follow
//! the `VarStore`'s trainable set in creation order, grouped by device and dtype, in each
//! variable's memory order, and the variables themselves are re-pointed at views of them. The
//! layout here is a copy, ordered by name, that a method stores and checkpoints under
//! parameter names and checks against the network of a later task.

use std::collections::BTreeMap;
use std::fmt;

use tch::Tensor;

/// Where one parameter lies in the flat tensors: its name, offset and shape.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Slot {
    pub name: String,
    pub offset: i64,
    pub shape: Vec<i64>,
}

impl Slot {
    /// The parameter's number of elements.
    pub fn numel(&self) -> i64 {
        self.shape.iter().product()
    }
}

/// Every parameter's [`Slot`], in order, each starting where the previous one ends.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Layout {
    slots: Vec<Slot>,
}

/// A network whose parameters differ from those a method's flat tensors were laid out for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LayoutMismatch {
    /// The network's layout.
    pub current: Layout,
    /// The layout the flat tensors have.
    pub stored: Layout,
}

impl fmt::Display for LayoutMismatch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "the network's parameters [{}] differ from the consolidated ones [{}]",
            self.current.describe(),
            self.stored.describe()
        )
    }
}

impl std::error::Error for LayoutMismatch {}

impl Layout {
    /// The layout of parameters with these names and shapes, in this order.
    pub fn new(named: impl IntoIterator<Item = (String, Vec<i64>)>) -> Self {
        let mut offset = 0;
        let slots = named
            .into_iter()
            .map(|(name, shape)| {
                let slot = Slot {
                    name,
                    offset,
                    shape,
                };
                offset += slot.numel();
                slot
            })
            .collect();
        Self { slots }
    }

    /// The layout of `named` (e.g. [`TaskContext::parameters`](crate::TaskContext::parameters))
    /// and the tensors, in its order.
    pub fn bind(named: Vec<(String, Tensor)>) -> (Self, Vec<Tensor>) {
        let (names, params): (Vec<String>, Vec<Tensor>) = named.into_iter().unzip();
        let layout = Self::new(names.into_iter().zip(params.iter().map(Tensor::size)));
        (layout, params)
    }

    pub fn slots(&self) -> &[Slot] {
        &self.slots
    }

    pub fn is_empty(&self) -> bool {
        self.slots.is_empty()
    }

    /// The length of a flat tensor in this layout.
    pub fn numel(&self) -> i64 {
        self.slots.last().map_or(0, |s| s.offset + s.numel())
    }

    /// `"name [shape], …"`, for error messages.
    pub fn describe(&self) -> String {
        self.slots
            .iter()
            .map(|s| format!("{} {:?}", s.name, s.shape))
            .collect::<Vec<_>>()
            .join(", ")
    }

    /// Takes the network's layout `current` while no flat tensor is stored against this one
    /// (`stored == false`); otherwise refuses a `current` that differs from it.
    pub fn adopt(&mut self, current: Layout, stored: bool) -> Result<(), LayoutMismatch> {
        if !stored {
            *self = current;
        } else if current != *self {
            return Err(LayoutMismatch {
                current,
                stored: self.clone(),
            });
        }
        Ok(())
    }

    /// The part of `flat` that belongs to `slot`, shaped like its parameter (a view).
    pub fn unflatten(flat: &Tensor, slot: &Slot) -> Tensor {
        flat.narrow(0, slot.offset, slot.numel())
            .view(slot.shape.as_slice())
    }

    /// `flat` split into one view per parameter, in layout order.
    pub fn split(&self, flat: &Tensor) -> Vec<Tensor> {
        self.slots
            .iter()
            .map(|s| Self::unflatten(flat, s))
            .collect()
    }

    /// `(<prefix><name>, view)` per parameter: `flat` as named state tensors.
    pub fn named<'a>(
        &'a self,
        prefix: &'a str,
        flat: &'a Tensor,
    ) -> impl Iterator<Item = (String, Tensor)> + 'a {
        self.slots
            .iter()
            .map(move |s| (format!("{prefix}{}", s.name), Self::unflatten(flat, s)))
    }
}

/// The tensors (one per parameter, in layout order) as one flat tensor, differentiable
/// through autograd.
pub fn flatten(tensors: &[Tensor]) -> Tensor {
    let flat: Vec<Tensor> = tensors.iter().map(|t| t.reshape([-1])).collect();
    Tensor::cat(&flat, 0)
}

/// [`flatten`], detached from autograd.
pub fn flatten_detached(tensors: &[Tensor]) -> Tensor {
    let flat: Vec<Tensor> = tensors.iter().map(|t| t.detach().reshape([-1])).collect();
    Tensor::cat(&flat, 0)
}

/// The current gradients of `params` as one flat tensor, detached; an undefined gradient
/// counts as zeros.
pub fn flat_grad(params: &[Tensor]) -> Tensor {
    let flat: Vec<Tensor> = params
        .iter()
        .map(|p| {
            let g = p.grad();
            if g.defined() {
                g.detach().reshape([-1])
            } else {
                p.zeros_like().detach().reshape([-1])
            }
        })
        .collect();
    Tensor::cat(&flat, 0)
}

/// Adds `flat` (laid out over `params`, in their order) to the parameters' gradients, in
/// place. A parameter whose gradient is undefined is skipped: it got no gradient from the
/// loss, and the optimiser does not move it.
pub fn add_to_grads(params: &[Tensor], flat: &Tensor) {
    let mut offset = 0;
    for p in params {
        let numel = p.numel() as i64;
        let mut grad = p.grad();
        if grad.defined() {
            let _ = grad.g_add_(&flat.narrow(0, offset, numel).view_as(&grad));
        }
        offset += numel;
    }
}

/// The closed form of the quadratic penalty `Σ_i w_i (θ_i − a_i)²` on flat tensors: its value
/// (a scalar tensor) and `w ⊙ (θ − a)`, half its gradient. A few kernels whatever the number
/// of parameters; `theta` should be detached, so that no autograd graph is built.
pub fn quadratic(weights: &Tensor, theta: &Tensor, anchor: &Tensor) -> (Tensor, Tensor) {
    let delta = theta - anchor;
    let weighted = weights * &delta;
    (weighted.dot(&delta), weighted)
}

/// Two flat tensors of `layout` as state tensors `<first>.<param>` and `<second>.<param>`
/// (copies, one per parameter), in the form [`read_pair`] reads back.
pub fn write_pair(
    layout: &Layout,
    (first, first_flat): (&str, &Tensor),
    (second, second_flat): (&str, &Tensor),
) -> Vec<(String, Tensor)> {
    let (first, second) = (format!("{first}."), format!("{second}."));
    let copied = |(key, view): (String, Tensor)| (key, view.copy());
    layout
        .named(&first, first_flat)
        .map(copied)
        .chain(layout.named(&second, second_flat).map(copied))
        .collect()
}

/// Reads state tensors `<first>.<param>` and `<second>.<param>` (as [`Layout::named`] writes
/// them) back into the layout of their parameters (sorted by name) and the two flat tensors;
/// `None` for an empty state. Every parameter needs both tensors, of the same shape. The error
/// says which key or parameter is wrong.
pub fn read_pair(
    state: Vec<(String, Tensor)>,
    first: &str,
    second: &str,
) -> Result<Option<(Layout, Tensor, Tensor)>, String> {
    let an = |word: &str| {
        if word.starts_with(['a', 'e', 'i', 'o', 'u']) {
            format!("an {word}")
        } else {
            format!("a {word}")
        }
    };
    let mut firsts = BTreeMap::new();
    let mut seconds = BTreeMap::new();
    for (key, tensor) in state {
        let previous = match key.split_once('.') {
            Some((kind, name)) if kind == first => firsts.insert(name.to_owned(), tensor),
            Some((kind, name)) if kind == second => seconds.insert(name.to_owned(), tensor),
            _ => {
                return Err(format!(
                    "state key `{key}` is not `{first}.<param>` or `{second}.<param>`"
                ));
            }
        };
        if previous.is_some() {
            return Err(format!("state key `{key}` appears twice"));
        }
    }
    if let Some(name) = firsts
        .keys()
        .find(|n| !seconds.contains_key(*n))
        .or_else(|| seconds.keys().find(|n| !firsts.contains_key(*n)))
    {
        return Err(format!(
            "parameter `{name}` needs both {} and {} tensor",
            an(first),
            an(second)
        ));
    }
    let mut a = Vec::new();
    let mut b = Vec::new();
    let mut named = Vec::new();
    for (name, x) in firsts {
        let y = seconds.remove(&name).expect("checked above");
        if x.size() != y.size() {
            return Err(format!(
                "{first} and {second} of `{name}` differ in shape: {:?} vs {:?}",
                x.size(),
                y.size()
            ));
        }
        named.push((name, x.size()));
        a.push(x);
        b.push(y);
    }
    if named.is_empty() {
        return Ok(None);
    }
    Ok(Some((Layout::new(named), flatten(&a), flatten(&b))))
}

#[cfg(test)]
mod tests {
    use super::*;
    use tch::{Device, Kind};

    fn values(t: &Tensor) -> Vec<f32> {
        Vec::<f32>::try_from(&t.reshape([-1])).unwrap()
    }

    fn hand() -> (Layout, Vec<Tensor>) {
        let a = Tensor::from_slice(&[1.0f32, 2.0, 3.0, 4.0, 5.0, 6.0]).view([2, 3]);
        let b = Tensor::from_slice(&[7.0f32, 8.0]);
        Layout::bind(vec![("a".to_owned(), a), ("b".to_owned(), b)])
    }

    #[test]
    fn slots_lie_end_to_end() {
        let (layout, _) = hand();
        assert_eq!(
            layout.slots(),
            [
                Slot {
                    name: "a".into(),
                    offset: 0,
                    shape: vec![2, 3]
                },
                Slot {
                    name: "b".into(),
                    offset: 6,
                    shape: vec![2]
                },
            ]
        );
        assert_eq!(layout.numel(), 8);
        assert_eq!(layout.describe(), "a [2, 3], b [2]");
        assert_eq!(Layout::default().numel(), 0);
    }

    #[test]
    fn flatten_and_split_round_trip() {
        let (layout, params) = hand();
        let flat = flatten(&params);
        assert_eq!(values(&flat), [1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0]);
        let parts = layout.split(&flat);
        assert_eq!(parts[0].size(), [2, 3]);
        assert_eq!(values(&parts[0]), [1.0, 2.0, 3.0, 4.0, 5.0, 6.0]);
        assert_eq!(values(&parts[1]), [7.0, 8.0]);
        // The parts are views of the flat tensor.
        let _ = flat.shallow_clone().fill_(0.0);
        assert_eq!(values(&parts[1]), [0.0, 0.0]);
        let named: Vec<String> = layout.named("omega.", &flat).map(|(n, _)| n).collect();
        assert_eq!(named, ["omega.a", "omega.b"]);
    }

    #[test]
    fn a_different_network_is_refused_once_something_is_stored() {
        let (current, _) = hand();
        let mut stored = Layout::default();
        stored.adopt(current.clone(), false).unwrap();
        assert_eq!(stored, current);
        stored.adopt(current.clone(), true).unwrap();
        let other = Layout::new([("a".to_owned(), vec![3, 2]), ("b".to_owned(), vec![2])]);
        let error = stored.adopt(other.clone(), true).unwrap_err();
        assert_eq!(
            error.to_string(),
            "the network's parameters [a [3, 2], b [2]] differ from the consolidated ones \
             [a [2, 3], b [2]]"
        );
        assert_eq!(stored, current);
        // Nothing stored yet: the new network's layout is taken.
        stored.adopt(other.clone(), false).unwrap();
        assert_eq!(stored, other);
    }

    #[test]
    fn gradients_flatten_and_receive_a_flat_addition() {
        let x = Tensor::from_slice(&[1.0f32, 2.0]).set_requires_grad(true);
        let y = Tensor::from_slice(&[3.0f32]).set_requires_grad(true);
        let unused = Tensor::from_slice(&[4.0f32]).set_requires_grad(true);
        (x.square().sum(Kind::Float) + &y * 3.0)
            .sum(Kind::Float)
            .backward();
        let params = [x.shallow_clone(), unused.shallow_clone(), y.shallow_clone()];
        let g = flat_grad(&params);
        assert!(!g.requires_grad());
        assert_eq!(values(&g), [2.0, 4.0, 0.0, 3.0]);
        add_to_grads(&params, &Tensor::from_slice(&[10.0f32, 20.0, 30.0, 40.0]));
        assert_eq!(values(&x.grad()), [12.0, 24.0]);
        assert!(!unused.grad().defined());
        assert_eq!(values(&y.grad()), [43.0]);
        assert!(flatten(&params).requires_grad());
        assert!(!flatten_detached(&params).requires_grad());
        assert_eq!(values(&flatten_detached(&params)), [1.0, 2.0, 4.0, 3.0]);
    }

    #[test]
    fn quadratic_penalty_by_hand() {
        let w = Tensor::from_slice(&[1.0f32, 2.0, 0.5]);
        let theta = Tensor::from_slice(&[1.0f32, 0.0, 4.0]);
        let anchor = Tensor::from_slice(&[0.0f32, 1.0, 2.0]);
        let (value, weighted) = quadratic(&w, &theta, &anchor);
        // 1·1² + 2·1² + 0.5·2² = 5; w ⊙ (θ − a) = [1, −2, 1].
        assert_eq!(value.double_value(&[]), 5.0);
        assert_eq!(values(&weighted), [1.0, -2.0, 1.0]);
    }

    #[test]
    fn state_pairs_read_back_and_bad_ones_are_refused() {
        let (layout, params) = hand();
        let omega = flatten(&params);
        let anchor = &omega * 2.0;
        let mut state = write_pair(&layout, ("omega", &omega), ("anchor", &anchor));
        let names: Vec<&str> = state.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(names, ["omega.a", "omega.b", "anchor.a", "anchor.b"]);
        // Copies: the state does not change with the flat tensors.
        assert!(state.iter().all(|(_, t)| t.data_ptr() != omega.data_ptr()));
        state.reverse();
        let (read, o, a) = read_pair(state, "omega", "anchor").unwrap().unwrap();
        assert_eq!(read, layout);
        assert_eq!(values(&o), values(&omega));
        assert_eq!(values(&a), values(&anchor));
        assert!(read_pair(Vec::new(), "omega", "anchor").unwrap().is_none());

        let t = || Tensor::zeros([2], (Kind::Float, Device::Cpu));
        let err = |state: Vec<(&str, Tensor)>| {
            let state = state.into_iter().map(|(k, t)| (k.to_owned(), t)).collect();
            read_pair(state, "omega", "anchor").unwrap_err()
        };
        assert_eq!(
            err(vec![("fisher.b", t())]),
            "state key `fisher.b` is not `omega.<param>` or `anchor.<param>`"
        );
        assert_eq!(
            err(vec![("omega.b", t()), ("omega.b", t())]),
            "state key `omega.b` appears twice"
        );
        assert_eq!(
            err(vec![("anchor.b", t())]),
            "parameter `b` needs both an omega and an anchor tensor"
        );
        assert_eq!(
            err(vec![
                ("omega.b", t()),
                ("anchor.b", Tensor::zeros([3], (Kind::Float, Device::Cpu)))
            ]),
            "omega and anchor of `b` differ in shape: [2] vs [3]"
        );
    }
}
