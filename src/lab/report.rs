//! The lab report: one HTML page and one JSON file covering every experiment.
//!
//! [`Report::write`] puts `index.html` and `results.json` in one folder. The page needs
//! nothing but that folder: its CSS is inline and its images are referenced by relative
//! path, so it opens from disk with no network. Images that were rendered outside the
//! folder are copied into its [`COPIED_IMAGES_DIR`] subfolder.
//!
//! `results.json` is one object keyed by experiment name. Each value holds the section's
//! text, its key numbers (every number the page shows), its finding, its run time and
//! the experiment's own data:
//!
//! ```json
//! { "paper-fig1": { "title": "...", "claim": "...", "source": "...", "setup": "...",
//!                   "finding": "...", "time_seconds": 12.5,
//!                   "numbers": { "final accuracy, BN": "0.971" },
//!                   "images": ["img/paper-fig1-accuracy.svg"],
//!                   "data": { ... } } }
//! ```
//!
//! [`verify_report`] reads a written report back and checks that it is whole, for tests
//! and for the CLI.

use std::collections::{HashMap, HashSet};
use std::fs;
use std::io;
use std::path::{Component, Path, PathBuf};

use serde_json::{Map, Value};

use super::plot::{PlotFiles, write_atomic};

/// File name of the HTML page inside the report folder.
pub const INDEX_FILE: &str = "index.html";

/// File name of the JSON results inside the report folder.
pub const RESULTS_FILE: &str = "results.json";

/// Subfolder of the report folder that receives images rendered elsewhere.
pub const COPIED_IMAGES_DIR: &str = "img";

/// Id of the summary table's section in `index.html`. Experiment names cannot start
/// with `_`, so they never collide with it.
const SUMMARY_ID: &str = "_summary";

/// Longest experiment name accepted.
const MAX_NAME_LEN: usize = 64;

/// A whole report: a title, an introduction and one section per experiment.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Report {
    /// Page title and top heading.
    pub title: String,
    /// Text under the title. Blank lines separate paragraphs.
    pub intro: String,
    /// The experiments, in page order.
    pub sections: Vec<Section>,
}

/// One experiment's part of the report.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Section {
    /// The experiment's id, e.g. `"paper-fig1"`: its key in `results.json` and its
    /// anchor in the page. 1 to 64 characters from `a-z`, `0-9`, `-` and `_`, starting
    /// with a letter or digit.
    pub name: String,
    /// Heading of the section.
    pub title: String,
    /// The claim the experiment tests.
    pub claim: String,
    /// Where the claim comes from, e.g. `"Ioffe & Szegedy (2015), Figure 1"`.
    pub source: String,
    /// How the experiment was run. Blank lines separate paragraphs.
    pub setup: String,
    /// The charts, shown in order. The page shows each chart's SVG and links its PNG.
    pub images: Vec<PlotFiles>,
    /// The key numbers table: `(label, value)` rows, shown in order. Labels must be
    /// distinct; they become keys in `results.json`.
    pub numbers: Vec<(String, String)>,
    /// One line saying what the data showed.
    pub finding: String,
    /// How long the experiment took, in seconds.
    pub time_seconds: f64,
    /// Whatever else the experiment wants to keep, stored under `"data"`.
    pub data: Value,
}

/// The files [`Report::write`] produced.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ReportFiles {
    /// The HTML page.
    pub index: PathBuf,
    /// The JSON results.
    pub results: PathBuf,
}

/// Why a report could not be written.
#[derive(Debug, thiserror::Error)]
pub enum ReportError {
    /// An experiment name would not make a clean JSON key and page anchor.
    #[error(
        "experiment name {name:?} must be 1 to {MAX_NAME_LEN} characters from a-z, 0-9, \
         '-' and '_', starting with a letter or digit"
    )]
    InvalidName {
        /// The name as given.
        name: String,
    },
    /// Two sections share a name.
    #[error("two sections are named {name:?}")]
    DuplicateSection {
        /// The shared name.
        name: String,
    },
    /// Two key numbers of one section share a label.
    #[error("section {section:?} has two key numbers labelled {label:?}")]
    DuplicateNumber {
        /// The section's name.
        section: String,
        /// The shared label.
        label: String,
    },
    /// An image file is missing or unreadable.
    #[error("image {path} of section {section:?} cannot be used: {source}")]
    Image {
        /// The section's name.
        section: String,
        /// The image file.
        path: PathBuf,
        /// The underlying error.
        source: io::Error,
    },
    /// Two different images outside the report folder have the same file name, so
    /// copying both into it would lose one.
    #[error("images {first} and {second} would both be copied to {dest}")]
    ImageNameClash {
        /// The image copied first.
        first: PathBuf,
        /// The image that would overwrite it.
        second: PathBuf,
        /// Where both would go.
        dest: PathBuf,
    },
    /// The report folder could not be created.
    #[error("cannot create report folder {path}: {source}")]
    CreateDir {
        /// The folder.
        path: PathBuf,
        /// The underlying error.
        source: io::Error,
    },
    /// A report file could not be written.
    #[error("cannot write {path}: {source}")]
    Write {
        /// The file.
        path: PathBuf,
        /// The underlying error.
        source: io::Error,
    },
    /// The results could not be serialized.
    #[error("cannot serialize {path}: {source}")]
    Json {
        /// The JSON file.
        path: PathBuf,
        /// The underlying error.
        source: serde_json::Error,
    },
}

