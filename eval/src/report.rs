//! Summaries (Markdown) and charts from a run directory's results table.

use std::collections::BTreeMap;
use std::fmt::Write;
use std::path::{Path, PathBuf};

use crate::charts::{BarChart, LineChart, write_bar_chart, write_line_chart};
use crate::error::{EvalError, Result};
use crate::provenance::config_part;
use crate::table::Measurement;

/// Mean and sample standard deviation.
pub fn mean_std(v: &[f64]) -> (f64, f64) {
    let n = v.len().max(1) as f64;
    let m = v.iter().sum::<f64>() / n;
    let var = if v.len() > 1 {
        v.iter().map(|x| (x - m).powi(2)).sum::<f64>() / (n - 1.0)
    } else {
        0.0
    };
    (m, var.sqrt())
}

fn pm(v: &[f64], decimals: usize) -> String {
    let (m, s) = mean_std(v);
    if v.len() > 1 {
        format!("{m:.decimals$} ± {s:.decimals$}")
    } else {
        format!("{m:.decimals$}")
    }
}

/// Rows grouped by experiment, then setting (in first-seen order), then checkpoint.
type Groups<'a> = BTreeMap<String, Vec<(String, BTreeMap<i64, Vec<&'a Measurement>>)>>;

fn group(rows: &[Measurement]) -> Groups<'_> {
    let mut out: Groups = BTreeMap::new();
    for r in rows {
        let settings = out.entry(r.experiment.clone()).or_default();
        let idx = match settings.iter().position(|(s, _)| *s == r.setting) {
            Some(i) => i,
            None => {
                settings.push((r.setting.clone(), BTreeMap::new()));
                settings.len() - 1
            }
        };
        settings[idx].1.entry(r.checkpoint).or_default().push(r);
    }
    out
}

/// Tells apart rows of one setting that different fingerprints produced (another model, heads,
/// prompt or setting value in the same run directory): their setting gets the fingerprint's
/// first 8 digits, so summaries and charts never average them together. Returns a warning when
/// the rows come from more than one model or heads.
pub fn separate_by_fingerprint(rows: &mut [Measurement]) -> Option<String> {
    let mut prints: BTreeMap<(String, String), Vec<String>> = BTreeMap::new();
    for r in rows.iter() {
        let v = prints
            .entry((r.experiment.clone(), r.setting.clone()))
            .or_default();
        let config = config_part(&r.fingerprint).to_string();
        if !v.contains(&config) {
            v.push(config);
        }
    }
    for r in rows.iter_mut() {
        if prints[&(r.experiment.clone(), r.setting.clone())].len() > 1 {
            let config = config_part(&r.fingerprint);
            let fp = if config.is_empty() {
                "unfingerprinted".to_string()
            } else {
                config[..config.len().min(8)].to_string()
            };
            r.setting = format!("{} [{fp}]", r.setting);
        }
    }
    let mut sources: Vec<&str> = rows.iter().map(|r| r.source.as_str()).collect();
    sources.sort_unstable();
    sources.dedup();
    (sources.len() > 1).then(|| {
        let names: Vec<String> = sources
            .iter()
            .map(|s| {
                if s.is_empty() {
                    "(no fingerprint: an older table)".to_string()
                } else {
                    s.to_string()
                }
            })
            .collect();
        format!(
            "This directory mixes results of {} models or heads: {}. Settings measured by more than one are labelled with their fingerprint.",
            sources.len(),
            names.join("; ")
        )
    })
}

