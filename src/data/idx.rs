//! Reader for the IDX format of MNIST and Fashion-MNIST, raw or gzip-compressed.
//!
//! An IDX file is a big-endian header followed by the values, row-major:
//!
//! ```text
//! labels: magic 0x00000801, u32 count,                        count bytes
//! images: magic 0x00000803, u32 count, u32 rows, u32 columns, count*rows*columns bytes
//! ```
//!
//! A file whose first two bytes are the gzip magic `1f 8b` is decompressed first,
//! whatever its name. Sizes are computed with checked arithmetic and memory is reserved
//! only up to what the file can actually hold, so no header, however absurd, makes the
//! reader panic or allocate more than the file justifies.

use std::fs::File;
use std::io::{self, BufRead, BufReader, Read};
use std::path::Path;

use flate2::bufread::MultiGzDecoder;

use super::DataError;

/// Magic number of an IDX labels file: unsigned bytes, one dimension.
pub const LABELS_MAGIC: u32 = 0x0000_0801;
/// Magic number of an IDX images file: unsigned bytes, three dimensions.
pub const IMAGES_MAGIC: u32 = 0x0000_0803;

const GZIP_MAGIC: [u8; 2] = [0x1f, 0x8b];
/// Deflate cannot expand its input by more than about 1032:1, which bounds what a gzip
/// file of a given length can decompress to.
const MAX_DEFLATE_RATIO: u64 = 1032;

/// The images of an IDX images file, pixels as stored.
#[derive(Debug, Clone, PartialEq)]
pub struct IdxImages {
    /// Number of images.
    pub count: usize,
    /// Rows of one image.
    pub rows: usize,
    /// Columns of one image.
    pub cols: usize,
    /// Pixels in `0..=255` (standing for `value / 255`), row-major, shape
    /// `[count, rows * cols]`.
    pub pixels: Vec<u8>,
}

/// Reads an IDX labels file (magic `0x00000801`), raw or gzip-compressed.
///
/// The labels are returned as stored; checking them against a number of classes is the
/// caller's business.
///
/// # Errors
///
/// [`DataError::Io`] if the file cannot be read, [`DataError::Gzip`] if it starts like
/// gzip but does not decompress, [`DataError::BadMagic`], [`DataError::ZeroDimension`]
/// for an empty file, [`DataError::Truncated`] or [`DataError::TrailingData`] if its
/// length disagrees with its header.
pub fn read_labels(path: &Path) -> Result<Vec<u8>, DataError> {
    let mut file = IdxFile::open(path)?;
    let [count] = file.header(LABELS_MAGIC, ["labels"])?;
    let count = to_usize(count, path, &[count])?;
    file.payload(count)
}

/// Reads an IDX images file (magic `0x00000803`), raw or gzip-compressed. The pixels
/// stay bytes: scaling them to `[0, 1]` as `f32` would take four times the memory, so
/// [`Dataset`](super::Dataset) converts them as examples are copied out.
///
/// # Errors
///
/// [`DataError::Io`] if the file cannot be read, [`DataError::Gzip`] if it starts like
/// gzip but does not decompress, [`DataError::BadMagic`], [`DataError::ZeroDimension`]
/// if the count, rows or columns is zero, [`DataError::SizeOverflow`] if their product
/// does not fit in `usize`, [`DataError::Truncated`] or [`DataError::TrailingData`] if
/// the file's length disagrees with its header.
pub fn read_images(path: &Path) -> Result<IdxImages, DataError> {
    let mut file = IdxFile::open(path)?;
    let dims = file.header(IMAGES_MAGIC, ["images", "rows", "columns"])?;
    let [count, rows, cols] = dims;
    let overflow = || DataError::SizeOverflow {
        path: path.to_path_buf(),
        dims: dims.to_vec(),
    };
    let count = to_usize(count, path, &dims)?;
    let rows = to_usize(rows, path, &dims)?;
    let cols = to_usize(cols, path, &dims)?;
    let len = count
        .checked_mul(rows)
        .and_then(|n| n.checked_mul(cols))
        .ok_or_else(overflow)?;
    let pixels = file.payload(len)?;
    Ok(IdxImages {
        count,
        rows,
        cols,
        pixels,
    })
}

fn to_usize(value: u32, path: &Path, dims: &[u32]) -> Result<usize, DataError> {
    usize::try_from(value).map_err(|_| DataError::SizeOverflow {
        path: path.to_path_buf(),
        dims: dims.to_vec(),
    })
}

/// An open IDX file, positioned after what has been read so far.
struct IdxFile<'a> {
    path: &'a Path,
    reader: Box<dyn Read>,
    gzip: bool,
    /// Length on disk, compressed or not.
    file_len: u64,
    /// Bytes of the (decompressed) stream consumed so far.
    consumed: u64,
}

