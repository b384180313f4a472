//! Calibration of a million pretest responses (issue 16): time and peak memory of
//! `irt::calibrate` by each method, with the candidates streamed anew on every pass as the
//! server streams them from Postgres (nothing per candidate is kept between passes).
//!
//! `cargo bench --bench calibrate` prints, per method: seconds, EM cycles, seconds per
//! pass, and the process's peak resident memory (`VmHWM`) after the run. 250,000
//! candidates, each with 20 operational 2PL responses (their log-likelihood on the 61-node
//! grid recomputed on every pass) and 4 responses to 40 pretest items (25,000 per item).

use std::time::Instant;

use adaptive_engine::irt::{
    CalibrationMethod, CalibrationModel, CalibrationSettings, Examinee, ItemParams, calibrate,
    probability,
};
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use rand_distr::{Distribution, Normal, Uniform};

const CANDIDATES: usize = 250_000;
const OPERATIONAL: usize = 20;
const PRETEST_ITEMS: usize = 40;
const PER_CANDIDATE: usize = 4;

fn items(rng: &mut SmallRng, n: usize) -> Vec<ItemParams> {
    let a = Uniform::new(0.8, 2.0).expect("range");
    let b = Normal::new(0.0, 1.0).expect("normal");
    (0..n)
        .map(|_| ItemParams::two_pl(a.sample(rng), b.sample(rng)))
        .collect()
}

fn peak_rss_mb() -> f64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmHWM:"))
                .and_then(|l| l.split_whitespace().nth(1)?.parse::<f64>().ok())
        })
        .map_or(f64::NAN, |kb| kb / 1024.0)
}

fn main() {
    let mut rng = SmallRng::seed_from_u64(7);
    let bank = items(&mut rng, 300);
    let pretest = items(&mut rng, PRETEST_ITEMS);
    let ability = Normal::new(0.0, 1.0).expect("normal");
    let grid: Vec<f64> =
        CalibrationSettings::new(CalibrationMethod::Mem, CalibrationModel::TwoPl, 1.0)
            .ability
            .nodes()
            .collect();
    println!(
        "{CANDIDATES} candidates x {PER_CANDIDATE} pretest responses = {} responses to {PRETEST_ITEMS} items; {OPERATIONAL} operational responses each",
        CANDIDATES * PER_CANDIDATE
    );
    for method in [
        CalibrationMethod::FixedTheta,
        CalibrationMethod::Oem,
        CalibrationMethod::Mem,
    ] {
        let settings = CalibrationSettings::new(method, CalibrationModel::TwoPl, 1.0);
        let mut passes = 0;
        let started = Instant::now();
        let result = calibrate(PRETEST_ITEMS, &settings, |visit| {
            passes += 1;
            // The same candidates on every pass, regenerated as a database stream would be.
            let mut rng = SmallRng::seed_from_u64(11);
            let mut log_likelihood = vec![0.0; grid.len()];
            let mut responses = Vec::with_capacity(PER_CANDIDATE);
            for e in 0..CANDIDATES {
                let theta: f64 = ability.sample(&mut rng);
                log_likelihood.fill(0.0);
                for _ in 0..OPERATIONAL {
                    let item = &bank[rng.random_range(0..bank.len())];
                    let correct = rng.random::<f64>() < probability(item, theta, 1.0);
                    for (l, &t) in log_likelihood.iter_mut().zip(&grid) {
                        let p = probability(item, t, 1.0);
                        *l += if correct { p.ln() } else { (1.0 - p).ln() };
                    }
                }
                responses.clear();
                for k in 0..PER_CANDIDATE {
                    let item = (e * PER_CANDIDATE + k) % PRETEST_ITEMS;
                    let p = probability(&pretest[item], theta, 1.0);
                    responses.push((item, rng.random::<f64>() < p));
                }
                visit(&Examinee {
                    operational: &log_likelihood,
                    pretest: &responses,
                });
            }
            Ok::<(), ()>(())
        })
        .expect("the source does not fail");
        let seconds = started.elapsed().as_secs_f64();
        let rmse_b = (result
            .items
            .iter()
            .zip(&pretest)
            .map(|(got, truth)| (got.expect("answered").params.b - truth.b).powi(2))
            .sum::<f64>()
            / PRETEST_ITEMS as f64)
            .sqrt();
        println!(
            "{method:?}: {seconds:.2} s, {} cycles, {passes} passes ({:.2} s per pass), RMSE b {rmse_b:.4}, peak RSS {:.1} MB",
            result.cycles,
            seconds / f64::from(passes),
            peak_rss_mb()
        );
    }
}
