//! How a scenario publishes its figures: a table on stdout, the same table as
//! CSV, a curve as SVG, and a Markdown fragment (command, machine, date,
//! table, target verdict) that `switchyard-bench report` gathers into
//! BENCHMARKS.md.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use anyhow::Context;
use plotters::prelude::*;

use crate::machine::Machine;

#[derive(Debug, Clone, Default)]
pub struct Table {
    pub columns: Vec<String>,
    pub rows: Vec<Vec<String>>,
}

impl Table {
    pub fn new(columns: &[&str]) -> Table {
        Table {
            columns: columns.iter().map(|c| c.to_string()).collect(),
            rows: Vec::new(),
        }
    }

    pub fn push(&mut self, row: Vec<String>) {
        self.rows.push(row);
    }

    fn widths(&self) -> Vec<usize> {
        let mut w: Vec<usize> = self.columns.iter().map(|c| c.chars().count()).collect();
        for row in &self.rows {
            for (i, cell) in row.iter().enumerate() {
                if let Some(slot) = w.get_mut(i) {
                    *slot = (*slot).max(cell.chars().count());
                }
            }
        }
        w
    }

    pub fn to_text(&self) -> String {
        let w = self.widths();
        let line = |cells: &[String]| -> String {
            cells
                .iter()
                .zip(&w)
                .map(|(c, w)| format!("{c:>w$}"))
                .collect::<Vec<_>>()
                .join("  ")
        };
        let mut out = line(&self.columns);
        out.push('\n');
        out.push_str(
            &w.iter()
                .map(|w| "-".repeat(*w))
                .collect::<Vec<_>>()
                .join("  "),
        );
        out.push('\n');
        for r in &self.rows {
            out.push_str(&line(r));
            out.push('\n');
        }
        out
    }

    pub fn to_csv(&self) -> String {
        let cell = |c: &str| {
            if c.contains([',', '"', '\n']) {
                format!("\"{}\"", c.replace('"', "\"\""))
            } else {
                c.to_string()
            }
        };
        let mut out = String::new();
        for r in std::iter::once(&self.columns).chain(&self.rows) {
            out.push_str(&r.iter().map(|c| cell(c)).collect::<Vec<_>>().join(","));
            out.push('\n');
        }
        out
    }

    pub fn to_markdown(&self) -> String {
        let mut out = format!("| {} |\n", self.columns.join(" | "));
        out.push_str(&format!("|{}\n", "---:|".repeat(self.columns.len())));
        for r in &self.rows {
            out.push_str(&format!("| {} |\n", r.join(" | ")));
        }
        out
    }
}

/// One curve of a plot.
#[derive(Debug, Clone)]
pub struct Series {
    pub name: String,
    pub points: Vec<(f64, f64)>,
}

impl Series {
    pub fn new(name: &str, points: Vec<(f64, f64)>) -> Series {
        Series {
            name: name.into(),
            points,
        }
    }
}

/// Series colours (not red: red is the target line).
const COLORS: [RGBColor; 4] = [
    RGBColor(31, 119, 180),
    RGBColor(44, 160, 44),
    RGBColor(255, 127, 14),
    RGBColor(148, 103, 189),
];

/// A line chart, or a bar chart when `categories` is set (x = category index).
#[derive(Debug, Clone, Default)]
pub struct Plot {
    pub title: String,
    pub x_label: String,
    pub y_label: String,
    pub log_x: bool,
    pub series: Vec<Series>,
    /// A horizontal line: the target.
    pub target: Option<(String, f64)>,
    pub categories: Vec<String>,
}

impl Plot {
    pub fn draw(&self, path: &Path) -> anyhow::Result<()> {
        self.draw_inner(path)
            .map_err(|e| anyhow::anyhow!("drawing {}: {e}", path.display()))
    }

