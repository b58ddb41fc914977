//! Data: MNIST-format image folders (Fashion-MNIST by default, pixels kept as bytes) and
//! synthetic Gaussian data (`f32`), as flat row-major buffers with byte labels, copied
//! out as `f32` or `f64` rows.
//!
//! Data flows out of this module and never back: it knows nothing of models or layers.

mod dataset;
mod error;
pub mod idx;
pub mod synthetic;

use std::fs;
use std::io;
use std::path::{Path, PathBuf};

pub use dataset::{Dataset, Features, Split};
pub use error::DataError;

/// Where the Debian package `dataset-fashion-mnist` installs Fashion-MNIST.
pub const DEFAULT_DATA_DIR: &str = "/usr/share/datasets/fashion-mnist";

/// File name of the training images in an MNIST-format folder (also looked up with `.gz`).
pub const TRAIN_IMAGES: &str = "train-images-idx3-ubyte";
/// File name of the training labels in an MNIST-format folder (also looked up with `.gz`).
pub const TRAIN_LABELS: &str = "train-labels-idx1-ubyte";
/// File name of the test images in an MNIST-format folder (also looked up with `.gz`).
pub const TEST_IMAGES: &str = "t10k-images-idx3-ubyte";
/// File name of the test labels in an MNIST-format folder (also looked up with `.gz`).
pub const TEST_LABELS: &str = "t10k-labels-idx1-ubyte";

/// MNIST and Fashion-MNIST both have ten classes.
const IDX_NUM_CLASSES: usize = 10;

/// Loads the training and test sets of an MNIST-format folder (Fashion-MNIST, MNIST, or
/// anything with the same four files), with pixels scaled to `[0, 1]` and 10 classes.
///
/// Each of [`TRAIN_IMAGES`], [`TRAIN_LABELS`], [`TEST_IMAGES`] and [`TEST_LABELS`] is
/// looked up as is, then with a `.gz` suffix; the raw file is preferred when both exist
/// since it needs no decompression. Whether a file is gzip is decided by its first
/// bytes, not its name.
///
/// # Errors
///
/// [`DataError::DirMissing`] or [`DataError::MissingFile`] if the folder or a file is
/// absent (for [`DEFAULT_DATA_DIR`] the message says how to install it),
/// [`DataError::CountMismatch`] if an images file and its labels file disagree on the
/// count, [`DataError::LabelOutOfRange`] for a label of 10 or more,
/// [`DataError::ShapeMismatch`] if training and test images differ in size, and any
/// error of [`idx::read_images`] and [`idx::read_labels`].
pub fn load_dir(dir: &Path) -> Result<Split, DataError> {
    match fs::metadata(dir) {
        Ok(meta) if meta.is_dir() => {}
        Ok(_) => return Err(DataError::DirMissing { dir: dir.into() }),
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            return Err(DataError::DirMissing { dir: dir.into() });
        }
        Err(source) => {
            return Err(DataError::Io {
                path: dir.into(),
                source,
            });
        }
    }
    // Find all four files before decoding any, so a missing one is reported at once.
    let train_images = find_file(dir, TRAIN_IMAGES)?;
    let train_labels = find_file(dir, TRAIN_LABELS)?;
    let test_images = find_file(dir, TEST_IMAGES)?;
    let test_labels = find_file(dir, TEST_LABELS)?;

    let train = load_pair(&train_images, &train_labels)?;
    let test = load_pair(&test_images, &test_labels)?;
    if train.image_shape() != test.image_shape() {
        // Both were loaded from IDX files, so both shapes are known.
        return Err(DataError::ShapeMismatch {
            train: train_images,
            train_shape: train.image_shape().unwrap_or_default(),
            test: test_images,
            test_shape: test.image_shape().unwrap_or_default(),
        });
    }
    Ok(Split { train, test })
}

