//! `mc-lab pod-init` (hidden): the last step before a pod's command runs.
//! It enters the pod's network namespace in a private mount namespace,
//! mounts the pod's resolv.conf and volumes (the ServiceAccount token is a
//! projected volume the API server adds to the pod) where
//! programs look for them, and then executes the command in place. `mc-lab exec`
//! uses the same path, so an exec sees what the pod sees.

use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use nix::mount::{MntFlags, MsFlags, mount, umount2};
use nix::sched::{CloneFlags, setns, unshare};

use crate::volumes::Mount;

/// What `pod-init` sets up before executing the command.
#[derive(Clone, Debug, Default)]
pub struct PodInit {
    /// Network namespace to enter (a name under /run/netns).
    pub netns: String,
    /// File to mount over /etc/resolv.conf.
    pub resolv_conf: Option<PathBuf>,
    /// The container's volumes.
    pub mounts: Vec<Mount>,
}

impl PodInit {
    /// Arguments of `mc-lab pod-init` that reproduce this setup, followed
    /// by `--` and the command.
    pub fn args(&self, command: &[String]) -> Vec<String> {
        let mut args = vec![
            "pod-init".to_string(),
            "--netns".to_string(),
            self.netns.clone(),
        ];
        if let Some(resolv) = &self.resolv_conf {
            args.extend(["--resolv-conf".to_string(), resolv.display().to_string()]);
        }
        for mount in &self.mounts {
            args.extend(["--mount".to_string(), mount.to_arg()]);
        }
        args.push("--".to_string());
        args.extend(command.iter().cloned());
        args
    }

    /// Sets up the namespaces and mounts, then replaces this process with
    /// `command`. Returns only on failure.
    pub fn exec(&self, command: &[String]) -> Result<std::convert::Infallible> {
        let Some((program, args)) = command.split_first() else {
            bail!("pod-init needs a command");
        };
        unshare(CloneFlags::CLONE_NEWNS).context("unshare(CLONE_NEWNS)")?;
        // Keep our mounts to ourselves; still see the host's later mounts.
        mount(
            None::<&str>,
            "/",
            None::<&str>,
            MsFlags::MS_SLAVE | MsFlags::MS_REC,
            None::<&str>,
        )
        .context("making / a slave mount")?;
        let path = Path::new("/run/netns").join(&self.netns);
        let file = std::fs::File::open(&path)
            .with_context(|| format!("cannot open {}", path.display()))?;
        setns(&file, CloneFlags::CLONE_NEWNET)
            .with_context(|| format!("cannot enter netns {}", self.netns))?;
        // /sys/class/net should show this namespace's links.
        if umount2("/sys", MntFlags::MNT_DETACH).is_ok() {
            let _ = mount(
                Some("sysfs"),
                "/sys",
                Some("sysfs"),
                MsFlags::empty(),
                None::<&str>,
            );
        }
        if let Some(resolv) = &self.resolv_conf {
            bind(resolv, Path::new("/etc/resolv.conf"))?;
        }
        for m in &self.mounts {
            std::fs::create_dir_all(&m.target)
                .with_context(|| format!("cannot create mount point {}", m.target.display()))?;
            bind(&m.source, &m.target)?;
            if m.read_only {
                mount(
                    None::<&str>,
                    &m.target,
                    None::<&str>,
                    MsFlags::MS_BIND | MsFlags::MS_REMOUNT | MsFlags::MS_RDONLY,
                    None::<&str>,
                )
                .with_context(|| format!("cannot make {} read-only", m.target.display()))?;
            }
        }
        let error = std::process::Command::new(program).args(args).exec();
        Err(error).with_context(|| format!("cannot execute {program}"))
    }
}

fn bind(source: &Path, target: &Path) -> Result<()> {
    mount(
        Some(source),
        target,
        None::<&str>,
        MsFlags::MS_BIND,
        None::<&str>,
    )
    .with_context(|| {
        format!(
            "cannot bind-mount {} on {}",
            source.display(),
            target.display()
        )
    })
}
