//! The tables: one per language (every figure beside its floor, as a ratio), the
//! thousand-functions table, and which targets of issue 6 are met.

use crate::lang::Lang;
use crate::stats::{ms, Figs};
use crate::{LangResult, Settings};
use serde_json::{json, Value};
use std::fmt::Write;

pub struct Report<'a> {
    pub settings: &'a Settings,
    /// `Err(why)` when the server has no stem cells.
    pub stem: &'a std::result::Result<(), String>,
    pub langs: &'a [LangResult],
    pub many: Option<&'a Figs>,
}

/// One target of issue 6 and whether this run met it (`None`: not measured / n/a).
pub struct Target {
    pub what: String,
    pub value: String,
    pub met: Option<bool>,
}

impl Target {
    pub fn to_json(&self) -> Value {
        json!({ "target": self.what, "value": self.value, "met": self.met })
    }
}

/// A one-line summary of a run, for progress on stderr.
pub fn progress_line(f: &Figs) -> String {
    let mut out = Vec::new();
    let pair = |a: &str, b: &str| Some((f.get(a)?, f.get(b)?));
    if let Some((n, fl)) = pair("cold.hello.off.p50", "floor.exec.p50") {
        let stem = f
            .get("cold.hello.stem.p50")
            .map_or(String::new(), |s| format!(" (stem {s:.1})"));
        out.push(format!("cold {n:.1}{stem}/{fl:.1} ms"));
    }
    if let Some((n, fl)) = pair("cold.dep.off.p50", "floor.load_dep.p50") {
        out.push(format!("1MB cold {n:.0}/{fl:.0} ms"));
    }
    if let Some((n, fl)) = pair("warm.p50", "warm.floor.p50") {
        out.push(format!("warm {n:.3}/{fl:.3} ms"));
    }
    if let Some((n, fl)) = pair("tput.rps", "tput.floor_rps") {
        let o = f.get("tput.cpu.other_cores").unwrap_or(0.0);
        out.push(format!("{n:.0}/{fl:.0} rps (other load {o:.1} cores)"));
    }
    if let Some((ok, t)) = pair("burst.ok", "burst.throttled") {
        out.push(format!(
            "burst {ok:.0} ok, {t:.0} throttled, {:.0} errors, peak {:.0} instances, all answered in {:.0} ms",
            f.get("burst.errors").unwrap_or(0.0),
            f.get("burst.peak_pool").unwrap_or(0.0),
            f.get("burst.all_answered_ms").unwrap_or(0.0)
        ));
    }
    if let Some((n, fl)) = pair("scaleout.ms", "scaleout.floor_ms") {
        out.push(format!("scale-out {n:.0}/{fl:.0} ms"));
    }
    out.join(", ") + " (nimbus/floor)"
}

const HEAD: [&str; 6] = ["nimbus p50", "p99", "floor p50", "p99", "ratio", "floor"];

#[allow(clippy::too_many_arguments)]
fn row(
    out: &mut String,
    label: &str,
    n: &str,
    n99: &str,
    f: &str,
    f99: &str,
    ratio: &str,
    floor: &str,
) {
    let _ = writeln!(
        out,
        "{label:<40}{n:>11}{n99:>9}{f:>11}{f99:>9}{ratio:>9}  {floor}"
    );
}

fn ratio(a: f64, b: f64) -> String {
    if b > 0.0 {
        format!("{:.2}x", a / b)
    } else {
        "-".into()
    }
}

