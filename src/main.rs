//! The `pare` binary: parse the command line, run the library, print results and errors, set the
//! exit code (0 ok, 2 bad input or usage, 1 internal/numerical failure). The only place that prints.
//!
//! There is deliberately no logging framework: warnings go to stderr through [`Bars::warn`].
//! With tracing-subscriber linked in, the whole forward pass measured 1.5x slower (burn-flex's
//! GEMM at 53 instead of 120 GFLOP/s in the same binary, whether or not a subscriber was
//! installed), so it was removed.

use std::io::IsTerminal;
use std::process::ExitCode;

use clap::Parser;
use indicatif::{ProgressBar, ProgressStyle};
use pare::cli::{BenchCommand, Cli, Command};
use pare::commands;
use pare::pipeline::Progress;
use pare::{PareError, Result};

/// Progress on stderr: an indicatif bar on a terminal, plain log lines otherwise (one per step:
/// `compress: 3/8 (12.3 s)`).
struct Bars {
    bar: std::sync::Mutex<Option<ProgressBar>>,
    /// Without a terminal: label, total, steps done, start time.
    plain: std::sync::Mutex<Option<(String, u64, u64, std::time::Instant)>>,
    quiet: bool,
}

impl Progress for Bars {
    fn start(&self, label: &str, total: u64) {
        if self.quiet {
            return;
        }
        if std::io::stderr().is_terminal() {
            let pb = ProgressBar::new(total);
            if let Ok(style) =
                ProgressStyle::with_template("{msg:>12} [{bar:30}] {pos}/{len} {elapsed}")
            {
                pb.set_style(style.progress_chars("=> "));
            }
            pb.set_message(label.to_string());
            if let Ok(mut b) = self.bar.lock() {
                *b = Some(pb);
            }
        } else if let Ok(mut p) = self.plain.lock() {
            *p = Some((label.to_string(), total, 0, std::time::Instant::now()));
        }
    }
    fn step(&self) {
        if let Ok(b) = self.bar.lock() {
            if let Some(pb) = b.as_ref() {
                pb.inc(1);
            }
        }
        if let Ok(mut p) = self.plain.lock()
            && let Some((label, total, done, t0)) = p.as_mut()
        {
            *done += 1;
            eprintln!(
                "{label}: {done}/{total} ({:.1} s)",
                t0.elapsed().as_secs_f64()
            );
        }
    }
    fn finish(&self) {
        if let Ok(mut b) = self.bar.lock() {
            if let Some(pb) = b.take() {
                pb.finish_and_clear();
            }
        }
        if let Ok(mut p) = self.plain.lock() {
            *p = None;
        }
    }
    fn warn(&self, message: &str) {
        if !self.quiet {
            match self.bar.lock().ok().and_then(|b| b.clone()) {
                Some(pb) => pb.println(format!("warning: {message}")),
                None => eprintln!("warning: {message}"),
            }
        }
    }
}

fn json<T: serde::Serialize>(value: &T) -> Result<String> {
    let s = serde_json::to_string_pretty(value)
        .map_err(|e| PareError::Internal(format!("cannot serialise output: {e}")))?;
    Ok(format!("{s}\n"))
}

/// Fails with a usage error (exit 2) when `dir` already holds a report and `force` is off.
fn check_report_dir(dir: &std::path::Path, force: bool) -> Result<()> {
    if force {
        return Ok(());
    }
    for name in ["report.json", "report.md", "report.html"] {
        let p = dir.join(name);
        if p.exists() {
            return Err(PareError::Usage(format!(
                "--report {}: {} exists; use --force to replace it",
                dir.display(),
                p.display()
            )));
        }
    }
    Ok(())
}