    fn draw_inner(&self, path: &Path) -> Result<(), Box<dyn std::error::Error + 'static>> {
        let root = SVGBackend::new(path, (900, 520)).into_drawing_area();
        root.fill(&WHITE)?;
        let tx = |x: f64| if self.log_x { x.max(1e-9).log10() } else { x };
        let all = self.series.iter().flat_map(|s| s.points.iter());
        let bars = !self.categories.is_empty();
        let (mut x0, mut x1) = if bars {
            (-0.5, self.categories.len() as f64 - 0.5)
        } else {
            all.clone().fold((f64::MAX, f64::MIN), |(a, b), p| {
                (a.min(tx(p.0)), b.max(tx(p.0)))
            })
        };
        if x0 >= x1 {
            x0 -= 0.5;
            x1 += 0.5;
        }
        let mut y1 = all.fold(0.0f64, |m, p| m.max(p.1));
        if let Some((_, t)) = &self.target {
            y1 = y1.max(*t);
        }
        // Head room for the legend.
        let y1 = if y1 > 0.0 { y1 * 1.3 } else { 1.0 };
        let pad = if bars { 0.0 } else { (x1 - x0) * 0.03 };
        let mut chart = ChartBuilder::on(&root)
            .caption(&self.title, ("sans-serif", 20))
            .margin(15)
            .x_label_area_size(45)
            .y_label_area_size(70)
            .build_cartesian_2d((x0 - pad)..(x1 + pad), 0f64..y1)?;
        let cats = &self.categories;
        let log_x = self.log_x;
        let x_fmt = move |v: &f64| -> String {
            if bars {
                let i = v.round();
                if (v - i).abs() < 1e-6 && i >= 0.0 {
                    return cats.get(i as usize).cloned().unwrap_or_default();
                }
                return String::new();
            }
            if log_x {
                let x = 10f64.powf(*v);
                // Only label whole values; a log axis gets 1, 2, 5, 10 ... marks.
                if (x - x.round()).abs() < 1e-6 * x.max(1.0) {
                    return format!("{}", x.round());
                }
                return String::new();
            }
            format!("{v}")
        };
        chart
            .configure_mesh()
            .x_desc(&self.x_label)
            .y_desc(&self.y_label)
            .x_labels(if bars { 40 } else { 12 })
            .x_label_formatter(&x_fmt)
            .y_label_formatter(&|v: &f64| {
                if y1 >= 20.0 {
                    format!("{v:.0}")
                } else {
                    format!("{v:.2}")
                }
            })
            .disable_x_mesh()
            .draw()?;

        let nseries = self.series.len().max(1) as f64;
        for (i, s) in self.series.iter().enumerate() {
            let color = COLORS[i % COLORS.len()].to_rgba();
            if bars {
                let width = 0.8 / nseries;
                let left = -0.4 + width * i as f64;
                chart
                    .draw_series(s.points.iter().map(|(x, y)| {
                        Rectangle::new(
                            [(x + left, 0.0), (x + left + width * 0.95, *y)],
                            color.filled(),
                        )
                    }))?
                    .label(&s.name)
                    .legend(move |(x, y)| {
                        Rectangle::new([(x, y - 5), (x + 10, y + 5)], color.filled())
                    });
            } else {
                chart
                    .draw_series(LineSeries::new(
                        s.points.iter().map(|(x, y)| (tx(*x), *y)),
                        color.stroke_width(2),
                    ))?
                    .label(&s.name)
                    .legend(move |(x, y)| {
                        PathElement::new(vec![(x, y), (x + 20, y)], color.stroke_width(2))
                    });
                chart.draw_series(
                    s.points
                        .iter()
                        .map(|(x, y)| Circle::new((tx(*x), *y), 4, color.filled())),
                )?;
            }
        }
        if let Some((label, t)) = &self.target {
            chart
                .draw_series(LineSeries::new(
                    vec![(x0 - pad, *t), (x1 + pad, *t)],
                    RED.stroke_width(1),
                ))?
                .label(label)
                .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], RED));
        }
        chart
            .configure_series_labels()
            .position(SeriesLabelPosition::UpperLeft)
            .background_style(WHITE.mix(0.85))
            .border_style(BLACK)
            .draw()?;
        root.present()?;
        Ok(())
    }
}