/// The Markdown summary of every experiment: per setting and checkpoint, mean ± std over prompts.
pub fn summary_markdown(rows: &[Measurement], title: &str) -> String {
    let mut s = format!("# {title}\n\n");
    for (exp, settings) in group(rows) {
        let _ = writeln!(s, "## {exp}\n");
        let _ = writeln!(
            s,
            "| setting | tokens | prompts | AR ms/token | TokenSwift ms/token | speedup × | α | tokens/step | n-gram share | minutes saved | tree |\n|---|---|---|---|---|---|---|---|---|---|---|"
        );
        for (setting, cps) in &settings {
            for (cp, rs) in cps {
                let col = |f: fn(&Measurement) -> f64| rs.iter().map(|r| f(r)).collect::<Vec<_>>();
                let _ = writeln!(
                    s,
                    "| {setting} | {cp} | {} | {} | {} | {} | {} | {} | {} | {} | {} |",
                    rs.len(),
                    pm(&col(|r| r.ar_ms_per_token), 1),
                    pm(&col(|r| r.ts_ms_per_token), 1),
                    pm(&col(|r| r.speedup), 2),
                    pm(&col(|r| r.alpha), 3),
                    pm(&col(|r| r.tokens_per_step), 2),
                    pm(&col(|r| r.ngram_share * 100.0), 1) + " %",
                    pm(&col(|r| r.minutes_saved), 2),
                    rs[0].tree
                );
            }
        }
        let _ = writeln!(
            s,
            "\n| setting | Distinct-1 | Distinct-2 | Distinct-3 | Distinct-4 | TokenSwift output = AR output |\n|---|---|---|---|---|---|"
        );
        for (setting, cps) in &settings {
            let last = cps.values().last().expect("a checkpoint");
            let d = |i: usize| pm(&last.iter().map(|r| r.distinct[i]).collect::<Vec<_>>(), 3);
            let same = last.iter().filter(|r| r.identical == 1).count();
            let _ = writeln!(
                s,
                "| {setting} | {} | {} | {} | {} | {same} of {} prompts |",
                d(0),
                d(1),
                d(2),
                d(3),
                last.len()
            );
        }
        s.push('\n');
    }
    s
}

fn numeric_value(setting: &str) -> Option<f64> {
    setting
        .split_once('=')
        .and_then(|(_, v)| v.trim().parse::<f64>().ok())
}

fn slug(s: &str) -> String {
    s.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() {
                c.to_ascii_lowercase()
            } else {
                '-'
            }
        })
        .collect()
}

/// Draws every chart the rows support into `dir`; returns the PNG paths.
pub fn charts(rows: &[Measurement], dir: &Path) -> Result<Vec<PathBuf>> {
    std::fs::create_dir_all(dir).map_err(|e| EvalError::io(dir, e))?;
    let mut out = Vec::new();
    for (exp, settings) in group(rows) {
        let e = slug(&exp);
        let mean_of = |rs: &Vec<&Measurement>, f: fn(&Measurement) -> f64| {
            mean_std(&rs.iter().map(|r| f(r)).collect::<Vec<_>>()).0
        };
        let multi_cp = settings.iter().any(|(_, c)| c.len() > 1);
        if multi_cp {
            let line = |f: fn(&Measurement) -> f64| -> Vec<(String, Vec<(f64, f64)>)> {
                settings
                    .iter()
                    .map(|(s, cps)| {
                        (
                            format!("TokenSwift, {s}"),
                            cps.iter()
                                .map(|(c, rs)| (*c as f64, mean_of(rs, f)))
                                .collect(),
                        )
                    })
                    .collect()
            };
            out.push(write_line_chart(
                &dir.join(format!("{e}-speedup-vs-length")),
                &LineChart {
                    title: &format!("{exp}: speedup vs generated length"),
                    x_label: "generated tokens",
                    y_label: "speedup over AR (×, per-token latency)",
                    series: line(|r| r.speedup),
                    reference: Some(("AR = 1×".into(), 1.0)),
                },
            )?);
            out.push(write_line_chart(
                &dir.join(format!("{e}-alpha-vs-length")),
                &LineChart {
                    title: &format!("{exp}: acceptance rate vs generated length"),
                    x_label: "generated tokens",
                    y_label: "acceptance rate α (whole run)",
                    series: line(|r| r.alpha),
                    reference: None,
                },
            )?);
            let mut series = line(|r| r.ts_ms_per_token * r.checkpoint as f64 / 60_000.0);
            if let Some((_, cps)) = settings.first() {
                series.insert(
                    0,
                    (
                        "AR".into(),
                        cps.iter()
                            .map(|(c, rs)| {
                                (
                                    *c as f64,
                                    mean_of(rs, |r| {
                                        r.ar_ms_per_token * r.checkpoint as f64 / 60_000.0
                                    }),
                                )
                            })
                            .collect(),
                    ),
                );
            }
            out.push(write_line_chart(
                &dir.join(format!("{e}-time-vs-length")),
                &LineChart {
                    title: &format!("{exp}: time to generate"),
                    x_label: "generated tokens",
                    y_label: "decode time (minutes)",
                    series,
                    reference: None,
                },
            )?);
        }
        let finals: Vec<(String, Vec<&Measurement>)> = settings
            .iter()
            .map(|(s, cps)| (s.clone(), cps.values().last().cloned().unwrap_or_default()))
            .collect();
        out.push(write_bar_chart(
            &dir.join(format!("{e}-distinct")),
            &BarChart {
                title: &format!("{exp}: Distinct-n of the generated tokens"),
                y_label: "unique n-grams / total n-grams",
                groups: (1..=4).map(|n| format!("Distinct-{n}")).collect(),
                series: finals
                    .iter()
                    .map(|(s, rs)| {
                        let d = (0..4)
                            .map(|i| {
                                mean_std(&rs.iter().map(|r| r.distinct[i]).collect::<Vec<_>>()).0
                            })
                            .collect();
                        (s.clone(), d)
                    })
                    .collect(),
            },
        )?);
        let numeric: Option<Vec<(f64, &Vec<&Measurement>)>> = finals
            .iter()
            .map(|(s, rs)| numeric_value(s).map(|v| (v, rs)))
            .collect();
        if let Some(mut pts) = numeric.filter(|p| p.len() > 1) {
            pts.sort_by(|a, b| a.0.total_cmp(&b.0));
            let param = finals[0].0.split('=').next().unwrap_or("value").to_string();
            out.push(write_line_chart(
                &dir.join(format!("{e}-sweep-distinct")),
                &LineChart {
                    title: &format!("{exp}: Distinct-n vs {param}"),
                    x_label: &param,
                    y_label: "Distinct-n",
                    series: (0..4)
                        .map(|i| {
                            (
                                format!("Distinct-{}", i + 1),
                                pts.iter()
                                    .map(|(v, rs)| {
                                        (
                                            *v,
                                            mean_std(
                                                &rs.iter()
                                                    .map(|r| r.distinct[i])
                                                    .collect::<Vec<_>>(),
                                            )
                                            .0,
                                        )
                                    })
                                    .collect(),
                            )
                        })
                        .collect(),
                    reference: None,
                },
            )?);
            out.push(write_line_chart(
                &dir.join(format!("{e}-sweep-speedup")),
                &LineChart {
                    title: &format!("{exp}: speedup and α vs {param}"),
                    x_label: &param,
                    y_label: "speedup (×) / α",
                    series: vec![
                        (
                            "speedup".into(),
                            pts.iter()
                                .map(|(v, rs)| (*v, mean_of(rs, |r| r.speedup)))
                                .collect(),
                        ),
                        (
                            "α".into(),
                            pts.iter()
                                .map(|(v, rs)| (*v, mean_of(rs, |r| r.alpha)))
                                .collect(),
                        ),
                    ],
                    reference: Some(("AR = 1×".into(), 1.0)),
                },
            )?);
        }
    }
    Ok(out)
}