/// `dir/name` if it is a file, else `dir/name.gz` if that is.
fn find_file(dir: &Path, name: &'static str) -> Result<PathBuf, DataError> {
    for candidate in [dir.join(name), dir.join(format!("{name}.gz"))] {
        match fs::metadata(&candidate) {
            Ok(meta) if meta.is_file() => return Ok(candidate),
            Ok(_) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(source) => {
                return Err(DataError::Io {
                    path: candidate,
                    source,
                });
            }
        }
    }
    Err(DataError::MissingFile {
        dir: dir.into(),
        name,
    })
}

fn load_pair(images_path: &Path, labels_path: &Path) -> Result<Dataset, DataError> {
    // Labels first: they are small, so a bad labels file fails before the large
    // images file is decompressed.
    let labels = idx::read_labels(labels_path)?;
    if let Some((index, value)) = dataset::first_invalid_label(&labels, IDX_NUM_CLASSES) {
        return Err(DataError::LabelOutOfRange {
            path: labels_path.into(),
            index,
            value,
            num_classes: IDX_NUM_CLASSES,
        });
    }
    let images = idx::read_images(images_path)?;
    if images.count != labels.len() {
        return Err(DataError::CountMismatch {
            images: images_path.into(),
            image_count: images.count,
            labels: labels_path.into(),
            label_count: labels.len(),
        });
    }
    // Cannot overflow: `count * rows * cols` was checked and `count >= 1`.
    let dim = images.rows * images.cols;
    let dataset = Dataset::new(images.pixels, labels, dim, IDX_NUM_CLASSES)?;
    Ok(dataset.with_image_shape(images.rows, images.cols))
}

#[cfg(test)]
mod tests {
    use std::io::Write;

    use flate2::Compression;
    use flate2::write::GzEncoder;
    use rand::{RngExt, SeedableRng};
    use rand_chacha::ChaCha8Rng;

    use super::*;

    fn be(words: &[u32]) -> Vec<u8> {
        words.iter().flat_map(|w| w.to_be_bytes()).collect()
    }

    fn labels_file(labels: &[u8]) -> Vec<u8> {
        let mut bytes = be(&[idx::LABELS_MAGIC, labels.len() as u32]);
        bytes.extend_from_slice(labels);
        bytes
    }

    fn images_file(count: u32, rows: u32, cols: u32, pixels: &[u8]) -> Vec<u8> {
        let mut bytes = be(&[idx::IMAGES_MAGIC, count, rows, cols]);
        bytes.extend_from_slice(pixels);
        bytes
    }

    fn gzip(bytes: &[u8]) -> Vec<u8> {
        let mut encoder = GzEncoder::new(Vec::new(), Compression::default());
        encoder.write_all(bytes).unwrap();
        encoder.finish().unwrap()
    }

    fn write(dir: &Path, name: &str, bytes: &[u8]) -> PathBuf {
        let path = dir.join(name);
        fs::write(&path, bytes).unwrap();
        path
    }

    /// Train: 3 images of 2x3; test: 2 images. Pixels cover 0, 255 and values between.
    const TRAIN_PIXELS: [u8; 18] = [
        0, 1, 2, 127, 128, 255, 10, 20, 30, 40, 50, 60, 255, 254, 253, 3, 2, 1,
    ];
    const TRAIN_LABELS_: [u8; 3] = [9, 0, 4];
    const TEST_PIXELS: [u8; 12] = [5, 6, 7, 8, 9, 10, 200, 201, 202, 203, 204, 205];
    const TEST_LABELS_: [u8; 2] = [1, 2];

    /// Writes a valid folder, every file gzip-compressed (with a `.gz` name) or raw.
    fn write_split(dir: &Path, compress: bool) {
        let files = [
            (TRAIN_IMAGES, images_file(3, 2, 3, &TRAIN_PIXELS)),
            (TRAIN_LABELS, labels_file(&TRAIN_LABELS_)),
            (TEST_IMAGES, images_file(2, 2, 3, &TEST_PIXELS)),
            (TEST_LABELS, labels_file(&TEST_LABELS_)),
        ];
        for (name, bytes) in files {
            if compress {
                write(dir, &format!("{name}.gz"), &gzip(&bytes));
            } else {
                write(dir, name, &bytes);
            }
        }
    }

