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

fn table(source: &str) -> toml::Table {
    source.parse().unwrap()
}

#[test]
fn parameters_have_defaults_and_are_checked() {
    let params: Params = parse_params("replay", &table("")).unwrap();
    assert_eq!(params, Params::default());
    let params: Params = parse_params(
        "replay",
        &table("buffer_size = 7\nreplay_batch_size = 3\nbuffer = \"class_balanced\""),
    )
    .unwrap();
    assert_eq!(params.buffer, BufferKind::ClassBalanced);
    let err = from_params(&table("buffer_sise = 7"))
        .err()
        .unwrap()
        .to_string();
    assert!(err.contains("unknown field `buffer_sise`"), "{err}");
    let err = from_params(&table("buffer = \"fifo\""))
        .err()
        .unwrap()
        .to_string();
    assert!(err.contains("unknown variant `fifo`"), "{err}");
    let err = from_params(&table("replay_batch_size = 0"))
        .err()
        .unwrap()
        .to_string();
    assert!(
        err.contains("`replay_batch_size` must be at least 1"),
        "{err}"
    );
}

#[test]
fn reservoir_replay_trains_on_the_batch_plus_the_memory() {
    let fx = Fixture::new();
    let mut method = Replay::new(Params {
        buffer_size: 50,
        replay_batch_size: 50,
        buffer: BufferKind::Reservoir,
    })
    .unwrap();
    method.before_task(&fx.task(0)).unwrap();
    // Empty memory: plain cross-entropy of the batch, then the batch is remembered.
    let (first_indices, first) = fx.batch(0, 6);
    let loss = method.loss(&fx.step(0, &first_indices), &first);
    let plain = fx
        .model
        .forward_t(&first.inputs, true)
        .cross_entropy_for_logits(&first.labels);
    assert_eq!(Fixture::scalar(&loss), Fixture::scalar(&plain));
    assert_eq!(method.memory_len(), 6);
    // Second batch: the replay batch is the whole memory (6 < 50), so the loss is the
    // cross-entropy of the 10 + 6 samples together, whatever order they were drawn in.
    let (indices, batch) = fx.batch(1, 10);
    let loss = method.loss(&fx.step(1, &indices), &batch);
    let inputs = Tensor::cat(&[&batch.inputs, &first.inputs], 0);
    let labels = Tensor::cat(&[&batch.labels, &first.labels], 0);
    let expected = fx
        .model
        .forward_t(&inputs, true)
        .cross_entropy_for_logits(&labels);
    assert!((Fixture::scalar(&loss) - Fixture::scalar(&expected)).abs() < 1e-6);
    assert_eq!(method.memory_len(), 16);
}

#[test]
fn class_balanced_replay_fills_at_task_ends() {
    let fx = Fixture::new();
    let mut method = Replay::new(Params {
        buffer_size: 12,
        replay_batch_size: 4,
        buffer: BufferKind::ClassBalanced,
    })
    .unwrap();
    method.before_task(&fx.task(0)).unwrap();
    let (indices, batch) = fx.batch(0, 5);
    let loss = method.loss(&fx.step(0, &indices), &batch);
    let plain = fx
        .model
        .forward_t(&batch.inputs, true)
        .cross_entropy_for_logits(&batch.labels);
    assert_eq!(Fixture::scalar(&loss), Fixture::scalar(&plain));
    assert_eq!(method.memory_len(), 0, "filled at task ends only");
    method.after_task(&fx.task(0)).unwrap();
    assert_eq!(method.memory_len(), 12);
    method.after_task(&fx.task(1)).unwrap();
    let Some(Memory::ClassBalanced(memory)) = &method.memory else {
        panic!("class-balanced memory expected");
    };
    assert_eq!(
        memory.class_counts(),
        [(0, 3), (1, 3), (2, 3), (3, 3)].into_iter().collect()
    );
}