/// What [`verify_report`] found wrong with a written report.
#[derive(Debug, thiserror::Error)]
pub enum VerifyError {
    /// A report file could not be read.
    #[error("cannot read {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The underlying error.
        source: io::Error,
    },
    /// `results.json` is not valid JSON.
    #[error("{path} is not valid JSON: {source}")]
    Json {
        /// The JSON file.
        path: PathBuf,
        /// The parse error.
        source: serde_json::Error,
    },
    /// `results.json` is not shaped as the report writes it.
    #[error("{path}: {reason}")]
    Malformed {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// The page references a local file that does not exist.
    #[error("{INDEX_FILE} references {reference:?}, but {path} does not exist")]
    MissingFile {
        /// The reference as written in the page.
        reference: String,
        /// The file it points to.
        path: PathBuf,
    },
    /// The page loads a resource from the network or from outside its folder, so it
    /// would not display whole from a copied folder with no network.
    #[error("{INDEX_FILE} loads {reference:?}, which is outside the report folder")]
    OutsideReport {
        /// The reference as written in the page.
        reference: String,
    },
    /// The page links to an anchor it does not have.
    #[error("{INDEX_FILE} links to {reference:?}, but no element has that id")]
    BrokenAnchor {
        /// The reference as written in the page.
        reference: String,
    },
    /// The page has no experiment sections.
    #[error("{INDEX_FILE} has no experiment sections")]
    NoSections,
    /// Two experiment sections share a name.
    #[error("{INDEX_FILE} has two sections named {name:?}")]
    DuplicateSection {
        /// The shared name.
        name: String,
    },
    /// A section of the page has no entry in `results.json`.
    #[error("section {name:?} has no entry in {RESULTS_FILE}")]
    MissingResults {
        /// The section's name.
        name: String,
    },
    /// `results.json` has an entry that no section of the page shows.
    #[error("{RESULTS_FILE} has an entry {name:?} that no section shows")]
    UnshownResults {
        /// The entry's key.
        name: String,
    },
    /// A section has no key numbers.
    #[error("section {name:?} has no key numbers")]
    EmptyNumbers {
        /// The section's name.
        name: String,
    },
    /// The page and `results.json` disagree on how many key numbers a section has.
    #[error("section {name:?} shows {shown} key numbers but {RESULTS_FILE} holds {stored}")]
    NumbersMismatch {
        /// The section's name.
        name: String,
        /// Rows in the page's table.
        shown: usize,
        /// Entries in `results.json`.
        stored: usize,
    },
}

/// What [`verify_report`] found in a report that passed its checks.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ReportSummary {
    /// Each experiment section, in page order.
    pub sections: Vec<SectionSummary>,
    /// Every distinct local file the page references (images, their PNGs, the JSON).
    pub files: Vec<PathBuf>,
}

/// One section as [`verify_report`] found it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SectionSummary {
    /// The experiment's name.
    pub name: String,
    /// Images the section shows.
    pub images: usize,
    /// Key numbers in its table.
    pub numbers: usize,
}

impl Report {
    /// An empty report with this title and introduction.
    pub fn new(title: impl Into<String>, intro: impl Into<String>) -> Self {
        Self {
            title: title.into(),
            intro: intro.into(),
            sections: Vec::new(),
        }
    }

    /// Writes `index.html` and `results.json` into `out_dir`, creating it, and copies
    /// into it any image that lies outside it.
    ///
    /// Image paths are ordinary file paths (relative ones to the working directory), as
    /// [`PlotFiles`] holds them. Each file is written to a temporary name and renamed,
    /// so an interrupted run never leaves half a page.
    ///
    /// # Errors
    /// [`ReportError::InvalidName`], [`ReportError::DuplicateSection`] and
    /// [`ReportError::DuplicateNumber`] for a malformed report, before anything is
    /// written; [`ReportError::Image`] for an image that does not exist; I/O errors
    /// naming the path.
    pub fn write(&self, out_dir: &Path) -> Result<ReportFiles, ReportError> {
        self.validate()?;
        fs::create_dir_all(out_dir).map_err(|source| ReportError::CreateDir {
            path: out_dir.to_owned(),
            source,
        })?;
        let root = fs::canonicalize(out_dir).map_err(|source| ReportError::CreateDir {
            path: out_dir.to_owned(),
            source,
        })?;
        let images = self.place_images(&root)?;

        let files = ReportFiles {
            index: out_dir.join(INDEX_FILE),
            results: out_dir.join(RESULTS_FILE),
        };
        let results = self.results_json(&images);
        let json = serde_json::to_string_pretty(&results).map_err(|source| ReportError::Json {
            path: files.results.clone(),
            source,
        })?;
        let html = self.html(&images);
        for (path, text) in [(&files.results, json), (&files.index, html)] {
            write_atomic(path, text.as_bytes()).map_err(|source| ReportError::Write {
                path: path.clone(),
                source,
            })?;
        }
        Ok(files)
    }

