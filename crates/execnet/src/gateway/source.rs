//! What `remote_exec` runs: a code string, a file, or a function call (PROTOCOL.md §4).

use std::path::Path;

use serde::Serialize;

use crate::error::{Error, Result};
use crate::wire::value::{to_value, Value};

/// Source code for [`crate::Gateway::remote_exec`].
///
/// A `&str` or `String` converts into a `Source` with its common indentation removed
/// (like Python's `textwrap.dedent`), so indented raw strings work:
///
/// ```
/// # fn main() -> execnet::Result<()> {
/// let gw = execnet::makegateway("popen")?;
/// let ch = gw.remote_exec(r#"
///     import os
///     channel.send(os.getpid())
/// "#)?;
/// let pid: u32 = ch.receive()?;
/// # Ok(()) }
/// ```
#[derive(Debug, Clone, PartialEq)]
pub struct Source {
    pub(crate) code: String,
    pub(crate) file_name: Option<String>,
    pub(crate) call_name: Option<String>,
    pub(crate) kwargs: Value,
}

impl Source {
    /// A code string, dedented.
    pub fn code(code: &str) -> Source {
        Source {
            code: dedent(code),
            file_name: None,
            call_name: None,
            kwargs: Value::Dict(Default::default()),
        }
    }

    /// The contents of a Python file; tracebacks name the file.
    pub fn file(path: impl AsRef<Path>) -> Result<Source> {
        let path = path.as_ref();
        let code = std::fs::read_to_string(path).map_err(|e| {
            Error::Io(std::io::Error::new(
                e.kind(),
                format!("cannot read source file {}: {e}", path.display()),
            ))
        })?;
        Ok(Source { file_name: Some(path.display().to_string()), ..Source::code(&code) })
    }

    /// Runs `code`, then calls `function(channel, **kwargs)`; `kwargs` must serialize to a
    /// map with string keys (a struct, a `HashMap<String, _>`, a `Value::Dict`, or `()`
    /// for none).
    pub fn call(code: &str, function: &str, kwargs: impl Serialize) -> Result<Source> {
        let kwargs = match to_value(&kwargs)? {
            Value::None => Value::Dict(Default::default()),
            Value::Dict(d) => {
                if let Some((k, _)) = d.iter().find(|(k, _)| !matches!(k, Value::Str(_))) {
                    return Err(Error::data_format(
                        format!("keyword argument names must be strings, not {k}"),
                        None,
                    ));
                }
                Value::Dict(d)
            }
            other => {
                return Err(Error::data_format(
                    format!("kwargs for {function}() must be a map of names to values, not {other}"),
                    None,
                ))
            }
        };
        Ok(Source { call_name: Some(function.to_string()), kwargs, ..Source::code(code) })
    }

    /// Sets the file name shown in remote tracebacks.
    pub fn with_file_name(mut self, name: impl Into<String>) -> Source {
        self.file_name = Some(name.into());
        self
    }

    /// The code as it will be sent (after dedenting).
    pub fn as_code(&self) -> &str {
        &self.code
    }

    /// The CHANNEL_EXEC payload object: (source, file_name, call_name, kwargs).
    pub(crate) fn payload_tuple(&self) -> (&str, Option<&str>, Option<&str>, &Value) {
        (&self.code, self.file_name.as_deref(), self.call_name.as_deref(), &self.kwargs)
    }
}

impl From<&str> for Source {
    fn from(s: &str) -> Source {
        Source::code(s)
    }
}
impl From<String> for Source {
    fn from(s: String) -> Source {
        Source::code(&s)
    }
}
impl From<&String> for Source {
    fn from(s: &String) -> Source {
        Source::code(s)
    }
}

/// Removes the whitespace prefix common to all non-blank lines, as Python's
/// `textwrap.dedent` does; lines holding only whitespace become empty.
pub fn dedent(text: &str) -> String {
    let mut margin: Option<&str> = None;
    for line in text.split('\n') {
        let content = line.trim_start_matches([' ', '\t']);
        if content.is_empty() {
            continue;
        }
        let indent = &line[..line.len() - content.len()];
        margin = Some(match margin {
            None => indent,
            Some(m) => {
                let common = m
                    .bytes()
                    .zip(indent.bytes())
                    .take_while(|(a, b)| a == b)
                    .count();
                &m[..common]
            }
        });
    }
    let margin = margin.unwrap_or("");
    let mut out = String::with_capacity(text.len());
    for (i, line) in text.split('\n').enumerate() {
        if i > 0 {
            out.push('\n');
        }
        if line.trim_start_matches([' ', '\t']).is_empty() {
            continue;
        }
        out.push_str(&line[margin.len()..]);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::dedent;

    #[test]
    fn dedent_like_python() {
        assert_eq!(dedent("\n    a\n      b\n    c\n"), "\na\n  b\nc\n");
        assert_eq!(dedent("  a\n \n  b"), "a\n\nb");
        assert_eq!(dedent("a\n  b"), "a\n  b");
        assert_eq!(dedent("\t x\n\t y"), "x\ny");
        assert_eq!(dedent("\t x\n  y"), "\t x\n  y");
        assert_eq!(dedent(""), "");
    }
}
