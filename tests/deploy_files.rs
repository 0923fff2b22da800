//! The deployment files in docker/ pass the tools that will read them:
//! Prometheus's config and alerting rules (`promtool check config`,
//! `promtool check rules`, and `promtool test rules` with the unit tests'
//! input series), and the compose file (`docker-compose config`). The live
//! side (Prometheus scraping a running ctgate and answering every dashboard
//! query) is `prometheus_answers_every_dashboard_query` in tests/netns_nat.rs;
//! the image and the demo in a container are `scripts/docker.sh` (run by
//! scripts/test.sh).
mod support;

use std::process::Command;
use support::repo;

/// Runs `tool args` in the repository; its output, or a panic with it.
fn run(tool: &str, args: &[&str]) -> String {
    let out = Command::new(tool)
        .args(args)
        .current_dir(repo())
        .output()
        .unwrap_or_else(|e| {
            panic!("{tool}: {e} (scripts/setup.sh installs it: Debian packages prometheus, docker-compose)")
        });
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "{tool} {args:?} failed:\n{text}");
    text
}

#[test]
fn prometheus_config_and_rules_pass_promtool() {
    let out = run(
        "promtool",
        &["check", "config", "docker/prometheus/prometheus.yml"],
    );
    assert!(out.contains("SUCCESS"), "{out}");
    // The config loads the rules file (which the check above also checked).
    assert!(
        out.contains("rules.yml"),
        "prometheus.yml loads no rules: {out}"
    );
    let out = run(
        "promtool",
        &["check", "rules", "docker/prometheus/rules.yml"],
    );
    assert!(out.contains("SUCCESS"), "{out}");
    let out = run(
        "promtool",
        &["test", "rules", "docker/prometheus/rules.test.yml"],
    );
    assert!(out.contains("SUCCESS"), "{out}");
}

#[test]
fn compose_file_is_valid() {
    let out = run(
        "docker-compose",
        &[
            "--project-name",
            "ctgate",
            "-f",
            "docker/compose.yaml",
            "config",
        ],
    );
    for service in ["ctgate:", "prometheus:", "grafana:"] {
        assert!(out.contains(service), "no {service} in:\n{out}");
    }
}
