//! The registry entries of `ewc` and `online-ewc`: names, papers and the hyper-parameter
//! schema the registry checks a `[method]` table against.

use retain_train::method::{
    Capabilities, Family, MethodDescriptor, Param, ParamDefault, ParamKind,
};

use crate::{from_params, from_params_online};

/// The hyper-parameters of `ewc` and `online-ewc` (see the crate docs), `mode`'s default
/// being the variant's.
const fn params(mode: &'static str) -> [Param; 6] {
    [
        Param {
            name: "lambda",
            kind: ParamKind::Float,
            default: ParamDefault::Value("100.0"),
            doc: "penalty strength λ (≥ 0)",
        },
        Param {
            name: "mode",
            kind: ParamKind::Choice(&["separate", "online"]),
            default: ParamDefault::Value(mode),
            doc: "one penalty per task, or one running penalty",
        },
        Param {
            name: "gamma",
            kind: ParamKind::Float,
            default: ParamDefault::Derived("1.0 online; refused with separate penalties"),
            doc: "online decay γ ∈ [0, 1] of the running Fisher",
        },
        Param {
            name: "fisher",
            kind: ParamKind::Choice(&["per_sample", "per_batch"]),
            default: ParamDefault::Value("\"per_sample\""),
            doc: "the empirical Fisher's estimator",
        },
        Param {
            name: "fisher_samples",
            kind: ParamKind::Count,
            default: ParamDefault::Value("1000"),
            doc: "samples of the finished task the Fisher is estimated on (all when fewer)",
        },
        Param {
            name: "fisher_batch_size",
            kind: ParamKind::Count,
            default: ParamDefault::Value("10"),
            doc: "batch size of the per_batch estimator",
        },
    ]
}

const CAPABILITIES: Capabilities = Capabilities {
    capturable: true,
    keeps_samples: false,
    joint_reference: false,
};

/// The registry entry of `ewc`: one penalty per finished task.
pub const EWC: MethodDescriptor = MethodDescriptor {
    name: "ewc",
    family: Family::Regularisation,
    summary: "Elastic weight consolidation: a diagonal-Fisher penalty per finished task",
    paper: "Kirkpatrick et al., \"Overcoming catastrophic forgetting in neural networks\", PNAS 2017",
    params: &params("\"separate\""),
    example: "lambda = 100.0\nfisher = \"per_sample\"\nfisher_samples = 1000",
    capabilities: CAPABILITIES,
    factory: from_params,
};

/// The registry entry of `online-ewc`: one running penalty.
pub const ONLINE_EWC: MethodDescriptor = MethodDescriptor {
    name: "online-ewc",
    family: Family::Regularisation,
    summary: "Online EWC: one running Fisher penalty, decayed by γ after each task",
    paper: "Schwarz et al., \"Progress & Compress: A scalable framework for continual learning\", ICML 2018",
    params: &params("\"online\""),
    example: "lambda = 180.0\ngamma = 1.0",
    capabilities: CAPABILITIES,
    factory: from_params_online,
};

/// Every method this crate registers.
pub const METHODS: &[MethodDescriptor] = &[EWC, ONLINE_EWC];