/// The paper's figures (DESIGN §7), as its tables print them, for the tables that put ours
/// beside them. Read off the paper's Tables 1 and 2 and its sampler/penalty table (A100, PG-19
/// prompts, min-p 0.1, penalty 1.2 over 1024 tokens, k = 20); a figure is (mean, std).
pub mod paper {
    /// Generation lengths of Tables 1 and 2.
    pub const LENGTHS: [usize; 5] = [20_000, 40_000, 60_000, 80_000, 100_000];
    /// Prefill lengths of Table 1's column groups.
    pub const TABLE1_PREFILLS: [usize; 3] = [2048, 4096, 8192];
    /// Prefill length of Table 2.
    pub const TABLE2_PREFILL: usize = 4096;

    /// One TokenSwift cell of Table 1: α and speedup, each (mean, std) over prompts.
    pub type Cell1 = ((f64, f64), (f64, f64));

    /// Table 1, TokenSwift rows: per model, per length, per prefill (2048, 4096, 8192).
    pub const TABLE1: [(&str, [[Cell1; 3]; 5]); 2] = [
        (
            "YaRN-LLaMA2-7b-128k (MHA)",
            [
                [
                    ((0.73, 0.09), (2.11, 0.14)),
                    ((0.68, 0.09), (2.02, 0.20)),
                    ((0.64, 0.08), (1.91, 0.12)),
                ],
                [
                    ((0.82, 0.06), (2.60, 0.05)),
                    ((0.79, 0.06), (2.56, 0.09)),
                    ((0.79, 0.05), (2.50, 0.07)),
                ],
                [
                    ((0.87, 0.04), (2.92, 0.04)),
                    ((0.85, 0.04), (2.89, 0.06)),
                    ((0.85, 0.04), (2.84, 0.05)),
                ],
                [
                    ((0.89, 0.03), (3.13, 0.04)),
                    ((0.88, 0.04), (3.10, 0.06)),
                    ((0.88, 0.03), (3.05, 0.03)),
                ],
                [
                    ((0.90, 0.02), (3.25, 0.05)),
                    ((0.90, 0.03), (3.23, 0.06)),
                    ((0.90, 0.02), (3.20, 0.02)),
                ],
            ],
        ),
        (
            "LLaMA3.1-8b (GQA)",
            [
                [
                    ((0.64, 0.08), (1.87, 0.17)),
                    ((0.65, 0.07), (1.93, 0.18)),
                    ((0.72, 0.09), (1.99, 0.20)),
                ],
                [
                    ((0.72, 0.07), (2.39, 0.16)),
                    ((0.73, 0.08), (2.47, 0.22)),
                    ((0.81, 0.10), (2.54, 0.22)),
                ],
                [
                    ((0.75, 0.06), (2.73, 0.13)),
                    ((0.79, 0.06), (2.88, 0.17)),
                    ((0.85, 0.08), (2.93, 0.17)),
                ],
                [
                    ((0.77, 0.04), (2.96, 0.07)),
                    ((0.82, 0.06), (3.13, 0.16)),
                    ((0.88, 0.07), (3.19, 0.13)),
                ],
                [
                    ((0.79, 0.03), (3.13, 0.07)),
                    ((0.84, 0.05), (3.27, 0.19)),
                    ((0.90, 0.06), (3.38, 0.10)),
                ],
            ],
        ),
    ];

