//! On-device evaluation: every task of the stream in every read-out, correct counts summed in
//! one device tensor and copied to the host once per evaluation.

use std::collections::BTreeMap;

use retain_config::Readout;
use retain_stream::TaskStream;
use tch::{Device, Kind, Tensor};

use crate::{Method, Network, Selection, TrainError};

/// Per read-out, per task: (correct, samples) of one evaluation.
pub(crate) type Evaluation = BTreeMap<Readout, Vec<(u64, u64)>>;

/// Evaluates every task of the stream in every read-out, batched on the device, without a
/// method's hooks. Correct counts accumulate in one device tensor that is copied to the host
/// once. Panics when asked for an opt-in read-out ([`Readout::is_opt_in`]), which needs a
/// method: use [`evaluate_with`].
pub fn evaluate(
    network: &Network,
    stream: &TaskStream,
    readouts: &[Readout],
    batch_size: usize,
) -> Evaluation {
    evaluate_inner(network, stream, readouts, batch_size, 0, None).unwrap_or_else(|e| panic!("{e}"))
}

/// [`evaluate`] for a method, after `trained` tasks (0 before training). Wherever the network
/// is read out, a method's own scores ([`Method::eval_logits`]) replace its outputs. When
/// [`Method::uses_task_id`], [`Method::select`] sets the weights of each read-out up in the
/// order documented in [`method`](crate::method), and `select(Latest)` ends the evaluation.
///
/// * `class_il`, `domain_il`: arg-max over every class, under [`Selection::Latest`].
/// * `task_il`: arg-max over the true task's classes, under [`Selection::Task`] of the true
///   task.
/// * `merged`: arg-max over every class, under [`Selection::Merged`].
/// * `ncm`: arg-max of the method's [`Method::ncm_scores`] under [`Selection::Latest`]; before
///   any task is trained, class-IL's arg-max over every class.
/// * `task_inference`: hits are samples whose [`Method::infer_task`] id (computed under
///   `Latest`) is their own task; 0 before any task is trained.
/// * `task_inferred`: each sample's prediction is the arg-max over the classes of its
///   inferred task `k`, under [`Selection::Task`]`(k)`: every trained task's outputs are
///   computed for the whole batch, and `where(id == k)` keeps each sample's own. An id
///   outside the trained tasks predicts nothing (a miss). Before any task is trained there is
///   nothing to infer, and the prediction is the latest weights' arg-max over every class.
///
/// Fails before evaluating anything when the method does not support one of `readouts`, or
/// when it infers no ids although it claims the task-inference read-outs.
pub fn evaluate_with(
    network: &Network,
    stream: &TaskStream,
    readouts: &[Readout],
    batch_size: usize,
    trained: usize,
    method: &mut dyn Method,
) -> Result<Evaluation, TrainError> {
    evaluate_inner(network, stream, readouts, batch_size, trained, Some(method))
}

/// Fails, naming the read-out and the method, when `method` cannot provide one of
/// `readouts` ([`Method::supports_readout`]); without a method, when one is opt-in. The
/// trainer calls it before training, so that a run asking for the impossible stops at once.
pub fn check_readouts(readouts: &[Readout], method: Option<&dyn Method>) -> Result<(), TrainError> {
    let supported = |r: Readout| method.map_or(!r.is_opt_in(), |m| m.supports_readout(r));
    match readouts.iter().find(|&&r| !supported(r)) {
        Some(&readout) => Err(TrainError::UnsupportedReadout {
            readout,
            method: method.map_or("(none)", |m| m.name()).to_owned(),
        }),
        None => Ok(()),
    }
}

/// `method.select(selection)` when there is a method whose weights depend on the task.
fn select(
    method: &mut Option<&mut dyn Method>,
    selects: bool,
    network: &Network,
    selection: Selection,
) -> Result<(), TrainError> {
    match method {
        Some(m) if selects => m.select(network, selection),
        _ => Ok(()),
    }
}

/// The scores evaluation reads a batch out from: the method's own
/// ([`Method::eval_logits`]) where it has them, else the network's outputs.
fn outputs(method: &mut Option<&mut dyn Method>, network: &Network, inputs: &Tensor) -> Tensor {
    method
        .as_deref_mut()
        .and_then(|m| m.eval_logits(network, inputs))
        .unwrap_or_else(|| network.model.forward_t(inputs, false))
}