    fn validate(&self) -> Result<(), ReportError> {
        let mut names = HashSet::new();
        for section in &self.sections {
            if !valid_name(&section.name) {
                return Err(ReportError::InvalidName {
                    name: section.name.clone(),
                });
            }
            if !names.insert(section.name.as_str()) {
                return Err(ReportError::DuplicateSection {
                    name: section.name.clone(),
                });
            }
            let mut labels = HashSet::new();
            for (label, _) in &section.numbers {
                if !labels.insert(label.as_str()) {
                    return Err(ReportError::DuplicateNumber {
                        section: section.name.clone(),
                        label: label.clone(),
                    });
                }
            }
        }
        Ok(())
    }

    /// The relative URLs of each section's images, copying into the report folder the
    /// ones that lie outside it.
    fn place_images(&self, root: &Path) -> Result<Vec<Vec<ImageLinks>>, ReportError> {
        let mut copied: HashMap<PathBuf, PathBuf> = HashMap::new();
        let mut place = |section: &str, path: &Path| -> Result<String, ReportError> {
            let image_error = |source| ReportError::Image {
                section: section.to_owned(),
                path: path.to_owned(),
                source,
            };
            let real = fs::canonicalize(path).map_err(image_error)?;
            if let Ok(inside) = real.strip_prefix(root) {
                return Ok(url_path(inside));
            }
            let name = real
                .file_name()
                .ok_or_else(|| image_error(io::Error::new(io::ErrorKind::InvalidInput, "not a file")))?;
            let relative = Path::new(COPIED_IMAGES_DIR).join(name);
            let dest = root.join(&relative);
            match copied.get(&dest) {
                Some(first) if *first != real => {
                    return Err(ReportError::ImageNameClash {
                        first: first.clone(),
                        second: real,
                        dest,
                    });
                }
                Some(_) => {}
                None => {
                    let dir = root.join(COPIED_IMAGES_DIR);
                    fs::create_dir_all(&dir)
                        .map_err(|source| ReportError::CreateDir { path: dir, source })?;
                    fs::copy(&real, &dest).map_err(|source| ReportError::Write {
                        path: dest.clone(),
                        source,
                    })?;
                    copied.insert(dest, real);
                }
            }
            Ok(url_path(&relative))
        };
        self.sections
            .iter()
            .map(|s| {
                s.images
                    .iter()
                    .map(|files| {
                        Ok(ImageLinks {
                            svg: place(&s.name, &files.svg)?,
                            png: place(&s.name, &files.png)?,
                        })
                    })
                    .collect()
            })
            .collect()
    }

    fn results_json(&self, images: &[Vec<ImageLinks>]) -> Value {
        let mut all = Map::new();
        for (section, links) in self.sections.iter().zip(images) {
            let numbers: Map<String, Value> = section
                .numbers
                .iter()
                .map(|(label, value)| (label.clone(), Value::from(value.as_str())))
                .collect();
            let mut entry = Map::new();
            entry.insert("title".into(), section.title.as_str().into());
            entry.insert("claim".into(), section.claim.as_str().into());
            entry.insert("source".into(), section.source.as_str().into());
            entry.insert("setup".into(), section.setup.as_str().into());
            entry.insert("finding".into(), section.finding.as_str().into());
            // JSON has no NaN; a time that is not finite is recorded as null.
            entry.insert("time_seconds".into(), section.time_seconds.into());
            entry.insert("numbers".into(), Value::Object(numbers));
            entry.insert(
                "images".into(),
                links.iter().map(|l| Value::from(l.svg.as_str())).collect(),
            );
            entry.insert("data".into(), section.data.clone());
            all.insert(section.name.clone(), Value::Object(entry));
        }
        Value::Object(all)
    }

