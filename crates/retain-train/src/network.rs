//! The network a run trains ([`Network`]): its model, its variables and the helpers that
//! name, freeze, copy and checkpoint them.

use std::collections::BTreeMap;
use std::path::Path;
use std::rc::Rc;

use retain_config::{Experiment, MemoryFormat};
use retain_models::Backbone;
use retain_models::checkpoint::CheckpointError;
use retain_stream::TaskStream;
use tch::nn;
use tch::{Device, Tensor};

use crate::{TrainError, optim};

/// Builds a backbone under a path; [`Network`] keeps it so that it can build copies.
pub type ModelBuilder = dyn Fn(&nn::Path) -> Box<dyn Backbone>;

/// The model and its parameters, initialised from the experiment seed.
pub struct Network {
    pub vars: nn::VarStore,
    pub model: Box<dyn Backbone>,
    /// How `model` was built, kept so that [`Network::frozen_copy`] can build the same
    /// architecture with the same parameter names.
    builder: Rc<ModelBuilder>,
}

impl Network {
    /// Lays the 4-D floating-point variables (convolution weights) out in `format`, keeping
    /// their values, autograd identity and every handle to them (`Tensor::set_data`). The
    /// flat optimiser keeps a variable's layout when it views it into its buffers.
    pub fn set_memory_format(&self, format: MemoryFormat) {
        let _no_grad = tch::no_grad_guard();
        for (_, mut variable) in self.vars.variables() {
            if variable.dim() != 4 || !variable.is_floating_point() {
                continue;
            }
            let laid_out = match format {
                MemoryFormat::ChannelsLast => optim::channels_last(&variable),
                MemoryFormat::Contiguous => variable.contiguous(),
            };
            variable.set_data(&laid_out);
        }
    }

    pub fn new(experiment: &Experiment, stream: &TaskStream) -> Self {
        Self::for_shape(
            experiment,
            stream.image_shape,
            stream.num_classes,
            stream.device,
        )
    }

    /// [`Network::new`] for images of `image_shape` (`[C, H, W]`) and `outputs` classes, without
    /// a stream: what `retain pretrain` builds before any stream data is loaded. The same
    /// experiment gives the same initial weights either way.
    pub fn for_shape(
        experiment: &Experiment,
        image_shape: [usize; 3],
        outputs: usize,
        device: Device,
    ) -> Self {
        let config = experiment.model.clone();
        let scheme = config.init();
        // The stream normalises with its dataset's constants; a model that normalises
        // itself undoes them first.
        let given = retain_stream::normalisation_constants(experiment.stream.dataset.as_str());
        let network = Self::from_builder(device, move |path| {
            retain_models::build_for_stream(&config, path, image_shape, given, outputs)
        });
        retain_models::init::initialize(
            &network.vars,
            network.model.init_reference(),
            scheme,
            experiment.seed,
        );
        network
    }

    /// A network whose model `builder` creates on `device`, with the layers' own initial
    /// values (tch's defaults, from torch's global generator). [`Network::new`] is this with
    /// the experiment's `[model]` followed by [`retain_models::init::initialize`]; tests use
    /// it for tiny hand-made models.
    pub fn from_builder(
        device: Device,
        builder: impl Fn(&nn::Path) -> Box<dyn Backbone> + 'static,
    ) -> Self {
        let vars = nn::VarStore::new(device);
        let model = builder(&vars.root());
        Self {
            vars,
            model,
            builder: Rc::new(builder),
        }
    }

    /// An independent, frozen copy of the network as it is now: same architecture and
    /// parameter names, values copied into fresh storage (so later training of `self` leaves
    /// the copy untouched), `requires_grad` off (so no gradient or optimiser ever reaches it),
    /// on the same device. Methods keep one as "the model after the previous task" (LwF's
    /// teacher, a reference for regularisers).
    ///
    /// Building the copy initialises its parameters before overwriting them, which draws from
    /// torch's global generator; nothing in a run reads that generator (every draw has its own
    /// seeded one), so the draw changes no result.
    pub fn frozen_copy(&self) -> Result<Network, TrainError> {
        let mut vars = nn::VarStore::new(self.vars.device());
        let model = (self.builder)(&vars.root());
        vars.copy(&self.vars)?;
        vars.freeze();
        Ok(Network {
            vars,
            model,
            builder: Rc::clone(&self.builder),
        })
    }

