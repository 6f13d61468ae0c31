//! Validation: checks the raw experiment's values against each other and against the
//! dataset, and turns it into an [`ExperimentPlan`].
//!
//! Every error names the offending key and, when the experiment came from text, its line
//! (a missing key points at its table's header). The checks run in file order, `[stream]`
//! before `[model]`, `[training]` and `[pretrain]`, so the first problem reported is the
//! first in the file.

use crate::{
    Angles, ClassOrder, ClassOrderName, ClassesPerTask, ConfigError, DatasetName, EvaluateOn,
    Experiment, ExperimentPlan, MAX_STEPS_PER_TASK, MemoryFormat, ModelConfig, OptimizerConfig,
    Scenario, SplitLabels, StreamConfig, StreamKind, StreamPlan, TrainingLoss, VitSpec,
    check_memory, line_of_key, line_of_table,
};

impl Experiment {
    /// Checks values against each other and resolves every default: the plan a run follows.
    /// `origin` names the experiment in errors; `source` (may be empty) is the text it was
    /// parsed from, used to point errors at lines.
    pub fn validate(&self, origin: &str, source: &str) -> Result<ExperimentPlan, ConfigError> {
        let invalid = error_at(origin, source);
        check_folder_name(&self.name).map_err(|message| invalid("name", message))?;
        let stream = validate_stream(&self.stream, &invalid)?;
        let outputs = stream.outputs();
        validate_model(
            &self.model,
            "model",
            stream.image_shape(),
            outputs,
            &invalid,
        )?;
        let t = &self.training;
        for (key, value) in [
            ("training.epochs", t.epochs),
            ("training.batch_size", t.batch_size),
            ("training.eval_batch_size", t.eval_batch_size),
        ] {
            if value == 0 {
                return Err(invalid(key, "must be at least 1".into()));
            }
        }
        check_steps(
            "training.epochs",
            t.epochs,
            t.batch_size,
            samples_per_task_bound(&self.stream),
            &invalid,
        )?;
        validate_optimizer(&t.optimizer, "training.optimizer", &invalid)?;
        if !(t.divergence_factor.is_finite() && t.divergence_factor > 1.0) {
            return Err(invalid(
                "training.divergence_factor",
                format!(
                    "{} must be a finite number above 1 (a multiple of the first epoch's mean loss)",
                    t.divergence_factor
                ),
            ));
        }
        if t.loss == TrainingLoss::TaskIl && self.stream.is_domain_incremental() {
            let stream = if self.stream.kind == StreamKind::Split {
                "split stream with `stream.labels = \"within_task\"`".to_owned()
            } else {
                format!("`{}` stream", self.stream.kind.as_str())
            };
            return Err(invalid(
                "training.loss",
                format!(
                    "`task_il` needs tasks with classes of their own (a `split` stream with global labels); every task of a {stream} has all the labels, so the loss would be the class-IL one"
                ),
            ));
        }
        if t.memory_format == MemoryFormat::ChannelsLast
            && !matches!(self.model, ModelConfig::Resnet18 { .. })
        {
            return Err(invalid(
                "training.memory_format",
                format!(
                    "`channels_last` lays out convolution weights; the `{}` model has none (use it with `kind = \"resnet18\"`)",
                    self.model.kind_name()
                ),
            ));
        }
        validate_online(t, &invalid)?;
        validate_pretrain(self, &invalid)?;
        Ok(ExperimentPlan::new(self.clone(), stream))
    }

    /// [`Experiment::validate`] of an experiment built or changed in code, without source
    /// text: errors name the key but no line.
    pub fn plan(&self) -> Result<ExperimentPlan, ConfigError> {
        self.validate(&format!("experiment `{}`", self.name), "")
    }
}

/// `Ok` when `name` is one folder name: non-empty, without slashes, not starting with a dot
/// (so neither `..` nor a hidden folder), so that `<output>/<name>` stays inside `<output>`;
/// else why not. Experiment names and run names are checked with it.
pub fn check_folder_name(name: &str) -> Result<(), String> {
    if name.is_empty() || name.contains(['/', '\\', '\0']) || name.starts_with('.') {
        return Err(format!(
            "`{name}` must be a non-empty folder name without slashes, not starting with a dot"
        ));
    }
    Ok(())
}

