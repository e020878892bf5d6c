//! The Dockerfile, checked without a container engine (these machines have none, so it is
//! not built here): its stages, users, health checks, and that what it builds and copies are
//! binaries of this workspace.

use std::collections::{BTreeMap, BTreeSet};

use deploy_check::{deploy_dir, read_text};

/// One `FROM … AS name` stage: its base and its instructions (continuation lines joined).
struct Stage {
    base: String,
    instructions: Vec<(String, String)>,
}

fn stages() -> BTreeMap<String, Stage> {
    let text = read_text(&deploy_dir().join("Dockerfile")).unwrap();
    let mut joined = Vec::new();
    let mut current = String::new();
    for line in text.lines() {
        let line = line.trim();
        if line.starts_with('#') || (line.is_empty() && current.is_empty()) {
            continue;
        }
        match line.strip_suffix('\\') {
            Some(start) => {
                current.push_str(start);
                current.push(' ');
            }
            None => {
                current.push_str(line);
                joined.push(std::mem::take(&mut current));
            }
        }
    }
    let mut stages = BTreeMap::new();
    let mut name = None;
    for instruction in joined.into_iter().filter(|i| !i.is_empty()) {
        let (keyword, rest) = instruction
            .split_once(' ')
            .map(|(k, r)| (k.to_uppercase(), r.trim().to_owned()))
            .unwrap_or_else(|| (instruction.to_uppercase(), String::new()));
        if keyword == "FROM" {
            let words: Vec<&str> = rest.split_whitespace().collect();
            let stage = match words.as_slice() {
                [base, as_, stage] if as_.eq_ignore_ascii_case("as") => (*stage, *base),
                other => panic!("every stage is named: FROM {other:?}"),
            };
            name = Some(stage.0.to_owned());
            stages.insert(
                stage.0.to_owned(),
                Stage {
                    base: stage.1.to_owned(),
                    instructions: Vec::new(),
                },
            );
        } else if let Some(stage) = name.as_ref().and_then(|n| stages.get_mut(n)) {
            stage.instructions.push((keyword, rest));
        }
    }
    stages
}

/// Binary targets of the workspace members, from their manifests.
fn workspace_bins() -> BTreeSet<String> {
    let root = testkit::workspace_root();
    let manifest: toml::Table = read_text(&root.join("Cargo.toml"))
        .unwrap()
        .parse()
        .unwrap();
    manifest["workspace"]["members"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|member| {
            let path = root.join(member.as_str()?).join("Cargo.toml");
            read_text(&path).unwrap().parse::<toml::Table>().ok()
        })
        .flat_map(|crate_manifest| {
            crate_manifest
                .get("bin")
                .and_then(|bins| bins.as_array().cloned())
                .unwrap_or_default()
        })
        .filter_map(|bin| bin.get("name")?.as_str().map(str::to_owned))
        .collect()
}

fn instructions<'a>(stage: &'a Stage, keyword: &str) -> Vec<&'a str> {
    stage
        .instructions
        .iter()
        .filter(|(k, _)| k == keyword)
        .map(|(_, rest)| rest.as_str())
        .collect()
}

const RUNTIME_STAGES: [&str; 4] = ["agent", "agent-kubectl", "coordinator", "ops"];

#[test]
fn dockerfile_builds_workspace_binaries_and_every_runtime_image_runs_unprivileged_with_a_health_check()
 {
    let stages = stages();
    let bins = workspace_bins();
    let build = &stages["build"];
    let built: BTreeSet<String> = instructions(build, "RUN")
        .iter()
        .flat_map(|run| {
            run.split_whitespace()
                .collect::<Vec<_>>()
                .windows(2)
                .filter(|pair| pair[0] == "--bin")
                .map(|pair| pair[1].to_owned())
                .collect::<Vec<_>>()
        })
        .collect();
    assert_eq!(
        built,
        ["canton-agent", "canton-coordinator", "canton-ops"]
            .map(str::to_owned)
            .into(),
        "the build stage compiles the three binaries"
    );
    assert!(
        built.is_subset(&bins),
        "{built:?} are workspace bins ({bins:?})"
    );
    assert!(
        instructions(build, "RUN")
            .iter()
            .any(|r| r.contains("--locked")),
        "the build uses the committed Cargo.lock"
    );

    for name in RUNTIME_STAGES {
        let stage = stages.get(name).unwrap_or_else(|| panic!("stage {name}"));
        let user = instructions(stage, "USER");
        // agent-kubectl inherits the agent stage's user.
        let inherits_user = stages.contains_key(&stage.base) && user.is_empty();
        assert!(inherits_user || !user.is_empty(), "{name} sets USER");
        for user in user {
            let id = user.split(':').next().unwrap_or_default();
            assert!(
                id != "0" && id != "root" && !id.is_empty(),
                "{name} runs as {user}, not root"
            );
        }
        let health = instructions(stage, "HEALTHCHECK");
        assert!(
            !health.is_empty() || stages.contains_key(&stage.base),
            "{name} says what its health check is (HEALTHCHECK CMD … or NONE)"
        );
        for copy in instructions(stage, "COPY") {
            let Some(from_build) = copy.strip_prefix("--from=build ") else {
                continue;
            };
            let source = from_build.split_whitespace().next().unwrap_or_default();
            let binary = source.rsplit('/').next().unwrap_or_default();
            assert!(
                bins.contains(binary),
                "{name} copies {binary}, a workspace bin ({bins:?})"
            );
        }
        // Images are small: no compiler or sources from the build stage.
        assert!(
            !stage.base.starts_with("rust:"),
            "{name} is not built on the Rust toolchain image"
        );
    }
    for (stage, binary) in [
        ("agent", "canton-agent"),
        ("coordinator", "canton-coordinator"),
        ("ops", "canton-ops"),
    ] {
        let entrypoint = instructions(&stages[stage], "ENTRYPOINT");
        assert!(
            entrypoint
                .iter()
                .any(|e| e.contains(&format!("/usr/local/bin/{binary}"))),
            "{stage} starts {binary}: {entrypoint:?}"
        );
        assert!(
            instructions(&stages[stage], "COPY")
                .iter()
                .any(|c| c.starts_with("--from=build") && c.contains(binary)),
            "{stage} copies {binary} from the build stage"
        );
    }
    for stage in ["agent", "coordinator"] {
        let health = instructions(&stages[stage], "HEALTHCHECK");
        assert!(
            health.iter().any(|h| h.contains("CMD")),
            "{stage} has a real health check: {health:?}"
        );
    }
}

#[test]
fn agent_image_carries_pg_dump_and_pg_restore_of_every_supported_server_major() {
    let stages = stages();
    let runs = instructions(&stages["agent"], "RUN").join(" ");
    for major in 14..=17 {
        assert!(
            runs.contains(&format!("postgresql-client-{major}")),
            "the agent image installs postgresql-client-{major} (pg_dump/pg_restore under \
             /usr/lib/postgresql/{major}/bin, where sidecar-backup looks for the server's major)"
        );
    }
    assert!(
        runs.contains("rm -rf /var/lib/apt/lists"),
        "no apt lists left in the image"
    );
    // The place the agent's backup code looks for client programs of a server's major version.
    let pg = read_text(&testkit::workspace_root().join("crates/backup/src/pg.rs")).unwrap();
    assert!(pg.contains("/usr/lib/postgresql/{major}/bin"));
}
