//! Which gateways to start: `-x SPEC` (with xdist's `N*SPEC`), `--hosts FILE`, their ids.
//!
//! Everything is checked before anything starts, so that a typo is a usage error (exit
//! status 2) and not a failure on host 37 of 40: specs must parse, numbers in them must
//! be numbers, ids must be unique, and `via=ID` must name a gateway listed earlier.
//! Unknown keys are warned about (with a did-you-mean) but kept.

use std::collections::HashSet;
use std::path::Path;

use execnet::XSpec;

/// The most gateways one `N*SPEC` may ask for.
const MAX_REPEAT: usize = 10_000;

/// One gateway to start.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Host {
    /// The gateway id: the spec's `id=`, or `gwN` in list order (skipping ids taken).
    pub(crate) id: String,
    /// The spec as the user wrote it (expanded from `N*SPEC` or a hosts-file line).
    pub(crate) spec: String,
    /// The spec with `id=` set: what is started.
    pub(crate) full_spec: String,
    /// The gateway this one is started through (`via=ID`), by index in the plan.
    pub(crate) via: Option<usize>,
    /// Other gateways are started through this one: keep it until the end.
    pub(crate) keep: bool,
}

/// The specs of `-x` (each possibly `N*SPEC`), then those of the hosts files, in order;
/// `popen` when there are none.
pub(crate) fn plan(specs: &[String], hosts_files: &[std::path::PathBuf]) -> Result<(Vec<Host>, Vec<String>), String> {
    let mut raw: Vec<String> = Vec::new();
    for spec in specs {
        raw.extend(expand(spec, "-x")?);
    }
    for file in hosts_files {
        for (lineno, spec) in read_hosts_file(file)? {
            raw.extend(expand(&spec, &format!("{}:{lineno}", file.display()))?);
        }
    }
    if raw.is_empty() {
        if !hosts_files.is_empty() {
            return Err("execnet: the hosts file lists no hosts".into());
        }
        raw.push("popen".into());
    }
    let mut parsed = Vec::with_capacity(raw.len());
    let mut warnings = Vec::new();
    let mut seen_warning_specs = HashSet::new();
    for spec in &raw {
        let xspec = check_spec(spec)?;
        if seen_warning_specs.insert(spec.clone()) {
            warnings.extend(xspec.warnings());
        }
        parsed.push(xspec);
    }
    let explicit: Vec<Option<String>> = parsed.iter().map(|s| s.id().map(str::to_string)).collect();
    let mut taken: HashSet<&str> = HashSet::new();
    for id in explicit.iter().flatten() {
        if !taken.insert(id) {
            return Err(format!("execnet: two gateways have the id {id:?}: ids must be unique"));
        }
    }
    let mut next = 0usize;
    let mut hosts: Vec<Host> = Vec::with_capacity(raw.len());
    for ((spec, xspec), id) in raw.iter().zip(&parsed).zip(&explicit) {
        let id = match id {
            Some(id) => id.clone(),
            None => loop {
                let candidate = format!("gw{next}");
                next += 1;
                if !taken.contains(candidate.as_str()) {
                    break candidate;
                }
            },
        };
        let full_spec = if xspec.id().is_some() { spec.clone() } else { format!("{spec}//id={id}") };
        hosts.push(Host { id, spec: spec.clone(), full_spec, via: None, keep: false });
    }
    for (i, xspec) in parsed.iter().enumerate() {
        let Some(target) = xspec.via() else { continue };
        match hosts.iter().position(|h| h.id == target) {
            Some(t) if t < i => {
                hosts[i].via = Some(t);
                hosts[t].keep = true;
            }
            Some(_) => {
                return Err(format!(
                    "execnet: {:?}: via={target} must name a gateway listed before it",
                    hosts[i].spec
                ))
            }
            None => {
                return Err(format!(
                    "execnet: {:?}: via={target}: no gateway of this run has that id",
                    hosts[i].spec
                ))
            }
        }
    }
    Ok((hosts, warnings))
}

/// `N*SPEC` as N copies of SPEC; anything else as itself.
fn expand(spec: &str, origin: &str) -> Result<Vec<String>, String> {
    let Some((count, rest)) = spec.split_once('*') else {
        return Ok(vec![spec.to_string()]);
    };
    if count.is_empty() || !count.bytes().all(|b| b.is_ascii_digit()) {
        return Ok(vec![spec.to_string()]); // a '*' inside a value, say
    }
    let n: usize = count.parse().unwrap_or(usize::MAX);
    if n == 0 || n > MAX_REPEAT {
        return Err(format!(
            "execnet: {origin}: {spec:?}: the count in N*SPEC must be between 1 and {MAX_REPEAT}"
        ));
    }
    if n > 1 && XSpec::new(rest).ok().and_then(|s| s.id().map(str::to_string)).is_some() {
        return Err(format!("execnet: {origin}: {spec:?}: {n} gateways cannot share one id="));
    }
    Ok(vec![rest.to_string(); n])
}