impl StreamConfig {
    /// Checks the `[stream]` table on its own and resolves its defaults: the plan a task
    /// stream is built from. Errors name the key, from origin `[stream]`.
    pub fn plan(&self) -> Result<StreamPlan, ConfigError> {
        validate_stream(self, &error_at("[stream]", ""))
    }
}

/// The error builder of one validation: an [`ConfigError::Invalid`] for `key`, its origin
/// pointing at the key's line in `source` where it can be found.
fn error_at<'a>(origin: &'a str, source: &'a str) -> impl Fn(&str, String) -> ConfigError + 'a {
    move |key: &str, message: String| {
        // A missing key (`pretrain.teacher.checkpoint`) points at its table's header.
        let line = line_of_key(source, key).or_else(|| {
            let (table, _) = key.rsplit_once('.')?;
            line_of_table(source, table)
        });
        let origin = match line {
            Some(line) => format!("{origin}:{line}"),
            None => origin.to_owned(),
        };
        ConfigError::Invalid {
            origin,
            key: key.to_owned(),
            message,
        }
    }
}

/// Checks the online protocol's keys: `online` needs one epoch and `eval_every` of at least
/// one step; `eval_every` and `lca_beta` need `online`.
fn validate_online(
    t: &crate::TrainingConfig,
    invalid: &impl Fn(&str, String) -> ConfigError,
) -> Result<(), ConfigError> {
    if !t.online {
        for (key, value) in [
            ("training.eval_every", t.eval_every),
            ("training.lca_beta", t.lca_beta),
        ] {
            if value.is_some() {
                return Err(invalid(
                    key,
                    "belongs to the online protocol: set `training.online = true`, or remove it"
                        .into(),
                ));
            }
        }
        return Ok(());
    }
    if t.epochs != 1 {
        return Err(invalid(
            "training.epochs",
            format!(
                "is {}; an online run sees every sample exactly once: `epochs = 1`",
                t.epochs
            ),
        ));
    }
    match t.eval_every {
        None => Err(invalid(
            "training.eval_every",
            "an online run needs `eval_every`, the steps between its anytime evaluations".into(),
        )),
        Some(0) => Err(invalid(
            "training.eval_every",
            "must be at least 1 (steps between anytime evaluations)".into(),
        )),
        Some(_) => Ok(()),
    }
}

/// The classes of every task of a split stream, from `stream.classes_per_task` (one number
/// for every task, or one per task) and `stream.first_task_classes`: every count at least 1,
/// one per task, together no more than the dataset's classes. Each refusal names the key.
fn resolve_task_classes(
    s: &StreamConfig,
    invalid: &dyn Fn(&str, String) -> ConfigError,
) -> Result<Vec<usize>, ConfigError> {
    let dataset = s.dataset.as_str();
    let classes = s.dataset.classes();
    let at_least_one = |key: &str| invalid(key, "must be at least 1".into());
    // `needed` classes (`None`: more than a `usize` holds), refused beyond the dataset's.
    let too_many = |key: &str, what: String, needed: Option<usize>| match needed {
        Some(needed) if needed <= classes => Ok(needed),
        needed => {
            let needed = needed.map_or_else(|| "more than 2^64".to_owned(), |n| n.to_string());
            Err(invalid(
                key,
                format!("{what} need {needed} classes, but {dataset} has {classes}"),
            ))
        }
    };
    match (&s.classes_per_task, s.first_task_classes) {
        (None, _) => Err(invalid(
            "stream.classes_per_task",
            "a split stream needs it (how many classes each task has)".into(),
        )),
        (&Some(ClassesPerTask::Each(each)), None) => {
            if each == 0 {
                return Err(at_least_one("stream.classes_per_task"));
            }
            too_many(
                "stream.tasks",
                format!(
                    "`stream.tasks` = {} × `stream.classes_per_task` = {each}",
                    s.tasks
                ),
                s.tasks.checked_mul(each),
            )?;
            Ok(vec![each; s.tasks])
        }
        (&Some(ClassesPerTask::Each(each)), Some(first)) => {
            if each == 0 {
                return Err(at_least_one("stream.classes_per_task"));
            }
            if first == 0 {
                return Err(at_least_one("stream.first_task_classes"));
            }
            let later = s.tasks - 1;
            too_many(
                "stream.first_task_classes",
                format!(
                    "`stream.first_task_classes` = {first} + (`stream.tasks` − 1) = {later} × `stream.classes_per_task` = {each}"
                ),
                later.checked_mul(each).and_then(|n| n.checked_add(first)),
            )?;
            let mut counts = vec![each; s.tasks];
            counts[0] = first;
            Ok(counts)
        }
        (Some(ClassesPerTask::PerTask(_)), Some(_)) => Err(invalid(
            "stream.first_task_classes",
            "`stream.classes_per_task` is a list, whose first entry is already the first task's classes: remove `stream.first_task_classes`, or give `stream.classes_per_task` as one number for the later tasks".into(),
        )),
        (Some(ClassesPerTask::PerTask(counts)), None) => {
            if counts.len() != s.tasks {
                return Err(invalid(
                    "stream.classes_per_task",
                    format!(
                        "lists the classes of {} tasks, but `stream.tasks` = {}: give one entry per task",
                        counts.len(),
                        s.tasks
                    ),
                ));
            }
            if let Some(task) = counts.iter().position(|&n| n == 0) {
                return Err(invalid(
                    "stream.classes_per_task",
                    format!(
                        "entry {task} (task {}) is 0; every task needs at least 1 class",
                        task + 1
                    ),
                ));
            }
            too_many(
                "stream.classes_per_task",
                format!("the entries of `stream.classes_per_task` ({counts:?})"),
                counts.iter().try_fold(0usize, |sum, &n| sum.checked_add(n)),
            )?;
            Ok(counts.clone())
        }
    }
}