    fn html(&self, images: &[Vec<ImageLinks>]) -> String {
        let mut h = String::with_capacity(16 * 1024);
        let title = escape(&self.title);
        h.push_str("<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n");
        h.push_str("<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n");
        h.push_str(&format!(
            "<title>{title}</title>\n<style>\n{CSS}</style>\n</head>\n<body>\n"
        ));
        h.push_str(&format!("<header>\n<h1>{title}</h1>\n"));
        h.push_str(&paragraphs(&self.intro));
        h.push_str("</header>\n");

        h.push_str("<nav>\n<h2>Contents</h2>\n<ol>\n");
        h.push_str(&format!("<li><a href=\"#{SUMMARY_ID}\">Summary</a></li>\n"));
        for s in &self.sections {
            h.push_str(&format!(
                "<li><a href=\"#{}\">{}</a></li>\n",
                s.name,
                escape(display_title(s))
            ));
        }
        h.push_str("</ol>\n</nav>\n");

        h.push_str(&format!(
            "<section id=\"{SUMMARY_ID}\">\n<h2>Summary</h2>\n<table class=\"summary\">\n\
             <thead><tr><th>Experiment</th><th>Finding</th><th>Time</th></tr></thead>\n<tbody>\n"
        ));
        for s in &self.sections {
            h.push_str(&format!(
                "<tr><td><a href=\"#{}\">{}</a></td><td>{}</td><td class=\"num\">{}</td></tr>\n",
                s.name,
                escape(display_title(s)),
                escape(&s.finding),
                escape(&fmt_duration(s.time_seconds))
            ));
        }
        let total: f64 = self.sections.iter().map(|s| s.time_seconds).sum();
        h.push_str(&format!(
            "</tbody>\n<tfoot><tr><td>Total</td><td></td><td class=\"num\">{}</td></tr></tfoot>\n\
             </table>\n</section>\n",
            escape(&fmt_duration(total))
        ));

        for (s, links) in self.sections.iter().zip(images) {
            section_html(&mut h, s, links);
        }

        h.push_str(&format!(
            "<footer>Every number on this page is also in \
             <a href=\"{RESULTS_FILE}\">{RESULTS_FILE}</a>.</footer>\n</body>\n</html>\n"
        ));
        h
    }
}

/// Where the page finds one chart, as relative URLs.
struct ImageLinks {
    svg: String,
    png: String,
}

fn section_html(h: &mut String, s: &Section, links: &[ImageLinks]) {
    let title = escape(display_title(s));
    // The name is validated to [a-z0-9_-], so it needs no escaping in attributes.
    h.push_str(&format!(
        "<section class=\"experiment\" id=\"{0}\" data-experiment=\"{0}\">\n\
         <h2>{title} <span class=\"id\">{0}</span></h2>\n",
        s.name
    ));
    h.push_str(&format!(
        "<div class=\"claim\"><p class=\"label\">Claim</p>\n<blockquote>{}</blockquote>\n\
         <p class=\"source\">Source: {}</p></div>\n",
        paragraphs(&s.claim),
        escape(&s.source)
    ));
    h.push_str("<h3>Setup</h3>\n");
    h.push_str(&paragraphs(&s.setup));
    if !links.is_empty() {
        h.push_str("<div class=\"figures\">\n");
        for (i, link) in links.iter().enumerate() {
            let (svg, png) = (escape(&link.svg), escape(&link.png));
            h.push_str(&format!(
                "<figure><a href=\"{png}\"><img src=\"{svg}\" alt=\"{title}, figure {n}\"></a>\
                 <figcaption>Figure {n}: <a href=\"{svg}\">SVG</a> · <a href=\"{png}\">PNG</a>\
                 </figcaption></figure>\n",
                n = i + 1
            ));
        }
        h.push_str("</div>\n");
    }
    h.push_str("<h3>Key numbers</h3>\n<table class=\"numbers\">\n<tbody>\n");
    for (label, value) in &s.numbers {
        h.push_str(&format!(
            "<tr class=\"number\"><th>{}</th><td>{}</td></tr>\n",
            escape(label),
            escape(value)
        ));
    }
    h.push_str("</tbody>\n</table>\n");
    h.push_str(&format!(
        "<p class=\"finding\"><strong>Finding:</strong> {}</p>\n\
         <p class=\"time\">Ran in {}.</p>\n</section>\n",
        escape(&s.finding),
        escape(&fmt_duration(s.time_seconds))
    ));
}

const CSS: &str = "\
body { font-family: system-ui, -apple-system, 'Segoe UI', 'DejaVu Sans', sans-serif;
       max-width: 1100px; margin: 0 auto; padding: 1rem 2rem 3rem; color: #1a1a1a;
       line-height: 1.5; background: #fff; }
