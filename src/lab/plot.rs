//! Charts for the lab report, described as data and drawn with plotters.
//!
//! A chart is a plain struct: a title, axis labels and the numbers to draw. `render`
//! draws it twice, as SVG for the HTML report and as PNG for everything else, into
//! `dir/stem.svg` and `dir/stem.png`.
//!
//! Experiments produce awkward numbers: NaN and infinities from diverged runs, zeros on
//! log axes, runs that never produced a point. Every chart draws what it can, says in a
//! footnote what it left out, and never panics on data. Only a chart that is malformed
//! as a description (a histogram with no bins, a bar group whose length does not match
//! the categories, an axis range that is not a range) is an error.
//!
//! Text in the PNG is rasterized from DejaVu Sans, which the `dejavu` crate compiles into
//! the binary, so rendering needs neither system fonts nor a network. The SVG names the
//! generic `sans-serif` family and leaves the choice of font to the browser.

use std::fs;
use std::io;
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, Ordering};

use plotters::coord::Shift;
use plotters::coord::ranged1d::{KeyPointHint, KeyPointWeight, NoDefaultFormatting, Ranged, ValueFormatter};
use plotters::drawing::DrawingAreaErrorKind;
use plotters::prelude::*;
use plotters::style::register_font;
use plotters::style::text_anchor::{HPos, Pos, VPos};

/// Pixel size (width, height) of a rendered [`LineChart`] or [`BarChart`].
pub const CHART_SIZE: (u32, u32) = (960, 560);

/// Pixel size (width, height) of one panel of a [`HistogramGrid`].
///
/// The grid is `columns` panels wide and as many rows tall as the panels need, plus a
/// band of [`GRID_TITLE_HEIGHT`] pixels for the title.
pub const PANEL_SIZE: (u32, u32) = (360, 270);

/// Height in pixels of the title band above the panels of a [`HistogramGrid`].
pub const GRID_TITLE_HEIGHT: u32 = 48;

/// Most bins a histogram panel may have; more would be thinner than a pixel.
pub const MAX_BINS: usize = 1000;

/// Largest image, in pixels, a chart may ask for. The PNG is drawn into an RGB buffer
/// of three bytes a pixel, so this caps that buffer near 100 MB.
const MAX_PIXELS: u64 = 32 * 1024 * 1024;

/// Height of the title band of a line or bar chart.
const TITLE_HEIGHT: u32 = 44;

/// Height of one footnote line under a chart.
const NOTE_HEIGHT: u32 = 22;

/// Number of labelled ticks asked for on the axes of a full-size chart.
const TICKS: usize = 8;

/// Number of labelled ticks asked for on the axes of a histogram panel.
const PANEL_TICKS: usize = 5;

/// Longest legend entry, in characters, before it is shortened with an ellipsis.
const LEGEND_MAX_CHARS: usize = 36;

/// Tableau's ten categorical colours: distinct for the common kinds of colour
/// blindness, and they stay apart when printed in grey.
const PALETTE: [RGBColor; 10] = [
    RGBColor(31, 119, 180),
    RGBColor(255, 127, 14),
    RGBColor(44, 160, 44),
    RGBColor(214, 39, 40),
    RGBColor(148, 103, 189),
    RGBColor(140, 86, 75),
    RGBColor(227, 119, 194),
    RGBColor(127, 127, 127),
    RGBColor(188, 189, 34),
    RGBColor(23, 190, 207),
];

const INK: RGBColor = RGBColor(20, 20, 20);
const MUTED: RGBColor = RGBColor(90, 90, 90);
const FRAME: RGBColor = RGBColor(200, 200, 200);

/// The two files one chart was rendered to.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PlotFiles {
    /// The SVG file, `dir/stem.svg`: what the HTML report shows.
    pub svg: PathBuf,
    /// The PNG file, `dir/stem.png`: the same chart as a bitmap.
    pub png: PathBuf,
}

/// Why a chart could not be rendered.
#[derive(Debug, thiserror::Error)]
pub enum PlotError {
    /// The file stem would not make a plain file name inside the plot folder.
    #[error(
        "plot file stem {stem:?} must be 1 to 100 ASCII letters, digits, '-', '_' or '.', \
         and not start with '.'"
    )]
    InvalidStem {
        /// The stem as given.
        stem: String,
    },
    /// The chart's description cannot be drawn as it stands.
    #[error("chart {title:?} cannot be drawn: {reason}")]
    InvalidChart {
        /// The chart's title.
        title: String,
        /// What is wrong with it.
        reason: String,
    },
    /// The output folder could not be created.
    #[error("cannot create plot folder {path}: {source}")]
    CreateDir {
        /// The folder.
        path: PathBuf,
        /// The underlying error.
        source: io::Error,
    },
    /// plotters failed while drawing.
    #[error("drawing {path} failed: {message}")]
    Draw {
        /// The file being drawn.
        path: PathBuf,
        /// plotters' description of the failure.
        message: String,
    },
    /// The bitmap could not be encoded as PNG.
    #[error("encoding {path} as PNG failed: {source}")]
    Encode {
        /// The PNG file.
        path: PathBuf,
        /// The underlying error.
        source: png::EncodingError,
    },
    /// A rendered file could not be written.
    #[error("cannot write {path}: {source}")]
    Write {
        /// The file.
        path: PathBuf,
        /// The underlying error.
        source: io::Error,
    },
    /// The embedded font could not be parsed; only a corrupt build gets here.
    #[error("the embedded DejaVu Sans font could not be loaded")]
    Font,
}

/// How a [`Series`] is drawn.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum SeriesStyle {
    /// Consecutive points joined by a line (the default): curves over steps.
    #[default]
    Line,
    /// A dot at each point, unjoined.
    Points,
    /// A line with a dot at each point: sweeps with few points, like learning rates.
    LineAndPoints,
}

/// One named curve of a [`LineChart`].
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Series {
    /// Legend text; an empty name leaves the series out of the legend.
    pub name: String,
    /// The `(x, y)` points in drawing order. Points with a non-finite coordinate, or a
    /// coordinate `<= 0` on a log axis, are not drawn and break the line.
    pub points: Vec<(f64, f64)>,
    /// How the points are drawn.
    pub style: SeriesStyle,
}

impl Series {
    /// A series named `name` through `points`, drawn in `style`.
    pub fn new(name: impl Into<String>, points: Vec<(f64, f64)>, style: SeriesStyle) -> Self {
        Self {
            name: name.into(),
            points,
            style,
        }
    }
}

/// Curves on shared axes: accuracy against step, a statistic per layer, a sweep.
///
/// Build it with a struct literal and `..Default::default()`. The default has linear
/// axes fitted to the data, no marks for non-finite values, and no series.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct LineChart {
    /// Title drawn above the plot.
    pub title: String,
    /// Label of the horizontal axis.
    pub x_label: String,
    /// Label of the vertical axis.
    pub y_label: String,
    /// Logarithmic horizontal axis; points with `x <= 0` are then not drawn.
    pub log_x: bool,
    /// Logarithmic vertical axis; points with `y <= 0` are then not drawn.
    pub log_y: bool,
    /// Fixed horizontal range `(low, high)`; `None` (the default) fits the data.
    /// Lines leaving the range are clipped at its edge.
    pub x_range: Option<(f64, f64)>,
    /// Fixed vertical range `(low, high)`; `None` (the default) fits the data.
    /// Lines leaving the range are clipped at its edge.
    pub y_range: Option<(f64, f64)>,
    /// Mark a point whose `x` is finite but whose `y` is not (a run that diverged) with
    /// a cross at the bottom of the plot, in the series' colour, instead of only
    /// counting it in the footnote. Default `false`.
    pub mark_non_finite: bool,
    /// The curves, coloured in order from a ten-colour palette.
    pub series: Vec<Series>,
}

/// One panel of a [`HistogramGrid`]: the values whose distribution it shows.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct HistogramPanel {
    /// Caption above the panel, e.g. `"BN, layer 5"`.
    pub title: String,
    /// The sample. Non-finite values are counted in the panel's caption, not binned.
    pub values: Vec<f64>,
}

/// Which values set the bin range of each panel of a [`HistogramGrid`].
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub enum BinRange {
    /// One range over every panel (the default), so all panels compare directly.
    #[default]
    Shared,
    /// One range per column, so with variants as rows and layers as columns the
    /// variants compare at each layer even when the layers' scales differ.
    PerColumn,
    /// Each panel fits its own values.
    PerPanel,
    /// This range `(low, high)` everywhere; values outside it are counted in the
    /// panel's caption, not binned.
    Fixed(f64, f64),
}