    fn scaled(pixels: &[u8]) -> Vec<f32> {
        pixels.iter().map(|&p| f32::from(p) / 255.0).collect()
    }

    fn all(set: &Dataset) -> Vec<f32> {
        let mut values = vec![f32::NAN; set.len() * set.dim()];
        set.copy_examples(0..set.len(), &mut values);
        values
    }

    fn check_split(split: &Split) {
        assert_eq!(split.train.len(), 3);
        assert_eq!(split.train.dim(), 6);
        assert_eq!(split.train.image_shape(), Some((2, 3)));
        assert_eq!(split.train.num_classes(), 10);
        assert_eq!(split.train.labels(), &TRAIN_LABELS_);
        assert_eq!(split.train.features(), &Features::Bytes(TRAIN_PIXELS.to_vec()));
        assert_eq!(all(&split.train), scaled(&TRAIN_PIXELS));
        assert_eq!(split.test.len(), 2);
        assert_eq!(split.test.labels(), &TEST_LABELS_);
        assert_eq!(all(&split.test), scaled(&TEST_PIXELS));
        let mut row = [0.0f32; 6];
        split.train.copy_example(1, &mut row);
        assert_eq!(row, scaled(&TRAIN_PIXELS)[6..12]);
    }

    #[test]
    fn raw_folder_round_trips() {
        let dir = tempfile::tempdir().unwrap();
        write_split(dir.path(), false);
        let split = load_dir(dir.path()).unwrap();
        check_split(&split);
        // The ends of the scale are exact.
        let train = all(&split.train);
        assert_eq!(train[0], 0.0);
        assert_eq!(train[5], 1.0);
        assert_eq!(train[3], 127.0 / 255.0);
    }

    #[test]
    fn gzip_folder_round_trips() {
        let dir = tempfile::tempdir().unwrap();
        write_split(dir.path(), true);
        check_split(&load_dir(dir.path()).unwrap());
    }

    #[test]
    fn gzip_is_detected_by_content_not_name() {
        let dir = tempfile::tempdir().unwrap();
        write_split(dir.path(), false);
        // Compressed bytes under the raw name, raw bytes under a `.gz` name.
        write(
            dir.path(),
            TRAIN_IMAGES,
            &gzip(&images_file(3, 2, 3, &TRAIN_PIXELS)),
        );
        fs::remove_file(dir.path().join(TEST_LABELS)).unwrap();
        write(
            dir.path(),
            &format!("{TEST_LABELS}.gz"),
            &labels_file(&TEST_LABELS_),
        );
        check_split(&load_dir(dir.path()).unwrap());
    }

    #[test]
    fn raw_file_is_preferred_over_gz() {
        let dir = tempfile::tempdir().unwrap();
        write_split(dir.path(), false);
        write(
            dir.path(),
            &format!("{TRAIN_LABELS}.gz"),
            &gzip(&labels_file(&[7, 7, 7])),
        );
        assert_eq!(load_dir(dir.path()).unwrap().train.labels(), &TRAIN_LABELS_);
    }

    #[test]
    fn concatenated_gzip_members_are_read_whole() {
        let dir = tempfile::tempdir().unwrap();
        let bytes = labels_file(&TRAIN_LABELS_);
        let mut two_members = gzip(&bytes[..5]);
        two_members.extend(gzip(&bytes[5..]));
        let path = write(dir.path(), "labels.gz", &two_members);
        assert_eq!(idx::read_labels(&path).unwrap(), TRAIN_LABELS_);
    }

    #[test]
    fn missing_folder_is_named() {
        let dir = tempfile::tempdir().unwrap();
        let absent = dir.path().join("nowhere");
        let err = load_dir(&absent).unwrap_err();
        assert!(
            matches!(&err, DataError::DirMissing { dir } if *dir == absent),
            "{err:?}"
        );
        let message = err.to_string();
        assert!(message.contains("nowhere"), "{message}");
        assert!(!message.contains("apt-get"), "{message}");

        // A file is not a folder.
        let file = write(dir.path(), "plain", b"x");
        assert!(matches!(load_dir(&file), Err(DataError::DirMissing { .. })));
    }