impl<'a> IdxFile<'a> {
    fn open(path: &'a Path) -> Result<Self, DataError> {
        let io_err = |source| DataError::Io {
            path: path.to_path_buf(),
            source,
        };
        let file = File::open(path).map_err(io_err)?;
        let file_len = file.metadata().map_err(io_err)?.len();
        let mut buffered = BufReader::new(file);
        let gzip = buffered.fill_buf().map_err(io_err)?.starts_with(&GZIP_MAGIC);
        // Multi-member, like `gzip -d`: `cat a.gz b.gz` is a valid gzip file.
        let reader: Box<dyn Read> = if gzip {
            Box::new(MultiGzDecoder::new(buffered))
        } else {
            Box::new(buffered)
        };
        Ok(Self {
            path,
            reader,
            gzip,
            file_len,
            consumed: 0,
        })
    }

    fn read_error(&self, source: io::Error) -> DataError {
        let path = self.path.to_path_buf();
        if self.gzip {
            DataError::Gzip { path, source }
        } else {
            DataError::Io { path, source }
        }
    }

    /// Fills as much of `buf` as the stream holds; returns how much that was.
    fn read_up_to(&mut self, buf: &mut [u8]) -> Result<usize, DataError> {
        let mut filled = 0;
        while filled < buf.len() {
            match self.reader.read(&mut buf[filled..]) {
                Ok(0) => break,
                Ok(n) => filled += n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(self.read_error(e)),
            }
        }
        self.consumed += filled as u64;
        Ok(filled)
    }

    /// Reads the magic number and `N` big-endian u32 dimensions, each of which must be
    /// non-zero; `names` name them for errors.
    fn header<const N: usize>(
        &mut self,
        magic: u32,
        names: [&'static str; N],
    ) -> Result<[u32; N], DataError> {
        let header_len = 4 * (1 + N as u64);
        let (path, gzip) = (self.path, self.gzip);
        let truncated = |actual| DataError::Truncated {
            path: path.to_path_buf(),
            expected: header_len,
            actual,
            gzip,
        };

        let mut word = [0u8; 4];
        let got = self.read_up_to(&mut word)?;
        if got < 4 {
            return Err(truncated(self.consumed));
        }
        let found = u32::from_be_bytes(word);
        if found != magic {
            return Err(DataError::BadMagic {
                path: self.path.to_path_buf(),
                expected: magic,
                found,
            });
        }

        let mut dims = [0u32; N];
        for (dim, name) in dims.iter_mut().zip(names) {
            if self.read_up_to(&mut word)? < 4 {
                return Err(truncated(self.consumed));
            }
            *dim = u32::from_be_bytes(word);
            if *dim == 0 {
                return Err(DataError::ZeroDimension {
                    path: self.path.to_path_buf(),
                    dimension: name,
                });
            }
        }
        Ok(dims)
    }

    /// Reads exactly `len` bytes of values, which must be all that is left.
    fn payload(&mut self, len: usize) -> Result<Vec<u8>, DataError> {
        let len = len as u64;
        // Saturation is harmless: a sum past u64::MAX exceeds any real file anyway.
        let expected = self.consumed.saturating_add(len);
        if !self.gzip && expected > self.file_len {
            return Err(DataError::Truncated {
                path: self.path.to_path_buf(),
                expected,
                actual: self.file_len,
                gzip: false,
            });
        }
        // Reserve no more than the file can hold, so a lying header cannot make us
        // allocate gigabytes for a file of a few bytes.
        let bound = if self.gzip {
            self.file_len.saturating_mul(MAX_DEFLATE_RATIO)
        } else {
            self.file_len
        };
        let capacity = usize::try_from(len.min(bound)).unwrap_or(usize::MAX);
        let mut bytes = Vec::new();
        bytes
            .try_reserve_exact(capacity)
            .map_err(|e| self.read_error(io::Error::new(io::ErrorKind::OutOfMemory, e)))?;
        // One byte more than declared, to notice trailing data without reading it all.
        let read = (&mut self.reader)
            .take(len.saturating_add(1))
            .read_to_end(&mut bytes);
        read.map_err(|e| self.read_error(e))?;
        let got = bytes.len() as u64;
        self.consumed += got;
        if got < len {
            return Err(DataError::Truncated {
                path: self.path.to_path_buf(),
                expected,
                actual: self.consumed,
                gzip: self.gzip,
            });
        }
        if got > len {
            return Err(DataError::TrailingData {
                path: self.path.to_path_buf(),
                expected,
                gzip: self.gzip,
            });
        }
        Ok(bytes)
    }
}
