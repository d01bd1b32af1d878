//! The deployment files built and checked from the repository: the
//! Kubernetes manifests (generated from the registry, validated against the
//! Kubernetes schemas), the Dockerfile and docker-compose.yml.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::Command;

use aidt_batch::config::Profile;
use aidt_batch::jobs::REGISTRY;
use aidt_batch::runtime::k8s;
use aidt_batch::runtime::registry::{JobDef, ScheduledRun};
use serde_json::Value;

use crate::helpers::stderr;

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// The virtualenv of `scripts/tools` (kubernetes-validate, hadolint, PyYAML).
fn tools_bin(name: &str) -> PathBuf {
    let dir =
        std::env::var("AIDT_TOOLS_DIR").unwrap_or_else(|_| "/var/tmp/aidt-batch-tools".into());
    let path = Path::new(&dir).join("venv/bin").join(name);
    assert!(
        path.is_file(),
        "{} is missing: run scripts/tools (scripts/test does)",
        path.display()
    );
    path
}

/// Every YAML document of `path`, as JSON (read with PyYAML, not our code).
fn yaml_documents(path: &Path) -> Vec<Value> {
    let out = Command::new(tools_bin("python"))
        .args([
            "-c",
            "import json, sys, yaml; print(json.dumps(list(yaml.safe_load_all(open(sys.argv[1])))))",
        ])
        .arg(path)
        .output()
        .expect("run python");
    assert!(out.status.success(), "{}: {}", path.display(), stderr(&out));
    serde_json::from_slice(&out.stdout).unwrap()
}

fn k8s_options() -> k8s::Options {
    k8s::Options::default()
}

#[test]
fn the_committed_k8s_manifests_are_the_ones_the_registry_builds() {
    let dir = repo().join("deploy/k8s");
    let built = k8s::render(&REGISTRY, &k8s_options());
    let committed: BTreeSet<String> = std::fs::read_dir(&dir)
        .expect("deploy/k8s exists")
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    let expected: BTreeSet<String> = built.iter().map(|m| m.file.clone()).collect();
    let hint = "deploy/k8s is out of date: run `cargo run -- k8s --out deploy/k8s`";
    assert_eq!(committed, expected, "{hint}");
    for manifest in &built {
        let text = std::fs::read_to_string(dir.join(&manifest.file)).unwrap();
        assert_eq!(text, manifest.text, "{}: {hint}", manifest.file);
    }
}

#[test]
fn k8s_manifests_pass_the_kubernetes_schemas() {
    let dir = repo().join("deploy/k8s");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    files.sort();
    assert!(files.len() > 10, "{files:?}");
    // 1.31: podFailurePolicy is GA from there on; 1.37: the newest schemas shipped.
    for version in ["1.31.0", "1.37.0"] {
        let out = Command::new(tools_bin("kubernetes-validate"))
            .args(["--strict", "-k", version])
            .args(&files)
            .output()
            .expect("run kubernetes-validate");
        let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), stderr(&out));
        assert!(out.status.success(), "Kubernetes {version}:\n{text}");
        assert!(
            !text.to_lowercase().contains("error"),
            "Kubernetes {version}:\n{text}"
        );
        // One verdict per file: none was left out.
        for file in &files {
            assert!(
                text.contains(&format!("{} passed", file.display())),
                "{} not validated against {version}:\n{text}",
                file.display()
            );
        }
    }
    // And a broken manifest fails: the check can fail.
    let broken = tempfile::tempdir().unwrap();
    let path = broken.path().join("cronjob.yaml");
    let text = std::fs::read_to_string(dir.join("cronjob-bo-01-005.yaml"))
        .unwrap()
        .replace("timeZone: Asia/Seoul", "timezone: Asia/Seoul");
    std::fs::write(&path, text).unwrap();
    let out = Command::new(tools_bin("kubernetes-validate"))
        .args(["--strict", "-k", "1.37.0"])
        .arg(&path)
        .output()
        .unwrap();
    assert!(
        !out.status.success(),
        "a misspelt key passed the strict check"
    );
}

