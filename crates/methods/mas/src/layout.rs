//! The flat layout of MAS's tensors: every parameter, sorted by name, flattened and
//! concatenated, so that an importance or an anchor is one tensor and each
//! update one fused expression over all parameters.

use tch::Tensor;

/// Where each parameter (sorted by name) lies in the flat tensors.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Slot {
    pub(crate) name: String,
    pub(crate) offset: i64,
    pub(crate) shape: Vec<i64>,
}

pub(crate) type Layout = Vec<Slot>;

pub(crate) fn layout(named: impl IntoIterator<Item = (String, Vec<i64>)>) -> Layout {
    let mut offset = 0;
    named
        .into_iter()
        .map(|(name, shape)| {
            let slot = Slot {
                name,
                offset,
                shape,
            };
            offset += slot.shape.iter().product::<i64>();
            slot
        })
        .collect()
}

/// The tensors (one per parameter, in layout order) as one flat tensor.
pub(crate) fn flatten(tensors: &[Tensor]) -> Tensor {
    let flat: Vec<Tensor> = tensors.iter().map(|t| t.reshape([-1])).collect();
    Tensor::cat(&flat, 0)
}

/// The part of a flat tensor that belongs to `slot`, shaped like its parameter (a view).
pub(crate) fn unflatten(flat: &Tensor, slot: &Slot) -> Tensor {
    let numel: i64 = slot.shape.iter().product();
    flat.narrow(0, slot.offset, numel)
        .view(slot.shape.as_slice())
}

/// `"name [shape], …"`, for error messages.
pub(crate) fn describe(layout: &Layout) -> String {
    layout
        .iter()
        .map(|s| format!("{} {:?}", s.name, s.shape))
        .collect::<Vec<_>>()
        .join(", ")
}
