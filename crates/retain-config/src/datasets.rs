//! Dataset names of experiment files, and what is known about each dataset before reading it
//! (class count, image shape).
//!
//! The facts are not written here: each name maps to its entry of `retain-data`'s dataset
//! table ([`retain_data::DATASETS`]), which also drives loading, so the checks of a config and
//! the data a run loads cannot disagree.

use retain_data::DatasetSpec;
use serde::{Deserialize, Serialize};

/// Which image dataset a stream draws from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum DatasetName {
    Mnist,
    FashionMnist,
    #[serde(rename = "cifar10")]
    Cifar10,
    #[serde(rename = "cifar100")]
    Cifar100,
    /// CIFAR-100 with its 20 coarse (superclass) labels.
    #[serde(rename = "cifar100-coarse")]
    Cifar100Coarse,
}

impl DatasetName {
    /// Every dataset an experiment can name, in the order of the enum.
    pub const ALL: [DatasetName; 5] = [
        Self::Mnist,
        Self::FashionMnist,
        Self::Cifar10,
        Self::Cifar100,
        Self::Cifar100Coarse,
    ];

    /// The dataset's entry in `retain-data`'s table: files, class count, image shape.
    pub fn spec(self) -> &'static DatasetSpec {
        match self {
            Self::Mnist => &retain_data::MNIST,
            Self::FashionMnist => &retain_data::FASHION_MNIST,
            Self::Cifar10 => &retain_data::CIFAR10,
            Self::Cifar100 => &retain_data::CIFAR100,
            Self::Cifar100Coarse => &retain_data::CIFAR100_COARSE,
        }
    }

    /// The name used on the command line and in experiment files (the name
    /// `retain_data::load` takes).
    pub fn as_str(self) -> &'static str {
        self.spec().name
    }

    /// Number of classes; labels are below it, and a model's head has this many outputs.
    pub fn classes(self) -> usize {
        self.spec().classes
    }

    /// `[C, H, W]` of one image.
    pub fn image_shape(self) -> [usize; 3] {
        self.spec().shape
    }
}

/// Number of classes of a dataset, known without reading it: [`DatasetName::classes`].
pub fn dataset_classes(dataset: DatasetName) -> usize {
    dataset.classes()
}

/// `[C, H, W]` of a dataset's images, known without reading it: [`DatasetName::image_shape`].
pub fn dataset_shape(dataset: DatasetName) -> [usize; 3] {
    dataset.image_shape()
}