/// Histograms side by side: variants against layers, before against after.
///
/// Panels fill the grid row by row, `columns` to a row. Panels in one row share a
/// colour, so a row can stand for one variant. Each panel is captioned with its title
/// and the sample's size, mean and standard deviation.
#[derive(Clone, Debug, PartialEq)]
pub struct HistogramGrid {
    /// Title drawn above the grid.
    pub title: String,
    /// Label of every panel's horizontal axis.
    pub x_label: String,
    /// Number of equal-width bins per panel, 1 to [`MAX_BINS`]. Default 40.
    pub bins: usize,
    /// Panels per row; `0` (the default) puts every panel in one row.
    pub columns: usize,
    /// How the bin range is chosen. Default [`BinRange::Shared`].
    pub range: BinRange,
    /// The panels, row by row.
    pub panels: Vec<HistogramPanel>,
}

impl Default for HistogramGrid {
    fn default() -> Self {
        Self {
            title: String::new(),
            x_label: String::new(),
            bins: 40,
            columns: 0,
            range: BinRange::Shared,
            panels: Vec::new(),
        }
    }
}

/// One coloured group of a [`BarChart`]: a value for each category.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct BarGroup {
    /// Legend text.
    pub name: String,
    /// One value per category, in the order of [`BarChart::categories`]. A non-finite
    /// value is drawn as a cross at the foot of its slot.
    pub values: Vec<f64>,
}

/// Grouped bars: one slot per category along the horizontal axis, one bar per group in
/// each slot. Build it with a struct literal and `..Default::default()`.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct BarChart {
    /// Title drawn above the plot.
    pub title: String,
    /// Label of the horizontal axis.
    pub x_label: String,
    /// Label of the vertical axis.
    pub y_label: String,
    /// Logarithmic vertical axis; values `<= 0` are then not drawn.
    pub log_y: bool,
    /// Print each bar's value above it. Default `false`.
    pub show_values: bool,
    /// Category names along the horizontal axis.
    pub categories: Vec<String>,
    /// The groups, coloured in order from a ten-colour palette.
    pub groups: Vec<BarGroup>,
}

impl LineChart {
    /// Pixel size (width, height) of the rendered chart: always [`CHART_SIZE`].
    pub fn size(&self) -> (u32, u32) {
        CHART_SIZE
    }

    /// Draws the chart into `dir/stem.svg` and `dir/stem.png`, creating `dir`.
    ///
    /// # Errors
    /// [`PlotError::InvalidStem`] for a stem that is not a plain file name,
    /// [`PlotError::InvalidChart`] for a fixed range that is not finite and increasing
    /// (or not positive on a log axis), and I/O or drawing errors naming the file.
    pub fn render(&self, dir: &Path, stem: &str) -> Result<PlotFiles, PlotError> {
        render_chart(self, dir, stem)
    }
}

impl HistogramGrid {
    /// Pixel size (width, height) of the rendered grid: [`PANEL_SIZE`] per panel plus
    /// [`GRID_TITLE_HEIGHT`] for the title.
    pub fn size(&self) -> (u32, u32) {
        let (rows, cols) = self.shape();
        (
            saturating_u32(cols as u64 * u64::from(PANEL_SIZE.0)),
            saturating_u32(rows as u64 * u64::from(PANEL_SIZE.1) + u64::from(GRID_TITLE_HEIGHT)),
        )
    }

    /// Draws the grid into `dir/stem.svg` and `dir/stem.png`, creating `dir`.
    ///
    /// # Errors
    /// [`PlotError::InvalidStem`] for a stem that is not a plain file name,
    /// [`PlotError::InvalidChart`] for `bins` outside `1..=MAX_BINS`, a fixed range that
    /// is not finite and increasing, or a grid too large to draw, and I/O or drawing
    /// errors naming the file.
    pub fn render(&self, dir: &Path, stem: &str) -> Result<PlotFiles, PlotError> {
        render_chart(self, dir, stem)
    }

    /// Rows and columns of the grid; an empty grid keeps one cell for its note.
    fn shape(&self) -> (usize, usize) {
        let n = self.panels.len().max(1);
        let cols = if self.columns == 0 { n } else { self.columns.min(n) };
        (n.div_ceil(cols), cols)
    }
}

impl BarChart {
    /// Pixel size (width, height) of the rendered chart: always [`CHART_SIZE`].
    pub fn size(&self) -> (u32, u32) {
        CHART_SIZE
    }

    /// Draws the chart into `dir/stem.svg` and `dir/stem.png`, creating `dir`.
    ///
    /// # Errors
    /// [`PlotError::InvalidStem`] for a stem that is not a plain file name,
    /// [`PlotError::InvalidChart`] when a group's value count differs from the number
    /// of categories, and I/O or drawing errors naming the file.
    pub fn render(&self, dir: &Path, stem: &str) -> Result<PlotFiles, PlotError> {
        render_chart(self, dir, stem)
    }
}

/// A drawing failure from plotters, whatever the backend, as text.
struct DrawFailure(String);

impl<E: std::error::Error + Send + Sync> From<DrawingAreaErrorKind<E>> for DrawFailure {
    fn from(error: DrawingAreaErrorKind<E>) -> Self {
        Self(error.to_string())
    }
}

/// What `render_chart` needs of a chart. Drawing is generic over the backend so the SVG
/// and the PNG come from one piece of code and cannot drift apart.
trait Chart {
    fn title(&self) -> &str;
    fn pixel_size(&self) -> (u32, u32);
    /// Rejects descriptions that cannot be drawn; data problems are drawn around instead.
    fn validate(&self) -> Result<(), String>;
    fn draw<DB: DrawingBackend>(&self, root: &DrawingArea<DB, Shift>) -> Result<(), DrawFailure>;
}

fn render_chart<C: Chart>(chart: &C, dir: &Path, stem: &str) -> Result<PlotFiles, PlotError> {
    check_stem(stem)?;
    let invalid = |reason: String| PlotError::InvalidChart {
        title: chart.title().to_owned(),
        reason,
    };
    chart.validate().map_err(invalid)?;
    let (width, height) = chart.pixel_size();
    let pixels = u64::from(width) * u64::from(height);
    if pixels == 0 || pixels > MAX_PIXELS {
        return Err(invalid(format!(
            "a {width}x{height} image is larger than the {MAX_PIXELS}-pixel limit"
        )));
    }
    ensure_font()?;
    fs::create_dir_all(dir).map_err(|source| PlotError::CreateDir {
        path: dir.to_owned(),
        source,
    })?;
    let files = PlotFiles {
        svg: dir.join(format!("{stem}.svg")),
        png: dir.join(format!("{stem}.png")),
    };

    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, (width, height)).into_drawing_area();
        chart
            .draw(&root)
            .and_then(|()| root.present().map_err(DrawFailure::from))
            .map_err(|DrawFailure(message)| PlotError::Draw {
                path: files.svg.clone(),
                message,
            })?;
    }

    // Lossless by construction: `pixels` is at most MAX_PIXELS.
    let mut rgb = vec![0u8; pixels as usize * 3];
    {
        let root = BitMapBackend::with_buffer(&mut rgb, (width, height)).into_drawing_area();
        chart
            .draw(&root)
            .and_then(|()| root.present().map_err(DrawFailure::from))
            .map_err(|DrawFailure(message)| PlotError::Draw {
                path: files.png.clone(),
                message,
            })?;
    }
    let png = encode_png(&rgb, width, height).map_err(|source| PlotError::Encode {
        path: files.png.clone(),
        source,
    })?;

    for (path, bytes) in [(&files.svg, svg.as_bytes()), (&files.png, png.as_slice())] {
        write_atomic(path, bytes).map_err(|source| PlotError::Write {
            path: path.clone(),
            source,
        })?;
    }
    Ok(files)
}

/// Stems become file names and relative URLs in the report, so they are kept to
/// characters that need no escaping anywhere and cannot climb out of the folder.
fn check_stem(stem: &str) -> Result<(), PlotError> {
    let plain = (1..=100).contains(&stem.len())
        && !stem.starts_with('.')
        && stem
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'));
    if plain {
        Ok(())
    } else {
        Err(PlotError::InvalidStem {
            stem: stem.to_owned(),
        })
    }
}

/// Registers DejaVu Sans as plotters' `sans-serif` family, once per process.
fn ensure_font() -> Result<(), PlotError> {
    static LOADED: OnceLock<bool> = OnceLock::new();
    let loaded = *LOADED.get_or_init(|| {
        register_font("sans-serif", FontStyle::Normal, dejavu::sans::regular()).is_ok()
            && register_font("sans-serif", FontStyle::Bold, dejavu::sans::bold()).is_ok()
    });
    if loaded { Ok(()) } else { Err(PlotError::Font) }
}

fn encode_png(rgb: &[u8], width: u32, height: u32) -> Result<Vec<u8>, png::EncodingError> {
    let mut out = Vec::new();
    let mut encoder = png::Encoder::new(&mut out, width, height);
    encoder.set_color(png::ColorType::Rgb);
    encoder.set_depth(png::BitDepth::Eight);
    let mut writer = encoder.write_header()?;
    writer.write_image_data(rgb)?;
    writer.finish()?;
    Ok(out)
}