/// Whether a scenario met the target.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    Met,
    Missed,
    NotMeasured,
}

impl Verdict {
    pub fn from_bool(ok: bool) -> Verdict {
        if ok { Verdict::Met } else { Verdict::Missed }
    }
    pub fn word(self) -> &'static str {
        match self {
            Verdict::Met => "**met**",
            Verdict::Missed => "**missed**",
            Verdict::NotMeasured => "**not measured**",
        }
    }
}

/// Everything a scenario publishes.
pub struct Report {
    pub scenario: &'static str,
    pub title: String,
    pub command: String,
    pub table: Table,
    pub plot: Option<Plot>,
    pub target: String,
    pub verdict: Verdict,
    /// Measured facts worth a sentence (bitrates, what ran, caveats the run found).
    pub notes: Vec<String>,
}

impl Report {
    /// Prints the table and writes `<scenario>.csv`, `.svg`, `.md` into `dir`.
    pub fn publish(&self, dir: &Path, machine: &Machine) -> anyhow::Result<()> {
        println!("\n{}\n", self.title);
        print!("{}", self.table.to_text());
        for n in &self.notes {
            println!("note: {n}");
        }
        println!(
            "target: {} — {}",
            self.target,
            self.verdict.word().trim_matches('*')
        );
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        let csv = dir.join(format!("{}.csv", self.scenario));
        std::fs::write(&csv, self.table.to_csv())
            .with_context(|| format!("writing {}", csv.display()))?;
        let svg = dir.join(format!("{}.svg", self.scenario));
        if let Some(p) = &self.plot {
            p.draw(&svg)?;
        }
        let md = dir.join(format!("{}.md", self.scenario));
        std::fs::write(&md, self.markdown(machine, self.plot.is_some()))
            .with_context(|| format!("writing {}", md.display()))?;
        println!(
            "wrote {}{}",
            csv.display(),
            if self.plot.is_some() {
                format!(", {}", svg.display())
            } else {
                String::new()
            }
        );
        Ok(())
    }

    fn markdown(&self, machine: &Machine, has_plot: bool) -> String {
        let mut s = String::new();
        let _ = writeln!(s, "### `{}`: {}\n", self.scenario, self.title);
        let _ = writeln!(s, "- command: `{}`", self.command);
        let _ = writeln!(s, "- machine: {}", machine.one_line());
        let _ = writeln!(
            s,
            "- date: {}",
            chrono::Utc::now().format("%Y-%m-%d %H:%M UTC")
        );
        let _ = writeln!(
            s,
            "- machine load: 1-minute load average {:.1} when the run ended, on {} cores",
            crate::machine::load_average(),
            machine.nproc
        );
        let _ = writeln!(s, "- target: {} — {}", self.target, self.verdict.word());
        let _ = writeln!(
            s,
            "- figures: [{0}.csv](bench/results/{0}.csv){1}\n",
            self.scenario,
            if has_plot {
                format!(", plot [{0}.svg](bench/results/{0}.svg)", self.scenario)
            } else {
                String::new()
            }
        );
        s.push_str(&self.table.to_markdown());
        if !self.notes.is_empty() {
            s.push('\n');
            for n in &self.notes {
                let _ = writeln!(s, "- {n}");
            }
        }
        if has_plot {
            let _ = writeln!(s, "\n![{0}](bench/results/{0}.svg)", self.scenario);
        }
        s
    }
}

/// Where results go unless `--results` says otherwise: this crate's `results/`.
pub fn default_results_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("results")
}

/// Megabytes (10^6) with one decimal.
pub fn mb(bytes: f64) -> String {
    format!("{:.1}", bytes / 1e6)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn csv_quotes_what_needs_quoting() {
        let mut t = Table::new(&["a", "b"]);
        t.push(vec!["1,5".into(), "x\"y".into()]);
        assert_eq!(t.to_csv(), "a,b\n\"1,5\",\"x\"\"y\"\n");
    }
}
