use super::*;
use retain_train::testkit::{
    MethodFixture, mnist, snapshot, split_mnist, split_mnist_vit, stream_and_network,
};

fn method(toml: &str) -> Result<Box<dyn Method>, TrainError> {
    from_params(&toml::from_str(toml).unwrap())
}

fn simplecil(toml: &str) -> SimpleCil {
    SimpleCil::new(DESCRIPTOR.parse(&toml::from_str(toml).unwrap()).unwrap()).unwrap()
}

fn values(t: &Tensor) -> Vec<f64> {
    Vec::<f64>::try_from(t.to_kind(Kind::Double).flatten(0, -1)).unwrap()
}

#[test]
fn the_prototypes_are_the_class_means_of_the_frozen_features() {
    let fixture = MethodFixture::new();
    let mut m = simplecil("batch_size = 7");
    for task in [0, 1] {
        m.after_task(&fixture.task(task)).unwrap();
    }
    let (prototypes, present) = m.prototypes().unwrap();
    assert_eq!(prototypes.size(), [10, 6]);
    // By hand, one sample at a time: the fixture's tasks hold classes 0-1 and 2-3.
    let _no_grad = tch::no_grad_guard();
    for class in 0..10i64 {
        let indices: Vec<i64> = (0..2)
            .flat_map(|t| fixture.stream.tasks[t].train_indices.clone())
            .filter(|&i| {
                let batch = fixture.task(0).train_batch(&[i]);
                batch.labels.int64_value(&[0]) == class
            })
            .collect();
        let row = values(&prototypes.get(class));
        assert_eq!(present.get(class).int64_value(&[]) == 1, class < 4);
        if class >= 4 {
            assert!(indices.is_empty());
            assert!(row.iter().all(|&v| v == 0.0), "{row:?}");
            continue;
        }
        let mut mean = vec![0.0; 6];
        for &i in &indices {
            let batch = fixture.task(0).train_batch(&[i]);
            let f = values(&fixture.network.model.features(&batch.inputs, false));
            for (m, v) in mean.iter_mut().zip(f) {
                *m += v / indices.len() as f64;
            }
        }
        assert!(indices.len() >= 10, "class {class}: {}", indices.len());
        for (a, b) in row.iter().zip(&mean) {
            assert!((a - b).abs() < 1e-5, "class {class}: {row:?} vs {mean:?}");
        }
    }
}

#[test]
fn a_class_seen_again_takes_the_mean_of_its_newest_samples() {
    let fixture = MethodFixture::new();
    let mut m = simplecil("");
    m.after_task(&fixture.task(0)).unwrap();
    let first = m.prototypes().unwrap().0.copy();
    m.after_task(&fixture.task(0)).unwrap();
    let (again, present) = m.prototypes().unwrap();
    assert_eq!(values(&first), values(again));
    assert_eq!(
        values(present),
        [1., 1., 0., 0., 0., 0., 0., 0., 0., 0.].to_vec()
    );
}

#[test]
fn cosine_and_euclidean_scores_on_hand_built_features() {
    let features = Tensor::from_slice(&[1.0f32, 0.0, 1.0, 1.0]).view([2, 2]);
    let prototypes = Tensor::from_slice(&[2.0f32, 0.0, 0.0, 3.0, 5.0, 5.0]).view([3, 2]);
    let present = Tensor::from_slice(&[true, false, true]);
    let cosine = values(&scores(
        &features,
        &prototypes,
        &present,
        Similarity::Cosine,
    ));
    let h = 0.5f64.sqrt();
    let expected = [1.0, f64::NEG_INFINITY, h, h, f64::NEG_INFINITY, 1.0];
    for (a, b) in cosine.iter().zip(expected) {
        assert!(a == &b || (a - b).abs() < 1e-6, "{cosine:?}");
    }
    let euclidean = values(&scores(
        &features,
        &prototypes,
        &present,
        Similarity::Euclidean,
    ));
    let expected = [
        -1.0,
        f64::NEG_INFINITY,
        -(16.0f64 + 25.0).sqrt(),
        -(2.0f64).sqrt(),
        f64::NEG_INFINITY,
        -(32.0f64).sqrt(),
    ];
    for (a, b) in euclidean.iter().zip(expected) {
        assert!(a == &b || (a - b).abs() < 1e-5, "{euclidean:?}");
    }
}

#[test]
fn eval_logits_score_the_network_features_against_the_prototypes() {
    let fixture = MethodFixture::new();
    let mut m = simplecil("");
    let (_, batch) = fixture.batch(0, 8);
    assert!(m.eval_logits(&fixture.network, &batch.inputs).is_none());
    assert!(m.ncm_scores(&fixture.network, &batch.inputs).is_none());
    m.after_task(&fixture.task(0)).unwrap();
    let logits = m.eval_logits(&fixture.network, &batch.inputs).unwrap();
    assert_eq!(logits.size(), [8, 10]);
    let (p, present) = m.prototypes().unwrap();
    let (p, present) = (p.copy(), present.copy());
    let (p, present) = (&p, &present);
    let f = fixture.network.model.features(&batch.inputs, false);
    let by_hand = scores(&f, p, present, Similarity::Cosine);
    assert_eq!(values(&logits), values(&by_hand));
    // Classes 2-9 have no prototype.
    let row = values(&logits.get(0));
    assert!(row[2..].iter().all(|v| *v == f64::NEG_INFINITY), "{row:?}");
    assert!(
        row[..2]
            .iter()
            .all(|v| v.is_finite() && v.abs() <= 1.0 + 1e-6)
    );
    let ncm = m.ncm_scores(&fixture.network, &batch.inputs).unwrap();
    assert_eq!(
        values(&ncm),
        values(&scores(&f, p, present, Similarity::Euclidean))
    );
    let mut e = simplecil("similarity = \"euclidean\"");
    e.after_task(&fixture.task(0)).unwrap();
    assert_eq!(
        values(&e.eval_logits(&fixture.network, &batch.inputs).unwrap()),
        values(&ncm)
    );
}