/// Writes `bytes` to `path` through a temporary file in the same folder and a rename,
/// so a reader (or a crash) never sees half a file.
pub(crate) fn write_atomic(path: &Path, bytes: &[u8]) -> io::Result<()> {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let name = path
        .file_name()
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "path has no file name"))?;
    let tmp = path.with_file_name(format!(
        ".{}.{}-{}.tmp",
        name.to_string_lossy(),
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::Relaxed)
    ));
    fs::write(&tmp, bytes)
        .and_then(|()| fs::rename(&tmp, path))
        .inspect_err(|_| {
            // Best effort: the original error is the one worth reporting.
            let _ = fs::remove_file(&tmp);
        })
}

fn saturating_u32(v: u64) -> u32 {
    u32::try_from(v).unwrap_or(u32::MAX)
}

// ---------------------------------------------------------------------------------------
// Line chart

/// A series reduced to what can be drawn.
struct PreparedSeries {
    /// Runs of consecutive drawable points; a point that cannot be drawn ends a run, so
    /// the line shows the gap instead of bridging it.
    runs: Vec<Vec<(f64, f64)>>,
    /// `x` of each point whose `y` is non-finite, when such points are marked.
    marks: Vec<f64>,
}

struct PreparedLines {
    series: Vec<PreparedSeries>,
    non_finite: usize,
    not_positive: usize,
}

impl LineChart {
    fn prepare(&self) -> PreparedLines {
        let mut non_finite = 0;
        let mut not_positive = 0;
        let series = self
            .series
            .iter()
            .map(|s| {
                let mut runs = Vec::new();
                let mut run = Vec::new();
                let mut marks = Vec::new();
                for &(x, y) in &s.points {
                    let x_ok = x.is_finite() && (!self.log_x || x > 0.0);
                    let y_ok = y.is_finite() && (!self.log_y || y > 0.0);
                    if x_ok && y_ok {
                        run.push((x, y));
                        continue;
                    }
                    if !run.is_empty() {
                        runs.push(std::mem::take(&mut run));
                    }
                    if x_ok && !y.is_finite() && self.mark_non_finite {
                        marks.push(x);
                    } else if !x.is_finite() || !y.is_finite() {
                        non_finite += 1;
                    } else {
                        not_positive += 1;
                    }
                }
                if !run.is_empty() {
                    runs.push(run);
                }
                PreparedSeries { runs, marks }
            })
            .collect();
        PreparedLines {
            series,
            non_finite,
            not_positive,
        }
    }
}

impl Chart for LineChart {
    fn title(&self) -> &str {
        &self.title
    }

    fn pixel_size(&self) -> (u32, u32) {
        self.size()
    }

    fn validate(&self) -> Result<(), String> {
        check_fixed_range("x_range", self.x_range, self.log_x)?;
        check_fixed_range("y_range", self.y_range, self.log_y)
    }

    fn draw<DB: DrawingBackend>(&self, root: &DrawingArea<DB, Shift>) -> Result<(), DrawFailure> {
        root.fill(&WHITE)?;
        let body = draw_title(root, &self.title)?;
        let prepared = self.prepare();

        let mut notes = Vec::new();
        let mut dropped = Vec::new();
        if prepared.non_finite > 0 {
            dropped.push(count_phrase(
                prepared.non_finite,
                "point",
                "with a non-finite value",
            ));
        }
        if prepared.not_positive > 0 {
            dropped.push(count_phrase(prepared.not_positive, "point", "<= 0 on a log axis"));
        }
        if !dropped.is_empty() {
            notes.push(format!("Not drawn: {}.", dropped.join("; ")));
        }

        let xs = prepared.series.iter().flat_map(|s| {
            s.runs
                .iter()
                .flatten()
                .map(|p| p.0)
                .chain(s.marks.iter().copied())
        });
        let ys = prepared
            .series
            .iter()
            .flat_map(|s| s.runs.iter().flatten().map(|p| p.1));
        let x_range = self.x_range.or_else(|| fit_range(xs, self.log_x));
        let has_marks = prepared.series.iter().any(|s| !s.marks.is_empty());
        // A chart where every run diverged still needs a vertical axis to hang the
        // crosses on.
        let y_range = match (self.y_range, fit_range(ys, self.log_y)) {
            (Some(fixed), _) => Some(fixed),
            // Room under the lowest point for the crosses.
            (None, Some(fitted)) if has_marks => Some(widen_below(fitted, self.log_y)),
            (None, Some(fitted)) => Some(fitted),
            // A chart where every run diverged still needs an axis to hang the crosses on.
            (None, None) if has_marks => Some(if self.log_y { (0.1, 10.0) } else { (0.0, 1.0) }),
            (None, None) => None,
        };

        let mut legend: Vec<LegendEntry> = self
            .series
            .iter()
            .enumerate()
            .filter(|(_, s)| !s.name.is_empty())
            .map(|(i, s)| LegendEntry {
                name: s.name.clone(),
                color: palette(i),
                glyph: match s.style {
                    SeriesStyle::Line => Glyph::Line,
                    SeriesStyle::Points => Glyph::Point,
                    SeriesStyle::LineAndPoints => Glyph::LineAndPoint,
                },
            })
            .collect();
        if has_marks {
            legend.push(LegendEntry {
                name: "non-finite (diverged)".to_owned(),
                color: INK,
                glyph: Glyph::Cross,
            });
        }

        let body = draw_notes(&body, &notes)?;
        let plot = draw_legend(&body, &legend)?;
        let (Some((x_lo, x_hi)), Some((y_lo, y_hi))) = (x_range, y_range) else {
            return draw_empty(&plot, "No finite data to plot");
        };
        let x_axis = Axis::numeric(x_lo, x_hi, self.log_x, TICKS);
        let y_axis = Axis::numeric(y_lo, y_hi, self.log_y, TICKS);
        let mut chart = ChartBuilder::on(&plot)
            .margin(12)
            .x_label_area_size(52)
            .y_label_area_size(78)
            .build_cartesian_2d(x_axis.clone(), y_axis.clone())?;
        chart
            .configure_mesh()
            .x_labels(TICKS)
            .y_labels(TICKS)
            .x_desc(self.x_label.as_str())
            .y_desc(self.y_label.as_str())
            .label_style(font(14.0, false))
            .axis_desc_style(font(16.0, false))
            .draw()?;

        let area = chart.plotting_area().strip_coord_spec();
        let px = PixelMap::new(&area);
        for (i, series) in prepared.series.iter().enumerate() {
            let color = palette(i);
            let style = self.series[i].style;
            for run in &series.runs {
                let unit: Vec<(f64, f64)> = run
                    .iter()
                    .map(|&(x, y)| (x_axis.unit(x), y_axis.unit(y)))
                    .collect();
                let lines = matches!(style, SeriesStyle::Line | SeriesStyle::LineAndPoints);
                let dots = !lines || style == SeriesStyle::LineAndPoints;
                if lines && unit.len() >= 2 {
                    for polyline in clipped_polylines(&unit, &px) {
                        area.draw(&PathElement::new(polyline, color.stroke_width(2)))?;
                    }
                }
                // A lone point of a line series would otherwise vanish.
                if dots || unit.len() == 1 {
                    let radius = if dots { 3 } else { 2 };
                    for &u in unit.iter().filter(|u| in_unit_square(**u)) {
                        area.draw(&Circle::new(px.map(u), radius, color.filled()))?;
                    }
                }
            }
            for &x in &series.marks {
                let u = x_axis.unit(x);
                if (0.0..=1.0).contains(&u) {
                    let (cx, bottom) = px.map((u, 0.0));
                    area.draw(&Cross::new((cx, bottom - 8), 5, color.stroke_width(2)))?;
                }
            }
        }
        Ok(())
    }
}

/// Checks a caller's fixed axis range.
fn check_fixed_range(field: &str, range: Option<(f64, f64)>, log: bool) -> Result<(), String> {
    match range {
        Some((lo, hi)) if !(lo.is_finite() && hi.is_finite() && lo < hi) => {
            Err(format!("{field} ({lo}, {hi}) must be finite with low < high"))
        }
        Some((lo, hi)) if log && lo <= 0.0 => {
            Err(format!("{field} ({lo}, {hi}) must be positive on a log axis"))
        }
        _ => Ok(()),
    }
}