/// Checks the `[stream]` table and resolves it: the kind-specific keys into a [`Scenario`],
/// the rest into a [`StreamPlan`].
fn validate_stream(
    s: &StreamConfig,
    invalid: &dyn Fn(&str, String) -> ConfigError,
) -> Result<StreamPlan, ConfigError> {
    let kind = s.kind.as_str();
    let dataset = s.dataset.as_str();
    let classes = s.dataset.classes();
    let only_for = |key: &str, wanted: &str| {
        invalid(
            key,
            format!("applies to {wanted} streams only, this stream is `{kind}`"),
        )
    };
    if s.tasks == 0 {
        return Err(invalid("stream.tasks", "must be at least 1".into()));
    }
    let scenario = if s.kind == StreamKind::Split {
        let task_classes = resolve_task_classes(s, invalid)?;
        let needed: usize = task_classes.iter().sum();
        if s.labels() == SplitLabels::WithinTask
            && task_classes.iter().any(|&n| n != task_classes[0])
        {
            return Err(invalid(
                "stream.labels",
                format!(
                    "\"within_task\" gives every task the same labels, so every task needs the same number of classes, not {task_classes:?}"
                ),
            ));
        }
        if s.class_order == Some(ClassOrder::Named(ClassOrderName::Icarl))
            && s.dataset != DatasetName::Cifar100
        {
            return Err(invalid(
                "stream.class_order",
                format!(
                    "\"icarl\" is the class order of iCaRL's CIFAR-100 experiments (`dataset = \"cifar100\"`), not one of {dataset}'s"
                ),
            ));
        }
        if let Some(ClassOrder::Explicit(order)) = &s.class_order {
            let mut seen = vec![false; classes];
            for &class in order {
                let slot = seen.get_mut(class as usize).ok_or_else(|| {
                    invalid(
                        "stream.class_order",
                        format!("class {class} does not exist ({dataset} has {classes})"),
                    )
                })?;
                if std::mem::replace(slot, true) {
                    return Err(invalid(
                        "stream.class_order",
                        format!("class {class} is listed twice"),
                    ));
                }
            }
            if order.len() < needed {
                return Err(invalid(
                    "stream.class_order",
                    format!("lists {} classes, the stream needs {needed}", order.len()),
                ));
            }
        }
        Scenario::Split {
            task_classes,
            class_order: s.class_order(),
            labels: s.labels(),
        }
    } else {
        if s.classes_per_task.is_some() {
            return Err(invalid(
                "stream.classes_per_task",
                format!("a `{kind}` stream uses every class in every task; remove the key"),
            ));
        }
        if s.first_task_classes.is_some() {
            return Err(only_for("stream.first_task_classes", "split"));
        }
        if s.class_order.is_some() {
            return Err(only_for("stream.class_order", "split"));
        }
        if s.labels.is_some() {
            return Err(invalid(
                "stream.labels",
                format!(
                    "applies to split streams only; every task of a `{kind}` stream already shares the dataset's labels (remove the key)"
                ),
            ));
        }
        if s.kind == StreamKind::Permuted {
            Scenario::Permuted {
                first_task_unpermuted: s.first_task_unpermuted,
            }
        } else {
            Scenario::Rotated {
                angles: s.angles(),
                angle_range: s.angle_range(),
            }
        }
    };
    if let Some(percent) = s.blurry {
        if s.kind != StreamKind::Split {
            return Err(only_for("stream.blurry", "split"));
        }
        if !(0.0..=100.0).contains(&percent) {
            return Err(invalid(
                "stream.blurry",
                format!("{percent} is outside [0, 100] (a percentage of each class's samples)"),
            ));
        }
        if percent > 0.0 && s.tasks < 2 {
            return Err(invalid(
                "stream.blurry",
                "moves samples to the other tasks, and a stream of one task has none".into(),
            ));
        }
    }
    if s.first_task_unpermuted && s.kind != StreamKind::Permuted {
        return Err(only_for("stream.first_task_unpermuted", "permuted"));
    }
    if s.kind == StreamKind::Rotated {
        if let Some(Angles::Explicit(angles)) = &s.angles {
            if angles.len() != s.tasks {
                return Err(invalid(
                    "stream.angles",
                    format!("lists {} angles for {} tasks", angles.len(), s.tasks),
                ));
            }
            if let Some(bad) = angles.iter().find(|a| !a.is_finite()) {
                return Err(invalid(
                    "stream.angles",
                    format!("{bad} is not a finite angle"),
                ));
            }
        }
        if let Some([lo, hi]) = s.angle_range
            && !(lo.is_finite() && hi.is_finite() && lo <= hi)
        {
            return Err(invalid(
                "stream.angle_range",
                format!("[{lo}, {hi}] must be finite with lo ≤ hi"),
            ));
        }
    } else {
        if s.angles.is_some() {
            return Err(only_for("stream.angles", "rotated"));
        }
        if s.angle_range.is_some() {
            return Err(only_for("stream.angle_range", "rotated"));
        }
    }
    for (key, limit) in [
        ("stream.train_samples_per_task", s.train_samples_per_task),
        ("stream.test_samples_per_task", s.test_samples_per_task),
    ] {
        if limit == Some(0) {
            return Err(invalid(key, "must be at least 1 when given".into()));
        }
    }
    if let Some(fraction) = s.validation_fraction
        && !(fraction > 0.0 && fraction < 1.0)
    {
        return Err(invalid(
            "stream.validation_fraction",
            format!("{fraction} is outside (0, 1)"),
        ));
    }
    if s.evaluate_on == EvaluateOn::Validation && s.validation_fraction.is_none() {
        return Err(invalid(
            "stream.evaluate_on",
            "\"validation\" needs `stream.validation_fraction` (the share of the training split to hold out)".into(),
        ));
    }
    if let Some(augment) = s.augment {
        let [_, height, width] = s.dataset.image_shape();
        if augment.crop_padding >= height.min(width) {
            return Err(invalid(
                "stream.augment.crop_padding",
                format!(
                    "{} pixels of padding is not smaller than the {height}×{width} images of {dataset}",
                    augment.crop_padding
                ),
            ));
        }
    }
    if let Some(twice) = first_duplicate(&s.readouts) {
        return Err(invalid(
            "stream.readouts",
            format!("`{}` is listed twice", twice.as_str()),
        ));
    }
    let plan = StreamPlan::new(s, scenario);
    if let Some(bad) = plan.readouts().iter().find(|&&r| !s.accepts(r)) {
        let names: Vec<&str> = s.default_readouts().iter().map(|r| r.as_str()).collect();
        let stream = if plan.labels() == SplitLabels::WithinTask {
            format!(
                "split stream with `stream.labels = \"within_task\"`, whose tasks share {} labels and no task id is given",
                plan.outputs()
            )
        } else {
            format!("`{kind}` stream")
        };
        return Err(invalid(
            "stream.readouts",
            format!(
                "`{}` does not apply to a {stream} (use {})",
                bad.as_str(),
                names.join(", ")
            ),
        ));
    }
    Ok(plan)
}

