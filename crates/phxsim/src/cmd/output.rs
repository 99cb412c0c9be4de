//! Output paths named on the command line, checked before any work starts: a long run, or a
//! shrunk failure, must not be lost at the end to a typo in a path.
//!
//! A report file's folder must already exist: phxsim creates no folders for `--json`,
//! `--junit`, `--transcript`, `--trace`, `--html` or `--frames`, as a shell redirection does
//! not (a misspelt folder would otherwise silently scatter reports). `explore --out` names a
//! folder of its own and is created, parents included.

use super::BadInput;
use std::fs::OpenOptions;
use std::path::Path;

/// Checks that `path` (given with `flag`) can be written: its folder exists and the file can
/// be opened for writing. An existing file is left as it is; a file created for the check is
/// removed again.
pub fn check_file(flag: &str, path: &Path) -> Result<(), BadInput> {
    let shown = path.display();
    if path.is_dir() {
        return Err(BadInput(format!("{flag} {shown}: is a folder, not a file")));
    }
    let folder = path.parent().filter(|d| !d.as_os_str().is_empty());
    if let Some(dir) = folder.filter(|d| !d.is_dir()) {
        return Err(BadInput(format!(
            "{flag} {shown}: the folder {} does not exist (phxsim does not create folders for report files)",
            dir.display()
        )));
    }
    let existed = path.exists();
    OpenOptions::new()
        .append(true)
        .create(true)
        .open(path)
        .map_err(|e| BadInput(format!("{flag} {shown}: cannot write: {e}")))?;
    if !existed {
        let _ = std::fs::remove_file(path);
    }
    Ok(())
}

/// Checks an optional output file.
pub fn check_optional(flag: &str, path: Option<&Path>) -> Result<(), BadInput> {
    path.map_or(Ok(()), |p| check_file(flag, p))
}

/// Creates the folder `dir` (given with `flag`) if needed and checks that files can be
/// written in it.
pub fn prepare_dir(flag: &str, dir: &Path) -> Result<(), BadInput> {
    let shown = dir.display();
    std::fs::create_dir_all(dir)
        .map_err(|e| BadInput(format!("{flag} {shown}: cannot create the folder: {e}")))?;
    let probe = dir.join(format!(".phxsim-write-check-{}", std::process::id()));
    OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .open(&probe)
        .map_err(|e| BadInput(format!("{flag} {shown}: cannot write in this folder: {e}")))?;
    let _ = std::fs::remove_file(&probe);
    Ok(())
}
