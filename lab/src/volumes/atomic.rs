//! Writing a volume's files the way the kubelet's atomic writer does, so
//! a reader never sees half an update: the files go to a fresh hidden
//! timestamped directory, the `..data` symlink is swapped to it in one
//! rename, and every top-level name is a symlink through `..data`.

use std::collections::BTreeSet;
use std::os::unix::fs::{PermissionsExt, symlink};
use std::path::Path;

use anyhow::{Context, Result};

use super::contents::Files;

const DATA: &str = "..data";
const DATA_TMP: &str = "..data_tmp";

/// Replaces the contents of volume directory `dir` with `files`.
pub fn write(dir: &Path, files: &Files) -> Result<()> {
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let stamp = format!("..{}", chrono::Utc::now().format("%Y_%m_%d_%H_%M_%S.%f"));
    let fresh = dir.join(&stamp);
    std::fs::create_dir(&fresh).with_context(|| format!("cannot create {}", fresh.display()))?;
    for (path, file) in files {
        let target = fresh.join(path);
        if let Some(parent) = target.parent() {
            std::fs::create_dir_all(parent)
                .with_context(|| format!("cannot create {}", parent.display()))?;
        }
        std::fs::write(&target, &file.data)
            .with_context(|| format!("cannot write {}", target.display()))?;
        std::fs::set_permissions(&target, std::fs::Permissions::from_mode(file.mode))
            .with_context(|| format!("cannot set the mode of {}", target.display()))?;
    }
    let tmp = dir.join(DATA_TMP);
    let _ = std::fs::remove_file(&tmp);
    symlink(&stamp, &tmp).with_context(|| format!("cannot link {}", tmp.display()))?;
    std::fs::rename(&tmp, dir.join(DATA))
        .with_context(|| format!("cannot switch {}/{DATA}", dir.display()))?;
    let tops: BTreeSet<&str> = files.keys().filter_map(|p| p.split('/').next()).collect();
    for top in &tops {
        let link = dir.join(top);
        if link.symlink_metadata().is_err() {
            symlink(format!("{DATA}/{top}"), &link)
                .with_context(|| format!("cannot link {}", link.display()))?;
        }
    }
    for entry in std::fs::read_dir(dir).with_context(|| format!("cannot read {}", dir.display()))? {
        let entry = entry.with_context(|| format!("cannot read {}", dir.display()))?;
        let name = entry.file_name().to_string_lossy().into_owned();
        let path = entry.path();
        if name.starts_with("..") {
            if name != DATA && name != stamp {
                let _ = std::fs::remove_dir_all(&path);
            }
        } else if !tops.contains(name.as_str()) {
            let _ = std::fs::remove_file(&path);
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::super::contents::File;
    use super::*;

    fn files(pairs: &[(&str, &str)]) -> Files {
        pairs
            .iter()
            .map(|(k, v)| {
                (
                    k.to_string(),
                    File {
                        data: v.as_bytes().to_vec(),
                        mode: 0o644,
                    },
                )
            })
            .collect()
    }

    #[test]
    fn updates_replace_files_and_drop_removed_keys() {
        let root = std::env::temp_dir().join(format!("mc-lab-atomic-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&root);
        write(&root, &files(&[("a", "1"), ("sub/b", "2")])).expect("first write");
        assert_eq!(std::fs::read_to_string(root.join("a")).expect("a"), "1");
        assert_eq!(std::fs::read_to_string(root.join("sub/b")).expect("b"), "2");
        write(&root, &files(&[("a", "3")])).expect("second write");
        assert_eq!(std::fs::read_to_string(root.join("a")).expect("a"), "3");
        assert!(
            root.join("sub").symlink_metadata().is_err(),
            "removed key stays"
        );
        let hidden: Vec<String> = std::fs::read_dir(&root)
            .expect("dir")
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .filter(|n| n.starts_with("..") && n != DATA)
            .collect();
        assert_eq!(hidden.len(), 1, "old generations left: {hidden:?}");
        let _ = std::fs::remove_dir_all(&root);
    }
}
