use super::*;

use tch::nn::ModuleT as _;

/// A 10-class synthetic dataset (2×2 images whose pixels encode the index) split into 5
/// tasks of 2 classes, a small MLP, and the contexts the trainer would pass.
struct Fixture {
    stream: retain_stream::TaskStream,
    vars: tch::nn::VarStore,
    model: retain_models::Mlp,
}

impl Fixture {
    fn new() -> Self {
        use retain_config::{
            ClassOrder, ClassOrderName, DatasetName, Readout, StreamConfig, StreamKind,
        };
        let split = |len: usize| retain_data::Split {
            images: (0..len * 4).map(|i| ((i * 37) % 251) as u8).collect(),
            labels: (0..len).map(|i| (i % 10) as u8).collect(),
            len,
        };
        let dataset = retain_data::ImageDataset {
            name: "mnist".into(),
            classes: 10,
            shape: [1, 2, 2],
            train: split(200),
            test: split(50),
        };
        let config = StreamConfig {
            kind: StreamKind::Split,
            dataset: DatasetName::Mnist,
            tasks: 5,
            classes_per_task: 2,
            class_order: ClassOrder::Named(ClassOrderName::Natural),
            train_samples_per_task: None,
            test_samples_per_task: None,
            readouts: vec![Readout::ClassIl],
        };
        let stream =
            retain_stream::TaskStream::build(&dataset, &config, 0, tch::Device::Cpu).unwrap();
        tch::manual_seed(0);
        let vars = tch::nn::VarStore::new(tch::Device::Cpu);
        let model = retain_models::Mlp::new(&vars.root(), 4, &[6], 10);
        Self {
            stream,
            vars,
            model,
        }
    }

    fn task(&self, task: usize) -> retain_train::TaskContext<'_> {
        retain_train::TaskContext {
            model: &self.model,
            vars: &self.vars,
            stream: &self.stream,
            task: &self.stream.tasks[task],
            device: tch::Device::Cpu,
            seed: 0,
        }
    }

    fn step<'a>(&'a self, task: usize, indices: &'a tch::Tensor) -> retain_train::StepContext<'a> {
        retain_train::StepContext {
            model: &self.model,
            vars: &self.vars,
            stream: &self.stream,
            task: &self.stream.tasks[task],
            device: tch::Device::Cpu,
            step: 0,
            indices,
        }
    }

    /// The first `n` training samples of a task: indices and batch.
    fn batch(&self, task: usize, n: usize) -> (tch::Tensor, retain_stream::Batch) {
        let indices = tch::Tensor::from_slice(&self.stream.tasks[task].train_indices[..n]);
        let batch = self.stream.batch(retain_stream::SplitKind::Train, &indices);
        (indices, batch)
    }

    fn scalar(t: &tch::Tensor) -> f64 {
        t.double_value(&[])
    }
}

#[test]
fn loss_terms_match_hand_computation() {
    // Differences (1, 0, −1, −1): mean square 3/4; α = 0.5 gives 0.375.
    let logits = Tensor::from_slice(&[1.0f32, 2.0, 0.0, 0.0]).view([2, 2]);
    let stored = Tensor::from_slice(&[0.0f32, 2.0, 1.0, 1.0]).view([2, 2]);
    let term = Fixture::scalar(&logit_term(0.5, &logits, &stored));
    assert!((term - 0.375).abs() < 1e-7, "{term}");
    // Logits (0, ln 3) for label 1: softmax gives 3/4, CE = ln(4/3); β = 2.
    let logits = Tensor::from_slice(&[0.0f32, 3f32.ln()]).view([1, 2]);
    let labels = Tensor::from_slice(&[1i64]);
    let term = Fixture::scalar(&label_term(2.0, &logits, &labels));
    assert!((term - 2.0 * (4.0f64 / 3.0).ln()).abs() < 1e-6, "{term}");
}

#[test]
fn hook_adds_logit_and_label_terms_for_stored_samples() {
    let fx = Fixture::new();
    let (alpha, beta) = (0.3, 0.7);
    let mut method = Der::new(Params {
        buffer_size: 50,
        replay_batch_size: 50,
        alpha,
        beta,
    })
    .unwrap();
    method.before_task(&fx.task(0)).unwrap();
    // Empty reservoir: plain cross-entropy; the batch and its logits are stored.
    let (first_indices, first) = fx.batch(0, 6);
    let loss = method.loss(&fx.step(0, &first_indices), &first);
    let plain = fx
        .model
        .forward_t(&first.inputs, true)
        .cross_entropy_for_logits(&first.labels);
    assert_eq!(Fixture::scalar(&loss), Fixture::scalar(&plain));
    assert_eq!(method.reservoir().unwrap().len(), 6);
    // Move every logit by +1: the stored ones are now exactly 1 away, MSE = 1.
    {
        let _no_grad = tch::no_grad_guard();
        let mut bias = fx.vars.variables()["head.bias"].shallow_clone();
        let _ = bias.g_add_scalar_(1.0);
    }
    let (indices, batch) = fx.batch(1, 10);
    let loss = Fixture::scalar(&method.loss(&fx.step(1, &indices), &batch));
    let current = fx
        .model
        .forward_t(&batch.inputs, true)
        .cross_entropy_for_logits(&batch.labels);
    let replayed = fx
        .model
        .forward_t(&first.inputs, true)
        .cross_entropy_for_logits(&first.labels);
    let expected = Fixture::scalar(&current) + alpha * 1.0 + beta * Fixture::scalar(&replayed);
    assert!((loss - expected).abs() < 1e-5, "{loss} vs {expected}");
    assert_eq!(method.reservoir().unwrap().len(), 16);
}

#[test]
fn parameters_are_checked() {
    let table = |s: &str| -> toml::Table { s.parse().unwrap() };
    let params: Params = parse_params("der", &table("alpha = 0.2\nbeta = 1.0")).unwrap();
    assert_eq!(
        (params.alpha, params.beta, params.buffer_size),
        (0.2, 1.0, 500)
    );
    let err = from_params(&table("gamma = 1.0"))
        .err()
        .unwrap()
        .to_string();
    assert!(err.contains("unknown field `gamma`"), "{err}");
    let err = from_params(&table("alpha = -1.0"))
        .err()
        .unwrap()
        .to_string();
    assert!(
        err.contains("`alpha` must be a finite number ≥ 0 (got -1)"),
        "{err}"
    );
    assert!(from_params(&table("buffer_size = 0")).is_err());
}