    #[test]
    fn missing_default_folder_says_how_to_install() {
        for dir in [DEFAULT_DATA_DIR, "/usr/share/datasets/fashion-mnist/"] {
            let err = DataError::DirMissing { dir: dir.into() };
            let message = err.to_string();
            assert!(
                message.contains("apt-get install dataset-fashion-mnist"),
                "{message}"
            );
            assert!(message.contains("--data DIR"), "{message}");
        }
        let err = DataError::MissingFile {
            dir: DEFAULT_DATA_DIR.into(),
            name: TRAIN_IMAGES,
        };
        assert!(err.to_string().contains("apt-get install dataset-fashion-mnist"));
    }

    #[test]
    fn missing_file_is_named_in_both_forms() {
        let dir = tempfile::tempdir().unwrap();
        write_split(dir.path(), true);
        fs::remove_file(dir.path().join(format!("{TEST_IMAGES}.gz"))).unwrap();
        let err = load_dir(dir.path()).unwrap_err();
        assert!(
            matches!(
                err,
                DataError::MissingFile {
                    name: TEST_IMAGES,
                    ..
                }
            ),
            "{err:?}"
        );
        let message = err.to_string();
        assert!(
            message.contains(&format!("neither {TEST_IMAGES} nor {TEST_IMAGES}.gz")),
            "{message}"
        );
        assert!(message.contains(&dir.path().display().to_string()), "{message}");
    }

    #[test]
    fn bad_magic_shows_expected_and_found() {
        let dir = tempfile::tempdir().unwrap();
        write_split(dir.path(), false);
        // A labels file where the training images should be.
        write(dir.path(), TRAIN_IMAGES, &labels_file(&[1, 2, 3]));
        let err = load_dir(dir.path()).unwrap_err();
        assert!(
            matches!(&err, DataError::BadMagic { path, expected: 0x803, found: 0x801 }
                if path.ends_with(TRAIN_IMAGES)),
            "{err:?}"
        );
        let message = err.to_string();
        for part in [TRAIN_IMAGES, "0x00000803", "0x00000801", "labels file"] {
            assert!(message.contains(part), "{part} not in {message}");
        }

        let path = write(dir.path(), "junk", b"\x12\x34\x56\x78 and more");
        assert!(matches!(
            idx::read_labels(&path),
            Err(DataError::BadMagic {
                found: 0x1234_5678,
                ..
            })
        ));
    }

    #[test]
    fn truncated_payload_shows_byte_counts() {
        let dir = tempfile::tempdir().unwrap();
        let full = images_file(3, 2, 3, &TRAIN_PIXELS);
        let path = write(dir.path(), "short", &full[..full.len() - 4]);
        let err = idx::read_images(&path).unwrap_err();
        assert!(
            matches!(
                err,
                DataError::Truncated {
                    expected: 34,
                    actual: 30,
                    gzip: false,
                    ..
                }
            ),
            "{err:?}"
        );
        let message = err.to_string();
        assert!(
            message.contains("short") && message.contains("expected 34 bytes, found 30"),
            "{message}"
        );

        let path = write(dir.path(), "short.gz", &gzip(&full[..full.len() - 4]));
        let err = idx::read_images(&path).unwrap_err();
        assert!(
            matches!(
                err,
                DataError::Truncated {
                    expected: 34,
                    actual: 30,
                    gzip: true,
                    ..
                }
            ),
            "{err:?}"
        );
        assert!(err.to_string().contains("after decompression"), "{err}");
    }