h1 { font-size: 1.9rem; margin-bottom: 0.3rem; }
h2 { border-bottom: 1px solid #ddd; padding-bottom: 0.2rem; margin-top: 2.5rem; }
h2 .id { font: 0.8rem monospace; color: #777; font-weight: normal; margin-left: 0.5rem; }
h3 { margin-bottom: 0.3rem; }
nav ol { columns: 2; }
a { color: #1f5fa8; }
table { border-collapse: collapse; margin: 0.5rem 0; }
th, td { border: 1px solid #ddd; padding: 0.3rem 0.6rem; text-align: left; vertical-align: top; }
thead th, tfoot td { background: #f4f4f4; }
table.numbers th { font-weight: normal; background: #fafafa; }
table.numbers td, td.num { font-variant-numeric: tabular-nums; white-space: nowrap; }
td.num { text-align: right; }
.claim { background: #f7f9fc; border-left: 4px solid #1f77b4; padding: 0.3rem 1rem; }
.claim .label { font-weight: bold; margin: 0.3rem 0 0; }
blockquote { margin: 0.2rem 0; font-style: italic; }
.source { color: #555; font-size: 0.9rem; margin: 0.2rem 0 0.4rem; }
.figures { display: flex; flex-wrap: wrap; gap: 1rem; }
figure { margin: 0.5rem 0; max-width: 100%; }
figure img { max-width: 100%; height: auto; border: 1px solid #eee; }
figcaption { font-size: 0.85rem; color: #555; }
.finding { background: #fff8e1; border-left: 4px solid #ff7f0e; padding: 0.5rem 1rem; }
.time { color: #777; font-size: 0.85rem; }
footer { margin-top: 3rem; color: #777; font-size: 0.85rem; }
";

fn valid_name(name: &str) -> bool {
    let bytes = name.as_bytes();
    (1..=MAX_NAME_LEN).contains(&bytes.len())
        && (bytes[0].is_ascii_lowercase() || bytes[0].is_ascii_digit())
        && bytes
            .iter()
            .all(|&b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_')
}

fn display_title(s: &Section) -> &str {
    if s.title.is_empty() { &s.name } else { &s.title }
}

/// Escapes text for HTML content and double- or single-quoted attributes.
pub fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// Text as HTML paragraphs, split at blank lines.
fn paragraphs(text: &str) -> String {
    let mut out = String::new();
    let mut current: Vec<&str> = Vec::new();
    for line in text.lines().chain(std::iter::once("")) {
        if line.trim().is_empty() {
            if !current.is_empty() {
                out.push_str(&format!("<p>{}</p>\n", escape(&current.join(" "))));
                current.clear();
            }
        } else {
            current.push(line.trim());
        }
    }
    out
}

fn fmt_duration(seconds: f64) -> String {
    if !(seconds.is_finite() && seconds >= 0.0) {
        return "n/a".to_owned();
    }
    if seconds < 60.0 {
        format!("{seconds:.1} s")
    } else if seconds < 3600.0 {
        let whole = seconds.round() as u64;
        format!("{} min {:02} s", whole / 60, whole % 60)
    } else {
        let minutes = (seconds / 60.0).round() as u64;
        format!("{} h {:02} min", minutes / 60, minutes % 60)
    }
}

/// A relative path as a URL path: `/`-separated, with anything outside the unreserved
/// characters percent-encoded.
fn url_path(relative: &Path) -> String {
    let mut out = String::new();
    for (i, part) in relative.components().enumerate() {
        if i > 0 {
            out.push('/');
        }
        for &b in part.as_os_str().as_encoded_bytes() {
            if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
                out.push(char::from(b));
            } else {
                out.push_str(&format!("%{b:02X}"));
            }
        }
    }
    out
}

fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = bytes
            .get(i + 1..i + 3)
            .and_then(|h| std::str::from_utf8(h).ok())
            .and_then(|h| u8::from_str_radix(h, 16).ok());
        match (bytes[i], hex) {
            (b'%', Some(b)) => {
                out.push(b);
                i += 3;
            }
            (b, _) => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn unescape(s: &str) -> String {
    s.replace("&lt;", "<")
        .replace("&gt;", ">")
        .replace("&quot;", "\"")
        .replace("&#39;", "'")
        .replace("&amp;", "&")
}

/// Values of every `attr="..."` in `html`, with their byte offsets.
fn attribute_values<'a>(html: &'a str, attr: &str) -> Vec<(usize, &'a str)> {
    let needle = format!("{attr}=\"");
    let mut out = Vec::new();
    let mut from = 0;
    while let Some(found) = html[from..].find(&needle) {
        let at = from + found;
        let start = at + needle.len();
        // Only a whole attribute name counts: `data-src=` is not `src=`.
        let standalone = html[..at].chars().next_back().is_some_and(char::is_whitespace);
        let Some(len) = html[start..].find('"') else {
            break;
        };
        if standalone {
            out.push((at, &html[start..start + len]));
        }
        from = start + len + 1;
    }
    out
}

/// Checks a written report: every local file that `index.html` references exists inside
/// `dir`, it loads nothing from the network, its anchors resolve, and `results.json`
/// has an entry with key numbers for each experiment section and none without one.
///
/// The page is scanned, not parsed: this checks pages as [`Report::write`] writes them.
///
/// # Errors
/// The first problem found, as a [`VerifyError`].
pub fn verify_report(dir: &Path) -> Result<ReportSummary, VerifyError> {
    let read = |name: &str| {
        let path = dir.join(name);
        fs::read_to_string(&path).map_err(|source| VerifyError::Read { path, source })
    };
    let html = read(INDEX_FILE)?;
    let json_path = dir.join(RESULTS_FILE);
    let results: Value = serde_json::from_str(&read(RESULTS_FILE)?).map_err(|source| VerifyError::Json {
        path: json_path.clone(),
        source,
    })?;
    let Value::Object(results) = results else {
        return Err(VerifyError::Malformed {
            path: json_path,
            reason: "the top level is not an object".into(),
        });
    };

    let ids: HashSet<String> = attribute_values(&html, "id")
        .into_iter()
        .map(|(_, v)| unescape(v))
        .collect();
    let mut files = Vec::new();
    let mut images_at = Vec::new();
    for attr in ["src", "href"] {
        for (at, raw) in attribute_values(&html, attr) {
            let reference = unescape(raw);
            if let Some(anchor) = reference.strip_prefix('#') {
                if !ids.contains(anchor) {
                    return Err(VerifyError::BrokenAnchor { reference });
                }
                continue;
            }
            let is_url = reference.contains("://") || reference.starts_with("//");
            if is_url || reference.starts_with("mailto:") {
                // A link elsewhere is fine to show; loading a resource from there is not.
                if attr == "src" {
                    return Err(VerifyError::OutsideReport { reference });
                }
                continue;
            }
            let local = reference.split(['?', '#']).next().unwrap_or_default();
            let relative = PathBuf::from(percent_decode(local));
            let escapes = relative
                .components()
                .any(|c| !matches!(c, Component::Normal(_) | Component::CurDir));
            if escapes {
                return Err(VerifyError::OutsideReport { reference });
            }
            let path = dir.join(&relative);
            if !path.is_file() {
                return Err(VerifyError::MissingFile { reference, path });
            }
            if !files.contains(&path) {
                files.push(path);
            }
            if attr == "src" {
                images_at.push(at);
            }
        }
    }

    let starts = attribute_values(&html, "data-experiment");
    if starts.is_empty() {
        return Err(VerifyError::NoSections);
    }
    let mut sections = Vec::new();
    for (i, &(at, raw)) in starts.iter().enumerate() {
        let name = unescape(raw);
        if sections.iter().any(|s: &SectionSummary| s.name == name) {
            return Err(VerifyError::DuplicateSection { name });
        }
        let end = starts.get(i + 1).map_or(html.len(), |next| next.0);
        let shown = html[at..end].matches("<tr class=\"number\">").count();
        let images = images_at.iter().filter(|&&p| p > at && p < end).count();
        let Some(entry) = results.get(&name) else {
            return Err(VerifyError::MissingResults { name });
        };
        let stored = match entry.get("numbers") {
            Some(Value::Object(numbers)) => numbers.len(),
            _ => {
                return Err(VerifyError::Malformed {
                    path: json_path,
                    reason: format!("entry {name:?} has no \"numbers\" object"),
                });
            }
        };
        if stored == 0 {
            return Err(VerifyError::EmptyNumbers { name });
        }
        if shown != stored {
            return Err(VerifyError::NumbersMismatch { name, shown, stored });
        }
        sections.push(SectionSummary {
            name,
            images,
            numbers: stored,
        });
    }
    if let Some(name) = results.keys().find(|k| !sections.iter().any(|s| &s.name == *k)) {
        return Err(VerifyError::UnshownResults { name: name.clone() });
    }
    Ok(ReportSummary { sections, files })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::lab::plot::{LineChart, Series, SeriesStyle};

    fn chart(dir: &Path, stem: &str) -> PlotFiles {
        LineChart {
            title: format!("Chart {stem}"),
            x_label: "step".into(),
            y_label: "accuracy".into(),
            series: vec![Series::new("BN", vec![(0.0, 0.1), (1.0, 0.9)], SeriesStyle::Line)],
            ..Default::default()
        }
        .render(dir, stem)
        .unwrap()
    }

    fn section(name: &str, images: Vec<PlotFiles>) -> Section {
        Section {
            name: name.into(),
            title: format!("Experiment {name}"),
            claim: "BatchNorm lets you use <much> higher learning rates & converge faster.".into(),
            source: "Ioffe & Szegedy (2015), \"Batch Normalization\", section 3.3".into(),
            setup: "Three layers of 100 sigmoid units.\n\nMNIST, batch 60.".into(),
            images,
            numbers: vec![
                ("final accuracy, BN".into(), "0.971".into()),
                ("final accuracy, plain <x>".into(), "0.942".into()),
            ],
            finding: "BN reached 0.971 vs 0.942 <b>without</b>.".into(),
            time_seconds: 75.0,
            data: serde_json::json!({ "accuracy": [0.1, 0.9], "steps": 2 }),
        }
    }

    #[test]
    fn report_round_trips_through_verify() {
        let out = tempfile::tempdir().unwrap();
        let elsewhere = tempfile::tempdir().unwrap();
        let inside = chart(&out.path().join("plots"), "paper-fig1-accuracy");
        let outside = chart(elsewhere.path(), "deep-std");
        let mut report = Report::new("BatchNorm lab", "Nine claims, measured.\n\nOffline.");
        report.sections.push(section("paper-fig1", vec![inside]));
        report
            .sections
            .push(section("deep-activations", vec![outside.clone()]));
        report.sections.push(section("identity", vec![]));
        let files = report.write(out.path()).unwrap();
        assert_eq!(files.index, out.path().join(INDEX_FILE));

        let summary = verify_report(out.path()).unwrap();
        let names: Vec<_> = summary.sections.iter().map(|s| s.name.as_str()).collect();
        assert_eq!(names, ["paper-fig1", "deep-activations", "identity"]);
        let counts: Vec<_> = summary.sections.iter().map(|s| (s.images, s.numbers)).collect();
        assert_eq!(counts, [(1, 2), (1, 2), (0, 2)]);
        // Two images (SVG + PNG links) per chart, plus results.json.
        assert_eq!(summary.files.len(), 5);
        assert!(
            out.path().join("img/deep-std.svg").is_file(),
            "outside image not copied"
        );

        let html = fs::read_to_string(&files.index).unwrap();
        assert!(html.contains("src=\"plots/paper-fig1-accuracy.svg\""));
        assert!(html.contains("href=\"plots/paper-fig1-accuracy.png\""));
        assert!(html.contains("src=\"img/deep-std.svg\""));
        assert!(html.contains("<td class=\"num\">1 min 15 s</td>"));
        assert!(html.contains("<td class=\"num\">3 min 45 s</td>"), "total time");

        let json: Value = serde_json::from_str(&fs::read_to_string(&files.results).unwrap()).unwrap();
        let entry = &json["paper-fig1"];
        assert_eq!(entry["numbers"]["final accuracy, BN"], "0.971");
        assert_eq!(entry["finding"], "BN reached 0.971 vs 0.942 <b>without</b>.");
        assert_eq!(entry["time_seconds"], 75.0);
        assert_eq!(entry["data"]["steps"], 2);
        assert_eq!(entry["images"][0], "plots/paper-fig1-accuracy.svg");

        // Writing again over an existing report works and leaves no temporary files.
        report.write(out.path()).unwrap();
        let stray = fs::read_dir(out.path())
            .unwrap()
            .filter(|e| {
                e.as_ref()
                    .unwrap()
                    .file_name()
                    .to_string_lossy()
                    .ends_with(".tmp")
            })
            .count();
        assert_eq!(stray, 0);
    }

    #[test]
    fn text_is_escaped() {
        let out = tempfile::tempdir().unwrap();
        let mut report = Report::new("A <title> & \"quotes\"", "x < y");
        report.sections.push(section("escaping", vec![]));
        report.write(out.path()).unwrap();
        let html = fs::read_to_string(out.path().join(INDEX_FILE)).unwrap();
        assert!(html.contains("<title>A &lt;title&gt; &amp; &quot;quotes&quot;</title>"));
        assert!(html.contains("<p>x &lt; y</p>"));
        assert!(html.contains("use &lt;much&gt; higher learning rates &amp; converge"));
        assert!(html.contains("BN reached 0.971 vs 0.942 &lt;b&gt;without&lt;/b&gt;."));
        assert!(html.contains("<th>final accuracy, plain &lt;x&gt;</th>"));
        assert!(html.contains("<p>Three layers of 100 sigmoid units.</p>\n<p>MNIST, batch 60.</p>"));
        assert!(!html.contains("<b>"), "raw markup leaked into the page");
        assert_eq!(escape("'&'"), "&#39;&amp;&#39;");
    }

    #[test]
    fn malformed_reports_are_rejected_before_writing() {
        let out = tempfile::tempdir().unwrap();
        let target = out.path().join("report");
        let write = |sections: Vec<Section>| {
            Report {
                sections,
                ..Default::default()
            }
            .write(&target)
        };
        for name in ["", "Upper", "_summary", "has space", "../up", &"x".repeat(65)] {
            let err = write(vec![section(name, vec![])]).unwrap_err();
            assert!(matches!(err, ReportError::InvalidName { .. }), "{name:?}: {err}");
        }
        let err = write(vec![section("a", vec![]), section("a", vec![])]).unwrap_err();
        assert!(matches!(err, ReportError::DuplicateSection { .. }), "{err}");
        let mut twice = section("a", vec![]);
        twice.numbers.push(twice.numbers[0].clone());
        assert!(matches!(
            write(vec![twice]).unwrap_err(),
            ReportError::DuplicateNumber { .. }
        ));
        assert!(!target.exists(), "a rejected report created its folder");

        let missing = PlotFiles {
            svg: out.path().join("nope.svg"),
            png: out.path().join("nope.png"),
        };
        let err = write(vec![section("a", vec![missing])]).unwrap_err();
        assert!(err.to_string().contains("nope.svg"), "{err}");
    }

    #[test]
    fn images_with_one_name_from_two_places_clash() {
        let out = tempfile::tempdir().unwrap();
        let (a, b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
        let report = Report {
            sections: vec![section(
                "a",
                vec![chart(a.path(), "same"), chart(b.path(), "same")],
            )],
            ..Default::default()
        };
        let err = report.write(out.path()).unwrap_err();
        assert!(matches!(err, ReportError::ImageNameClash { .. }), "{err}");
    }

    #[test]
    fn verify_catches_a_missing_image() {
        let out = tempfile::tempdir().unwrap();
        let image = chart(&out.path().join("plots"), "c");
        let report = Report {
            sections: vec![section("a", vec![image.clone()])],
            ..Default::default()
        };
        report.write(out.path()).unwrap();
        verify_report(out.path()).unwrap();
        fs::remove_file(&image.png).unwrap();
        let err = verify_report(out.path()).unwrap_err();
        assert!(matches!(err, VerifyError::MissingFile { .. }), "{err}");
        assert!(matches!(report.write(out.path()), Err(ReportError::Image { .. })));
    }

    #[test]
    fn verify_catches_results_that_do_not_match_the_page() {
        let out = tempfile::tempdir().unwrap();
        let report = Report {
            sections: vec![section("a", vec![]), section("b", vec![])],
            ..Default::default()
        };
        let edit = |f: &dyn Fn(&mut Map<String, Value>)| {
            report.write(out.path()).unwrap();
            let path = out.path().join(RESULTS_FILE);
            let mut json: Value = serde_json::from_str(&fs::read_to_string(&path).unwrap()).unwrap();
            f(json.as_object_mut().unwrap());
            fs::write(&path, json.to_string()).unwrap();
            verify_report(out.path())
        };
        assert!(matches!(
            edit(&|j| j["b"]["numbers"] = serde_json::json!({})),
            Err(VerifyError::EmptyNumbers { .. })
        ));
        assert!(matches!(
            edit(&|j| j["b"]["numbers"] = serde_json::json!({ "one": "1" })),
            Err(VerifyError::NumbersMismatch {
                shown: 2,
                stored: 1,
                ..
            })
        ));
        assert!(matches!(
            edit(&|j| {
                j.remove("b");
            }),
            Err(VerifyError::MissingResults { .. })
        ));
        assert!(matches!(
            edit(&|j| {
                j.insert("extra".into(), serde_json::json!({}));
            }),
            Err(VerifyError::UnshownResults { .. })
        ));
        fs::write(out.path().join(RESULTS_FILE), "[1, 2]").unwrap();
        assert!(matches!(
            verify_report(out.path()),
            Err(VerifyError::Malformed { .. })
        ));
    }

    #[test]
    fn verify_catches_references_outside_the_folder() {
        let out = tempfile::tempdir().unwrap();
        let report = Report {
            sections: vec![section("a", vec![])],
            ..Default::default()
        };
        report.write(out.path()).unwrap();
        let index = out.path().join(INDEX_FILE);
        let html = fs::read_to_string(&index).unwrap();
        let with = |extra: &str| {
            fs::write(&index, html.replace("</footer>", &format!("{extra}</footer>"))).unwrap();
            verify_report(out.path())
        };
        assert!(with("<a href=\"https://arxiv.org/abs/1502.03167\">paper</a>").is_ok());
        assert!(matches!(
            with("<img src=\"https://x.org/a.png\">"),
            Err(VerifyError::OutsideReport { .. })
        ));
        assert!(matches!(
            with("<img src=\"../a.png\">"),
            Err(VerifyError::OutsideReport { .. })
        ));
        assert!(matches!(
            with("<a href=\"#nowhere\">x</a>"),
            Err(VerifyError::BrokenAnchor { .. })
        ));
        assert!(matches!(
            with("<img src=\"missing.svg\">"),
            Err(VerifyError::MissingFile { .. })
        ));
    }

    #[test]
    fn urls_are_percent_encoded_and_decoded() {
        let encoded = url_path(Path::new("img/a b#1.svg"));
        assert_eq!(encoded, "img/a%20b%231.svg");
        assert_eq!(percent_decode(&encoded), "img/a b#1.svg");
        assert_eq!(percent_decode("100%"), "100%");
    }

    #[test]
    fn durations_read_naturally() {
        assert_eq!(fmt_duration(3.04), "3.0 s");
        assert_eq!(fmt_duration(125.0), "2 min 05 s");
        assert_eq!(fmt_duration(7300.0), "2 h 02 min");
        assert_eq!(fmt_duration(f64::NAN), "n/a");
    }
}