/// Parses and checks a spec: its syntax, its transport and the numbers in it.
fn check_spec(spec: &str) -> Result<XSpec, String> {
    let fail = |e: execnet::Error| format!("execnet: {e}");
    let xspec = XSpec::new(spec).map_err(fail)?;
    xspec.transport().map_err(fail)?;
    xspec.nice().map_err(fail)?;
    xspec.queue_limit().map_err(fail)?;
    xspec.max_message().map_err(fail)?;
    xspec.execmodel().map_err(fail)?;
    for key in ["connect_timeout", "handshake_timeout"] {
        if let Some(v) = xspec.get(key) {
            if parse_seconds(v).is_err() {
                return Err(format!(
                    "execnet: invalid spec {spec:?}: {key}={v:?} is not a number of seconds (for example {key}=10)"
                ));
            }
        }
    }
    Ok(xspec)
}

/// The lines of a hosts file: `(line number, spec)`. A line is a spec when it looks like
/// one (`popen…`, `ssh=…`, `socket=…`, or has `//` or `=`), otherwise an ssh destination
/// (`web1`, `user@web1`, `-p 2222 web1`). `#` starts a comment; blank lines are skipped.
fn read_hosts_file(path: &Path) -> Result<Vec<(usize, String)>, String> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| format!("execnet: cannot read the hosts file {}: {e}", path.display()))?;
    let mut hosts = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let line = match line.find('#') {
            Some(at) if at == 0 || line[..at].ends_with(char::is_whitespace) => &line[..at],
            _ => line,
        };
        let line = line.trim();
        if line.is_empty() {
            continue;
        }
        let is_spec = line.contains("//") || line.contains('=') || line == "popen" || line.contains("*popen");
        hosts.push((i + 1, if is_spec { line.to_string() } else { format!("ssh={line}") }));
    }
    Ok(hosts)
}

/// A number of seconds for `--timeout` and the like: finite, above zero, at most a year.
pub(crate) fn parse_seconds(text: &str) -> Result<f64, String> {
    const YEAR: f64 = 365.0 * 24.0 * 3600.0;
    match text.trim().parse::<f64>() {
        Ok(s) if s.is_finite() && s > 0.0 && s <= YEAR => Ok(s),
        Ok(_) => Err(format!("{text:?} is out of range: give a number of seconds above 0 and at most {YEAR} (a year)")),
        Err(_) => Err(format!("{text:?} is not a number of seconds (for example 30 or 0.5)")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn specs(list: &[&str]) -> Vec<String> {
        list.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn ids_are_given_in_order_around_explicit_ones() {
        let (hosts, _) = plan(&specs(&["popen", "popen//id=gw1", "2*popen"]), &[]).unwrap();
        let ids: Vec<&str> = hosts.iter().map(|h| h.id.as_str()).collect();
        assert_eq!(ids, ["gw0", "gw1", "gw2", "gw3"]);
        assert_eq!(hosts[0].full_spec, "popen//id=gw0");
        assert_eq!(hosts[1].full_spec, "popen//id=gw1");
    }

    #[test]
    fn via_must_name_an_earlier_gateway_which_is_kept() {
        let (hosts, _) = plan(&specs(&["popen//id=hub", "popen//via=hub"]), &[]).unwrap();
        assert!(hosts[0].keep && hosts[1].via == Some(0));
        let e = plan(&specs(&["popen//via=hub", "popen//id=hub"]), &[]).unwrap_err();
        assert!(e.contains("listed before"), "{e}");
        let e = plan(&specs(&["popen//via=nowhere"]), &[]).unwrap_err();
        assert!(e.contains("no gateway of this run"), "{e}");
    }

    #[test]
    fn bad_counts_and_shared_ids_are_refused() {
        for bad in ["0*popen", "10001*popen", "2*popen//id=a"] {
            assert!(plan(&specs(&[bad]), &[]).is_err(), "{bad}");
        }
        assert!(plan(&specs(&["popen//id=a", "popen//id=a"]), &[]).unwrap_err().contains("unique"));
        assert!(plan(&specs(&["popen//nice=high"]), &[]).is_err());
        assert!(plan(&specs(&["socket=127.0.0.1:1//connect_timeout=soon"]), &[]).is_err());
    }

    #[test]
    fn hosts_files_hold_specs_and_ssh_destinations() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("hosts");
        std::fs::write(&file, "# fleet\nweb1\nuser@web2  # the second\n\n-p 2222 db\npopen//python=python3\n2*popen\n").unwrap();
        let (hosts, _) = plan(&[], &[file]).unwrap();
        let list: Vec<&str> = hosts.iter().map(|h| h.spec.as_str()).collect();
        assert_eq!(list, ["ssh=web1", "ssh=user@web2", "ssh=-p 2222 db", "popen//python=python3", "popen", "popen"]);
    }

    #[test]
    fn seconds_are_checked() {
        for bad in ["-1", "0", "nan", "inf", "1e30", "soon", ""] {
            assert!(parse_seconds(bad).is_err(), "{bad}");
        }
        assert_eq!(parse_seconds("0.5"), Ok(0.5));
    }
}
