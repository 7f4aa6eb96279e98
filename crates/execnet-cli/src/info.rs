//! `execnet info`: a table of what runs behind each gateway.

use std::io::Write;
use std::process::ExitCode;

use execnet::Group;

use crate::{start_gateways, SpecArgs};

pub(crate) fn info(args: SpecArgs) -> ExitCode {
    let (hosts, warnings) = match crate::hosts::plan(&args.specs, &args.hosts) {
        Ok(plan) => plan,
        Err(msg) => {
            eprintln!("{msg}");
            return ExitCode::from(2);
        }
    };
    for w in &warnings {
        eprintln!("execnet: warning: {w}");
    }
    let group = Group::new();
    let gateways = match start_gateways(&group, &hosts) {
        Ok(g) => g,
        Err(msg) => {
            eprintln!("{msg}");
            return ExitCode::from(2);
        }
    };
    let results: Vec<_> = std::thread::scope(|s| {
        let handles: Vec<_> = gateways.iter().map(|gw| s.spawn(move || gw.rinfo())).collect();
        handles.into_iter().map(|h| h.join().expect("rinfo thread")).collect()
    });
    let mut rows = vec![["ID", "SPEC", "PYTHON", "VERSION", "PLATFORM", "PID", "CWD"].map(String::from)];
    let mut failed = false;
    for (gw, result) in gateways.iter().zip(results) {
        match result {
            Ok(ri) => {
                let (maj, min, mic, level, serial) = &ri.version_info;
                let version = if level == "final" {
                    format!("{maj}.{min}.{mic}")
                } else {
                    format!("{maj}.{min}.{mic}{level}{serial}")
                };
                rows.push([
                    gw.id().to_string(),
                    gw.spec().to_string(),
                    ri.executable,
                    version,
                    ri.platform,
                    ri.pid.to_string(),
                    ri.cwd,
                ]);
            }
            Err(e) => {
                failed = true;
                eprintln!("execnet: {}: {e}", gw.id());
            }
        }
    }
    let widths: Vec<usize> =
        (0..7).map(|c| rows.iter().map(|r| r[c].chars().count()).max().unwrap_or(0)).collect();
    let mut out = std::io::stdout().lock();
    for row in &rows {
        let line: Vec<String> =
            row.iter().zip(&widths).map(|(cell, w)| format!("{cell:<w$}")).collect();
        let _ = writeln!(out, "{}", line.join("  ").trim_end());
    }
    if failed {
        ExitCode::from(2)
    } else {
        ExitCode::SUCCESS
    }
}
