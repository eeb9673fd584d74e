//! `--only layers`: what a layer costs a cold start. The hello function is deployed with
//! and without a 20 MB dependency layer (stem cells on) and cold-started once per sample
//! (a new function each time); the report gives, per language, the median over runs of
//! each run's median cold start, and their ratio. The layer is published once per
//! language; its merged `/opt` tree is built by the first deploy that uses it.

use crate::client;
use crate::lang::{zip_files, Lang};
use crate::scenarios::SETTLE;
use crate::targets::Nimbus;
use anyhow::{Context, Result};
use serde_json::{json, Value};
use std::time::Duration;

/// Bytes of the dependency layer, unzipped.
pub const LAYER_BYTES: usize = 20 << 20;
const FILES: usize = 200;

/// The dependency layer of `lang`: `FILES` modules of generated data under the layer's
/// package directory (`python/benchdep/` or `nodejs/node_modules/benchdep/`).
fn layer_zip(lang: Lang) -> Result<Vec<u8>> {
    let base = match lang {
        Lang::Python => "python/benchdep",
        Lang::Node => "nodejs/node_modules/benchdep",
    };
    let per = LAYER_BYTES / FILES;
    let mut seed: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut files = Vec::with_capacity(FILES + 1);
    for i in 0..FILES {
        let mut data = String::with_capacity(per);
        while data.len() < per {
            // xorshift: incompressible enough that the zip is not a toy.
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            data.push_str(&format!("{seed:016x}"));
        }
        let name = match lang {
            Lang::Python => format!("{base}/data_{i}.py"),
            Lang::Node => format!("{base}/data_{i}.js"),
        };
        files.push((name, format!("# {data}\n")));
    }
    let init = match lang {
        Lang::Python => (format!("{base}/__init__.py"), "VALUE = 1\n".to_string()),
        Lang::Node => (
            format!("{base}/index.js"),
            "exports.value = 1;\n".to_string(),
        ),
    };
    files.push(init);
    zip_files(&files)
}

/// One language's figures: the run medians with and without the layer (ms).
pub struct LayerFigs {
    pub lang: Lang,
    pub with_layer: Vec<f64>,
    pub without: Vec<f64>,
}

fn median(v: &[f64]) -> f64 {
    let mut s = v.to_vec();
    s.sort_by(|a, b| a.total_cmp(b));
    match s.len() {
        0 => f64::NAN,
        n if n % 2 == 1 => s[n / 2],
        n => (s[n / 2 - 1] + s[n / 2]) / 2.0,
    }
}

impl LayerFigs {
    pub fn to_json(&self) -> Value {
        let (w, wo) = (median(&self.with_layer), median(&self.without));
        json!({
            "lang": self.lang.name(),
            "cold_with_layer_ms": w,
            "cold_without_ms": wo,
            "ratio": w / wo,
            "runs_with_layer_ms": self.with_layer,
            "runs_without_ms": self.without,
        })
    }

    pub fn line(&self) -> String {
        let (w, wo) = (median(&self.with_layer), median(&self.without));
        format!(
            "{:<8} cold start without a layer {wo:>8.1} ms   with a 20 MB layer {w:>8.1} ms   ratio {:.2}\n",
            self.lang.name(),
            w / wo
        )
    }
}

/// Cold starts of the hello function with `config` (a new function per sample), their
/// median in ms.
async fn cold(server: &Nimbus, lang: Lang, config: &Value, tag: &str, n: u32) -> Result<f64> {
    let zip = lang.code_zip()?;
    let mut samples: Vec<Duration> = Vec::new();
    for _ in 0..n {
        static SEQ: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
        let seq = SEQ.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let name = format!("layers-{tag}-{}-{seq}", lang.name());
        server.deploy_config(&name, config.clone(), &zip).await?;
        tokio::time::sleep(SETTLE).await;
        server.wait_for_stem(lang.runtime()).await?;
        samples.push(client::one_shot(server.addr, &format!("/fn/{name}/")).await?);
        server.delete(&name).await?;
    }
    let ms: Vec<f64> = samples.iter().map(|d| d.as_secs_f64() * 1000.0).collect();
    Ok(median(&ms))
}

/// Runs the scenario: `runs` runs of `samples` cold starts each, with and without the
/// layer, alternating so drift affects both alike.
pub async fn bench(
    server: &Nimbus,
    langs: &[Lang],
    runs: u32,
    samples: u32,
) -> Result<Vec<LayerFigs>> {
    let mut out = Vec::new();
    for &lang in langs {
        let layer = server
            .publish_layer(
                &format!("bench-dep-{}", lang.name()),
                lang.runtime(),
                &layer_zip(lang)?,
            )
            .await
            .context("publishing the dependency layer")?;
        let arn = layer["LayerVersionArn"]
            .as_str()
            .context("no LayerVersionArn in the PublishLayerVersion reply")?
            .to_string();
        let base = crate::targets::hello_config(lang, 1);
        let mut with = base.clone();
        with["layers"] = json!([{ "arn": arn }]);
        let mut figs = LayerFigs {
            lang,
            with_layer: Vec::new(),
            without: Vec::new(),
        };
        for run in 0..runs {
            figs.without
                .push(cold(server, lang, &base, "plain", samples).await?);
            figs.with_layer
                .push(cold(server, lang, &with, "layer", samples).await?);
            eprintln!(
                "{}: run {}/{runs}: without {:.1} ms, with a 20 MB layer {:.1} ms",
                lang.name(),
                run + 1,
                figs.without.last().unwrap_or(&f64::NAN),
                figs.with_layer.last().unwrap_or(&f64::NAN)
            );
        }
        out.push(figs);
    }
    Ok(out)
}