#[test]
fn the_committed_cron_d_file_is_the_one_the_registry_builds() {
    use aidt_batch::runtime::crontab::{render, Form};
    let committed = std::fs::read_to_string(repo().join("deploy/debian/cron.d")).unwrap();
    let built = render(&REGISTRY, Profile::Prod, Form::System);
    assert!(
        committed == built,
        "deploy/debian/cron.d is out of date: run `cargo run -- crontab --system > deploy/debian/cron.d`"
    );
    let out = crate::helpers::bin()
        .args(["crontab", "--system"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(String::from_utf8(out.stdout).unwrap(), committed);
    // /etc/cron.d's form: five time fields, the user, the command, which
    // does nothing once the package is removed (its conffile stays).
    let mut jobs = 0;
    for line in committed.lines() {
        if line.is_empty() || line.starts_with('#') || line.split(' ').next().unwrap().contains('=')
        {
            continue;
        }
        let command = line.splitn(7, ' ').nth(6).unwrap();
        assert_eq!(line.split(' ').nth(5), Some("aidt"), "{line}");
        assert!(
            command.starts_with("[ -x /usr/bin/aidt-batch ] && /usr/bin/aidt-batch "),
            "{line}"
        );
        jobs += 1;
    }
    assert!(jobs > 20, "{committed}");
}

#[test]
fn the_env_file_template_sets_the_prod_profile_and_nothing_secret() {
    let text = std::fs::read(repo().join("deploy/debian/env.template")).unwrap();
    let entries = aidt_batch::env_file::parse(&text, |_| None).unwrap();
    assert_eq!(
        entries,
        [
            ("AIDT_PROFILE", "prod"),
            ("AIDT_CONFIG_DIR", "/etc/aidt-batch")
        ]
        .map(|(k, v)| (k.to_string(), v.to_string()))
    );
}

/// The pod spec of a CronJob document.
fn pod_spec(doc: &Value) -> &Value {
    &doc["spec"]["jobTemplate"]["spec"]["template"]["spec"]
}

#[test]
fn k8s_cronjobs_run_each_scheduled_job_as_the_registry_says() {
    let dir = repo().join("deploy/k8s");
    let mut cron_jobs = BTreeMap::new();
    let mut config_maps = Vec::new();
    for entry in std::fs::read_dir(&dir).unwrap() {
        for doc in yaml_documents(&entry.unwrap().path()) {
            match doc["kind"].as_str() {
                Some("CronJob") => {
                    let name = doc["metadata"]["name"].as_str().unwrap().to_string();
                    cron_jobs.insert(name, doc);
                }
                Some("ConfigMap") => config_maps.push(doc),
                other => panic!("unexpected kind {other:?}"),
            }
        }
    }
    // One CronJob per scheduled start: a job's schedule, and its other
    // starts (LCMS-01-001's weekly --full) named after them.
    let cron_job_name = |def: &JobDef, run: &ScheduledRun| match run.name {
        "" => format!("aidt-batch-{}", def.cli_name()),
        name => format!("aidt-batch-{}-{name}", def.cli_name()),
    };
    let scheduled: BTreeSet<String> = REGISTRY
        .iter()
        .flat_map(|d| d.scheduled_runs().into_iter().map(move |r| (d, r)))
        .map(|(d, r)| cron_job_name(d, &r))
        .collect();
    assert_eq!(
        cron_jobs.keys().cloned().collect::<BTreeSet<_>>(),
        scheduled
    );
    assert!(
        !cron_jobs.contains_key("aidt-batch-lms-01-009"),
        "LMS-01-009 is unscheduled"
    );
    assert!(cron_jobs.contains_key("aidt-batch-lcms-01-001-full"));

    assert_eq!(config_maps.len(), 1);
    let config_map_name = config_maps[0]["metadata"]["name"].as_str().unwrap();
    assert!(config_maps[0]["data"]["site.toml"].is_string());

    for (def, run) in REGISTRY
        .iter()
        .flat_map(|d| d.scheduled_runs().into_iter().map(move |r| (d, r)))
    {
        let doc = &cron_jobs[&cron_job_name(def, &run)];
        assert_eq!(doc["metadata"]["annotations"]["aidt-batch/job-id"], def.id);
        let spec = &doc["spec"];
        assert_eq!(spec["schedule"], run.cron, "{}", def.id);
        assert_eq!(spec["timeZone"], "Asia/Seoul");
        assert_eq!(spec["concurrencyPolicy"], "Forbid");
        assert!(spec["startingDeadlineSeconds"].as_u64().unwrap() > 0);
        assert_eq!(spec["suspend"], !def.is_implemented(), "{}", def.id);
        let job = &spec["jobTemplate"]["spec"];
        assert!(job["backoffLimit"].as_u64().is_some());
        // Exit 2 (configuration) and 3 (lock busy) fail the Job at once.
        let rules = job["podFailurePolicy"]["rules"].as_array().unwrap();
        let fail = rules
            .iter()
            .find(|r| r["action"] == "FailJob")
            .expect("a FailJob rule");
        assert_eq!(fail["onExitCodes"]["operator"], "In");
        let codes: BTreeSet<u64> = fail["onExitCodes"]["values"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_u64().unwrap())
            .collect();
        assert_eq!(codes, BTreeSet::from([2, 3]));

        let pod = pod_spec(doc);
        assert_eq!(pod["restartPolicy"], "Never");
        assert_eq!(pod["securityContext"]["runAsNonRoot"], true);
        assert_ne!(pod["securityContext"]["runAsUser"], 0);
        let containers = pod["containers"].as_array().unwrap();
        assert_eq!(containers.len(), 1);
        let c = &containers[0];
        assert_eq!(fail["onExitCodes"]["containerName"], c["name"]);
        let mut args = serde_json::json!([
            def.cli_name(),
            "--profile",
            "prod",
            "--config",
            "/etc/aidt-batch/site/site.toml"
        ]);
        for arg in run.args {
            args.as_array_mut().unwrap().push((*arg).into());
        }
        assert_eq!(c["args"], args);
        assert_eq!(c["securityContext"]["allowPrivilegeEscalation"], false);
        assert_eq!(
            c["securityContext"]["capabilities"]["drop"],
            serde_json::json!(["ALL"])
        );
        assert!(c["resources"]["requests"]["memory"].is_string());
        assert!(c["resources"]["limits"]["memory"].is_string());
        // Secrets by the Secret's name only: no literal value of any AIDT__ key.
        assert_eq!(c["envFrom"][0]["secretRef"]["name"], "aidt-batch-secrets");
        for var in c["env"].as_array().into_iter().flatten() {
            let name = var["name"].as_str().unwrap();
            assert!(
                !name.starts_with("AIDT__"),
                "{}: {name} set in the manifest",
                def.id
            );
        }
        // Configuration from the ConfigMap, mounted where --config reads it.
        let volume = pod["volumes"]
            .as_array()
            .unwrap()
            .iter()
            .find(|v| v["configMap"]["name"] == config_map_name)
            .expect("the ConfigMap is a volume");
        let mount = c["volumeMounts"]
            .as_array()
            .unwrap()
            .iter()
            .find(|m| m["name"] == volume["name"])
            .expect("and mounted");
        assert_eq!(mount["mountPath"], "/etc/aidt-batch/site");
    }

    // DC-01-001: an Indexed Job whose partition count reaches the binary.
    let (id, partitions) = REGISTRY
        .iter()
        .find_map(|job| Some((job.id, job.k8s_partitions?)))
        .expect("a job Kubernetes runs partitioned");
    assert_eq!(id, "DC-01-001");
    let dc_01_001 = "aidt-batch-dc-01-001";
    let job = &cron_jobs[dc_01_001]["spec"]["jobTemplate"]["spec"];
    assert_eq!(job["completionMode"], "Indexed");
    assert_eq!(job["completions"], partitions);
    assert_eq!(job["parallelism"], partitions);
    let env = &pod_spec(&cron_jobs[dc_01_001])["containers"][0]["env"];
    assert_eq!(
        env,
        &serde_json::json!([{"name": "AIDT_PARTITIONS", "value": partitions.to_string()}])
    );
    // The others are plain Jobs.
    for (other, doc) in &cron_jobs {
        if other != dc_01_001 {
            assert!(
                doc["spec"]["jobTemplate"]["spec"]["completionMode"].is_null(),
                "{other}"
            );
        }
    }
}

#[test]
fn the_k8s_command_writes_the_manifests_and_removes_stale_cronjobs() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("cronjob-gone-01-001.yaml"), "stale").unwrap();
    std::fs::write(dir.path().join("kustomization.yaml"), "mine").unwrap();
    let out = crate::helpers::bin()
        .args(["k8s", "--out"])
        .arg(dir.path())
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    let built = k8s::render(&REGISTRY, &k8s_options());
    for manifest in &built {
        assert_eq!(
            std::fs::read_to_string(dir.path().join(&manifest.file)).unwrap(),
            manifest.text
        );
    }
    assert!(!dir.path().join("cronjob-gone-01-001.yaml").exists());
    assert_eq!(
        std::fs::read_to_string(dir.path().join("kustomization.yaml")).unwrap(),
        "mine"
    );
    // Without --out: one multi-document stream of the same manifests.
    let out = crate::helpers::bin().arg("k8s").output().unwrap();
    assert!(out.status.success());
    assert_eq!(
        String::from_utf8(out.stdout).unwrap(),
        k8s::render_stream(&REGISTRY, &k8s_options())
    );
}

