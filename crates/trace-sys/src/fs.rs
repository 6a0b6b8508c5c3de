//! File identity (whether two paths name the same file, however each is spelled) and the
//! host's name.

use std::os::unix::fs::MetadataExt;
use std::path::Path;

/// True when both paths exist and are the same file (same device and inode): `a.parquet`,
/// `./a.parquet`, a symlink or a hard link to it all match. A path that does not exist yet is
/// no other file.
pub fn same_file(a: &Path, b: &Path) -> bool {
    match (std::fs::metadata(a), std::fs::metadata(b)) {
        (Ok(x), Ok(y)) => x.dev() == y.dev() && x.ino() == y.ino(),
        _ => false,
    }
}

/// This host's name (`uname -n`), for the metadata of runs sent from several hosts.
pub fn hostname() -> String {
    rustix::system::uname()
        .nodename()
        .to_string_lossy()
        .into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn links_and_spellings_are_the_same_file() {
        let dir = tempfile::tempdir().unwrap();
        let a = dir.path().join("a.parquet");
        std::fs::write(&a, b"x").unwrap();
        let link = dir.path().join("l.parquet");
        std::os::unix::fs::symlink(&a, &link).unwrap();
        let hard = dir.path().join("h.parquet");
        std::fs::hard_link(&a, &hard).unwrap();
        let dotted = dir.path().join(".").join("a.parquet");
        for p in [&link, &hard, &dotted] {
            assert!(same_file(&a, p), "{}", p.display());
        }
        let b = dir.path().join("b.parquet");
        assert!(!same_file(&a, &b), "a missing file is no other file");
        std::fs::write(&b, b"x").unwrap();
        assert!(!same_file(&a, &b));
    }
}