/// The first item of `items` that an earlier one equals.
fn first_duplicate<T: PartialEq>(items: &[T]) -> Option<&T> {
    items
        .iter()
        .enumerate()
        .find(|(i, item)| items[..*i].contains(item))
        .map(|(_, item)| item)
}

fn validate_pretrain(
    experiment: &Experiment,
    invalid: &dyn Fn(&str, String) -> ConfigError,
) -> Result<(), ConfigError> {
    let Some(p) = &experiment.pretrain else {
        return Ok(());
    };
    if experiment.stream.kind == StreamKind::Split
        && experiment.stream.labels() == SplitLabels::WithinTask
    {
        return Err(invalid(
            "stream.labels",
            "\"within_task\" gives the model a head of `stream.classes_per_task` outputs, but a `[pretrain]` stage trains a head over the dataset's classes; remove the `[pretrain]` table or the key".into(),
        ));
    }
    let stream_dataset = experiment.stream.dataset;
    let dataset = p.dataset_for(stream_dataset);
    if dataset.image_shape() != stream_dataset.image_shape() {
        let [c, h, w] = dataset.image_shape();
        let [sc, sh, sw] = stream_dataset.image_shape();
        return Err(invalid(
            "pretrain.dataset",
            format!(
                "{} has {c}×{h}×{w} images but the stream's {} has {sc}×{sh}×{sw}; the model is built for the stream's",
                dataset.as_str(),
                stream_dataset.as_str()
            ),
        ));
    }
    let head = stream_dataset.classes();
    let available = dataset.classes();
    if let Some(classes) = &p.classes {
        if classes.is_empty() {
            return Err(invalid(
                "pretrain.classes",
                "list at least one class".into(),
            ));
        }
        let mut seen = vec![false; available];
        for &class in classes {
            let Some(slot) = seen.get_mut(class as usize) else {
                return Err(invalid(
                    "pretrain.classes",
                    format!(
                        "class {class} does not exist ({} has {available})",
                        dataset.as_str()
                    ),
                ));
            };
            if std::mem::replace(slot, true) {
                return Err(invalid(
                    "pretrain.classes",
                    format!("class {class} is listed twice"),
                ));
            }
        }
    }
    let largest = p
        .classes
        .as_ref()
        .and_then(|c| c.iter().max().map(|&m| m as usize + 1))
        .unwrap_or(available);
    if largest > head {
        return Err(invalid(
            if p.classes.is_some() {
                "pretrain.classes"
            } else {
                "pretrain.dataset"
            },
            format!(
                "labels up to {} do not fit the model's head of {head} outputs (the classes of the stream's {})",
                largest - 1,
                stream_dataset.as_str()
            ),
        ));
    }
    for (key, value) in [
        ("pretrain.epochs", p.epochs),
        ("pretrain.batch_size", p.batch_size),
    ] {
        if value == Some(0) {
            return Err(invalid(key, "must be at least 1".into()));
        }
    }
    let (samples, _) = dataset.spec().split_sizes();
    check_steps(
        "pretrain.epochs",
        p.epochs.unwrap_or(experiment.training.epochs),
        p.batch_size.unwrap_or(experiment.training.batch_size),
        samples,
        invalid,
    )?;
    if let Some(optimizer) = &p.optimizer {
        validate_optimizer(optimizer, "pretrain.optimizer", invalid)?;
    }
    match &p.teacher {
        None => {
            for (key, given) in [
                ("pretrain.temperature", p.temperature.is_some()),
                ("pretrain.hard_weight", p.hard_weight.is_some()),
            ] {
                if given {
                    return Err(invalid(
                        key,
                        "applies to distillation only; add a `[pretrain.teacher]` table or remove the key".into(),
                    ));
                }
            }
        }
        Some(teacher) => {
            validate_model(
                teacher,
                "pretrain.teacher",
                stream_dataset.image_shape(),
                head,
                invalid,
            )?;
            if teacher.checkpoint().is_none() {
                return Err(invalid(
                    "pretrain.teacher.checkpoint",
                    "a teacher needs its trained weights: `checkpoint = \"teacher.safetensors\"` (e.g. written by `retain pretrain`)".into(),
                ));
            }
            if let Some(t) = p.temperature
                && !(t.is_finite() && t > 0.0)
            {
                return Err(invalid(
                    "pretrain.temperature",
                    format!("{t} must be a positive number"),
                ));
            }
            if let Some(w) = p.hard_weight
                && !(0.0..=1.0).contains(&w)
            {
                return Err(invalid(
                    "pretrain.hard_weight",
                    format!("{w} is outside [0, 1]"),
                ));
            }
        }
    }
    Ok(())
}