/// Instructions of the stage named `name` (`FROM … AS name`), continuation
/// lines joined and spaces collapsed.
fn stage(dockerfile: &str, name: &str) -> Vec<String> {
    let joined = dockerfile.replace("\\\n", " ");
    let mut inside = false;
    let mut out = Vec::new();
    for line in joined.lines() {
        let line = line.split_whitespace().collect::<Vec<_>>().join(" ");
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        if line.starts_with("FROM ") {
            inside = line.ends_with(&format!(" AS {name}"));
        }
        if inside {
            out.push(line);
        }
    }
    out
}

#[test]
fn the_dockerfile_builds_the_release_binary_from_files_that_exist_and_runs_as_aidt() {
    let text = std::fs::read_to_string(repo().join("Dockerfile")).unwrap();
    let builder = stage(&text, "builder");
    let runtime = stage(&text, "runtime");
    assert!(builder[0].starts_with("FROM rust:"), "{builder:?}");
    let builder: Vec<&str> = builder.iter().map(String::as_str).collect();
    let runtime: Vec<&str> = runtime.iter().map(String::as_str).collect();
    assert!(
        runtime[0].starts_with("FROM debian:") && runtime[0].contains("-slim"),
        "{runtime:?}"
    );
    assert!(
        text.contains("cargo build --release --locked -p aidt-batch"),
        "the builder builds the release binary of aidt-batch only"
    );

    // The toolchain is at least the crate's rust-version.
    let manifest = std::fs::read_to_string(repo().join("Cargo.toml")).unwrap();
    let msrv: Vec<u32> = manifest
        .lines()
        .find_map(|l| l.strip_prefix("rust-version = "))
        .unwrap()
        .trim_matches('"')
        .split('.')
        .map(|p| p.parse().unwrap())
        .collect();
    let image: Vec<u32> = builder[0]["FROM rust:".len()..]
        .split('-')
        .next()
        .unwrap()
        .split('.')
        .map(|p| p.parse().unwrap())
        .collect();
    assert!(
        image >= msrv,
        "rust:{image:?} older than rust-version {msrv:?}"
    );

    // Every COPY source exists and the build context (.dockerignore) keeps it.
    let ignore = std::fs::read_to_string(repo().join(".dockerignore")).unwrap();
    let kept: Vec<&str> = ignore
        .lines()
        .filter_map(|l| l.strip_prefix('!'))
        .map(|l| l.trim_end_matches('/'))
        .collect();
    let builder_copy = tempfile::tempdir().unwrap();
    for line in builder
        .iter()
        .chain(&runtime)
        .filter(|l| l.starts_with("COPY "))
    {
        let words: Vec<&str> = line.split_whitespace().skip(1).collect();
        if words[0].starts_with("--from=") {
            continue;
        }
        let (sources, dest) = words.split_at(words.len() - 1);
        let dest = dest[0];
        for source in sources {
            let path = repo().join(source);
            assert!(path.exists(), "COPY {source}: no such file");
            assert!(
                kept.contains(source),
                "{source} is excluded by .dockerignore"
            );
            if builder.contains(line) {
                // WORKDIR /src: relative destinations are the build's root.
                let root = builder_copy.path().join(dest.trim_start_matches("./"));
                let target = if dest.ends_with('/') {
                    root.join(Path::new(source).file_name().unwrap())
                } else {
                    root
                };
                copy_into(&path, &target);
            }
        }
    }
    // What the builder copies is a workspace cargo can load with the lock file.
    let out = Command::new(env!("CARGO"))
        .args([
            "metadata",
            "--locked",
            "--offline",
            "--no-deps",
            "--format-version",
            "1",
        ])
        .current_dir(builder_copy.path())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "cargo metadata in the builder's files: {}",
        stderr(&out)
    );
    let metadata: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(metadata["packages"]
        .as_array()
        .unwrap()
        .iter()
        .any(|p| p["name"] == "aidt-batch"));
    for embedded in ["migrations", "src/jobs/dc/send_statements.rs"] {
        assert!(
            builder_copy.path().join(embedded).exists(),
            "{embedded} (compiled in) not copied"
        );
    }

    // The image runs the binary as the non-root user aidt.
    assert!(
        text.contains("useradd --system --uid 10001 --gid aidt"),
        "an aidt user"
    );
    let user = runtime
        .iter()
        .rev()
        .find_map(|l| l.strip_prefix("USER "))
        .expect("USER in the runtime stage");
    let uid: u32 = user
        .split(':')
        .next()
        .unwrap()
        .parse()
        .expect("a numeric user");
    assert_eq!(uid, k8s::UID);
    assert!(
        runtime.contains(&"ENTRYPOINT [\"/usr/local/bin/aidt-batch\"]"),
        "{runtime:?}"
    );
    assert!(runtime.iter().any(|l| l.contains("ca-certificates")));
    // prod by default, without the local profile's made-up secrets.
    assert!(runtime.contains(&"ENV AIDT_CONFIG_DIR=/etc/aidt-batch AIDT_PROFILE=prod"));
    let config = runtime
        .iter()
        .find(|l| l.starts_with("COPY config/base.toml"))
        .expect("the configuration is copied");
    assert!(config.ends_with("/etc/aidt-batch/") && config.contains("config/prod.toml"));
    assert!(
        !config.contains("local.toml"),
        "the image ships no local.toml"
    );

    // hadolint finds nothing.
    let out = Command::new(tools_bin("hadolint"))
        .arg(repo().join("Dockerfile"))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "hadolint: {}{}",
        String::from_utf8_lossy(&out.stdout),
        stderr(&out)
    );
}

