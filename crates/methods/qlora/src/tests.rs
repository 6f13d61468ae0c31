use super::*;
use retain_config::Readout;
use retain_stream::TaskStream;
use retain_train::testkit::{mnist, run_on, single_threaded, split_mnist, task_context};
use tch::{Device, Kind};

fn qlora(toml: &str) -> Result<QLora, TrainError> {
    let table: toml::Table = toml::from_str(toml).unwrap();
    QLora::new(DESCRIPTOR.parse(&table)?)
}

#[test]
fn the_base_is_quantised_released_and_still_computes_nearly_the_same() {
    single_threaded();
    let experiment = split_mnist(2, 50, 50, 0, "name = \"qlora\"", &[]);
    let stream = TaskStream::build(&mnist(), &experiment.stream, 0, Device::Cpu).unwrap();
    // NF4: 4 bits per weight (the last block padded to 64), one f32 scale per 64 weights. Int8: 1 byte per weight, one
    // f32 scale per row (both hidden layers have 100).
    let nf4: fn(u64) -> u64 = |n| n.div_ceil(64) * 32 + n.div_ceil(64) * 4;
    let int8: fn(u64) -> u64 = |n| n + 100 * 4;
    // Largest relative change of the outputs (‖Δ‖ / ‖y‖ over the batch) from quantising the
    // base: int8 is near-lossless, NF4 coarser (this base is a uniform random initialisation,
    // not the normally distributed trained weights NF4 is made for).
    for (toml, code_bytes, tolerance) in [
        ("quant = \"nf4\"", nf4, 0.15),
        ("quant = \"int8\"", int8, 0.02),
    ] {
        let network = Network::new(&experiment, &stream);
        let xs = stream
            .batch(
                retain_stream::SplitKind::Test,
                &Tensor::arange(50, (Kind::Int64, Device::Cpu)),
            )
            .inputs;
        let float = network.model.forward_t(&xs, false);
        let mut method = qlora(toml).unwrap();
        method
            .before_task(&task_context(&network, &stream, 0))
            .unwrap();
        let vars = network.vars.variables();
        for layer in ["hidden.0", "hidden.1"] {
            assert_eq!(vars[&format!("{layer}.weight")].numel(), 0, "{layer}");
            assert!(vars[&format!("{layer}.bias")].numel() > 0);
        }
        assert_eq!(
            vars["head.weight"].size(),
            vec![10, 100],
            "the head stays float"
        );
        let hidden0 = code_bytes(784 * 100);
        let hidden1 = code_bytes(100 * 100);
        assert_eq!(method.quantized_bytes(), Some(hidden0 + hidden1), "{toml}");
        assert_eq!(network.model.quantized_bytes(), hidden0 + hidden1);
        let floats = (784 * 100 + 100 * 100) * 4;
        assert!(floats as f64 / (hidden0 + hidden1) as f64 > 3.8, "{toml}");
        // Fresh adapters (B = 0) on the dequantised base: close to the float model.
        let quantised = network.model.forward_t(&xs, false);
        let relative =
            (&quantised - &float).norm().double_value(&[]) / float.norm().double_value(&[]);
        assert!(
            relative < tolerance,
            "{toml}: relative output change {relative}"
        );
        assert!(relative > 0.0, "{toml}: the weights really are quantised");
        // Only the adapters and the head train.
        let trained: Vec<String> = network.parameters().into_iter().map(|(n, _)| n).collect();
        assert_eq!(
            trained,
            [
                "head.bias",
                "head.weight",
                "lora.hidden.0.a",
                "lora.hidden.0.b",
                "lora.hidden.1.a",
                "lora.hidden.1.b"
            ]
        );
    }
}

fn task_il(method_toml: &str) -> Vec<f64> {
    // As LoRA's efficacy test: low-rank updates on a frozen random MLP with PyTorch's
    // initialisation need Adam at 5·10⁻³ to learn a task in one epoch.
    let experiment = split_mnist(
        3,
        500,
        300,
        0,
        method_toml,
        &["training.optimizer.lr=0.005"],
    );
    let params = &experiment.method.params;
    let mut method = match experiment.method.name.as_str() {
        "lora" => retain_method_lora::from_params(params),
        _ => from_params(params),
    }
    .unwrap();
    let matrices = run_on(&experiment, &mnist(), method.as_mut()).unwrap();
    let task_il = &matrices[&Readout::TaskIl];
    (0..3).map(|j| task_il.r(3, j + 1)).collect()
}

/// On a 3-task Split-MNIST subset, LoRA on an NF4 base learns every task about as well as
/// LoRA on the float base, and like LoRA never forgets in task-IL.
#[test]
fn qlora_stays_close_to_lora_on_real_data() {
    let lora = task_il("name = \"lora\"\nrank = 8\nalpha = 16.0");
    let nf4 = task_il("name = \"qlora\"\nrank = 8\nalpha = 16.0");
    for (j, (l, q)) in lora.iter().zip(&nf4).enumerate() {
        assert!(*q > 0.9, "task {j}: qlora {q:.3} (lora {l:.3})");
        assert!(
            (l - q).abs() < 0.04,
            "task {j}: qlora {q:.3} vs lora {l:.3}"
        );
    }
}

#[test]
fn bad_hyper_parameters_are_refused() {
    let message = |r: Result<QLora, TrainError>| r.err().unwrap().to_string();
    assert_eq!(
        message(qlora("block = 0")),
        "invalid hyper-parameters for method `qlora`: `block` must be at least 1"
    );
    assert_eq!(
        message(qlora("rank = 0")),
        "invalid hyper-parameters for method `qlora`: `rank` must be at least 1"
    );
    assert!(
        message(qlora("quant = \"fp8\""))
            .contains("`quant` must be \"nf4\" | \"int8\" (found string `\"fp8\"`)")
    );
    assert!(message(qlora("bits = 4")).contains("unknown key `bits`"));
}

/// The task-id read-outs come from LoRA; merging into quantised weights is refused.
#[test]
fn read_outs_are_loras_except_merged() {
    let method = qlora("").unwrap();
    for readout in [
        Readout::ClassIl,
        Readout::TaskIl,
        Readout::TaskInferred,
        Readout::TaskInference,
    ] {
        assert!(method.supports_readout(readout), "{readout:?}");
    }
    assert!(!method.supports_readout(Readout::Merged));
}

#[test]
fn the_schema_fills_in_the_documented_defaults() {
    let params: QLoraParams = DESCRIPTOR.parse(&toml::Table::new()).unwrap();
    assert_eq!(
        params,
        QLoraParams {
            rank: 8,
            alpha: None,
            target: None,
            quant: Quant::Nf4,
            block: 64,
        }
    );
    // LoRA's keys are LoRA's own schema entries.
    for (ours, lora) in DESCRIPTOR.params.iter().zip(&retain_method_lora::PARAMS) {
        assert_eq!((ours.name, ours.default), (lora.name, lora.default));
    }
}
