//! `execnet rsync`: send a directory tree to every gateway (execnet::RSync), with a
//! progress bar on a terminal and a summary line per host.

use std::io::{IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{Duration, Instant};

use clap::Args;
use execnet::{Error, Gateway, Group, Progress, RSync, TargetOptions, TargetReport};
use globset::{GlobSet, GlobSetBuilder};
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

use crate::SpecArgs;

#[derive(Args)]
pub(crate) struct RsyncArgs {
    /// The directory whose contents are sent.
    #[arg(value_name = "SRC")]
    pub(crate) source: PathBuf,
    #[command(flatten)]
    pub(crate) specs: SpecArgs,
    /// Where the contents go on each host (relative: to the worker's current directory);
    /// default: the same absolute path as SRC.
    #[arg(long, value_name = "DIR")]
    pub(crate) dest: Option<String>,
    /// Remove what DEST holds beyond the source tree.
    #[arg(long)]
    pub(crate) delete: bool,
    /// Leave out paths matching GLOB (repeatable). Without a `/`, it matches a file or
    /// directory name at any depth (`--exclude '*.pyc' --exclude .git`); with one, the path
    /// from SRC (`--exclude build/tmp`). A directory left out is left out with all it holds.
    #[arg(long, value_name = "GLOB")]
    pub(crate) exclude: Vec<String>,
    /// Give up on a gateway that has not started within this many seconds.
    #[arg(long, value_name = "SECONDS", default_value = "60", value_parser = crate::hosts::parse_seconds)]
    pub(crate) connect_timeout: f64,
    /// No progress bar, even on a terminal.
    #[arg(long)]
    pub(crate) no_progress: bool,
}

/// The `--exclude` patterns, split by what they are matched against.
struct Excludes {
    names: GlobSet,
    paths: GlobSet,
}

impl Excludes {
    fn new(patterns: &[String]) -> Result<Excludes, String> {
        let (mut names, mut paths) = (GlobSetBuilder::new(), GlobSetBuilder::new());
        for pattern in patterns {
            let trimmed = pattern.trim_matches('/');
            if trimmed.is_empty() {
                return Err(format!("execnet: --exclude {pattern:?} matches nothing: give a name or a glob"));
            }
            let glob = globset::GlobBuilder::new(trimmed)
                .literal_separator(true)
                .build()
                .map_err(|e| format!("execnet: --exclude {pattern:?}: {e}"))?;
            if trimmed.contains('/') {
                paths.add(glob);
            } else {
                names.add(glob);
            }
        }
        let build = |b: GlobSetBuilder| b.build().map_err(|e| format!("execnet: --exclude: {e}"));
        Ok(Excludes { names: build(names)?, paths: build(paths)? })
    }

    /// Whether `path` (under `root`) is left out.
    fn excludes(&self, root: &Path, path: &Path) -> bool {
        let name_hit = path.file_name().is_some_and(|n| self.names.is_match(Path::new(n)));
        name_hit || path.strip_prefix(root).is_ok_and(|rel| self.paths.is_match(rel))
    }
}

/// How one host ended.
enum Outcome {
    Synced(TargetReport),
    Unreachable(String),
    RemoteError(String),
    Failed(String),
}

pub(crate) fn rsync(args: RsyncArgs) -> ExitCode {
    let started = Instant::now();
    let excludes = match Excludes::new(&args.exclude) {
        Ok(e) => e,
        Err(msg) => return usage(&msg),
    };
    match std::fs::metadata(&args.source) {
        Ok(m) if m.is_dir() => {}
        Ok(_) => return usage(&format!("execnet: {} is not a directory", args.source.display())),
        Err(e) => return usage(&format!("execnet: cannot read {}: {e}", args.source.display())),
    }
    let dest = match &args.dest {
        Some(dest) => dest.clone(),
        None => match std::path::absolute(&args.source) {
            Ok(p) => p.to_string_lossy().into_owned(),
            Err(e) => return usage(&format!("execnet: {}: {e}", args.source.display())),
        },
    };
    let (hosts, warnings) = match crate::hosts::plan(&args.specs.specs, &args.specs.hosts) {
        Ok(plan) => plan,
        Err(msg) => return usage(&msg),
    };
    for w in &warnings {
        eprintln!("execnet: warning: {w}");
    }
    // Every gateway starts at once; those that cannot are reported, the others synced.
    let group = Group::new();
    let made: Vec<Result<Gateway, String>> = hosts
        .iter()
        .map(|host| group.makegateway(host.full_spec.as_str()).map_err(|e| crate::run::reason_of(&e)))
        .collect();
    let timeout = Duration::from_secs_f64(args.connect_timeout);
    let ready: Vec<Result<Gateway, String>> = std::thread::scope(|s| {
        let waits: Vec<_> = made
            .into_iter()
            .map(|gw| {
                s.spawn(move || {
                    let gw = gw?;
                    gw.wait_ready(timeout).map_err(|e| crate::run::reason_of(&e))?;
                    Ok(gw)
                })
            })
            .collect();
        waits.into_iter().map(|w| w.join().expect("wait thread")).collect()
    });

    let root = args.source.clone();
    let mut sync = RSync::new(&args.source);
    if !args.exclude.is_empty() {
        sync.filter(move |path| !excludes.excludes(&root, path));
    }
    let options = TargetOptions { delete: args.delete };
    let mut served: Vec<usize> = Vec::new();
    for (i, gw) in ready.iter().enumerate() {
        if let Ok(gw) = gw {
            sync.add_target_with(gw, dest.clone(), options);
            served.push(i);
        }
    }
    let bar = progress_bar(!args.no_progress && std::io::stderr().is_terminal());
    let mut outcomes: Vec<Outcome> = ready
        .iter()
        .map(|r| match r {
            Ok(_) => Outcome::Failed("not synced".into()),
            Err(reason) => Outcome::Unreachable(reason.clone()),
        })
        .collect();
    if !served.is_empty() {
        let results = sync.send_each(&|step| match step {
            Progress::Needs { bytes, .. } => bar.inc_length(bytes),
            Progress::Sent { bytes, path, .. } => {
                bar.inc(bytes);
                bar.set_message(path.to_string());
            }
            Progress::Finished { .. } => {}
        });
        match results {
            Ok(results) => {
                for (i, result) in served.iter().zip(results) {
                    outcomes[*i] = match result {
                        Ok(report) => Outcome::Synced(report),
                        Err(Error::Remote { traceback }) => Outcome::RemoteError(crate::run::last_line(&traceback)),
                        Err(e) => Outcome::Failed(crate::run::reason_of(&e)),
                    };
                }
            }
            Err(e) => {
                bar.finish_and_clear();
                return usage(&format!("execnet: {e}"));
            }
        }
    }
    bar.finish_and_clear();
    group.terminate(Duration::from_secs(5));
    print_summary(&hosts, &outcomes, &dest, started.elapsed());
    if outcomes.iter().any(|o| matches!(o, Outcome::Unreachable(_) | Outcome::Failed(_))) {
        ExitCode::from(2)
    } else if outcomes.iter().any(|o| matches!(o, Outcome::RemoteError(_))) {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    }
}

fn usage(msg: &str) -> ExitCode {
    eprintln!("{msg}");
    ExitCode::from(2)
}

fn progress_bar(visible: bool) -> ProgressBar {
    if !visible {
        return ProgressBar::hidden();
    }
    let bar = ProgressBar::with_draw_target(Some(0), ProgressDrawTarget::stderr());
    let style = ProgressStyle::with_template("{bar:30} {bytes}/{total_bytes} {bytes_per_sec} {wide_msg}")
        .unwrap_or_else(|_| ProgressStyle::default_bar());
    bar.set_style(style);
    bar.enable_steady_tick(Duration::from_millis(200));
    bar
}

/// `12.3 MB`.
fn human_bytes(n: u64) -> String {
    indicatif::DecimalBytes(n).to_string()
}

fn print_summary(hosts: &[crate::hosts::Host], outcomes: &[Outcome], dest: &str, total: Duration) {
    let mut counts: Vec<(&str, usize)> = Vec::new();
    let rows: Vec<(String, String, &str, String, String)> = hosts
        .iter()
        .zip(outcomes)
        .map(|(host, outcome)| {
            let (label, seconds, detail) = match outcome {
                Outcome::Synced(r) => {
                    let unchanged = r.files_listed.saturating_sub(r.files_sent + r.files_vanished);
                    let mut detail = format!(
                        "{} of {} files sent ({}), {unchanged} unchanged",
                        r.files_sent,
                        r.files_listed,
                        human_bytes(r.bytes_sent)
                    );
                    if r.files_vanished > 0 {
                        detail.push_str(&format!(", {} vanished while sending", r.files_vanished));
                    }
                    ("ok", format!("{:.2}s", r.elapsed.as_secs_f64()), detail)
                }
                Outcome::Unreachable(why) => ("unreachable", String::new(), why.clone()),
                Outcome::RemoteError(why) => ("remote error", String::new(), why.clone()),
                Outcome::Failed(why) => ("failed", String::new(), why.clone()),
            };
            match counts.iter_mut().find(|(l, _)| *l == label) {
                Some((_, n)) => *n += 1,
                None => counts.push((label, 1)),
            }
            (host.id.clone(), host.spec.clone(), label, seconds, detail)
        })
        .collect();
    let counts: Vec<String> = counts.iter().map(|(l, n)| format!("{n} {l}")).collect();
    let plural = if rows.len() == 1 { "" } else { "s" };
    let mut err = std::io::stderr().lock();
    let _ = writeln!(
        err,
        "execnet: rsync to {dest} on {} gateway{plural} in {:.2}s: {}",
        rows.len(),
        total.as_secs_f64(),
        counts.join(", ")
    );
    let w = |f: fn(&(String, String, &str, String, String)) -> usize| rows.iter().map(f).max().unwrap_or(0);
    let (id_w, spec_w, label_w, secs_w) =
        (w(|r| r.0.chars().count()), w(|r| r.1.chars().count()), w(|r| r.2.len()), w(|r| r.3.len()));
    for (id, spec, label, seconds, detail) in &rows {
        let line = format!("  {id:<id_w$}  {spec:<spec_w$}  {label:<label_w$}  {seconds:>secs_w$}  {detail}");
        let _ = writeln!(err, "{}", line.trim_end());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn excludes_match_names_anywhere_and_paths_from_the_root() {
        let ex = Excludes::new(&["*.pyc".into(), ".git".into(), "build/tmp".into()]).unwrap();
        let root = Path::new("/src");
        assert!(ex.excludes(root, Path::new("/src/a/b/x.pyc")));
        assert!(ex.excludes(root, Path::new("/src/.git")));
        assert!(ex.excludes(root, Path::new("/src/sub/.git")));
        assert!(ex.excludes(root, Path::new("/src/build/tmp")));
        assert!(!ex.excludes(root, Path::new("/src/sub/build/tmp")), "a path glob is anchored at SRC");
        assert!(!ex.excludes(root, Path::new("/src/a/x.py")));
        assert!(!ex.excludes(root, Path::new("/src/dir.pyc/../x")), "only the last name is matched");
        assert!(Excludes::new(&["/".into()]).is_err());
        assert!(Excludes::new(&["a[".into()]).is_err());
    }
}