fn copy_into(source: &Path, dest: &Path) {
    if source.is_dir() {
        std::fs::create_dir_all(dest).unwrap();
        for entry in std::fs::read_dir(source).unwrap() {
            let entry = entry.unwrap();
            if entry.file_name() == "target" {
                continue;
            }
            copy_into(&entry.path(), &dest.join(entry.file_name()));
        }
    } else {
        std::fs::create_dir_all(dest.parent().unwrap()).unwrap();
        std::fs::copy(source, dest).unwrap();
    }
}

#[test]
fn compose_starts_only_the_databases_unless_the_batch_profile_is_asked_for() {
    let docs = yaml_documents(&repo().join("docker-compose.yml"));
    let services = &docs[0]["services"];
    for db in ["postgres", "mongo"] {
        assert!(services[db].is_object(), "{db} kept");
        assert!(
            services[db]["profiles"].is_null(),
            "{db} starts with `docker compose up`"
        );
    }
    assert_eq!(services["mongo"]["image"], "mongo:7");
    let batch = &services["batch"];
    assert_eq!(batch["profiles"], serde_json::json!(["batch"]));
    // The image runs prod; compose's service is a developer's: local, mounted.
    assert_eq!(batch["environment"]["AIDT_PROFILE"], "local");
    assert_eq!(
        batch["volumes"],
        serde_json::json!(["./config/local.toml:/etc/aidt-batch/local.toml:ro"])
    );
    assert_eq!(batch["build"], ".");
    for db in ["postgres", "mongo"] {
        assert_eq!(batch["depends_on"][db]["condition"], "service_healthy");
    }
}