/// Splits a run of points (in unit coordinates) into pixel polylines clipped to the
/// plot, so a line leaving a fixed range stops at its edge instead of running over the
/// axes.
fn clipped_polylines(unit: &[(f64, f64)], px: &PixelMap) -> Vec<Vec<(i32, i32)>> {
    let mut out = Vec::new();
    let mut current: Vec<(i32, i32)> = Vec::new();
    let flush = |current: &mut Vec<(i32, i32)>, out: &mut Vec<Vec<(i32, i32)>>| {
        if current.len() >= 2 {
            out.push(std::mem::take(current));
        } else {
            current.clear();
        }
    };
    for pair in unit.windows(2) {
        let Some((a, b)) = clip_to_unit_square(pair[0], pair[1]) else {
            flush(&mut current, &mut out);
            continue;
        };
        let (pa, pb) = (px.map(a), px.map(b));
        if current.last() != Some(&pa) {
            flush(&mut current, &mut out);
            current.push(pa);
        }
        // Thousands of steps land on the same pixel; repeating it only bloats the SVG.
        if current.last() != Some(&pb) {
            current.push(pb);
        }
        if b != pair[1] {
            flush(&mut current, &mut out);
        }
    }
    flush(&mut current, &mut out);
    out
}

/// Liang-Barsky: the part of segment `p`-`q` inside `[0, 1]^2`, if any.
fn clip_to_unit_square(p: (f64, f64), q: (f64, f64)) -> Option<((f64, f64), (f64, f64))> {
    let (dx, dy) = (q.0 - p.0, q.1 - p.1);
    let (mut t0, mut t1) = (0.0f64, 1.0f64);
    for (denom, dist) in [(-dx, p.0), (dx, 1.0 - p.0), (-dy, p.1), (dy, 1.0 - p.1)] {
        if denom == 0.0 {
            if dist < 0.0 {
                return None;
            }
            continue;
        }
        let t = dist / denom;
        if denom < 0.0 {
            if t > t1 {
                return None;
            }
            t0 = t0.max(t);
        } else {
            if t < t0 {
                return None;
            }
            t1 = t1.min(t);
        }
    }
    if !(t0.is_finite() && t1.is_finite()) {
        return None;
    }
    let at = |t: f64| {
        if t == 0.0 {
            p
        } else if t == 1.0 {
            q
        } else {
            (p.0 + t * dx, p.1 + t * dy)
        }
    };
    Some((at(t0), at(t1)))
}

fn in_unit_square((x, y): (f64, f64)) -> bool {
    (0.0..=1.0).contains(&x) && (0.0..=1.0).contains(&y)
}

/// Maps unit coordinates to the pixels plotters uses for the same plotting area: its
/// x runs over `0..=w-1` and its y from `h-1` (bottom) to `0`.
struct PixelMap {
    w: f64,
    h: f64,
}

impl PixelMap {
    fn new<DB: DrawingBackend>(area: &DrawingArea<DB, Shift>) -> Self {
        let (w, h) = area.dim_in_pixel();
        Self {
            w: f64::from(w.saturating_sub(1)),
            h: f64::from(h.saturating_sub(1)),
        }
    }

    fn map(&self, (u, v): (f64, f64)) -> (i32, i32) {
        (
            (u * self.w).round().clamp(-1e6, 1e6) as i32,
            ((1.0 - v) * self.h).round().clamp(-1e6, 1e6) as i32,
        )
    }
}

// ---------------------------------------------------------------------------------------
// Histogram grid

impl Chart for HistogramGrid {
    fn title(&self) -> &str {
        &self.title
    }

    fn pixel_size(&self) -> (u32, u32) {
        self.size()
    }

    fn validate(&self) -> Result<(), String> {
        if !(1..=MAX_BINS).contains(&self.bins) {
            return Err(format!("bins is {}, must be between 1 and {MAX_BINS}", self.bins));
        }
        if let BinRange::Fixed(lo, hi) = self.range {
            check_fixed_range("range", Some((lo, hi)), false)?;
        }
        Ok(())
    }

    fn draw<DB: DrawingBackend>(&self, root: &DrawingArea<DB, Shift>) -> Result<(), DrawFailure> {
        root.fill(&WHITE)?;
        let (top, body) = root.split_vertically(GRID_TITLE_HEIGHT);
        draw_centered(&top, &self.title, font(22.0, true).color(&INK))?;
        let (rows, cols) = self.shape();
        let cells = body.split_evenly((rows, cols));
        if self.panels.is_empty() {
            return draw_empty(&cells[0], "No panels to plot");
        }
        let ranges = self.bin_ranges(cols);
        for (i, (panel, cell)) in self.panels.iter().zip(&cells).enumerate() {
            let style = PanelStyle {
                color: palette(i / cols),
                bins: self.bins,
                x_label: &self.x_label,
                first_column: i % cols == 0,
            };
            draw_histogram_panel(cell, panel, ranges[i], &style)?;
        }
        Ok(())
    }
}

impl HistogramGrid {
    /// The bin range of each panel, or `None` for a panel with nothing to bin.
    fn bin_ranges(&self, cols: usize) -> Vec<Option<(f64, f64)>> {
        let finite =
            |p: &HistogramPanel| -> Vec<f64> { p.values.iter().copied().filter(|v| v.is_finite()).collect() };
        match self.range {
            BinRange::Fixed(lo, hi) => vec![Some((lo, hi)); self.panels.len()],
            BinRange::PerPanel => self
                .panels
                .iter()
                .map(|p| bin_range(finite(p).into_iter()))
                .collect(),
            BinRange::Shared => {
                let range = bin_range(self.panels.iter().flat_map(finite));
                vec![range; self.panels.len()]
            }
            BinRange::PerColumn => {
                let per_column: Vec<_> = (0..cols)
                    .map(|c| bin_range(self.panels.iter().skip(c).step_by(cols).flat_map(finite)))
                    .collect();
                (0..self.panels.len()).map(|i| per_column[i % cols]).collect()
            }
        }
    }
}

/// The span of finite values, widened when they are all equal so the one bar has width.
fn bin_range(values: impl Iterator<Item = f64>) -> Option<(f64, f64)> {
    let (lo, hi) = min_max(values)?;
    if hi > lo && (hi - lo).is_finite() {
        Some((lo, hi))
    } else {
        let pad = (lo.abs() * 0.05).max(0.5);
        Some((lo - pad, hi + pad))
    }
}

struct PanelStyle<'a> {
    color: RGBColor,
    bins: usize,
    x_label: &'a str,
    first_column: bool,
}

/// Counts of `values` in `bins` equal bins over `lo..=hi`, plus how many fell outside.
fn bin_counts(values: &[f64], lo: f64, hi: f64, bins: usize) -> (Vec<u64>, usize) {
    let mut counts = vec![0u64; bins];
    let mut outside = 0;
    // Halves keep the width finite even for a range spanning most of f64.
    let half_width = hi / 2.0 - lo / 2.0;
    for &v in values.iter().filter(|v| v.is_finite()) {
        if v < lo || v > hi {
            outside += 1;
            continue;
        }
        let t = (v / 2.0 - lo / 2.0) / half_width;
        // The top edge belongs to the last bin; `as` saturates, so no value can index out.
        let bin = ((t * bins as f64) as usize).min(bins - 1);
        counts[bin] += 1;
    }
    (counts, outside)
}

fn draw_histogram_panel<DB: DrawingBackend>(
    cell: &DrawingArea<DB, Shift>,
    panel: &HistogramPanel,
    range: Option<(f64, f64)>,
    style: &PanelStyle,
) -> Result<(), DrawFailure> {
    let cell = cell.margin(4, 4, 6, 6);
    let (caption, rest) = cell.split_vertically(22);
    draw_centered(&caption, &shorten(&panel.title, 44), font(15.0, true).color(&INK))?;
    let (stats_area, body) = rest.split_vertically(18);

    let finite: Vec<f64> = panel.values.iter().copied().filter(|v| v.is_finite()).collect();
    let non_finite = panel.values.len() - finite.len();
    let (counts, outside) = match range {
        Some((lo, hi)) => bin_counts(&finite, lo, hi, style.bins),
        None => (vec![0; style.bins], 0),
    };
    let mut stats = format!("n={}", finite.len());
    if let Some((mean, std)) = mean_std(&finite) {
        stats.push_str(&format!("  mean={}  std={}", fmt_num(mean), fmt_num(std)));
    }
    if non_finite > 0 {
        stats.push_str(&format!(", {non_finite} non-finite"));
    }
    if outside > 0 {
        stats.push_str(&format!(", {outside} outside range"));
    }
    draw_centered(&stats_area, &stats, font(12.0, false).color(&MUTED))?;

    let Some((lo, hi)) = range.filter(|_| counts.iter().any(|&c| c > 0)) else {
        return draw_empty(&body, "No finite values");
    };
    let top = counts.iter().copied().max().unwrap_or(0) as f64 * 1.08;
    let x_axis = Axis::numeric(lo, hi, false, PANEL_TICKS);
    let y_axis = Axis::numeric(0.0, top.max(1.0), false, PANEL_TICKS);
    let mut chart = ChartBuilder::on(&body)
        .margin(4)
        .x_label_area_size(40)
        .y_label_area_size(if style.first_column { 58 } else { 46 })
        .build_cartesian_2d(x_axis, y_axis)?;
    chart
        .configure_mesh()
        .disable_x_mesh()
        .x_labels(PANEL_TICKS)
        .y_labels(PANEL_TICKS)
        .x_desc(style.x_label)
        .y_desc(if style.first_column { "count" } else { "" })
        .label_style(font(12.0, false))
        .axis_desc_style(font(13.0, false))
        .draw()?;
    let width = (hi / 2.0 - lo / 2.0) * 2.0 / style.bins as f64;
    let fill = style.color.mix(0.85).filled();
    chart.draw_series(counts.iter().enumerate().filter(|(_, c)| **c > 0).map(|(b, &c)| {
        let x0 = lo + b as f64 * width;
        Rectangle::new([(x0, 0.0), (x0 + width, c as f64)], fill)
    }))?;
    Ok(())
}