#[test]
fn it_trains_nothing_and_the_backbone_stays_bit_identical() {
    let experiment = split_mnist(2, 100, 50, 0, "name = \"simplecil\"", &[]);
    let (stream, network) = stream_and_network(&experiment, &mnist());
    let before = snapshot(&network);
    let mut m = method("").unwrap();
    assert!(
        m.training_indices(&retain_train::testkit::task_context(&network, &stream, 0))
            .is_empty()
    );
    let outcome = retain_train::run(
        &experiment,
        &stream,
        &network,
        m.as_mut(),
        &mut retain_train::Silent,
    )
    .unwrap();
    let after = snapshot(&network);
    assert_eq!(before.len(), after.len());
    for (name, t) in &before {
        assert!(t.equal(&after[name]), "{name} changed");
    }
    // The prototype read-out of a random MLP's features already tells two digits apart.
    let class_il = outcome.counts[&Readout::ClassIl].accuracy().unwrap();
    assert!(class_il.r(1, 1) > 0.6, "{class_il:?}");
    assert_eq!(m.state().len(), 2);
}

#[test]
fn the_transformer_and_every_other_backbone_are_accepted() {
    for experiment in [
        split_mnist(2, 10, 10, 0, "name = \"simplecil\"", &[]),
        split_mnist_vit(2, 10, 10, 0, "name = \"simplecil\"", &[]),
    ] {
        let (_, network) = stream_and_network(&experiment, &mnist());
        method("").unwrap().check_network(&network).unwrap();
    }
}

#[test]
fn state_round_trips_the_prototypes() {
    let fixture = MethodFixture::new();
    let mut m = simplecil("");
    assert!(m.state().is_empty());
    m.after_task(&fixture.task(0)).unwrap();
    m.after_task(&fixture.task(1)).unwrap();
    let state = m.state();
    let names: Vec<&str> = state.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(names, ["prototypes", "present"]);
    let mut restored = simplecil("");
    restored
        .load_state(state.iter().map(|(n, t)| (n.clone(), t.copy())).collect())
        .unwrap();
    let (_, batch) = fixture.batch(2, 8);
    assert_eq!(
        values(&m.eval_logits(&fixture.network, &batch.inputs).unwrap()),
        values(
            &restored
                .eval_logits(&fixture.network, &batch.inputs)
                .unwrap()
        )
    );
    // Continuing from the restored state is continuing from the original.
    m.after_task(&fixture.task(2)).unwrap();
    restored.after_task(&fixture.task(2)).unwrap();
    for ((_, a), (_, b)) in m.state().iter().zip(restored.state().iter()) {
        assert!(a.equal(b));
    }
    restored.load_state(Vec::new()).unwrap();
    assert!(restored.prototypes().is_none());
}

#[test]
fn a_malformed_state_is_refused() {
    let mut m = simplecil("");
    let p = Tensor::zeros([10, 6], (Kind::Float, Device::Cpu));
    let present = Tensor::zeros([10], (Kind::Bool, Device::Cpu));
    let error = m
        .load_state(vec![("prototypes".into(), p.copy())])
        .unwrap_err()
        .to_string();
    assert!(error.contains("no `present`"), "{error}");
    let error = m
        .load_state(vec![
            ("prototypes".into(), p.copy()),
            (
                "present".into(),
                Tensor::zeros([9], (Kind::Bool, Device::Cpu)),
            ),
        ])
        .unwrap_err()
        .to_string();
    assert!(
        error.contains("`present` must be a [10] bool tensor"),
        "{error}"
    );
    let error = m
        .load_state(vec![("teacher".into(), p.copy())])
        .unwrap_err()
        .to_string();
    assert!(error.contains("unexpected tensor `teacher`"), "{error}");
    // Prototypes of another width than the network's features are refused at the next task.
    m.load_state(vec![
        (
            "prototypes".into(),
            Tensor::zeros([10, 5], (Kind::Float, Device::Cpu)),
        ),
        ("present".into(), present),
    ])
    .unwrap();
    let fixture = MethodFixture::new();
    let error = m.after_task(&fixture.task(0)).unwrap_err().to_string();
    assert!(error.contains("`prototypes` is [10, 5]"), "{error}");
}

#[test]
fn bad_hyper_parameters_are_rejected() {
    let error = method("batch_size = 0").err().unwrap().to_string();
    assert_eq!(
        error,
        "invalid hyper-parameters for method `simplecil`: `batch_size` must be ≥ 1, got 0"
    );
    let error = method("similarity = \"dot\"").err().unwrap().to_string();
    assert!(error.contains("similarity"), "{error}");
    let error = method("simlarity = \"cosine\"").err().unwrap().to_string();
    assert!(error.contains("unknown key `simlarity`"), "{error}");
}

#[test]
fn the_descriptor_example_builds() {
    let params: toml::Table = toml::from_str(DESCRIPTOR.example).unwrap();
    let m = simplecil(DESCRIPTOR.example);
    assert_eq!(
        m.params,
        Params {
            similarity: Similarity::Cosine,
            batch_size: 128
        }
    );
    from_params(&params).unwrap();
}