    #[test]
    fn truncated_header_is_reported() {
        let dir = tempfile::tempdir().unwrap();
        let full = images_file(3, 2, 3, &TRAIN_PIXELS);
        let path = write(dir.path(), "header", &full[..10]);
        let err = idx::read_images(&path).unwrap_err();
        assert!(
            matches!(
                err,
                DataError::Truncated {
                    expected: 16,
                    actual: 10,
                    ..
                }
            ),
            "{err:?}"
        );
        let path = write(dir.path(), "empty", b"");
        let err = idx::read_labels(&path).unwrap_err();
        assert!(
            matches!(
                err,
                DataError::Truncated {
                    expected: 8,
                    actual: 0,
                    ..
                }
            ),
            "{err:?}"
        );
    }

    #[test]
    fn trailing_data_is_reported() {
        let dir = tempfile::tempdir().unwrap();
        let mut long = labels_file(&TRAIN_LABELS_);
        long.push(0);
        let path = write(dir.path(), "long", &long);
        let err = idx::read_labels(&path).unwrap_err();
        assert!(
            matches!(
                err,
                DataError::TrailingData {
                    expected: 11,
                    gzip: false,
                    ..
                }
            ),
            "{err:?}"
        );
        let path = write(dir.path(), "long.gz", &gzip(&long));
        let err = idx::read_labels(&path).unwrap_err();
        assert!(
            matches!(
                err,
                DataError::TrailingData {
                    expected: 11,
                    gzip: true,
                    ..
                }
            ),
            "{err:?}"
        );
    }

    #[test]
    fn unreadable_gzip_is_reported() {
        let dir = tempfile::tempdir().unwrap();
        let path = write(
            dir.path(),
            "bad.gz",
            b"\x1f\x8b\x08\x00garbage that is not deflate",
        );
        let err = idx::read_labels(&path).unwrap_err();
        assert!(matches!(err, DataError::Gzip { .. }), "{err:?}");
        assert!(err.to_string().contains("bad.gz"), "{err}");

        // A compressed stream cut in the middle.
        let compressed = gzip(&images_file(3, 2, 3, &TRAIN_PIXELS));
        let path = write(dir.path(), "cut.gz", &compressed[..compressed.len() / 2]);
        let err = idx::read_images(&path).unwrap_err();
        assert!(
            matches!(err, DataError::Gzip { .. } | DataError::Truncated { .. }),
            "{err:?}"
        );
    }

    #[test]
    fn count_mismatch_names_both_files() {
        let dir = tempfile::tempdir().unwrap();
        write_split(dir.path(), false);
        write(dir.path(), TEST_LABELS, &labels_file(&[1, 2, 3]));
        let err = load_dir(dir.path()).unwrap_err();
        assert!(
            matches!(
                err,
                DataError::CountMismatch {
                    image_count: 2,
                    label_count: 3,
                    ..
                }
            ),
            "{err:?}"
        );
        let message = err.to_string();
        assert!(
            message.contains(TEST_IMAGES) && message.contains(TEST_LABELS),
            "{message}"
        );
    }

    #[test]
    fn label_out_of_range_shows_index_and_value() {
        let dir = tempfile::tempdir().unwrap();
        write_split(dir.path(), true);
        write(
            dir.path(),
            &format!("{TRAIN_LABELS}.gz"),
            &gzip(&labels_file(&[3, 9, 10])),
        );
        let err = load_dir(dir.path()).unwrap_err();
        assert!(
            matches!(
                err,
                DataError::LabelOutOfRange {
                    index: 2,
                    value: 10,
                    num_classes: 10,
                    ..
                }
            ),
            "{err:?}"
        );
        let message = err.to_string();
        assert!(
            message.contains(TRAIN_LABELS) && message.contains("#2 is 10"),
            "{message}"
        );
    }

