//! The files `csrd batch` writes: the output, its state file (`<output>.partial`) and the
//! temporary file the output is written through. None of them may be the input: the run
//! refuses to start when one resolves to the same file (symbolic and hard links included), and
//! the temporary file is created new under a name no existing file has, so it never replaces
//! one.

use std::collections::HashMap;
use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use serde_json::json;

use super::input::InputLine;
use super::record::Output;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Summary {
    pub created: usize,
    pub failed: usize,
}

/// The state file beside `output`.
pub fn partial_path(output: &Path) -> PathBuf {
    with_suffix(output, ".partial")
}

fn with_suffix(path: &Path, suffix: &str) -> PathBuf {
    let mut name = path.file_name().unwrap_or_default().to_os_string();
    name.push(suffix);
    path.with_file_name(name)
}

/// Refuses an output or state file that is the input.
pub fn refuse_overwriting_input(input: &Path, output: &Path) -> anyhow::Result<()> {
    let input_meta =
        std::fs::metadata(input).with_context(|| format!("reading {}", input.display()))?;
    let input_real = input
        .canonicalize()
        .with_context(|| format!("resolving {}", input.display()))?;
    for (role, path) in [
        ("output", output.to_path_buf()),
        ("state file", partial_path(output)),
    ] {
        if same_file(&input_real, &input_meta, &path) {
            bail!(
                "the {role} {} is the input file {}: refusing to overwrite the input \
                 (choose another --output)",
                path.display(),
                input.display()
            );
        }
    }
    Ok(())
}

fn same_file(input_real: &Path, input_meta: &std::fs::Metadata, other: &Path) -> bool {
    use std::os::unix::fs::MetadataExt;
    if let Ok(meta) = std::fs::metadata(other)
        && meta.dev() == input_meta.dev()
        && meta.ino() == input_meta.ino()
    {
        return true;
    }
    // Not there yet: where it would be created.
    let parent = match other.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    match (parent.canonicalize(), other.file_name()) {
        (Ok(dir), Some(name)) => dir.join(name) == input_real,
        _ => false,
    }
}

/// Writes one output line per input line, in input order, through a new temporary file renamed
/// over `output` (so the output is never half-written).
pub fn write(
    output: &Path,
    lines: &[InputLine],
    settled: &mut HashMap<usize, Output>,
) -> anyhow::Result<Summary> {
    let (tmp_path, file) = create_temporary(output)?;
    let written = write_lines(file, lines, settled)
        .with_context(|| format!("writing {}", tmp_path.display()));
    let summary = match written {
        Ok(summary) => summary,
        Err(e) => {
            let _ = std::fs::remove_file(&tmp_path);
            return Err(e);
        }
    };
    std::fs::rename(&tmp_path, output).with_context(|| format!("writing {}", output.display()))?;
    Ok(summary)
}

/// `<output>.<pid>-<n>.tmp`, created with `create_new`: it cannot be an existing file, the
/// input least of all.
fn create_temporary(output: &Path) -> anyhow::Result<(PathBuf, std::fs::File)> {
    for n in 0..100 {
        let path = with_suffix(output, &format!(".{}-{n}.tmp", std::process::id()));
        match std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&path)
        {
            Ok(file) => return Ok((path, file)),
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => continue,
            Err(e) => return Err(e).with_context(|| format!("creating {}", path.display())),
        }
    }
    bail!("no free temporary file name beside {}", output.display())
}

fn write_lines(
    file: std::fs::File,
    lines: &[InputLine],
    settled: &mut HashMap<usize, Output>,
) -> anyhow::Result<Summary> {
    let mut summary = Summary {
        created: 0,
        failed: 0,
    };
    let mut out = std::io::BufWriter::new(file);
    for l in lines {
        let entry = match &l.body {
            Err(reason) => Output::from_value(
                json!({"line": l.line, "errors": [{"code": 1400, "message": format!("line {}: {reason}", l.line)}]}),
            ),
            Ok(_) => settled.remove(&l.line).unwrap_or_else(|| {
                Output::from_value(
                    json!({"line": l.line, "errors": [{"code": 1500, "message": "no result"}]}),
                )
            }),
        };
        if entry.failed() {
            summary.failed += 1;
        } else {
            summary.created += 1;
        }
        out.write_all(entry.json().as_bytes())?;
        out.write_all(b"\n")?;
    }
    out.into_inner().map_err(|e| e.into_error())?.sync_all()?;
    Ok(summary)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scratch() -> PathBuf {
        let dir = std::env::temp_dir().join(format!("csrd-out-{}", uuid::Uuid::new_v4().simple()));
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    #[test]
    fn the_state_file_sits_beside_the_output() {
        assert_eq!(
            partial_path(Path::new("/tmp/out.jsonl")),
            Path::new("/tmp/out.jsonl.partial")
        );
    }

    #[test]
    fn an_output_or_state_file_that_is_the_input_is_refused() {
        let dir = scratch();
        let input = dir.join("in.jsonl");
        std::fs::write(&input, "{}\n").unwrap();
        assert!(refuse_overwriting_input(&input, &input).is_err());
        assert!(refuse_overwriting_input(&input, &dir.join("./in.jsonl")).is_err());
        let link = dir.join("link.jsonl");
        std::os::unix::fs::symlink(&input, &link).unwrap();
        assert!(refuse_overwriting_input(&input, &link).is_err());
        let hard = dir.join("hard.jsonl");
        std::fs::hard_link(&input, &hard).unwrap();
        assert!(refuse_overwriting_input(&input, &hard).is_err());
        let partial_input = dir.join("x.jsonl.partial");
        std::fs::write(&partial_input, "{}\n").unwrap();
        assert!(refuse_overwriting_input(&partial_input, &dir.join("x.jsonl")).is_err());
        refuse_overwriting_input(&input, &dir.join("out.jsonl")).unwrap();
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn the_temporary_file_never_replaces_an_existing_one() {
        let dir = scratch();
        let output = dir.join("out.jsonl");
        let taken = with_suffix(&output, &format!(".{}-0.tmp", std::process::id()));
        std::fs::write(&taken, "mine").unwrap();
        let (path, _) = create_temporary(&output).unwrap();
        assert_ne!(path, taken);
        assert_eq!(std::fs::read_to_string(&taken).unwrap(), "mine");
        std::fs::remove_dir_all(dir).unwrap();
    }
}