/// The most training samples one task of `stream` holds: `train_samples_per_task`, else the
/// dataset's whole training split.
fn samples_per_task_bound(stream: &StreamConfig) -> usize {
    let (split, _) = stream.dataset.spec().split_sizes();
    stream.train_samples_per_task.unwrap_or(split).min(split)
}

/// Refuses `epochs` (the value of `key`) when `epochs` × batches of `batch_size` over
/// `samples` exceed [`MAX_STEPS_PER_TASK`].
fn check_steps(
    key: &str,
    epochs: usize,
    batch_size: usize,
    samples: usize,
    invalid: &dyn Fn(&str, String) -> ConfigError,
) -> Result<(), ConfigError> {
    let batches = (samples as u128).div_ceil(batch_size.max(1) as u128).max(1);
    let steps = epochs as u128 * batches;
    if steps > MAX_STEPS_PER_TASK {
        return Err(invalid(
            key,
            format!(
                "`{key}` = {epochs} makes up to {steps} optimiser steps per task ({batches} batches of {batch_size} per epoch), more than the cap of {MAX_STEPS_PER_TASK}"
            ),
        ));
    }
    Ok(())
}

/// Checks a model table for images of shape `image` (`[C, H, W]`) and a head of `outputs`
/// classes; `prefix` is its key (`model`, `pretrain.teacher`).
fn validate_model(
    model: &ModelConfig,
    prefix: &str,
    image: [usize; 3],
    outputs: usize,
    invalid: &dyn Fn(&str, String) -> ConfigError,
) -> Result<(), ConfigError> {
    let weights = |key: &str, value: String, parameters: Option<u128>| {
        check_memory(
            &format!("{prefix}.{key}"),
            value,
            parameters.and_then(|p| p.checked_mul(4)),
            "its weights, 4 bytes each",
        )
        .map_err(|message| invalid(&format!("{prefix}.{key}"), message))
    };
    match model {
        ModelConfig::Mlp { hidden, .. } => {
            if hidden.contains(&0) {
                return Err(invalid(
                    &format!("{prefix}.hidden"),
                    "layer widths must be positive".into(),
                ));
            }
            let [c, h, w] = image;
            let widths: Vec<u128> = std::iter::once((c * h * w) as u128)
                .chain(hidden.iter().map(|&n| n as u128))
                .chain(std::iter::once(outputs as u128))
                .collect();
            let parameters = widths.windows(2).try_fold(0u128, |sum, pair| {
                sum.checked_add(pair[0].checked_mul(pair[1])?.checked_add(pair[1])?)
            });
            weights("hidden", format!("{hidden:?}"), parameters)?;
        }
        ModelConfig::Resnet18 { nf, .. } => {
            if *nf == 0 {
                return Err(invalid(
                    &format!("{prefix}.nf"),
                    "must be at least 1".into(),
                ));
            }
            // ResNet-18's convolutions hold about 2727·nf² weights (11.2 M at nf = 64).
            let nf = *nf as u128;
            weights(
                "nf",
                nf.to_string(),
                nf.checked_mul(nf).and_then(|n| n.checked_mul(2700)),
            )?;
        }
        ModelConfig::Vit { .. } => {
            let spec = model
                .vit()
                .expect("a vit table")
                .map_err(|(key, message)| invalid(&format!("{prefix}.{key}"), message))?;
            let VitSpec {
                patch,
                dim,
                depth,
                heads,
                mlp_dim,
                ..
            } = &spec;
            for (key, value) in [
                ("patch", patch),
                ("dim", dim),
                ("depth", depth),
                ("heads", heads),
                ("mlp_dim", mlp_dim),
                ("image_size", &spec.image_size.unwrap_or(1)),
                ("channels", &spec.channels.unwrap_or(1)),
            ] {
                if *value == 0 {
                    return Err(invalid(
                        &format!("{prefix}.{key}"),
                        "must be at least 1".into(),
                    ));
                }
            }
            // Each block's attention (4·dim²) and MLP (2·dim·mlp_dim) weights.
            let (d, m) = (*dim as u128, *mlp_dim as u128);
            let per_block = d
                .checked_mul(d)
                .and_then(|dd| dd.checked_mul(4))
                .and_then(|a| a.checked_add(d.checked_mul(m)?.checked_mul(2)?));
            let parameters = per_block.and_then(|b| b.checked_mul(*depth as u128));
            for (key, value) in [("dim", dim), ("mlp_dim", mlp_dim), ("depth", depth)] {
                weights(key, value.to_string(), parameters)?;
            }
            if dim % heads != 0 {
                return Err(invalid(
                    &format!("{prefix}.dim"),
                    format!("{dim} is not a multiple of `heads` = {heads}"),
                ));
            }
            let [channels, height, width] = spec.input_shape(image);
            if channels != image[0] && image[0] != 1 {
                return Err(invalid(
                    &format!("{prefix}.channels"),
                    format!(
                        "the model takes {channels} channels but the stream's images have {}; only grey images are repeated to more",
                        image[0]
                    ),
                ));
            }
            if height % patch != 0 || width % patch != 0 {
                let key = if spec.image_size.is_some() {
                    "image_size"
                } else {
                    "patch"
                };
                return Err(invalid(
                    &format!("{prefix}.{key}"),
                    format!("patch {patch} does not divide the {height}×{width} images"),
                ));
            }
            if let Some((mean, std)) = &spec.normalize {
                let named = matches!(
                    model,
                    ModelConfig::Vit {
                        normalize: Some(_),
                        ..
                    }
                );
                for (key, values) in [("mean", mean), ("std", std)] {
                    if values.len() != channels {
                        let key = if named { "normalize" } else { key };
                        return Err(invalid(
                            &format!("{prefix}.{key}"),
                            format!(
                                "{} values for the model's {channels} channels",
                                values.len()
                            ),
                        ));
                    }
                }
                if std.iter().any(|s| !(s.is_finite() && *s > 0.0))
                    || mean.iter().any(|m| !m.is_finite())
                {
                    return Err(invalid(
                        &format!("{prefix}.std"),
                        "means must be finite and standard deviations finite and positive".into(),
                    ));
                }
            }
        }
    }
    if let Some(hash) = model.checkpoint_sha256() {
        if model.checkpoint().is_none() {
            return Err(invalid(
                &format!("{prefix}.checkpoint_sha256"),
                "pins a checkpoint, but there is no `checkpoint`".into(),
            ));
        }
        if hash.len() != 64 || !hash.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(invalid(
                &format!("{prefix}.checkpoint_sha256"),
                format!("`{hash}` is not a sha256 (64 hex digits)"),
            ));
        }
    }
    Ok(())
}

/// Checks an optimiser table; `prefix` is its key (`training.optimizer`, `pretrain.optimizer`).
fn validate_optimizer(
    optimizer: &OptimizerConfig,
    prefix: &str,
    invalid: &dyn Fn(&str, String) -> ConfigError,
) -> Result<(), ConfigError> {
    let (lr, weight_decay) = match *optimizer {
        OptimizerConfig::Sgd {
            lr,
            momentum,
            weight_decay,
        } => {
            if !(0.0..1.0).contains(&momentum) {
                return Err(invalid(
                    &format!("{prefix}.momentum"),
                    format!("{momentum} is outside [0, 1)"),
                ));
            }
            (lr, weight_decay)
        }
        OptimizerConfig::Adam { lr, weight_decay } => (lr, weight_decay),
    };
    if !(lr.is_finite() && lr > 0.0) {
        return Err(invalid(
            &format!("{prefix}.lr"),
            format!("{lr} must be a positive number"),
        ));
    }
    if !(weight_decay.is_finite() && weight_decay >= 0.0) {
        return Err(invalid(
            &format!("{prefix}.weight_decay"),
            format!("{weight_decay} must be zero or positive"),
        ));
    }
    Ok(())
}
