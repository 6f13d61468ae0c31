//! Training-batch augmentation: draws, crops and flips against host references.

use super::*;

#[test]
fn device_augmentation_draws_match_the_host_reference() {
    let augment = AugmentConfig {
        crop_padding: 2,
        flip: true,
    };
    let (_, stream) = cifar_stream(augment);
    let key = stream.augment_key(17);
    let params = stream.augment_params(400, 17);
    let (dy, dx, flip) = (ints(&params.dy), ints(&params.dx), ints(&params.flip));
    for i in 0..400 {
        let (hy, hx, hflip) = augment::params_host(&augment, key, i as u32);
        assert_eq!((dy[i], dx[i], flip[i] == 1), (hy, hx, hflip), "sample {i}");
    }
    // Every offset and both flips occur, roughly uniformly (400 draws over 5 offsets).
    for offsets in [&dy, &dx] {
        for o in 0..5 {
            let count = offsets.iter().filter(|&&v| v == o).count();
            assert!((40..=120).contains(&count), "offset {o}: {count}");
        }
    }
    let flips = flip.iter().filter(|&&f| f == 1).count();
    assert!((150..=250).contains(&flips), "{flips}");
    // Known values of the hash (from a three-line Python transcription of its definition).
    assert_eq!(hash::hash32(0), 0);
    assert_eq!(hash::hash32(1), 824_515_495);
    assert_eq!(hash::hash32(12_345), 1_747_545_881);
}

#[test]
fn crop_is_a_shifted_window_of_the_padded_image_and_flip_mirrors_it() {
    let augment = AugmentConfig {
        crop_padding: 2,
        flip: true,
    };
    let (dataset, stream) = cifar_stream(augment);
    let [c, h, w] = [3usize, 6, 5];
    let picks: Vec<i64> = (0..16).map(|i| (i * 3) % 40).collect();
    let indices = Tensor::from_slice(&picks);
    for draw in [0u64, 1, 99] {
        let key = stream.augment_key(draw);
        let augmented = stream.training_batch(&indices, draw);
        let clean = stream.batch(SplitKind::Train, &indices);
        assert_eq!(augmented.inputs.size(), vec![16, 3, 6, 5]);
        assert!(augmented.labels.equal(&clean.labels), "labels stay aligned");
        // Undo the normalisation to compare raw pixels exactly.
        let raw = stream
            .normalise(&stream.raw_batch(SplitKind::Train, &indices).0)
            .equal(&clean.inputs);
        assert!(raw);
        let got = floats(&augmented.inputs);
        let scale = [0.2470, 0.2435, 0.2615];
        let mean = [0.4914, 0.4822, 0.4465];
        for (b, &sample) in picks.iter().enumerate() {
            let (dy, dx, flip) = augment::params_host(&augment, key, b as u32);
            let image = &dataset.train.images[sample as usize * c * h * w..][..c * h * w];
            for ch in 0..c {
                for y in 0..h {
                    for x in 0..w {
                        let column = if flip { w - 1 - x } else { x } as i64;
                        let (sy, sx) = (y as i64 + dy - 2, column + dx - 2);
                        let inside = (0..h as i64).contains(&sy) && (0..w as i64).contains(&sx);
                        let pixel = if inside {
                            image[ch * h * w + sy as usize * w + sx as usize]
                        } else {
                            0
                        };
                        let want = (f64::from(pixel) / 255.0 - mean[ch]) / scale[ch];
                        let value = got[((b * c + ch) * h + y) * w + x];
                        assert!(
                            (f64::from(value) - want).abs() < 1e-5,
                            "draw {draw}, sample {b}, ({ch},{y},{x}): {value} vs {want}"
                        );
                    }
                }
            }
        }
        // Same draw, same batch; another draw, another batch.
        assert!(
            stream
                .training_batch(&indices, draw)
                .inputs
                .equal(&augmented.inputs)
        );
        assert!(
            !stream
                .training_batch(&indices, draw + 1)
                .inputs
                .equal(&augmented.inputs)
        );
    }
}

#[test]
fn flip_alone_mirrors_exactly() {
    let augment = AugmentConfig {
        crop_padding: 0,
        flip: true,
    };
    let (_, stream) = cifar_stream(augment);
    let indices = Tensor::from_slice(&(0..32).collect::<Vec<i64>>());
    let augmented = stream.training_batch(&indices, 5).inputs;
    let clean = stream.batch(SplitKind::Train, &indices).inputs;
    let flips = ints(&stream.augment_params(32, 5).flip);
    assert!(flips.contains(&0) && flips.contains(&1));
    for (b, &flip) in flips.iter().enumerate() {
        let want = if flip == 1 {
            clean.get(b as i64).flip([2])
        } else {
            clean.get(b as i64)
        };
        assert!(augmented.get(b as i64).equal(&want), "sample {b}");
    }
}
