//! A training step allocates nothing once the run is under way: the network, the
//! optimizer and the trainer own every buffer they need, so the number of heap
//! allocations of a run does not depend on its number of steps.
//!
//! This binary counts every allocation of the process with its own global allocator,
//! so it holds a single test: another test running beside it would be counted too.

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicU64, Ordering};

use batchnorm::data::{Dataset, Split};
use batchnorm::nn::{BnPlacement, NetworkSpec, SgdConfig};
use batchnorm::train::{Sampling, TrainConfig, Trainer};
use rand::{RngExt, SeedableRng};
use rand_chacha::ChaCha8Rng;

struct Counting;

static ALLOCATIONS: AtomicU64 = AtomicU64::new(0);

// SAFETY: every call is forwarded to the system allocator unchanged.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
        // SAFETY: the caller's contract is the system allocator's.
        unsafe { System.alloc(layout) }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
        // SAFETY: as `alloc`.
        unsafe { System.alloc_zeroed(layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
        // SAFETY: as `alloc`.
        unsafe { System.realloc(ptr, layout, new_size) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: as `alloc`.
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

/// Images of bytes, half of them zero as in Fashion-MNIST, with random labels.
fn byte_images(n: usize, dim: usize, seed: u64) -> Dataset {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let pixels = (0..n * dim)
        .map(|_| if rng.random_bool(0.5) { 0 } else { rng.random() })
        .collect::<Vec<u8>>();
    let labels = (0..n).map(|_| rng.random_range(0..10)).collect();
    Dataset::new(pixels, labels, dim, 10).unwrap()
}

/// Allocations of a whole run of `steps` steps (setup, two evaluations and the steps).
fn allocations_of_run(spec: &NetworkSpec, config: &TrainConfig, data: &Split, steps: u64) -> u64 {
    let before = ALLOCATIONS.load(Ordering::Relaxed);
    let mut trainer = Trainer::<f32>::new(
        spec,
        TrainConfig {
            steps,
            ..config.clone()
        },
    )
    .unwrap();
    let summary = trainer.run(data, &mut ()).unwrap();
    assert_eq!(summary.steps, steps);
    drop(trainer);
    ALLOCATIONS.load(Ordering::Relaxed) - before
}

#[test]
fn training_steps_allocate_nothing() {
    let data = Split {
        train: byte_images(600, 784, 1),
        test: byte_images(200, 784, 2),
    };
    for (bn, momentum, sampling) in [
        (BnPlacement::None, 0.9, Sampling::Epochs),
        (BnPlacement::Before, 0.0, Sampling::Random),
        (BnPlacement::After, 0.0, Sampling::Random),
    ] {
        let spec = NetworkSpec {
            bn,
            ..NetworkSpec::default()
        };
        let config = TrainConfig {
            batch_size: 60,
            eval_every: 0,
            train_eval_size: 100,
            eval_batch: 100,
            sampling,
            sgd: SgdConfig {
                lr: 0.1,
                momentum,
                ..SgdConfig::default()
            },
            ..TrainConfig::default()
        };
        // Warm up the process (lazily built thread-locals and pools), then compare a
        // short run with one 40 steps longer (several epochs with `Sampling::Epochs`).
        allocations_of_run(&spec, &config, &data, 3);
        let short = allocations_of_run(&spec, &config, &data, 3);
        let long = allocations_of_run(&spec, &config, &data, 43);
        assert_eq!(
            short,
            long,
            "bn {bn}, momentum {momentum}, {sampling}: 40 more steps made {} more allocations",
            long as i64 - short as i64
        );
    }
}