    #[test]
    fn zero_dimensions_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = write(dir.path(), "rows", &images_file(3, 0, 3, &[]));
        let err = idx::read_images(&path).unwrap_err();
        assert!(
            matches!(
                err,
                DataError::ZeroDimension {
                    dimension: "rows",
                    ..
                }
            ),
            "{err:?}"
        );
        assert!(
            err.to_string().contains("rows") && err.to_string().contains("zero rows"),
            "{err}"
        );
        let path = write(dir.path(), "none", &labels_file(&[]));
        let err = idx::read_labels(&path).unwrap_err();
        assert!(
            matches!(
                err,
                DataError::ZeroDimension {
                    dimension: "labels",
                    ..
                }
            ),
            "{err:?}"
        );
    }

    #[test]
    fn shape_mismatch_between_train_and_test() {
        let dir = tempfile::tempdir().unwrap();
        write_split(dir.path(), false);
        write(dir.path(), TEST_IMAGES, &images_file(2, 3, 2, &TEST_PIXELS));
        let err = load_dir(dir.path()).unwrap_err();
        assert!(
            matches!(
                err,
                DataError::ShapeMismatch {
                    train_shape: (2, 3),
                    test_shape: (3, 2),
                    ..
                }
            ),
            "{err:?}"
        );
    }

    #[test]
    fn absurd_headers_fail_without_allocating() {
        let dir = tempfile::tempdir().unwrap();
        let path = write(
            dir.path(),
            "huge",
            &be(&[idx::IMAGES_MAGIC, u32::MAX, u32::MAX, u32::MAX]),
        );
        let err = idx::read_images(&path).unwrap_err();
        if cfg!(target_pointer_width = "64") {
            assert!(matches!(err, DataError::SizeOverflow { .. }), "{err:?}");
        }
        // Claims 4 GiB in a 20-byte file; raw and compressed.
        let lying = images_file(u32::MAX, 1, 1, &[1, 2, 3, 4]);
        let path = write(dir.path(), "lying", &lying);
        let err = idx::read_images(&path).unwrap_err();
        assert!(
            matches!(
                err,
                DataError::Truncated {
                    expected: 4_294_967_311,
                    actual: 20,
                    ..
                }
            ),
            "{err:?}"
        );
        let path = write(dir.path(), "lying.gz", &gzip(&lying));
        let err = idx::read_images(&path).unwrap_err();
        assert!(
            matches!(
                err,
                DataError::Truncated {
                    actual: 20,
                    gzip: true,
                    ..
                }
            ),
            "{err:?}"
        );
    }

    #[test]
    fn every_prefix_of_a_valid_file_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        for compress in [false, true] {
            let raw = images_file(3, 2, 3, &TRAIN_PIXELS);
            let full = if compress { gzip(&raw) } else { raw };
            for end in 0..full.len() {
                let path = write(dir.path(), "prefix", &full[..end]);
                assert!(
                    idx::read_images(&path).is_err(),
                    "prefix {end} of {} accepted",
                    full.len()
                );
                assert!(idx::read_labels(&path).is_err());
            }
            let path = write(dir.path(), "prefix", &full);
            assert_eq!(idx::read_images(&path).unwrap().pixels, TRAIN_PIXELS);
        }
    }

    #[test]
    fn garbage_never_panics() {
        let dir = tempfile::tempdir().unwrap();
        let mut rng = ChaCha8Rng::seed_from_u64(7);
        let valid = [
            images_file(3, 2, 3, &TRAIN_PIXELS),
            gzip(&images_file(3, 2, 3, &TRAIN_PIXELS)),
            labels_file(&TRAIN_LABELS_),
            gzip(&labels_file(&TRAIN_LABELS_)),
        ];
        for round in 0..400 {
            let mut bytes = valid[round % valid.len()].clone();
            // Corrupt a few bytes, header included, sometimes random lengths.
            for _ in 0..rng.random_range(1..4) {
                let at = rng.random_range(0..bytes.len());
                bytes[at] = rng.random();
            }
            if round % 5 == 0 {
                bytes.truncate(rng.random_range(0..bytes.len()));
            }
            let path = write(dir.path(), "garbage", &bytes);
            if let Ok(images) = idx::read_images(&path) {
                assert_eq!(images.pixels.len(), images.count * images.rows * images.cols);
            }
            let _ = idx::read_labels(&path);
        }
    }
}