fn mean_std(values: &[f64]) -> Option<(f64, f64)> {
    if values.is_empty() {
        return None;
    }
    let n = values.len() as f64;
    let mean = values.iter().sum::<f64>() / n;
    // Population deviation: the panel describes this sample, it estimates nothing.
    let var = values.iter().map(|v| (v - mean) * (v - mean)).sum::<f64>() / n;
    Some((mean, var.sqrt()))
}

// ---------------------------------------------------------------------------------------
// Bar chart

impl Chart for BarChart {
    fn title(&self) -> &str {
        &self.title
    }

    fn pixel_size(&self) -> (u32, u32) {
        self.size()
    }

    fn validate(&self) -> Result<(), String> {
        for group in &self.groups {
            if group.values.len() != self.categories.len() {
                return Err(format!(
                    "group {:?} has {} values for {} categories",
                    group.name,
                    group.values.len(),
                    self.categories.len()
                ));
            }
        }
        Ok(())
    }

    fn draw<DB: DrawingBackend>(&self, root: &DrawingArea<DB, Shift>) -> Result<(), DrawFailure> {
        root.fill(&WHITE)?;
        let body = draw_title(root, &self.title)?;
        let values = || self.groups.iter().flat_map(|g| g.values.iter().copied());
        let drawable = |v: f64| v.is_finite() && (!self.log_y || v > 0.0);
        let non_finite = values().filter(|v| !v.is_finite()).count();
        let not_positive = values().filter(|v| v.is_finite() && !drawable(*v)).count();

        let mut notes = Vec::new();
        if non_finite > 0 {
            notes.push(format!(
                "x marks {} (no bar drawn).",
                count_phrase(non_finite, "value", "that is not finite")
            ));
        }
        if not_positive > 0 {
            notes.push(format!(
                "Not drawn: {}.",
                count_phrase(not_positive, "value", "<= 0 on a log axis")
            ));
        }
        let mut legend: Vec<LegendEntry> = self
            .groups
            .iter()
            .enumerate()
            .map(|(i, g)| LegendEntry {
                name: g.name.clone(),
                color: palette(i),
                glyph: Glyph::Bar,
            })
            .collect();
        if non_finite > 0 {
            legend.push(LegendEntry {
                name: "non-finite".to_owned(),
                color: INK,
                glyph: Glyph::Cross,
            });
        }
        let body = draw_notes(&body, &notes)?;
        let plot = draw_legend(&body, &legend)?;
        if self.categories.is_empty() || self.groups.is_empty() {
            return draw_empty(&plot, "No bars to plot");
        }

        let (y_lo, y_hi) = bar_range(values().filter(|v| drawable(*v)), self.log_y);
        let x_axis = Axis::categories(self.categories.clone());
        let y_axis = Axis::numeric(y_lo, y_hi, self.log_y, TICKS);
        let label_size = if self.categories.len() > 10 { 12.0 } else { 14.0 };
        let mut chart = ChartBuilder::on(&plot)
            .margin(12)
            .x_label_area_size(52)
            .y_label_area_size(78)
            .build_cartesian_2d(x_axis, y_axis)?;
        chart
            .configure_mesh()
            .disable_x_mesh()
            .x_labels(self.categories.len())
            .y_labels(TICKS)
            .x_desc(self.x_label.as_str())
            .y_desc(self.y_label.as_str())
            .x_label_style(font(label_size, false))
            .y_label_style(font(14.0, false))
            .axis_desc_style(font(16.0, false))
            .draw()?;

        let base = if self.log_y { y_lo } else { 0.0 };
        let slot = 0.8 / self.groups.len() as f64;
        for (g, group) in self.groups.iter().enumerate() {
            let color = palette(g);
            for (c, &v) in group.values.iter().enumerate() {
                let x0 = c as f64 + 0.1 + g as f64 * slot;
                let centre = x0 + slot / 2.0;
                if drawable(v) {
                    chart.draw_series(std::iter::once(Rectangle::new(
                        [(x0, base), (x0 + slot, v)],
                        color.filled(),
                    )))?;
                    if self.show_values {
                        let label = font(12.0, false)
                            .color(&INK)
                            .pos(Pos::new(HPos::Center, VPos::Bottom));
                        chart.draw_series(std::iter::once(
                            EmptyElement::at((centre, v))
                                + Text::new(fmt_num(v), (0, if v < 0.0 { 16 } else { -3 }), label),
                        ))?;
                    }
                } else if !v.is_finite() {
                    chart.draw_series(std::iter::once(
                        EmptyElement::at((centre, base)) + Cross::new((0, -8), 5, color.stroke_width(2)),
                    ))?;
                }
            }
        }
        Ok(())
    }
}

/// The value range of a bar chart: from zero on a linear axis, with headroom for value
/// labels; a log axis has no zero, so it starts below the smallest bar.
fn bar_range(values: impl Iterator<Item = f64>, log: bool) -> (f64, f64) {
    let Some((lo, hi)) = min_max(values) else {
        return if log { (0.1, 10.0) } else { (0.0, 1.0) };
    };
    if log {
        let (l0, l1) = (lo.log10(), hi.log10());
        let span = (l1 - l0).max(1.0);
        (
            10f64.powf(l0 - 0.1 * span).max(f64::MIN_POSITIVE),
            10f64.powf(l1 + 0.1 * span).min(f64::MAX),
        )
    } else {
        let (lo, hi) = (lo.min(0.0), hi.max(0.0));
        let span = if hi > lo { hi / 2.0 - lo / 2.0 } else { 0.5 };
        let pad = |side: f64| if side == 0.0 { 0.0 } else { 0.2 * span };
        (lo - pad(lo), hi + pad(hi).max(if hi == lo { 1.0 } else { 0.0 }))
    }
}

// ---------------------------------------------------------------------------------------
// Shared pieces: axes, ticks, legend, titles, notes

/// One axis. plotters' own linear and log coordinates are different types, which would
/// make every chart generic over four combinations; one type that knows its scale keeps
/// the drawing code single, and lets the ticks and labels be chosen here.
#[derive(Clone, Debug)]
struct Axis {
    lo: f64,
    hi: f64,
    kind: AxisKind,
    /// The labelled tick count the mesh is configured with; label precision follows it.
    ticks: usize,
}

#[derive(Clone, Debug)]
enum AxisKind {
    Linear,
    Log,
    /// Named slots `0..n`, labelled at their centres.
    Categories(Vec<String>),
}

impl Axis {
    fn numeric(lo: f64, hi: f64, log: bool, ticks: usize) -> Self {
        Self {
            lo,
            hi,
            kind: if log { AxisKind::Log } else { AxisKind::Linear },
            ticks,
        }
    }

    fn categories(names: Vec<String>) -> Self {
        Self {
            lo: 0.0,
            hi: names.len() as f64,
            ticks: names.len(),
            kind: AxisKind::Categories(names),
        }
    }

    /// Position of `v` along the axis: 0 at `lo`, 1 at `hi`.
    fn unit(&self, v: f64) -> f64 {
        match self.kind {
            AxisKind::Log => (v.ln() - self.lo.ln()) / (self.hi.ln() - self.lo.ln()),
            // Halves keep `hi - lo` finite even for a range spanning most of f64.
            _ => (v / 2.0 - self.lo / 2.0) / (self.hi / 2.0 - self.lo / 2.0),
        }
    }
}

impl Ranged for Axis {
    type FormatOption = NoDefaultFormatting;
    type ValueType = f64;

    fn map(&self, value: &f64, limit: (i32, i32)) -> i32 {
        let px = f64::from(limit.0) + self.unit(*value) * f64::from(limit.1 - limit.0);
        // `as` maps NaN to 0 and saturates; the clamp keeps later pixel arithmetic in
        // plotters from overflowing.
        px.round().clamp(-1e6, 1e6) as i32
    }

