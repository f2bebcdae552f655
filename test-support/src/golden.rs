//! Golden-file comparison for the planners' rendered output (flows, host
//! plans): a diff against a file in the repository, refreshed on request.

use std::path::Path;

/// Asserts that `actual` equals the file `dir/name`. With `UPDATE_GOLDEN`
/// set, rewrites the file instead (then review the diff).
pub fn assert_golden(dir: &Path, name: &str, actual: &str) {
    let path = dir.join(name);
    if std::env::var_os("UPDATE_GOLDEN").is_some() {
        if let Err(e) = std::fs::write(&path, actual) {
            panic!("cannot write {}: {e}", path.display());
        }
        return;
    }
    let expected = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("{}: {e}; create it with UPDATE_GOLDEN=1", path.display()));
    assert_eq!(
        actual,
        expected,
        "rendered output differs from {}; if the change is intended, refresh with UPDATE_GOLDEN=1 cargo test and review the diff",
        path.display()
    );
}