    /// A frozen copy of this network holding `variables` instead of its own: a teacher
    /// restored from a method's state, whose variables were saved in the order of
    /// [`retain_models::checkpoint::named_variables`]. When they are not this network's
    /// variables by name and shape, `mismatch` gets every difference described and its error
    /// is returned.
    pub fn frozen_copy_holding(
        &self,
        variables: &[(String, Tensor)],
        mismatch: impl FnOnce(String) -> TrainError,
    ) -> Result<Network, TrainError> {
        let copy = self.frozen_copy()?;
        let targets = retain_models::checkpoint::named_variables(&copy.vars);
        let shapes = |v: &[(String, Tensor)]| -> Vec<(String, Vec<i64>)> {
            v.iter().map(|(n, t)| (n.clone(), t.size())).collect()
        };
        let differences =
            retain_models::checkpoint::Mismatch::between(&shapes(&targets), &shapes(variables));
        if !differences.is_empty() {
            return Err(mismatch(differences.describe()));
        }
        let _no_grad = tch::no_grad_guard();
        for ((_, target), (_, value)) in targets.iter().zip(variables) {
            target.shallow_clone().f_copy_(value)?;
        }
        Ok(copy)
    }

    /// The trainable parameters with their names, sorted by name. Sorting makes the order a
    /// function of the architecture alone, so per-parameter method state (Fisher matrices,
    /// anchors) lines up across copies of the network and across checkpoints.
    pub fn parameters(&self) -> Vec<(String, Tensor)> {
        named_parameters(&self.vars)
    }

    /// Writes every variable of the model (trainable or not) to the safetensors file `path`,
    /// under its stable name.
    pub fn save(&self, path: &Path) -> Result<(), CheckpointError> {
        retain_models::checkpoint::save(&self.vars, path)
    }

    /// Replaces the model's variables with those of the safetensors file `path`, which must
    /// hold exactly this architecture's tensors by name and shape; otherwise nothing changes
    /// and the error lists the missing and unexpected names and the shape mismatches.
    pub fn load(&self, path: &Path) -> Result<(), CheckpointError> {
        retain_models::checkpoint::load(&self.vars, path)
    }
}

/// The trainable (`requires_grad`) variables of `vars` with their names, sorted by name.
pub fn named_parameters(vars: &nn::VarStore) -> Vec<(String, Tensor)> {
    let mut named: Vec<(String, Tensor)> = vars
        .variables()
        .into_iter()
        .filter(|(_, t)| t.requires_grad())
        .collect();
    named.sort_by(|a, b| a.0.cmp(&b.0));
    named
}

/// Every variable the optimiser of `vars` trains, with its name, in creation order (the order
/// of `VarStore::trainable_variables`: input to output for a feed-forward model), whatever its
/// `requires_grad` is now. Buffers such as batch-norm running statistics are not among them,
/// so a method that freezes and unfreezes by name selects from these and never hands
/// `requires_grad` to a buffer. Names are found by storage (every variable has its own);
/// variables without elements, which share no storage to tell them apart, come in name order.
pub fn trainable_variables(vars: &nn::VarStore) -> Vec<(String, Tensor)> {
    let key = |t: &Tensor| (t.data_ptr() as usize, t.size());
    let mut by_storage: BTreeMap<(usize, Vec<i64>), Vec<String>> = BTreeMap::new();
    let mut named: Vec<(String, Tensor)> = vars.variables().into_iter().collect();
    named.sort_by(|a, b| b.0.cmp(&a.0));
    for (name, tensor) in &named {
        by_storage
            .entry(key(tensor))
            .or_default()
            .push(name.clone());
    }
    vars.trainable_variables()
        .into_iter()
        .map(|tensor| {
            let name = by_storage
                .get_mut(&key(&tensor))
                .and_then(Vec::pop)
                .expect("every trainable variable of a VarStore has a name");
            (name, tensor)
        })
        .collect()
}

/// Sets `requires_grad` of each of `variables` (from [`trainable_variables`]) to
/// `trains(name)`. Freezing a variable that trained before is safe (see the crate docs).
pub fn set_trainable(variables: &[(String, Tensor)], trains: impl Fn(&str) -> bool) {
    for (name, variable) in variables {
        let _ = variable.set_requires_grad(trains(name));
    }
}