    fn key_points<H: KeyPointHint>(&self, hint: H) -> Vec<f64> {
        let bold = matches!(hint.weight(), KeyPointWeight::Bold);
        let max = hint.max_num_points();
        match &self.kind {
            AxisKind::Linear if bold => linear_ticks(self.lo, self.hi, max),
            AxisKind::Linear => {
                let step = nice_step(self.hi - self.lo, hint.bold_points()) / 5.0;
                let light = ticks_with_step(self.lo, self.hi, step);
                if light.len() <= max { light } else { Vec::new() }
            }
            AxisKind::Log => log_ticks(self.lo, self.hi, max, bold),
            AxisKind::Categories(names) if bold && max > 0 => {
                let stride = names.len().div_ceil(max).max(1);
                (0..names.len()).step_by(stride).map(|i| i as f64 + 0.5).collect()
            }
            AxisKind::Categories(_) => Vec::new(),
        }
    }

    fn range(&self) -> Range<f64> {
        self.lo..self.hi
    }
}

impl ValueFormatter<f64> for Axis {
    fn format_ext(&self, value: &f64) -> String {
        match &self.kind {
            AxisKind::Categories(names) => {
                let i = value.floor().max(0.0) as usize;
                names.get(i).map(|n| shorten(n, 24)).unwrap_or_default()
            }
            AxisKind::Log => fmt_num(*value),
            AxisKind::Linear => fmt_tick(*value, nice_step(self.hi - self.lo, self.ticks)),
        }
    }
}

/// The 1-2-5 step that puts at most `max` ticks across `span`; NaN if there is none.
fn nice_step(span: f64, max: usize) -> f64 {
    let raw = span / max.max(1) as f64;
    if !(raw.is_finite() && raw > 0.0) {
        return f64::NAN;
    }
    let magnitude = 10f64.powf(raw.log10().floor());
    [1.0, 2.0, 5.0, 10.0]
        .into_iter()
        .map(|m| m * magnitude)
        .find(|&step| step >= raw * (1.0 - 1e-9))
        .unwrap_or(10.0 * magnitude)
}

fn linear_ticks(lo: f64, hi: f64, max: usize) -> Vec<f64> {
    if max == 0 {
        return Vec::new();
    }
    ticks_with_step(lo, hi, nice_step(hi - lo, max))
}

/// Multiples of `step` within `lo..=hi`; none if the step is unusable.
fn ticks_with_step(lo: f64, hi: f64, step: f64) -> Vec<f64> {
    if !(step.is_finite() && step > 0.0) {
        return Vec::new();
    }
    let (first, last) = ((lo / step - 1e-9).ceil(), (hi / step + 1e-9).floor());
    if !(first.is_finite() && last.is_finite()) || last - first > 1000.0 {
        return Vec::new();
    }
    // Adding 0.0 turns -0.0 into 0.0, so no tick reads "-0".
    (first as i64..=last as i64)
        .map(|k| k as f64 * step + 0.0)
        .collect()
}

/// Ticks for a log axis. Labelled ticks are powers of ten (thinned to every k-th when
/// there are many decades), then 1-2-5 multiples for ranges of about a decade, then
/// plain linear ticks for narrower ranges; light ticks are the 1..9 multiples.
fn log_ticks(lo: f64, hi: f64, max: usize, bold: bool) -> Vec<f64> {
    if !(lo > 0.0 && hi > lo && hi.is_finite()) || max == 0 {
        return Vec::new();
    }
    let (e0, e1) = (lo.log10().floor() as i32, hi.log10().ceil() as i32);
    let candidates = |mults: &[f64], stride: i32| -> Vec<f64> {
        (e0..=e1)
            .filter(|e| e.rem_euclid(stride) == 0)
            .flat_map(|e| mults.iter().map(move |m| m * 10f64.powi(e)))
            .filter(|v| *v >= lo * (1.0 - 1e-9) && *v <= hi * (1.0 + 1e-9))
            .collect()
    };
    if !bold {
        let all = candidates(&[1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0, 9.0], 1);
        return if all.len() <= max {
            all
        } else {
            candidates(&[1.0], 1)
        };
    }
    let decades = candidates(&[1.0], 1);
    if decades.len() >= 3 {
        let stride = decades.len().div_ceil(max).max(1);
        let stride = i32::try_from(stride).unwrap_or(i32::MAX);
        return candidates(&[1.0], stride);
    }
    let one_two_five = candidates(&[1.0, 2.0, 5.0], 1);
    if one_two_five.len() >= 3 && one_two_five.len() <= max {
        return one_two_five;
    }
    if decades.len() == 2 {
        return decades;
    }
    linear_ticks(lo, hi, max.min(6))
}

/// A tick label on a linear axis: as many decimals as the tick step needs.
fn fmt_tick(v: f64, step: f64) -> String {
    let v = v + 0.0;
    if !step.is_finite() || v.abs() >= 1e6 || step < 1e-4 {
        return fmt_num(v);
    }
    let decimals = (-step.log10().floor()).clamp(0.0, 10.0) as usize;
    format!("{v:.decimals$}")
}

/// A number for a person: four significant digits, in scientific notation when very
/// large or small, and `NaN`/`inf` spelled out.
pub fn fmt_num(v: f64) -> String {
    if !v.is_finite() {
        return v.to_string();
    }
    let v = v + 0.0;
    if v == 0.0 {
        return "0".to_owned();
    }
    let a = v.abs();
    if (1e-3..1e5).contains(&a) {
        let decimals = (3 - a.log10().floor() as i32).max(0) as usize;
        trim_zeros(&format!("{v:.decimals$}")).to_owned()
    } else {
        let s = format!("{v:.3e}");
        match s.split_once('e') {
            Some((mantissa, exp)) => format!("{}e{exp}", trim_zeros(mantissa)),
            None => s,
        }
    }
}

fn trim_zeros(s: &str) -> &str {
    if s.contains('.') {
        s.trim_end_matches('0').trim_end_matches('.')
    } else {
        s
    }
}

fn min_max(values: impl Iterator<Item = f64>) -> Option<(f64, f64)> {
    values.fold(None, |acc, v| match acc {
        None => Some((v, v)),
        Some((lo, hi)) => Some((lo.min(v), hi.max(v))),
    })
}

/// An axis range around drawable values (finite, and positive on a log axis) with a
/// little padding, or `None` if there are none.
fn fit_range(values: impl Iterator<Item = f64>, log: bool) -> Option<(f64, f64)> {
    let (lo, hi) = min_max(values)?;
    if log {
        let (mut l0, mut l1) = (lo.log10(), hi.log10());
        if l1 - l0 < 1e-9 {
            l0 -= 0.5;
            l1 += 0.5;
        }
        let pad = (l1 - l0) * 0.04;
        Some((
            10f64.powf(l0 - pad).max(f64::MIN_POSITIVE),
            10f64.powf(l1 + pad).min(f64::MAX),
        ))
    } else {
        let half_span = hi / 2.0 - lo / 2.0;
        if half_span == 0.0 {
            let pad = if lo == 0.0 { 1.0 } else { lo.abs() * 0.1 };
            return Some((lo - pad, hi + pad));
        }
        let pad = half_span * 0.08;
        Some(((lo - pad).max(f64::MIN), (hi + pad).min(f64::MAX)))
    }
}

/// `range` with its bottom lowered by a tenth of its span (in log space on a log axis).
fn widen_below((lo, hi): (f64, f64), log: bool) -> (f64, f64) {
    if log {
        ((lo / (hi / lo).powf(0.1)).max(f64::MIN_POSITIVE), hi)
    } else {
        ((lo - 0.2 * (hi / 2.0 - lo / 2.0)).max(f64::MIN), hi)
    }
}

fn palette(i: usize) -> RGBColor {
    PALETTE[i % PALETTE.len()]
}

fn font(size: f64, bold: bool) -> TextStyle<'static> {
    let style = if bold { FontStyle::Bold } else { FontStyle::Normal };
    TextStyle::from(FontDesc::new(FontFamily::SansSerif, size, style))
}

/// `s` cut to `max` characters, with an ellipsis when cut.
fn shorten(s: &str, max: usize) -> String {
    if s.chars().count() <= max {
        s.to_owned()
    } else {
        let mut cut: String = s.chars().take(max.saturating_sub(1)).collect();
        cut.push('…');
        cut
    }
}

fn count_phrase(n: usize, noun: &str, rest: &str) -> String {
    let plural = if n == 1 { "" } else { "s" };
    format!("{n} {noun}{plural} {rest}")
}

fn draw_centered<DB: DrawingBackend>(
    area: &DrawingArea<DB, Shift>,
    text: &str,
    style: TextStyle,
) -> Result<(), DrawFailure> {
    let (w, h) = area.dim_in_pixel();
    let style = style.pos(Pos::new(HPos::Center, VPos::Center));
    area.draw_text(text, &style, (w as i32 / 2, h as i32 / 2))?;
    Ok(())
}

/// Draws the title band and returns the area below it.
fn draw_title<DB: DrawingBackend>(
    root: &DrawingArea<DB, Shift>,
    title: &str,
) -> Result<DrawingArea<DB, Shift>, DrawFailure> {
    let (top, rest) = root.split_vertically(TITLE_HEIGHT);
    draw_centered(&top, &shorten(title, 80), font(22.0, true).color(&INK))?;
    Ok(rest)
}