/// Runs the command and returns what it prints on stdout.
fn run(cli: Cli) -> Result<String> {
    use std::fmt::Write as _;
    let mut out = String::new();
    if let Some(n) = cli.threads {
        rayon::ThreadPoolBuilder::new()
            .num_threads(n)
            .build_global()
            .map_err(|e| PareError::Usage(format!("--threads {n}: {e}")))?;
    }
    pare::checkpoint::reader::allow_non_finite(cli.allow_non_finite);
    let progress = Bars {
        bar: std::sync::Mutex::new(None),
        plain: std::sync::Mutex::new(None),
        quiet: cli.quiet,
    };
    let device = || pare::model::parse_device(&cli.device);
    match cli.command {
        Command::Inspect {
            dir,
            super_experts: true,
            calib: Some(calib),
            samples,
            seq_len,
            seed,
        } => {
            let runner = pare::pipeline::ModelRunner::open(&dir, &device()?)?;
            let calib = pare::calib::CalibrationSet::from_text(
                &calib,
                &runner.tokenizer,
                samples,
                seq_len,
                seed,
            )?;
            let profile = pare::inspect::super_experts(&runner, &calib, &progress)?;
            out = if cli.json {
                json(&profile)?
            } else {
                pare::inspect::super_experts_text(&profile)
            };
        }
        Command::Inspect { dir, .. } => {
            let info = pare::inspect::inspect(&dir)?;
            if cli.json {
                out = json(&info)?
            } else {
                out = info.to_string()
            }
            if info.non_finite > 0 && !cli.quiet {
                eprintln!(
                    "warning: {} NaN/Inf values in the weights of {}",
                    info.non_finite,
                    dir.display()
                );
            }
        }
        Command::Formats => {
            if cli.json {
                out = json(&serde_json::json!({
                    "formats": pare::compress::formats::FORMATS,
                    "exports": pare::compress::formats::EXPORTS,
                }))?
            } else {
                out = pare::compress::formats::formats_table()
            }
        }
        Command::Gradients(a) => {
            pare::interrupt::install();
            let req = commands::gradients::GradientsRequest {
                model: a.model,
                recipe: a.recipe,
                out: a.out,
                alpha: a.alpha,
                force: a.force,
                samples: a.samples,
                seq_len: a.seq_len,
            };
            let r = commands::gradients::run(&req, &device()?, &progress)?;
            if cli.json {
                out = json(&r)?
            } else if cli.quiet {
                let _ = writeln!(out, "{}", r.file.display());
            } else {
                let _ = writeln!(
                    out,
                    "gradients of {} sequences x {} tokens (alpha {}, mean loss {:.4}) in {:.1} s\n{}",
                    r.sequences,
                    r.seq_len,
                    r.alpha,
                    r.mean_loss,
                    r.seconds,
                    r.file.display()
                );
                for n in &r.notes {
                    let _ = writeln!(out, "note: {n}");
                }
            }
        }
        Command::Export(a) => {
            pare::interrupt::install();
            let r = commands::export::run(&a.model, &a.to, &a.ty, a.out.as_deref(), a.force)?;
            if cli.json {
                out = json(&r)?
            } else if cli.quiet {
                let _ = writeln!(out, "{}", r.file);
            } else {
                out = commands::export::summary(&r);
            }
        }
        Command::Eval(a) => {
            let req = commands::eval::EvalRequest {
                model: a.model,
                base: a.base,
                text: a.text,
                seq_len: a.seq_len,
                max_windows: a.max_windows,
                tasks: a.tasks,
            };
            if let Some(dir) = &a.report {
                check_report_dir(dir, a.force)?;
            }
            let report = commands::eval::run(&req, &device()?, &progress)?;
            if let Some(dir) = &a.report {
                std::fs::create_dir_all(dir)
                    .map_err(|e| PareError::io(format!("creating {}", dir.display()), e))?;
                pare::report::write_report(dir, &report)?;
            }
            match (&a.report, cli.json, cli.quiet) {
                (_, true, _) => out = json(&report)?,
                // The report was written: say only where.
                (Some(dir), false, true) => {
                    let _ = writeln!(out, "{}", dir.display());
                }
                _ => out = report.to_markdown(),
            }
        }
        Command::Compress(a) if a.explain => {
            let runner = pare::pipeline::ModelRunner::open(&a.model, &device()?)?;
            let (plan, _) = commands::compress::plan_for(&runner, &a.recipe)?;
            out = format!(
                "# pare recipe equivalent to {}\n{}",
                a.recipe.display(),
                pare::recipe::to_yaml(&plan.recipe)?
            );
        }
        Command::Compress(a) => {
            pare::interrupt::install();
            let req = commands::compress::CompressRequest {
                model: a.model,
                recipe: a.recipe,
                out: a.out,
                force: a.force,
                max_shard_size: a.max_shard_size,
                resume: a.resume,
            };
            let done = commands::compress::run(&req, &device()?, &progress)?;
            if cli.json {
                out = json(&done.report)?
            } else if cli.quiet {
                // The report is in the output folder; say only where.
                let _ = writeln!(out, "{}", done.out.display());
            } else {
                out = done.report.to_markdown();
                let _ = writeln!(out, "\nwrote {}", done.out.display());
            }
        }
        Command::Compare(a) => {
            let req = commands::compare::CompareRequest {
                model: a.model,
                recipes: a.recipes,
                out: a.out,
                text: a.text,
                tasks: a.tasks,
                force: a.force,
            };
            let cmp = commands::compare::run(&req, &device()?, &progress)?;
            if cli.json {
                out = json(&cmp)?
            } else if cli.quiet {
                let _ = writeln!(out, "{}", req.out.join("comparison.html").display());
            } else {
                out = cmp.to_markdown();
                let _ = writeln!(out, "\nwrote {}", req.out.join("comparison.html").display());
            }
        }
        Command::Bench { which } => match which {
            BenchCommand::Forward {
                model,
                seq_len,
                sequences,
            } => {
                let r = commands::bench::forward(&model, seq_len, sequences, &device()?)?;
                if cli.json {
                    out = json(&r)?
                } else {
                    let _ = writeln!(out, "model            {}", r.model);
                    let _ = writeln!(out, "tokens           {} x {}", r.sequences, r.seq_len);
                    let _ = writeln!(
                        out,
                        "forward          {:.3} s, {:.0} tokens/s (block by block, weights streamed)",
                        r.seconds, r.tokens_per_second
                    );
                    let _ = writeln!(
                        out,
                        "model FLOP/s     {:.2} GFLOP/s ({:.2} MFLOP/token)",
                        r.model_gflops,
                        r.flops_per_token / 1e6
                    );
                    let _ = writeln!(
                        out,
                        "GEMM FLOP/s      {:.2} GFLOP/s (pare's GEMM, same run; burn's matmul {:.2})",
                        r.gemm_gflops, r.burn_gemm_gflops
                    );
                    let _ = writeln!(out, "ratio            {:.3}", r.ratio);
                    let _ = writeln!(
                        out,
                        "peak RSS         {:.1} MiB",
                        r.peak_rss_bytes as f64 / 1048576.0
                    );
                }
            }
            BenchCommand::Gradients {
                model,
                recipe,
                samples,
                seq_len,
            } => {
                let r = commands::gradients::bench(
                    &model,
                    &recipe,
                    samples,
                    seq_len,
                    &device()?,
                    &progress,
                )?;
                if cli.json {
                    out = json(&r)?
                } else {
                    let _ = writeln!(out, "model            {}", r.model);
                    let _ = writeln!(out, "calibration      {} x {}", r.samples, r.seq_len);
                    let _ = writeln!(out, "forward          {:.3} s", r.forward_seconds);
                    let _ = writeln!(
                        out,
                        "gradient pass    {:.3} s = {:.2}x the forward (mean loss {:.4})",
                        r.gradient_seconds, r.ratio_to_forward, r.mean_loss
                    );
                    let _ = writeln!(
                        out,
                        "peak RSS         {:.1} MiB",
                        r.peak_rss_bytes as f64 / 1048576.0
                    );
                }
            }
            BenchCommand::Ilp {
                experts,
                budget_bits,
                instances,
            } => {
                let r = commands::bench::ilp(experts, budget_bits, instances)?;
                if cli.json {
                    out = json(&r)?
                } else {
                    let _ = writeln!(
                        out,
                        "{} experts, widths 2/3/4, {} average bits, {} instances",
                        r.experts, r.budget_bits, r.instances
                    );
                    let _ = writeln!(
                        out,
                        "good_lp + microlp (with the exact check)  mean {:.4} s  max {:.4} s  (microlp optimal in {}/{})",
                        r.microlp_mean_seconds,
                        r.microlp_max_seconds,
                        r.microlp_optimal,
                        r.instances
                    );
                    let _ = writeln!(
                        out,
                        "exact DP alone                           mean {:.4} s",
                        r.exact_mean_seconds
                    );
                }
            }
            BenchCommand::Compress {
                model,
                recipes,
                samples,
                seq_len,
            } => {
                let r = commands::bench::compress(
                    &model,
                    &recipes,
                    samples,
                    seq_len,
                    &device()?,
                    &progress,
                )?;
                if cli.json {
                    out = json(&r)?
                } else {
                    let _ = writeln!(out, "model            {}", r.model);
                    let _ = writeln!(out, "calibration      {} x {}", r.samples, r.seq_len);
                    let _ = writeln!(out, "forward pass     {:.3} s", r.forward_seconds);
                    for row in &r.rows {
                        let _ = writeln!(
                            out,
                            "{:<40} {:>8.3} s  {:>6.2}x forward  (Cholesky/inverse {:.3} s, {:.1}%)",
                            row.recipe,
                            row.seconds,
                            row.ratio_to_forward,
                            row.cholesky_seconds,
                            row.cholesky_share * 100.0
                        );
                    }
                    let _ = writeln!(
                        out,
                        "peak RSS         {:.1} MiB",
                        r.peak_rss_bytes as f64 / 1048576.0
                    );
                }
            }
        },
    }
    Ok(out)
}

fn main() -> ExitCode {
    pare::mem::reuse_freed_memory();
    let cli = Cli::parse();
    // Logging is opt-in (PARE_LOG=debug …): with any global subscriber installed the `log`
    // records of burn's hot loops are dispatched at run time, which measured 1.5x slower on the
    // whole forward pass. Warnings go through `Bars::warn` instead.
    match run(cli) {
        Ok(text) => {
            // A closed stdout (`pare inspect … | head`) ends the program quietly: the reader
            // has what it wanted.
            use std::io::Write as _;
            let mut stdout = std::io::stdout().lock();
            match stdout
                .write_all(text.as_bytes())
                .and_then(|()| stdout.flush())
            {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("error: writing to stdout: {e}");
                    ExitCode::from(2)
                }
            }
        }
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::from(e.exit_code() as u8)
        }
    }
}
