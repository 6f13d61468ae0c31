//! The registry entry of `lora`: its name, paper and the hyper-parameter schema the registry
//! checks a `[method]` table against (shared with `qlora`).

use retain_train::method::{
    Capabilities, Family, MethodDescriptor, Param, ParamDefault, ParamKind,
};

use crate::from_params;

/// LoRA's hyper-parameters in the schema (see the crate docs); public so that methods built
/// on LoRA's adapters (`qlora`) declare the same keys and defaults.
pub const PARAMS: [Param; 3] = [
    Param {
        name: "rank",
        kind: ParamKind::Count,
        default: ParamDefault::Value("8"),
        doc: "rank r of every adapter (≥ 1)",
    },
    Param {
        name: "alpha",
        kind: ParamKind::Float,
        default: ParamDefault::Derived("rank, so scale 1"),
        doc: "scale numerator: the update is (α/r) · B A (> 0)",
    },
    Param {
        name: "target",
        kind: ParamKind::Strings,
        default: ParamDefault::Derived(
            "by the model: [\"blocks.*\"] on a transformer, [\"hidden.*\"] otherwise",
        ),
        doc: "name patterns of the linear layers to adapt (never the head, which trains per task)",
    },
];

/// The registry entry of `lora`.
pub const DESCRIPTOR: MethodDescriptor = MethodDescriptor {
    name: "lora",
    family: Family::ParameterEfficient,
    summary: "LoRA per task: low-rank adapters and a head per task on a frozen backbone",
    paper: "Hu et al., \"LoRA: Low-Rank Adaptation of Large Language Models\", ICLR 2022",
    params: &PARAMS,
    example: "rank = 8\nalpha = 16.0\ntarget = [\"hidden.*\"]",
    capabilities: Capabilities {
        capturable: true,
        keeps_samples: false,
        joint_reference: false,
    },
    factory: from_params,
};

/// Every method this crate registers.
pub const METHODS: &[MethodDescriptor] = &[DESCRIPTOR];