    /// One row of Table 2: α, speedup, T_AR and T_TokenSwift in minutes (Δ_T is their difference).
    pub type Row2 = ((f64, f64), (f64, f64), f64, f64);

    /// Table 2 (Qwen2.5, prefill 4096): per model, per length.
    pub const TABLE2: [(&str, [Row2; 5]); 3] = [
        (
            "Qwen2.5-1.5B",
            [
                ((0.69, 0.11), (1.69, 0.17), 12.00, 7.20),
                ((0.80, 0.06), (2.31, 0.09), 36.00, 15.60),
                ((0.85, 0.04), (2.69, 0.07), 73.80, 27.60),
                ((0.87, 0.03), (2.95, 0.06), 124.20, 42.00),
                ((0.89, 0.07), (3.13, 0.07), 187.80, 60.00),
            ],
        ),
        (
            "Qwen2.5-7B",
            [
                ((0.64, 0.07), (2.00, 0.16), 15.60, 7.80),
                ((0.77, 0.05), (2.64, 0.10), 47.40, 18.00),
                ((0.78, 0.08), (2.86, 0.25), 95.40, 33.60),
                ((0.80, 0.09), (3.07, 0.30), 161.40, 52.80),
                ((0.82, 0.09), (3.23, 0.28), 244.20, 75.60),
            ],
        ),
        (
            "Qwen2.5-14B",
            [
                ((0.67, 0.06), (2.12, 0.13), 29.40, 13.80),
                ((0.78, 0.03), (2.68, 0.10), 89.40, 33.60),
                ((0.82, 0.02), (3.01, 0.13), 184.20, 61.20),
                ((0.83, 0.02), (3.20, 0.13), 312.60, 97.80),
                ((0.84, 0.02), (3.34, 0.10), 474.60, 142.20),
            ],
        ),
    ];

    /// The sampler/penalty table (LLaMA3.1-8b, 100K): sampler, penalty on?, Distinct-1..4,
    /// their average, speedup.
    pub const SAMPLERS: [(&str, bool, [f64; 4], f64, f64); 6] = [
        ("top-p", true, [0.15, 0.25, 0.29, 0.31], 0.25, 3.42),
        ("top-p", false, [0.09, 0.15, 0.18, 0.20], 0.16, 3.53),
        ("eta", true, [0.25, 0.43, 0.49, 0.53], 0.43, 3.42),
        ("eta", false, [0.06, 0.10, 0.12, 0.13], 0.11, 3.57),
        ("min-p", true, [0.41, 0.71, 0.81, 0.82], 0.69, 3.27),
        ("min-p", false, [0.07, 0.11, 0.14, 0.15], 0.12, 3.58),
    ];

    /// N-gram ablation (LLaMA3.1-8b, 100K, read off the paper's plot): (k, α, speedup).
    pub const NGRAM: [(usize, f64, f64); 2] = [(20, 0.82, 3.25), (0, 0.40, 1.96)];
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mean_and_sample_std() {
        let (m, s) = mean_std(&[1.0, 2.0, 3.0, 4.0]);
        assert!((m - 2.5).abs() < 1e-12);
        assert!((s - 1.2909944487358056).abs() < 1e-12);
        assert_eq!(mean_std(&[5.0]), (5.0, 0.0));
    }
}
