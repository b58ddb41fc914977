//! Errors of the data module.

use std::io;
use std::path::{Path, PathBuf};

use thiserror::Error;

use super::DEFAULT_DATA_DIR;

/// Why a data set could not be loaded or built. Every variant that comes from a file
/// names that file.
#[derive(Debug, Error)]
pub enum DataError {
    /// The data folder does not exist (or is not a folder).
    #[error("data folder {} does not exist{}", .dir.display(), install_hint(.dir))]
    DirMissing {
        /// The folder asked for.
        dir: PathBuf,
    },
    /// Neither the raw nor the `.gz` form of a required file is in the folder.
    #[error("{}: neither {name} nor {name}.gz found{}", .dir.display(), install_hint(.dir))]
    MissingFile {
        /// The folder searched.
        dir: PathBuf,
        /// The standard name of the missing file, without `.gz`.
        name: &'static str,
    },
    /// The operating system refused to open or read a file.
    #[error("{}: cannot read: {source}", .path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// The underlying error.
        source: io::Error,
    },
    /// The file starts like gzip but does not decompress.
    #[error("{}: unreadable gzip data: {source}", .path.display())]
    Gzip {
        /// The file.
        path: PathBuf,
        /// The decompressor's error.
        source: io::Error,
    },
    /// The first four bytes (after decompression) are not the expected IDX magic number.
    #[error(
        "{}: bad magic number: expected 0x{expected:08x}, found 0x{found:08x}{}",
        .path.display(),
        magic_note(*.found)
    )]
    BadMagic {
        /// The file.
        path: PathBuf,
        /// The magic number of the kind of file that was asked for.
        expected: u32,
        /// The magic number in the file.
        found: u32,
    },
    /// The file holds fewer bytes than its header declares.
    #[error(
        "{}: truncated: expected {expected} bytes{}, found {actual}",
        .path.display(),
        decompressed_note(*.gzip)
    )]
    Truncated {
        /// The file.
        path: PathBuf,
        /// The byte count (header included) the header declares, or the header's own
        /// length when the header itself is cut short.
        expected: u64,
        /// The byte count found.
        actual: u64,
        /// Whether the counts are of decompressed bytes.
        gzip: bool,
    },
    /// The file holds more bytes than its header declares: a wrong header, or two files
    /// run together.
    #[error(
        "{}: more data than the {expected} bytes{} its header declares",
        .path.display(),
        decompressed_note(*.gzip)
    )]
    TrailingData {
        /// The file.
        path: PathBuf,
        /// The byte count (header included) the header declares.
        expected: u64,
        /// Whether the count is of decompressed bytes.
        gzip: bool,
    },
    /// A dimension in the header is zero.
    #[error("{}: the header declares zero {dimension}", .path.display())]
    ZeroDimension {
        /// The file.
        path: PathBuf,
        /// Which dimension: `"labels"`, `"images"`, `"rows"` or `"columns"`.
        dimension: &'static str,
    },
    /// The product of the header's dimensions does not fit in `usize`.
    #[error("{}: the header's dimensions {dims:?} describe more bytes than fit in memory", .path.display())]
    SizeOverflow {
        /// The file.
        path: PathBuf,
        /// The dimensions declared.
        dims: Vec<u32>,
    },
    /// The images file and the labels file disagree on the number of examples.
    #[error(
        "{} holds {image_count} images but {} holds {label_count} labels",
        .images.display(),
        .labels.display()
    )]
    CountMismatch {
        /// The images file.
        images: PathBuf,
        /// The number of images it declares.
        image_count: usize,
        /// The labels file.
        labels: PathBuf,
        /// The number of labels it declares.
        label_count: usize,
    },
    /// The training and test images have different shapes.
    #[error(
        "{} holds {}x{} images but {} holds {}x{} images",
        .train.display(), .train_shape.0, .train_shape.1,
        .test.display(), .test_shape.0, .test_shape.1
    )]
    ShapeMismatch {
        /// The training images file.
        train: PathBuf,
        /// Its `(rows, columns)`.
        train_shape: (usize, usize),
        /// The test images file.
        test: PathBuf,
        /// Its `(rows, columns)`.
        test_shape: (usize, usize),
    },
    /// A label in a labels file is not a valid class.
    #[error(
        "{}: label #{index} is {value}, but classes are 0..{num_classes}",
        .path.display()
    )]
    LabelOutOfRange {
        /// The labels file.
        path: PathBuf,
        /// The zero-based position of the label.
        index: usize,
        /// The label found.
        value: u8,
        /// The number of classes.
        num_classes: usize,
    },
    /// A label given to [`Dataset::new`](super::Dataset::new) is not a valid class.
    #[error("label #{index} is {value}, but classes are 0..{num_classes}")]
    InvalidLabel {
        /// The zero-based position of the label.
        index: usize,
        /// The label given.
        value: u8,
        /// The number of classes.
        num_classes: usize,
    },
    /// The image buffer given to [`Dataset::new`](super::Dataset::new) is not
    /// `labels × dim` long.
    #[error("the images buffer has {values} values, but {labels} labels × dim {dim} need {}", .labels.saturating_mul(*.dim))]
    LengthMismatch {
        /// The length of the images buffer.
        values: usize,
        /// The number of labels.
        labels: usize,
        /// The dimension of one example.
        dim: usize,
    },
    /// A size or count given to a constructor or generator is out of range.
    #[error("{name} = {value} is invalid: {requirement}")]
    InvalidParameter {
        /// The parameter's name.
        name: &'static str,
        /// The value given.
        value: usize,
        /// What it must satisfy.
        requirement: &'static str,
    },
}

/// The default folder is filled by a Debian package, so its absence is an install step
/// the user has not taken yet, and the message says which.
fn install_hint(dir: &Path) -> &'static str {
    if dir == Path::new(DEFAULT_DATA_DIR) {
        " (install Fashion-MNIST with `apt-get install dataset-fashion-mnist`, \
         or pass `--data DIR` with a folder of IDX files)"
    } else {
        ""
    }
}

/// A labels file where images were expected (or the reverse) is the likeliest mistake;
/// naming what was found makes it obvious.
fn magic_note(found: u32) -> &'static str {
    match found {
        super::idx::LABELS_MAGIC => " (an IDX labels file)",
        super::idx::IMAGES_MAGIC => " (an IDX images file)",
        _ => "",
    }
}

fn decompressed_note(gzip: bool) -> &'static str {
    if gzip { " after decompression" } else { "" }
}