impl Report<'_> {
    pub fn text(&self) -> String {
        let mut out = String::new();
        if let Err(why) = self.stem {
            let _ = writeln!(out, "stem cells: n/a ({why})");
        }
        for r in self.langs {
            out += "\n";
            out += &self.lang_table(r);
        }
        if let Some(m) = self.many {
            out += "\n";
            out += &self.many_table(m);
        }
        out += "\nissue 6 targets (median of runs):\n";
        for t in self.targets() {
            let mark = match t.met {
                Some(true) => "MET    ",
                Some(false) => "NOT MET",
                None => "n/a    ",
            };
            let _ = writeln!(out, "  {mark}  {:<58} {}", t.what, t.value);
        }
        out
    }

    fn lang_table(&self, r: &LangResult) -> String {
        let f = r.median();
        let s = self.settings;
        let lang = r.lang;
        let mut out = String::new();
        let title = format!("{} {}", lang.name(), r.version);
        row(
            &mut out, &title, HEAD[0], HEAD[1], HEAD[2], HEAD[3], HEAD[4], HEAD[5],
        );
        let lat_row =
            |out: &mut String, label: &str, key: &str, floor_key: &str, floor: &str| match (
                f.lat(key),
                f.lat(floor_key),
            ) {
                (Some(n), Some(fl)) => row(
                    out,
                    label,
                    &ms(n.p50),
                    &ms(n.p99),
                    &ms(fl.p50),
                    &ms(fl.p99),
                    &ratio(n.p50, fl.p50),
                    floor,
                ),
                (Some(n), None) => row(out, label, &ms(n.p50), &ms(n.p99), "-", "-", "-", floor),
                _ => {}
            };
        let exec = format!("fork+exec `{}`", lang.noop_command());
        if f.lat("cold.hello.off").is_some() {
            out += "cold start (ms), new function per sample\n";
            lat_row(
                &mut out,
                "  hello, without stem cells",
                "cold.hello.off",
                "floor.exec",
                &exec,
            );
            self.stem_row(
                &mut out,
                &f,
                "  hello, with stem cells",
                "cold.hello.stem",
                &exec,
            );
            lat_row(
                &mut out,
                "  1 MB dependency, without stem cells",
                "cold.dep.off",
                "floor.exec",
                &exec,
            );
            self.stem_row(
                &mut out,
                &f,
                "  1 MB dependency, with stem cells",
                "cold.dep.stem",
                &exec,
            );
            lat_row(
                &mut out,
                "  floor: interpreter loading hello",
                "floor.load",
                "floor.exec",
                &exec,
            );
            lat_row(
                &mut out,
                "  floor: interpreter loading 1 MB dep",
                "floor.load_dep",
                "floor.exec",
                &exec,
            );
            let vs = |k: &str, l: &str| match (f.get(k), f.get(l)) {
                (Some(a), Some(b)) => ratio(a, b),
                _ => "n/a".into(),
            };
            let _ = writeln!(
                out,
                "  against the interpreter loading the same code (p50): hello {} without / {} with stem cells; 1 MB {} / {}",
                vs("cold.hello.off.p50", "floor.load.p50"),
                vs("cold.hello.stem.p50", "floor.load.p50"),
                vs("cold.dep.off.p50", "floor.load_dep.p50"),
                vs("cold.dep.stem.p50", "floor.load_dep.p50"),
            );
        }
        if f.lat("warm").is_some() {
            lat_row(
                &mut out,
                "warm, 1 client (ms)",
                "warm",
                "warm.floor",
                "bare HTTP server",
            );
        }
        if let (Some(n), Some(fl)) = (f.get("tput.rps"), f.get("tput.floor_rps")) {
            row(
                &mut out,
                &format!("throughput, {} clients (rps)", s.clients),
                &format!("{n:.0}"),
                "-",
                &format!("{fl:.0}"),
                "-",
                &ratio(n, fl),
                "bare HTTP server",
            );
        }
        if let (Some(n), Some(fl)) = (
            f.get("burst.all_answered_ms"),
            f.get("burst.floor_all_answered_ms"),
        ) {
            row(
                &mut out,
                &format!("burst: {} first calls all answered (ms)", s.burst_calls),
                &ms(n),
                "-",
                &ms(fl),
                "-",
                &ratio(n, fl),
                "bare HTTP server, as many new connections",
            );
        }
        if let (Some(n), Some(fl)) = (f.get("scaleout.ms"), f.get("scaleout.floor_ms")) {
            row(
                &mut out,
                &format!("scale-out to {} instances (ms)", s.scaleout),
                &ms(n),
                "-",
                &ms(fl),
                "-",
                &ratio(n, fl),
                &format!(
                    "{} interpreters sleeping 300 ms, spawned at once",
                    s.scaleout
                ),
            );
        }
        if let (Some(n), Some(fl)) = (f.get("density.pss_mb"), f.get("density.floor_pss_mb")) {
            row(
                &mut out,
                "memory per idle instance, PSS (MB)",
                &format!("{n:.1}"),
                "-",
                &format!("{fl:.1}"),
                "-",
                &ratio(n, fl),
                "bare idle interpreter",
            );
            let per_gb = |mb: f64| if mb > 0.0 { 1024.0 / mb } else { 0.0 };
            row(
                &mut out,
                "instances per GB (by PSS)",
                &format!("{:.0}", per_gb(n)),
                "-",
                &format!("{:.0}", per_gb(fl)),
                "-",
                &ratio(per_gb(n), per_gb(fl)),
                "bare idle interpreter",
            );
        }
        // Details.
        if let (Some(n), Some(fl)) = (f.get("warm.p50"), f.get("warm.floor.p50")) {
            let _ = writeln!(
                out,
                "nimbus added time per warm request (p50 warm - p50 floor): {:.0} us",
                (n - fl) * 1e3
            );
        }
        if let Some(c) = f.get("tput.cpu.server_us") {
            let g = |k: &str| f.get(k).unwrap_or(0.0);
            let _ = writeln!(
                out,
                "CPU per request at throughput (us): nimbus {c:.0} gateway + {:.0} instances, floor {:.0}; client {:.0} / {:.0}; other load {:.1} / {:.1} cores",
                g("tput.cpu.instances_us"),
                g("tput.floor_cpu.server_us"),
                g("tput.cpu.client_us"),
                g("tput.floor_cpu.client_us"),
                g("tput.cpu.other_cores"),
                g("tput.floor_cpu.other_cores"),
            );
        }
        if let Some(ok) = f.get("burst.ok") {
            let g = |k: &str| f.get(k).unwrap_or(0.0);
            let _ = writeln!(
                out,
                "burst: {} calls at once to a cold function (concurrency {:.0}): {ok:.0} x 200, {:.0} x 429, {:.0} other, {:.0} no answer in 30 s; \
                 peak instances {:.0} (pool, polled), {:.0} distinct served; errors except documented throttles: {:.0}",
                s.burst_calls,
                g("burst.limit"),
                g("burst.throttled"),
                g("burst.other"),
                g("burst.no_answer"),
                g("burst.peak_pool"),
                g("burst.distinct_instances"),
                g("burst.errors"),
            );
        }
        if let Some(k) = f.get("density.k") {
            let g = |x: &str| f.get(x).unwrap_or(0.0);
            let _ = writeln!(
                out,
                "density (measured once): {k:.0} concurrent calls left {:.0} idle instances ({:.0} in the pool), {:.1} processes each; \
                 per instance PSS {:.1} MB, RSS {:.1} MB (floor {:.1} / {:.1}); nimbus's own RSS {:+.2} MB per instance",
                g("density.instances"),
                g("density.pool_instances"),
                g("density.procs_per_instance"),
                g("density.pss_mb"),
                g("density.rss_mb"),
                g("density.floor_pss_mb"),
                g("density.floor_rss_mb"),
                g("density.server_rss_mb"),
            );
        }
        out
    }

    fn stem_row(&self, out: &mut String, f: &Figs, label: &str, key: &str, floor: &str) {
        match (self.stem, f.lat(key), f.lat("floor.exec")) {
            (Err(why), _, _) => {
                let _ = writeln!(out, "{label:<40}{:>11}  ({why})", "n/a");
            }
            (Ok(()), Some(n), Some(fl)) => {
                row(
                    out,
                    label,
                    &ms(n.p50),
                    &ms(n.p99),
                    &ms(fl.p50),
                    &ms(fl.p99),
                    &ratio(n.p50, fl.p50),
                    floor,
                );
                let n = self.settings.cold_samples;
                let seen = f.get(&format!("{key}.idle_stem_seen"));
                let hits = f.get(&format!("{key}.stem_hits"));
                if seen.is_some_and(|x| x < n as f64) || hits.is_some_and(|x| x < n as f64) {
                    let _ = writeln!(
                        out,
                        "{:<40}(of {n} samples: an idle stem cell reported before {}, a stem cell used in {}; medians of runs)",
                        "",
                        seen.map_or("?".into(), |x| format!("{x:.0}")),
                        hits.map_or("? (no hits count)".into(), |x| format!("{x:.0}")),
                    );
                }
            }
            _ => {}
        }
    }

    fn many_table(&self, m: &Figs) -> String {
        let mut out = String::new();
        let g = |k: &str| m.get(k).unwrap_or(0.0);
        let _ = writeln!(
            out,
            "{:.0} deployed functions ({} alternating){:>14}{:>9}  compared with",
            g("many.count"),
            self.langs
                .iter()
                .map(|r| r.lang.name())
                .collect::<Vec<_>>()
                .join("/"),
            "value",
            "ratio"
        );
        let line = |out: &mut String, label: &str, v: String, r: String, with: &str| {
            let _ = writeln!(out, "  {label:<46}{v:>14}{r:>9}  {with}");
        };
        line(
            &mut out,
            "deploy all, 4 clients (s)",
            format!("{:.1}", g("many.deploy_s")),
            "-".into(),
            "",
        );
        if let Some(l) = m.lat("many.list") {
            line(
                &mut out,
                &format!(
                    "ListFunctions, all {:.0} pages (ms, p50 of 5)",
                    g("many.list_pages")
                ),
                ms(l.p50),
                ratio(l.p50, 50.0),
                "target < 50 ms",
            );
        }
        if let Some(l) = m.lat("many.native_list") {
            line(
                &mut out,
                "GET /v1/functions, one page (ms, p50 of 5)",
                ms(l.p50),
                "-".into(),
                "",
            );
        }
        for r in self.langs {
            let med = r.median();
            let name = r.lang.name();
            if let Some(l) = m.lat(&format!("many.first_invoke.{name}")) {
                let (key, which) = self.single_cold_key(&med);
                let single = med.get(&format!("{key}.p50"));
                line(
                    &mut out,
                    &format!("first invoke, {name} (ms p50 / p99)"),
                    format!("{} / {}", ms(l.p50), ms(l.p99)),
                    single.map_or("-".into(), |s| ratio(l.p50, s)),
                    &format!(
                        "single-function cold start p50 {} ms ({which})",
                        single.map_or("n/a".into(), ms)
                    ),
                );
            }
            if let Some(l) = m.lat(&format!("many.warm.{name}")) {
                let before = med.get("warm.p50");
                line(
                    &mut out,
                    &format!("warm, {name}, 1 client (ms p50)"),
                    ms(l.p50),
                    before.map_or("-".into(), |b| ratio(l.p50, b)),
                    &format!(
                        "warm p50 of the runs {} ms",
                        before.map_or("n/a".into(), ms)
                    ),
                );
            }
        }
        if let Some(l) = m.lat("many.round_robin") {
            line(
                &mut out,
                &format!(
                    "warm round-robin over the {:.0} invoked (ms p50 / p99)",
                    g("many.invoked")
                ),
                format!("{} / {}", ms(l.p50), ms(l.p99)),
                "-".into(),
                "",
            );
        }
        out
    }

    /// The single-function cold start the thousand-function first invokes compare with:
    /// the main server's (with stem cells when it has them).
    fn single_cold_key(&self, _f: &Figs) -> (&'static str, &'static str) {
        if self.stem.is_ok() {
            ("cold.hello.stem", "with stem cells")
        } else {
            ("cold.hello.off", "without stem cells")
        }
    }

    pub fn targets(&self) -> Vec<Target> {
        let mut out = Vec::new();
        let fmt_ms = |x: f64| format!("{} ms", ms(x));
        for r in self.langs {
            let f = r.median();
            let name = r.lang.name();
            let limit = match r.lang {
                Lang::Node => 15.0,
                Lang::Python => 8.0,
            };
            if f.lat("cold.hello.off").is_some() {
                out.push(match (self.stem, f.get("cold.hello.stem.p50")) {
                    (Err(why), _) => Target {
                        what: format!("{name}: cold start with a stem cell <= {limit} ms"),
                        value: format!(
                            "n/a ({why}); without: {}",
                            fmt_ms(f.get("cold.hello.off.p50").unwrap_or(0.0))
                        ),
                        met: None,
                    },
                    (Ok(()), Some(v)) => Target {
                        what: format!("{name}: cold start with a stem cell <= {limit} ms"),
                        value: fmt_ms(v),
                        met: Some(v <= limit),
                    },
                    (Ok(()), None) => Target {
                        what: format!("{name}: cold start with a stem cell <= {limit} ms"),
                        value: "not measured".into(),
                        met: None,
                    },
                });
            }
            if let (Some(n), Some(fl)) = (f.get("warm.p50"), f.get("warm.floor.p50")) {
                out.push(Target {
                    what: format!("{name}: warm p50 <= 1.5x the bare server"),
                    value: format!("{} vs {} = {}", fmt_ms(n), fmt_ms(fl), ratio(n, fl)),
                    met: Some(n <= 1.5 * fl),
                });
                let added = (n - fl) * 1e3;
                out.push(Target {
                    what: format!("{name}: nimbus added time per invocation p50 <= 150 us"),
                    value: format!("{added:.0} us"),
                    met: Some(added <= 150.0),
                });
            }
            if let (Some(n), Some(fl)) = (f.get("tput.rps"), f.get("tput.floor_rps")) {
                out.push(Target {
                    what: format!(
                        "{name}: throughput at {} clients >= 60% of the bare server",
                        self.settings.clients
                    ),
                    value: format!("{n:.0} vs {fl:.0} rps = {:.0}%", 100.0 * n / fl.max(1e-9)),
                    met: Some(n >= 0.6 * fl),
                });
            }
            if let Some(ok) = f.get("burst.ok") {
                let g = |k: &str| f.get(k).unwrap_or(0.0);
                let errors = g("burst.errors");
                let peak = g("burst.peak_pool").max(g("burst.distinct_instances"));
                let answered = ok + g("burst.throttled") + g("burst.other");
                out.push(Target {
                    what: format!(
                        "{name}: burst of {}: no errors but documented throttles, all answered, instances <= limit",
                        self.settings.burst_calls
                    ),
                    value: format!(
                        "{ok:.0} ok, {:.0} throttled, {errors:.0} errors; peak {peak:.0} <= {:.0}",
                        g("burst.throttled"),
                        g("burst.limit")
                    ),
                    met: Some(
                        errors == 0.0
                            && answered >= self.settings.burst_calls as f64
                            && peak <= g("burst.limit"),
                    ),
                });
            }
        }
        if let Some(m) = self.many {
            if let Some(l) = m.lat("many.list") {
                out.push(Target {
                    what: format!(
                        "{:.0} functions: ListFunctions (all pages) < 50 ms",
                        m.get("many.count").unwrap_or(0.0)
                    ),
                    value: fmt_ms(l.p50),
                    met: Some(l.p50 < 50.0),
                });
            }
            for r in self.langs {
                let f = r.median();
                let name = r.lang.name();
                let (key, _) = self.single_cold_key(&f);
                if let (Some(first), Some(single)) = (
                    m.get(&format!("many.first_invoke.{name}.p50")),
                    f.get(&format!("{key}.p50")),
                ) {
                    out.push(Target {
                        what: format!("{name}: first invoke among many at cold-start speed (<= 1.2x, our bar)"),
                        value: format!("{} vs {} = {}", fmt_ms(first), fmt_ms(single), ratio(first, single)),
                        met: Some(first <= 1.2 * single),
                    });
                }
                if let (Some(w), Some(before)) =
                    (m.get(&format!("many.warm.{name}.p50")), f.get("warm.p50"))
                {
                    out.push(Target {
                        what: format!(
                            "{name}: no warm degradation with many deployed (<= 1.1x, our bar)"
                        ),
                        value: format!(
                            "{} vs {} = {}",
                            fmt_ms(w),
                            fmt_ms(before),
                            ratio(w, before)
                        ),
                        met: Some(w <= 1.1 * before),
                    });
                }
            }
        }
        out
    }
}
