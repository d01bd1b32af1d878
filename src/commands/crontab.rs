//! `aidt-batch crontab [--system]`: every scheduled job's cron line, from
//! the registry (a user crontab, or `/etc/cron.d` with the user field).

use crate::config::Profile;
use crate::jobs::REGISTRY;
use crate::runtime::{crontab, Exit};

pub fn run(profile: Profile, system: bool) -> anyhow::Result<Exit> {
    let form = if system {
        crontab::Form::System
    } else {
        crontab::Form::User
    };
    print!("{}", crontab::render(&REGISTRY, profile, form));
    Ok(Exit::Success)
}