fn evaluate_inner(
    network: &Network,
    stream: &TaskStream,
    readouts: &[Readout],
    batch_size: usize,
    trained: usize,
    mut method: Option<&mut dyn Method>,
) -> Result<Evaluation, TrainError> {
    check_readouts(readouts, method.as_deref())?;
    let _no_grad = tch::no_grad_guard();
    let tasks = stream.tasks.len();
    let trained = trained.min(tasks);
    let correct = Tensor::zeros(
        [readouts.len() as i64, tasks as i64],
        (Kind::Int64, stream.device),
    );
    // Adds `hits` to every row that holds `readout` (none when it is not requested).
    let add = |readout: Readout, task: usize, hits: Tensor| {
        for (r, _) in readouts.iter().enumerate().filter(|&(_, &x)| x == readout) {
            let _ = correct.get(r as i64).get(task as i64).g_add_(&hits);
        }
    };
    let wants = |readout: Readout| readouts.contains(&readout);
    let selects = method.as_ref().is_some_and(|m| m.uses_task_id());
    let infers = trained > 0 && (wants(Readout::TaskInferred) || wants(Readout::TaskInference));
    // Read-outs computed from the latest weights' outputs: those without a task id, and
    // those whose own selection would change nothing.
    let latest: Vec<Readout> = readouts
        .iter()
        .copied()
        .filter(|&r| match r {
            Readout::ClassIl | Readout::DomainIl => true,
            Readout::TaskIl | Readout::Merged => !selects,
            Readout::TaskInferred => trained == 0,
            Readout::TaskInference | Readout::Ncm => false,
        })
        .collect();
    let method_name = method
        .as_ref()
        .map_or(String::new(), |m| m.name().to_owned());
    let ncm = wants(Readout::Ncm);
    let masked_argmax = |logits: &Tensor, mask: &Tensor| {
        logits
            .masked_fill(&mask.logical_not(), f64::NEG_INFINITY)
            .argmax(-1, false)
    };
    let hits =
        |predictions: &Tensor, labels: &Tensor| predictions.eq_tensor(labels).sum(Kind::Int64);
    for task in &stream.tasks {
        let (split, eval_indices, eval_len) = stream.evaluation_set(task);
        let batches = || {
            (0..eval_len).step_by(batch_size).map(move |start| {
                let len = batch_size.min(eval_len - start);
                let indices = eval_indices.narrow(0, start as i64, len as i64);
                stream.task_batch(split, task.index, &indices)
            })
        };
        // Per batch: the inferred task ids and the labels.
        let mut inferred: Vec<(Tensor, Tensor)> = Vec::new();
        if !latest.is_empty() || infers || ncm {
            select(&mut method, selects, network, Selection::Latest)?;
            for batch in batches() {
                if ncm {
                    let predictions = if trained == 0 {
                        // No exemplars yet: the network's arg-max, as task-inferred's row 0.
                        outputs(&mut method, network, &batch.inputs).argmax(-1, false)
                    } else {
                        method
                            .as_deref_mut()
                            .and_then(|m| m.ncm_scores(network, &batch.inputs))
                            .ok_or_else(|| TrainError::Method {
                                method: method_name.clone(),
                                message: "gave no nearest-mean scores, though it supports the `ncm` read-out"
                                    .into(),
                            })?
                            .argmax(-1, false)
                    };
                    add(Readout::Ncm, task.index, hits(&predictions, &batch.labels));
                }
                if !latest.is_empty() {
                    let logits = outputs(&mut method, network, &batch.inputs);
                    for &readout in &latest {
                        let predictions = match readout {
                            Readout::TaskIl => masked_argmax(&logits, &task.class_mask),
                            // Domain-IL: one label space shared by every task, so the single
                            // head's arg-max over all classes, as class-IL (and as merged or
                            // task-inferred where those reduce to it, see above).
                            _ => logits.argmax(-1, false),
                        };
                        add(readout, task.index, hits(&predictions, &batch.labels));
                    }
                }
                if infers {
                    let ids = method
                        .as_deref_mut()
                        .and_then(|m| m.infer_task(network, &batch.inputs))
                        .ok_or_else(|| TrainError::Method {
                            method: method_name.clone(),
                            message: "inferred no task ids, though it supports the task-inference read-outs"
                                .into(),
                        })?
                        .to_kind(Kind::Int64);
                    let own = ids.eq(task.index as i64).sum(Kind::Int64);
                    add(Readout::TaskInference, task.index, own);
                    inferred.push((ids, batch.labels));
                }
            }
        }
        if selects && wants(Readout::TaskIl) {
            select(&mut method, selects, network, Selection::Task(task.index))?;
            for batch in batches() {
                let predictions = masked_argmax(
                    &outputs(&mut method, network, &batch.inputs),
                    &task.class_mask,
                );
                add(
                    Readout::TaskIl,
                    task.index,
                    hits(&predictions, &batch.labels),
                );
            }
        }
        if selects && wants(Readout::Merged) {
            select(&mut method, selects, network, Selection::Merged)?;
            for batch in batches() {
                let predictions = outputs(&mut method, network, &batch.inputs).argmax(-1, false);
                add(
                    Readout::Merged,
                    task.index,
                    hits(&predictions, &batch.labels),
                );
            }
        }
        if infers && wants(Readout::TaskInferred) {
            // -1 matches no label: a sample whose id names no trained task is a miss.
            let mut predictions: Vec<Tensor> =
                inferred.iter().map(|(ids, _)| ids.full_like(-1)).collect();
            // One pass per trained task when the weights depend on it, else one for all.
            let passes: Vec<Vec<usize>> = if selects {
                (0..trained).map(|k| vec![k]).collect()
            } else {
                vec![(0..trained).collect()]
            };
            for pass in passes {
                if let [k] = pass[..] {
                    select(&mut method, selects, network, Selection::Task(k))?;
                }
                for (b, batch) in batches().enumerate() {
                    let logits = outputs(&mut method, network, &batch.inputs);
                    for &k in &pass {
                        let own = masked_argmax(&logits, &stream.tasks[k].class_mask);
                        let mine = inferred[b].0.eq(k as i64);
                        predictions[b] = own.where_self(&mine, &predictions[b]);
                    }
                }
            }
            for ((_, labels), predictions) in inferred.iter().zip(&predictions) {
                add(Readout::TaskInferred, task.index, hits(predictions, labels));
            }
        }
    }
    select(&mut method, selects, network, Selection::Latest)?;
    let host = Vec::<i64>::try_from(correct.to_device(Device::Cpu).flatten(0, -1))
        .expect("int64 counts convert to Vec<i64>");
    Ok(readouts
        .iter()
        .enumerate()
        .map(|(r, &readout)| {
            let per_task = stream
                .tasks
                .iter()
                .map(|task| {
                    let (_, _, samples) = stream.evaluation_set(task);
                    (host[r * tasks + task.index] as u64, samples as u64)
                })
                .collect();
            (readout, per_task)
        })
        .collect())
}
