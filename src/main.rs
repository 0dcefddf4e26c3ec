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

/// Progress on stderr: an indicatif bar on a terminal, plain log lines otherwise.
struct Bars {
    bar: std::sync::Mutex<Option<ProgressBar>>,
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
        }
    }
    fn step(&self) {
        if let Ok(b) = self.bar.lock() {
            if let Some(pb) = b.as_ref() {
                pb.inc(1);
            }
        }
    }
    fn finish(&self) {
        if let Ok(mut b) = self.bar.lock() {
            if let Some(pb) = b.take() {
                pb.finish_and_clear();
            }
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

fn print_json<T: serde::Serialize>(value: &T) -> Result<()> {
    let s = serde_json::to_string_pretty(value)
        .map_err(|e| PareError::Internal(format!("cannot serialise output: {e}")))?;
    println!("{s}");
    Ok(())
}

fn run(cli: Cli) -> Result<()> {
    if let Some(n) = cli.threads {
        rayon::ThreadPoolBuilder::new()
            .num_threads(n)
            .build_global()
            .map_err(|e| PareError::Usage(format!("--threads {n}: {e}")))?;
    }
    let progress = Bars {
        bar: std::sync::Mutex::new(None),
        quiet: cli.quiet,
    };
    let device = || pare::model::parse_device(&cli.device);
    match cli.command {
        Command::Inspect { dir } => {
            let info = pare::inspect::inspect(&dir)?;
            if cli.json {
                print_json(&info)?
            } else {
                print!("{info}")
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
                print_json(&pare::compress::formats::FORMATS)?
            } else {
                print!("{}", pare::compress::formats::formats_table())
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
            let report = commands::eval::run(&req, &device()?, &progress)?;
            if let Some(dir) = &a.report {
                std::fs::create_dir_all(dir)
                    .map_err(|e| PareError::io(format!("creating {}", dir.display()), e))?;
                pare::report::write_report(dir, &report)?;
            }
            if cli.json {
                print_json(&report)?
            } else {
                print!("{}", report.to_markdown())
            }
        }
        Command::Compress(a) => {
            let req = commands::compress::CompressRequest {
                model: a.model,
                recipe: a.recipe,
                out: a.out,
                force: a.force,
                max_shard_size: a.max_shard_size,
            };
            let done = commands::compress::run(&req, &device()?, &progress)?;
            if cli.json {
                print_json(&done.report)?
            } else {
                print!("{}", done.report.to_markdown());
                println!("\nwrote {}", done.out.display());
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
                print_json(&cmp)?
            } else {
                print!("{}", cmp.to_markdown());
                println!("\nwrote {}", req.out.join("comparison.html").display());
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
                    print_json(&r)?
                } else {
                    println!("model            {}", r.model);
                    println!("tokens           {} x {}", r.sequences, r.seq_len);
                    println!(
                        "forward          {:.3} s, {:.0} tokens/s (block by block, weights streamed)",
                        r.seconds, r.tokens_per_second
                    );
                    println!(
                        "model FLOP/s     {:.2} GFLOP/s ({:.2} MFLOP/token)",
                        r.model_gflops,
                        r.flops_per_token / 1e6
                    );
                    println!(
                        "GEMM FLOP/s      {:.2} GFLOP/s (burn matmul, same run)",
                        r.gemm_gflops
                    );
                    println!("ratio            {:.3}", r.ratio);
                    println!(
                        "peak RSS         {:.1} MiB",
                        r.peak_rss_bytes as f64 / 1048576.0
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
                    print_json(&r)?
                } else {
                    println!("model            {}", r.model);
                    println!("calibration      {} x {}", r.samples, r.seq_len);
                    println!("forward pass     {:.3} s", r.forward_seconds);
                    for row in &r.rows {
                        println!(
                            "{:<40} {:>8.3} s  {:>6.2}x forward  (Cholesky/inverse {:.3} s, {:.1}%)",
                            row.recipe,
                            row.seconds,
                            row.ratio_to_forward,
                            row.cholesky_seconds,
                            row.cholesky_share * 100.0
                        );
                    }
                    println!(
                        "peak RSS         {:.1} MiB",
                        r.peak_rss_bytes as f64 / 1048576.0
                    );
                }
            }
        },
    }
    Ok(())
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    // Logging is opt-in (PARE_LOG=debug …): with any global subscriber installed the `log`
    // records of burn's hot loops are dispatched at run time, which measured 1.5x slower on the
    // whole forward pass. Warnings go through `Bars::warn` instead.
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::from(e.exit_code() as u8)
        }
    }
}