/// Draws footnotes at the bottom of `area` and returns the area above them.
fn draw_notes<DB: DrawingBackend>(
    area: &DrawingArea<DB, Shift>,
    notes: &[String],
) -> Result<DrawingArea<DB, Shift>, DrawFailure> {
    if notes.is_empty() {
        return Ok(area.clone());
    }
    let (_, h) = area.dim_in_pixel();
    let band = (NOTE_HEIGHT * notes.len() as u32).min(h / 3);
    let (rest, bottom) = area.split_vertically(h - band);
    let style = font(13.0, false)
        .color(&MUTED)
        .pos(Pos::new(HPos::Left, VPos::Center));
    for (i, note) in notes.iter().enumerate() {
        let y = (NOTE_HEIGHT * i as u32 + NOTE_HEIGHT / 2) as i32;
        bottom.draw_text(note, &style, (16, y))?;
    }
    Ok(rest)
}

/// A framed, empty plot area with `message` in the middle.
fn draw_empty<DB: DrawingBackend>(area: &DrawingArea<DB, Shift>, message: &str) -> Result<(), DrawFailure> {
    let (w, h) = area.dim_in_pixel();
    let (w, h) = (w as i32, h as i32);
    area.draw(&Rectangle::new(
        [(12, 12), ((w - 12).max(12), (h - 12).max(12))],
        FRAME.stroke_width(1),
    ))?;
    draw_centered(area, message, font(18.0, false).color(&MUTED))
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Glyph {
    Line,
    Point,
    LineAndPoint,
    Bar,
    Cross,
}

struct LegendEntry {
    name: String,
    color: RGBColor,
    glyph: Glyph,
}

/// Draws the legend in a column on the right of `area`, outside the plot so it can never
/// hide data, and returns the area left for the plot.
fn draw_legend<DB: DrawingBackend>(
    area: &DrawingArea<DB, Shift>,
    entries: &[LegendEntry],
) -> Result<DrawingArea<DB, Shift>, DrawFailure> {
    if entries.is_empty() {
        return Ok(area.clone());
    }
    const ROW: i32 = 24;
    const SAMPLE: i32 = 28;
    let style = font(14.0, false)
        .color(&INK)
        .pos(Pos::new(HPos::Left, VPos::Center));
    let names: Vec<String> = entries
        .iter()
        .map(|e| shorten(&e.name, LEGEND_MAX_CHARS))
        .collect();
    let mut text_width = 0;
    for name in &names {
        text_width = text_width.max(area.estimate_text_size(name, &style)?.0);
    }
    let (w, h) = area.dim_in_pixel();
    let legend_width = (text_width + SAMPLE as u32 + 36).min(w / 3);
    let (plot, legend) = area.split_horizontally(w - legend_width);

    let rows = usize::try_from((h as i32 - 24) / ROW).unwrap_or(0);
    let shown = if names.len() > rows {
        rows.saturating_sub(1)
    } else {
        names.len()
    };
    for (i, (entry, name)) in entries.iter().zip(&names).take(shown).enumerate() {
        let y = 24 + ROW * i as i32;
        let (x0, x1) = (6, 6 + SAMPLE);
        let mid = (x0 + x1) / 2;
        let color = entry.color;
        if matches!(entry.glyph, Glyph::Line | Glyph::LineAndPoint) {
            legend.draw(&PathElement::new(vec![(x0, y), (x1, y)], color.stroke_width(2)))?;
        }
        match entry.glyph {
            Glyph::Point | Glyph::LineAndPoint => {
                legend.draw(&Circle::new((mid, y), 3, color.filled()))?;
            }
            Glyph::Bar => {
                legend.draw(&Rectangle::new(
                    [(x0 + 4, y - 6), (x1 - 4, y + 6)],
                    color.filled(),
                ))?;
            }
            Glyph::Cross => {
                legend.draw(&Cross::new((mid, y), 5, color.stroke_width(2)))?;
            }
            Glyph::Line => {}
        }
        legend.draw_text(name, &style, (x1 + 8, y))?;
    }
    if shown < names.len() {
        let y = 24 + ROW * shown as i32;
        let more = format!("… and {} more", names.len() - shown);
        legend.draw_text(&more, &style.color(&MUTED), (6, y))?;
    }
    Ok(plot)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Decodes a PNG, returning its size and RGB bytes.
    fn decode_png(path: &Path) -> (u32, u32, Vec<u8>) {
        let decoder = png::Decoder::new(io::BufReader::new(fs::File::open(path).unwrap()));
        let mut reader = decoder.read_info().unwrap();
        let mut buf = vec![0; reader.output_buffer_size().unwrap()];
        let info = reader.next_frame(&mut buf).unwrap();
        assert_eq!(info.color_type, png::ColorType::Rgb);
        buf.truncate(info.buffer_size());
        (info.width, info.height, buf)
    }

    /// Dark pixels in rows `rows` of an RGB image: text and lines, not background.
    fn dark_pixels(rgb: &[u8], width: u32, rows: Range<u32>) -> usize {
        let row_bytes = width as usize * 3;
        rgb[rows.start as usize * row_bytes..rows.end as usize * row_bytes]
            .chunks(3)
            .filter(|p| p.iter().all(|&c| c < 100))
            .count()
    }

    fn accuracy_chart() -> LineChart {
        let curve = |rate: f64| -> Vec<(f64, f64)> {
            (0..=200)
                .map(|s| (s as f64 * 50.0, 1.0 - (-(s as f64) * rate).exp() * 0.9))
                .collect()
        };
        LineChart {
            title: "Test accuracy vs step".into(),
            x_label: "step".into(),
            y_label: "accuracy".into(),
            series: vec![
                Series::new("with BatchNorm", curve(0.05), SeriesStyle::Line),
                Series::new("without BatchNorm", curve(0.01), SeriesStyle::Line),
            ],
            ..Default::default()
        }
    }

    #[test]
    fn line_chart_renders_png_and_svg_with_title_and_legend() {
        let dir = tempfile::tempdir().unwrap();
        let files = accuracy_chart().render(dir.path(), "accuracy").unwrap();
        assert_eq!(files.svg, dir.path().join("accuracy.svg"));
        assert_eq!(files.png, dir.path().join("accuracy.png"));

        let (w, h, rgb) = decode_png(&files.png);
        assert_eq!((w, h), CHART_SIZE);
        // The title band holds the title's glyphs: proof the embedded font rasterized.
        assert!(
            dark_pixels(&rgb, w, 0..TITLE_HEIGHT) > 200,
            "no title text in PNG"
        );

        let svg = fs::read_to_string(&files.svg).unwrap();
        for text in [
            "Test accuracy vs step",
            "with BatchNorm",
            "without BatchNorm",
            "step",
            "accuracy",
        ] {
            assert!(svg.contains(text), "SVG lacks {text:?}");
        }
        assert!(svg.contains("font-family=\"sans-serif\""));
        // No temporary files left behind.
        let names: Vec<_> = fs::read_dir(dir.path()).unwrap().collect();
        assert_eq!(names.len(), 2);
    }

    #[test]
    fn histogram_grid_has_one_panel_per_cell() {
        let dir = tempfile::tempdir().unwrap();
        let normal = |scale: f64| -> Vec<f64> {
            // A deterministic bell shape: sums of a cheap sequence, scaled.
            (0..2000)
                .map(|i| {
                    let u = |k: u64| ((i as u64 * 2654435761 + k * 40503) % 1000) as f64 / 1000.0;
                    (u(1) + u(2) + u(3) + u(4) - 2.0) * scale
                })
                .collect()
        };
        let grid = HistogramGrid {
            title: "Activations per layer".into(),
            x_label: "activation".into(),
            columns: 3,
            range: BinRange::PerColumn,
            panels: vec![
                HistogramPanel {
                    title: "plain, layer 1".into(),
                    values: normal(1.0),
                },
                HistogramPanel {
                    title: "plain, layer 5".into(),
                    values: normal(4.0),
                },
                HistogramPanel {
                    title: "plain, layer 10".into(),
                    values: normal(30.0),
                },
                HistogramPanel {
                    title: "BN, layer 1".into(),
                    values: normal(1.0),
                },
                HistogramPanel {
                    title: "BN, layer 5".into(),
                    values: normal(1.0),
                },
                HistogramPanel {
                    title: "BN, layer 10".into(),
                    values: vec![f64::NAN, f64::INFINITY, 1.0, 1.0],
                },
            ],
            ..Default::default()
        };
        assert_eq!(
            grid.size(),
            (3 * PANEL_SIZE.0, 2 * PANEL_SIZE.1 + GRID_TITLE_HEIGHT)
        );
        let files = grid.render(dir.path(), "hist").unwrap();
        let (w, h, _) = decode_png(&files.png);
        assert_eq!((w, h), grid.size());
        let svg = fs::read_to_string(&files.svg).unwrap();
        for text in [
            "Activations per layer",
            "plain, layer 10",
            "BN, layer 5",
            "2 non-finite",
        ] {
            assert!(svg.contains(text), "SVG lacks {text:?}");
        }
    }

    #[test]
    fn bar_chart_log_scale_with_zero_and_nan() {
        let dir = tempfile::tempdir().unwrap();
        let chart = BarChart {
            title: "Final loss".into(),
            x_label: "initialization".into(),
            y_label: "loss".into(),
            log_y: true,
            show_values: true,
            categories: vec!["small".into(), "default".into(), "large".into()],
            groups: vec![
                BarGroup {
                    name: "plain".into(),
                    values: vec![0.5, 0.02, f64::NAN],
                },
                BarGroup {
                    name: "BN".into(),
                    values: vec![0.03, 0.0, 0.04],
                },
            ],
        };
        let files = chart.render(dir.path(), "bars").unwrap();
        let (w, h, _) = decode_png(&files.png);
        assert_eq!((w, h), CHART_SIZE);
        let svg = fs::read_to_string(&files.svg).unwrap();
        for text in [
            "Final loss",
            "plain",
            "BN",
            "default",
            "non-finite",
            "1 value &lt;= 0",
        ] {
            assert!(svg.contains(text), "SVG lacks {text:?}");
        }
    }

    #[test]
    fn non_finite_and_log_zero_values_are_skipped_and_counted() {
        let dir = tempfile::tempdir().unwrap();
        let chart = LineChart {
            title: "Final accuracy vs learning rate".into(),
            x_label: "learning rate".into(),
            y_label: "accuracy".into(),
            log_x: true,
            log_y: true,
            mark_non_finite: true,
            series: vec![
                Series::new(
                    "plain",
                    vec![(1e-3, 0.9), (1e-2, 0.95), (1e-1, f64::NAN), (1.0, f64::INFINITY)],
                    SeriesStyle::LineAndPoints,
                ),
                Series::new(
                    "BN",
                    vec![
                        (0.0, 0.5),
                        (1e-3, 0.0),
                        (1e-2, 0.97),
                        (f64::NAN, 0.9),
                        (1.0, 0.96),
                    ],
                    SeriesStyle::Points,
                ),
                Series::new("all diverged", vec![(1e-2, f64::NAN)], SeriesStyle::Line),
                Series::new("empty", vec![], SeriesStyle::Line),
            ],
            ..Default::default()
        };
        let files = chart.render(dir.path(), "lr").unwrap();
        let svg = fs::read_to_string(&files.svg).unwrap();
        assert!(svg.contains("non-finite (diverged)"), "no diverged legend entry");
        assert!(svg.contains("1 point with a non-finite value"), "{svg}");
        assert!(svg.contains("2 points &lt;= 0 on a log axis"), "{svg}");
    }

    #[test]
    fn chart_without_data_renders_a_note() {
        let dir = tempfile::tempdir().unwrap();
        let chart = LineChart {
            title: "Nothing".into(),
            series: vec![Series::new("nan", vec![(f64::NAN, f64::NAN)], SeriesStyle::Line)],
            ..Default::default()
        };
        let files = chart.render(dir.path(), "empty").unwrap();
        let svg = fs::read_to_string(&files.svg).unwrap();
        assert!(svg.contains("No finite data to plot"));
        let grid = HistogramGrid {
            title: "No panels".into(),
            ..Default::default()
        };
        let files = grid.render(dir.path(), "empty-grid").unwrap();
        assert_eq!(decode_png(&files.png).0, PANEL_SIZE.0);
        let bars = BarChart::default().render(dir.path(), "empty-bars").unwrap();
        assert!(fs::read_to_string(bars.svg).unwrap().contains("No bars to plot"));
    }

    #[test]
    fn fixed_range_clips_lines_that_leave_it() {
        let dir = tempfile::tempdir().unwrap();
        let chart = LineChart {
            title: "Loss".into(),
            y_range: Some((0.0, 3.0)),
            series: vec![Series::new(
                "diverging",
                vec![(0.0, 2.0), (1.0, 1.0), (2.0, 1e30), (3.0, f64::MAX), (4.0, 1.0)],
                SeriesStyle::LineAndPoints,
            )],
            ..Default::default()
        };
        chart.render(dir.path(), "clipped").unwrap();
    }

    #[test]
    fn malformed_charts_are_errors() {
        let dir = tempfile::tempdir().unwrap();
        for stem in ["", "../escape", "a/b", ".hidden", "sp ace"] {
            let err = accuracy_chart().render(dir.path(), stem).unwrap_err();
            assert!(matches!(err, PlotError::InvalidStem { .. }), "{stem:?}: {err}");
        }
        let grid = HistogramGrid {
            bins: 0,
            ..Default::default()
        };
        assert!(matches!(
            grid.render(dir.path(), "g"),
            Err(PlotError::InvalidChart { .. })
        ));
        let bars = BarChart {
            categories: vec!["a".into(), "b".into()],
            groups: vec![BarGroup {
                name: "g".into(),
                values: vec![1.0],
            }],
            ..Default::default()
        };
        let err = bars.render(dir.path(), "b").unwrap_err();
        assert!(err.to_string().contains("1 values for 2 categories"), "{err}");
        let log_from_zero = LineChart {
            log_y: true,
            y_range: Some((0.0, 1.0)),
            ..accuracy_chart()
        };
        assert!(matches!(
            log_from_zero.render(dir.path(), "l"),
            Err(PlotError::InvalidChart { .. })
        ));
        let huge = HistogramGrid {
            columns: 1,
            panels: vec![HistogramPanel::default(); 100_000],
            ..Default::default()
        };
        assert!(matches!(
            huge.render(dir.path(), "h"),
            Err(PlotError::InvalidChart { .. })
        ));
        // Nothing was written for the rejected charts.
        assert_eq!(fs::read_dir(dir.path()).unwrap().count(), 0);
    }

    #[test]
    fn ticks_are_round_numbers() {
        assert_eq!(
            linear_ticks(0.0, 1.0, 5),
            vec![0.0, 0.2, 0.4, 0.6000000000000001, 0.8, 1.0]
        );
        assert_eq!(linear_ticks(-3.0, 7.0, 8), vec![-2.0, 0.0, 2.0, 4.0, 6.0]);
        assert_eq!(log_ticks(1e-4, 1.0, 8, true), vec![1e-4, 1e-3, 1e-2, 1e-1, 1.0]);
        assert_eq!(
            log_ticks(1e-12, 1.0, 7, true),
            vec![1e-12, 1e-10, 1e-8, 1e-6, 1e-4, 1e-2, 1.0]
        );
        assert_eq!(log_ticks(0.1, 3.0, 8, true), vec![0.1, 0.2, 0.5, 1.0, 2.0]);
        assert!(linear_ticks(0.0, f64::INFINITY, 8).is_empty());
        assert!(log_ticks(0.0, 1.0, 8, true).is_empty());
    }

    #[test]
    fn numbers_format_for_people() {
        assert_eq!(fmt_num(0.0), "0");
        assert_eq!(fmt_num(-0.0), "0");
        assert_eq!(fmt_num(0.98765), "0.9877");
        assert_eq!(fmt_num(1234.56), "1235");
        assert_eq!(fmt_num(2.5e-7), "2.5e-7");
        assert_eq!(fmt_num(1e10), "1e10");
        assert_eq!(fmt_num(f64::NAN), "NaN");
        assert_eq!(fmt_num(f64::NEG_INFINITY), "-inf");
        assert_eq!(fmt_tick(0.30000000000000004, 0.1), "0.3");
        assert_eq!(fmt_tick(2000.0, 500.0), "2000");
        assert_eq!(fmt_tick(-0.0, 0.2), "0.0");
    }

    #[test]
    fn segments_are_clipped_to_the_unit_square() {
        assert_eq!(
            clip_to_unit_square((0.5, 0.5), (0.5, 2.0)),
            Some(((0.5, 0.5), (0.5, 1.0)))
        );
        assert_eq!(clip_to_unit_square((2.0, 2.0), (3.0, 3.0)), None);
        assert_eq!(
            clip_to_unit_square((-1.0, 0.5), (2.0, 0.5)),
            Some(((0.0, 0.5), (1.0, 0.5)))
        );
        let (a, b) = clip_to_unit_square((0.0, 0.0), (1e300, 1e300)).unwrap();
        assert_eq!(a, (0.0, 0.0));
        assert!((b.0 - 1.0).abs() < 1e-12 && (b.1 - 1.0).abs() < 1e-12);
    }

    #[test]
    fn histogram_bins_include_both_edges() {
        let (counts, outside) = bin_counts(&[0.0, 0.5, 1.0, 1.5, -0.1], 0.0, 1.0, 2);
        assert_eq!(counts, vec![1, 2]);
        assert_eq!(outside, 2);
    }
}
